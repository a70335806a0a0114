"""Bit allocation: the Ω-vs-size Pareto frontier (HAWQ-V2) and an integer linear program (HAWQ-V3).

Everything here is pure NumPy on tables indexed ``[layer, candidate]``:

* ``omega[l, j]`` — the sensitivity of layer ``l`` at candidate bit width ``bits[j]``;
* ``costs[name][l, j]`` — a cost that adds over layers (weight bits, BOPs, crossbar tiles, ...);
* ``budgets[name]`` — the upper bound on the summed cost.

Tied layers (e.g. the two convolutions feeding one residual addition) must use the same candidate:
a tie group becomes one decision whose Ω and costs are the sums over its members.

The ILP (Yao et al., HAWQ-V3, ICML 2021, eq. 6) is

    min Σ_l Σ_j Ω[l,j] x[l,j]   s.t.  Σ_j x[l,j] = 1 ∀l,   Σ_l Σ_j c_k[l,j] x[l,j] ≤ B_k ∀k,   x ∈ {0,1}

solved with ``scipy.optimize.milp`` (HiGHS branch and bound, exact). SciPy is the optional extra
``cimkit[mixed]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cimkit.errors import ConfigError


def _groups(n_layers: int, ties: Sequence[Sequence[int]] | None) -> list[list[int]]:
    """Partition of ``range(n_layers)`` into tie groups (untied layers are singletons)."""
    parent = list(range(n_layers))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for group in ties or ():
        group = list(group)
        for i in group:
            if not 0 <= i < n_layers:
                raise ConfigError(f"ties: layer index {i} out of range; allowed: [0, {n_layers - 1}]")
        for i in group[1:]:
            parent[find(i)] = find(group[0])
    out: dict[int, list[int]] = {}
    for i in range(n_layers):
        out.setdefault(find(i), []).append(i)
    return sorted(out.values(), key=lambda g: g[0])


def _merge(table: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    return np.stack([table[g].sum(axis=0) for g in groups])  # (G, J)


def _expand(choice_g: np.ndarray, groups: list[list[int]], n_layers: int) -> np.ndarray:
    out = np.empty(n_layers, dtype=np.int64)
    for gi, g in enumerate(groups):
        out[g] = choice_g[gi]
    return out


def _check_tables(omega: np.ndarray, costs: Mapping[str, np.ndarray]) -> None:
    if omega.ndim != 2:
        raise ConfigError(f"omega: expected a (layers, candidates) table, got shape {omega.shape}")
    for k, c in costs.items():
        if np.shape(c) != omega.shape:
            raise ConfigError(f"cost '{k}': shape {np.shape(c)} differs from omega's {omega.shape}")


def solve_ilp(
    omega: np.ndarray,
    costs: Mapping[str, np.ndarray],
    budgets: Mapping[str, float],
    *,
    ties: Sequence[Sequence[int]] | None = None,
    allowed: np.ndarray | None = None,
    time_limit: float | None = 60.0,
) -> np.ndarray:
    """Choose one candidate per layer minimizing ΣΩ under every budget (see module docstring).

    Args:
        omega: ``(L, J)`` sensitivities.
        costs: name -> ``(L, J)`` additive costs; only names present in ``budgets`` constrain.
        budgets: name -> upper bound (a missing or ``None`` budget is no constraint).
        ties: groups of layer indices that must take the same candidate.
        allowed: optional ``(L, J)`` boolean mask of admissible choices (e.g. fixed first layer).

    Returns:
        ``(L,)`` int array of chosen candidate indices.

    Raises:
        ConfigError: no assignment meets the budgets (the message gives the smallest reachable cost).
        ImportError: SciPy is missing (install ``cimkit[mixed]``).
    """
    try:
        from scipy.optimize import Bounds, LinearConstraint, milp
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the bit-allocation ILP needs SciPy (scipy.optimize.milp); install it with "
            "`pip install 'cimkit[mixed]'` (or `pip install scipy`)"
        ) from e
    omega = np.asarray(omega, dtype=np.float64)
    costs = {k: np.asarray(v, dtype=np.float64) for k, v in costs.items()}
    _check_tables(omega, costs)
    n_layers, n_cand = omega.shape
    groups = _groups(n_layers, ties)
    om = _merge(omega, groups)  # (G, J)
    mask = np.ones_like(om, dtype=bool)
    if allowed is not None:
        allowed = np.asarray(allowed, dtype=bool)
        mask = np.stack([allowed[g].all(axis=0) for g in groups])  # (G, J)
        if not mask.any(axis=1).all():
            raise ConfigError("allowed: some layer (or tie group) has no admissible candidate")
    active = {k: float(b) for k, b in budgets.items() if b is not None}
    for k in active:
        if k not in costs:
            raise ConfigError(f"budget '{k}' has no cost table; known: {', '.join(costs)}")
    n_groups = len(groups)
    # objective scaled so HiGHS tolerances are relative to the problem's magnitude
    scale = float(np.abs(om[mask]).max()) or 1.0
    c = (om / scale).ravel()  # (G*J,)
    a_rows = [np.kron(np.eye(n_groups), np.ones((1, n_cand)))]  # one-hot per group
    lo = [np.ones(n_groups)]
    hi = [np.ones(n_groups)]
    for k, b in active.items():
        cg = _merge(costs[k], groups)  # (G, J)
        cmin = np.where(mask, cg, np.inf).min(axis=1).sum()
        if cmin > b * (1 + 1e-12):
            raise ConfigError(f"budget {k}={b:.6g} is infeasible: the smallest reachable {k} is {cmin:.6g}")
        cs = float(np.abs(cg).max()) or 1.0
        a_rows.append(cg.reshape(1, -1) / cs)
        lo.append(np.array([-np.inf]))
        hi.append(np.array([b / cs]))
    cons = LinearConstraint(np.vstack(a_rows), np.concatenate(lo), np.concatenate(hi))
    ub = mask.ravel().astype(np.float64)
    options = {"time_limit": time_limit} if time_limit else {}
    res = milp(c, constraints=cons, integrality=np.ones_like(c), bounds=Bounds(0, ub), options=options)
    if res.x is None:
        raise ConfigError(f"bit allocation ILP found no solution under budgets {active}: {res.message}")
    x = np.round(res.x).reshape(n_groups, n_cand)  # (G, J)
    choice = _expand(x.argmax(axis=1), groups, n_layers)
    # the rounding guard: HiGHS works to tolerances, re-check the budgets exactly
    for k, b in active.items():
        total = costs[k][np.arange(n_layers), choice].sum()
        if total > b * (1 + 1e-9) + 1e-9:
            raise ConfigError(f"ILP solution exceeds budget {k}: {total:.6g} > {b:.6g}")
    return choice


@dataclass
class ParetoPoint:
    """One non-dominated assignment: its total cost, total Ω and candidate index per layer."""

    cost: float
    omega: float
    choice: list[int]


def pareto_frontier(
    omega: np.ndarray,
    cost: np.ndarray,
    *,
    ties: Sequence[Sequence[int]] | None = None,
    max_points: int | None = 2000,
) -> list[ParetoPoint]:
    """Exact frontier of (Σ cost, Σ Ω) over all per-layer choices (HAWQ-V2 Fig. 3), cheapest first.

    Dynamic programming over layers: the frontier of the first ``l`` layers combined with layer
    ``l``'s candidates, keeping only points whose Ω is strictly below that of every cheaper point.
    Intermediate frontiers longer than ``max_points`` are thinned to evenly spaced costs (then the
    result is a close inner approximation; ``None`` keeps all points).
    """
    omega = np.asarray(omega, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    _check_tables(omega, {"cost": cost})
    n_layers, n_cand = omega.shape
    groups = _groups(n_layers, ties)
    om, cg = _merge(omega, groups), _merge(cost, groups)  # (G, J)
    f_cost = np.zeros(1)
    f_om = np.zeros(1)
    back: list[tuple[np.ndarray, np.ndarray]] = []  # per group: (parent index, candidate) of each point
    for gi in range(len(groups)):
        c_all = (f_cost[:, None] + cg[gi][None, :]).ravel()  # (P*J,)
        o_all = (f_om[:, None] + om[gi][None, :]).ravel()
        parent = np.repeat(np.arange(f_cost.size), n_cand)
        cand = np.tile(np.arange(n_cand), f_cost.size)
        order = np.lexsort((o_all, c_all))  # by cost, then Ω
        c_all, o_all, parent, cand = c_all[order], o_all[order], parent[order], cand[order]
        best_before = np.minimum.accumulate(np.concatenate([[np.inf], o_all[:-1]]))
        keep = o_all < best_before  # strictly better than everything cheaper-or-equal
        c_all, o_all, parent, cand = c_all[keep], o_all[keep], parent[keep], cand[keep]
        if max_points is not None and c_all.size > max_points:
            idx = np.unique(np.searchsorted(c_all, np.linspace(c_all[0], c_all[-1], max_points), side="left"))
            idx = np.unique(np.concatenate([idx, [c_all.size - 1]]))
            c_all, o_all, parent, cand = c_all[idx], o_all[idx], parent[idx], cand[idx]
        back.append((parent, cand))
        f_cost, f_om = c_all, o_all
    points = []
    for p in range(f_cost.size):
        choice_g = np.empty(len(groups), dtype=np.int64)
        idx = p
        for gi in range(len(groups) - 1, -1, -1):
            parent, cand = back[gi]
            choice_g[gi] = cand[idx]
            idx = parent[idx]
        points.append(ParetoPoint(float(f_cost[p]), float(f_om[p]), _expand(choice_g, groups, n_layers).tolist()))
    return points


def random_plans(
    cost: np.ndarray,
    budget: float,
    n: int,
    *,
    seed: int = 0,
    min_fraction: float = 0.95,
    ties: Sequence[Sequence[int]] | None = None,
    max_draws: int = 2_000_000,
) -> np.ndarray:
    """``n`` uniformly random assignments whose total cost lies in [min_fraction·budget, budget].

    Rejection sampling in vectorized chunks: the baseline "random plans of the same size" that a
    sensitivity-driven allocation should beat. Returns ``(n, L)`` candidate indices.
    """
    cost = np.asarray(cost, dtype=np.float64)
    n_layers, n_cand = cost.shape
    groups = _groups(n_layers, ties)
    cg = _merge(cost, groups)  # (G, J)
    rng = np.random.default_rng(seed)
    found: list[np.ndarray] = []
    drawn = 0
    chunk = 65536
    while sum(len(f) for f in found) < n and drawn < max_draws:
        ch = rng.integers(0, n_cand, size=(chunk, len(groups)))  # (chunk, G)
        tot = cg[np.arange(len(groups))[None, :], ch].sum(axis=1)  # (chunk,)
        ok = (tot <= budget * (1 + 1e-12)) & (tot >= min_fraction * budget)
        found.append(ch[ok])
        drawn += chunk
    pool = np.concatenate(found) if found else np.empty((0, len(groups)), dtype=np.int64)
    if len(pool) < n:
        raise ConfigError(
            f"found only {len(pool)} random plans with cost in [{min_fraction}·budget, budget] "
            f"after {drawn} draws; lower min_fraction"
        )
    return np.stack([_expand(row, groups, n_layers) for row in pool[:n]])
