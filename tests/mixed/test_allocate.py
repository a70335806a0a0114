"""ILP bit allocation vs brute force, Pareto frontier vs brute force, random same-size plans."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cimkit.errors import ConfigError
from cimkit.mixed.allocate import pareto_frontier, random_plans, solve_ilp

BITS = np.array([2, 3, 4, 8])


def _case(seed: int, n_layers: int = 5):
    """Hand-built tables: Ω falls ~4x per extra bit (as ||Q_b(W) − W||² does), costs grow with bits."""
    rng = np.random.default_rng(seed)
    params = rng.integers(50, 5000, size=n_layers)  # weights per layer
    macs = params * rng.integers(1, 200, size=n_layers)
    curvature = rng.lognormal(0, 1.5, size=n_layers)
    omega = curvature[:, None] * params[:, None] * 4.0 ** (-BITS[None, :]) * rng.uniform(0.8, 1.2, (n_layers, 4))
    size = params[:, None] * BITS[None, :] / 8.0  # bytes
    bops = macs[:, None] * BITS[None, :] * 8.0  # 8-bit activations
    tiles = np.ceil(params[:, None] / 1024) * np.ceil(BITS[None, :] / 2)  # a crossbar-like step cost
    return omega, {"size": size, "bops": bops, "tiles": tiles}


def _brute(omega, costs, budgets, ties=()):
    n_layers, n_cand = omega.shape
    best, best_choice = np.inf, None
    for choice in itertools.product(range(n_cand), repeat=n_layers):
        if any(len({choice[i] for i in g}) > 1 for g in ties):
            continue
        idx = (np.arange(n_layers), np.array(choice))
        if any(costs[k][idx].sum() > b + 1e-9 for k, b in budgets.items()):
            continue
        val = omega[idx].sum()
        if val < best - 1e-12:
            best, best_choice = val, np.array(choice)
    return best, best_choice


def _total(table, choice):
    return table[np.arange(len(choice)), choice].sum()


@pytest.mark.parametrize("seed", range(12))
def test_ilp_equals_brute_force_and_respects_budgets(seed):
    omega, costs = _case(seed, n_layers=5 + seed % 2)
    rng = np.random.default_rng(100 + seed)
    budgets = {}
    for k in ("size", "bops", "tiles")[: 1 + seed % 3]:
        lo, hi = costs[k].min(axis=1).sum(), costs[k].max(axis=1).sum()
        budgets[k] = float(lo + rng.uniform(0.15, 0.7) * (hi - lo))
    choice = solve_ilp(omega, costs, budgets)
    for k, b in budgets.items():
        assert _total(costs[k], choice) <= b + 1e-9, k
    best, best_choice = _brute(omega, costs, budgets)
    assert _total(omega, choice) == pytest.approx(best, rel=1e-9)
    # a unique optimum (continuous random tables) means the same assignment
    assert choice.tolist() == best_choice.tolist()


def test_ilp_with_ties_equals_brute_force():
    omega, costs = _case(42, n_layers=6)
    ties = [(1, 4), (2, 3, 5)]
    budgets = {"size": float(costs["size"][:, 1].sum())}  # uniform 3-bit size
    choice = solve_ilp(omega, costs, budgets, ties=ties)
    assert choice[1] == choice[4] and choice[2] == choice[3] == choice[5]
    best, _ = _brute(omega, costs, budgets, ties=ties)
    assert _total(omega, choice) == pytest.approx(best, rel=1e-9)
    untied = solve_ilp(omega, costs, budgets)
    assert _total(omega, untied) <= best + 1e-12  # a tie can only cost sensitivity


def test_ilp_unconstrained_picks_most_bits_and_mask_is_honoured():
    omega, costs = _case(1)
    assert solve_ilp(omega, costs, {}).tolist() == [3] * 5
    allowed = np.ones_like(omega, dtype=bool)
    allowed[0, 3] = False  # first layer may not take 8 bits
    assert solve_ilp(omega, costs, {"size": None}, allowed=allowed).tolist() == [2, 3, 3, 3, 3]


def test_ilp_infeasible_budget_is_a_config_error():
    omega, costs = _case(2)
    smallest = costs["size"][:, 0].sum()
    with pytest.raises(ConfigError, match="infeasible"):
        solve_ilp(omega, costs, {"size": 0.5 * smallest})
    with pytest.raises(ConfigError, match="no cost table"):
        solve_ilp(omega, costs, {"latency": 1.0})
    with pytest.raises(ConfigError, match="shape"):
        solve_ilp(omega, {"size": costs["size"][:3]}, {"size": 1.0})
    # exactly the smallest cost is feasible and gives the all-2-bit plan
    assert solve_ilp(omega, costs, {"size": smallest}).tolist() == [0] * 5


def test_pareto_frontier_equals_brute_force():
    omega, costs = _case(7, n_layers=5)
    size = costs["size"]
    pts = pareto_frontier(omega, size, max_points=None)
    allc = np.array(list(itertools.product(range(4), repeat=5)))  # (4^5, L)
    idx = np.arange(5)[None, :]
    s_all, o_all = size[idx, allc].sum(1), omega[idx, allc].sum(1)
    # brute-force non-dominated set: no other point with size <= and omega < (or size < and omega <=)
    order = np.lexsort((o_all, s_all))
    front, best = [], np.inf
    for i in order:
        if o_all[i] < best:
            front.append((s_all[i], o_all[i]))
            best = o_all[i]
    assert len(pts) == len(front)
    for p, (s, o) in zip(pts, front):
        assert p.cost == pytest.approx(s) and p.omega == pytest.approx(o)
        ch = np.array(p.choice)
        assert _total(size, ch) == pytest.approx(p.cost) and _total(omega, ch) == pytest.approx(p.omega)
    # every frontier point is the ILP optimum at its own size budget
    for p in pts[:: max(1, len(pts) // 6)]:
        ch = solve_ilp(omega, {"size": size}, {"size": p.cost})
        assert _total(omega, ch) == pytest.approx(p.omega, rel=1e-9)


def test_pareto_thinning_and_ties():
    omega, costs = _case(3, n_layers=6)
    full = pareto_frontier(omega, costs["size"], max_points=None)
    thin = pareto_frontier(omega, costs["size"], max_points=20)
    assert len(thin) <= len(full)
    assert thin[0].cost == pytest.approx(full[0].cost) and thin[-1].omega == pytest.approx(full[-1].omega)
    tied = pareto_frontier(omega, costs["size"], ties=[(0, 1, 2)], max_points=None)
    assert all(p.choice[0] == p.choice[1] == p.choice[2] for p in tied)
    assert np.all(np.diff([p.cost for p in tied]) > 0) and np.all(np.diff([p.omega for p in tied]) < 0)


def test_random_plans_have_the_budgeted_size():
    _, costs = _case(5, n_layers=6)
    budget = float(costs["size"][:, 1].sum())
    plans = random_plans(costs["size"], budget, 5, seed=0, min_fraction=0.9)
    assert plans.shape == (5, 6)
    sizes = costs["size"][np.arange(6)[None, :], plans].sum(1)
    assert np.all(sizes <= budget + 1e-9) and np.all(sizes >= 0.9 * budget)
    assert len({tuple(p) for p in plans}) > 1
    again = random_plans(costs["size"], budget, 5, seed=0, min_fraction=0.9)
    assert np.array_equal(plans, again)
    with pytest.raises(ConfigError, match="random plans"):
        random_plans(costs["size"], 0.5 * costs["size"][:, 0].sum(), 1, max_draws=1000)
