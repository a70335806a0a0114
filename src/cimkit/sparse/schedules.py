"""Pruning schedules: one-shot, iterative and gradual (cubic, Zhu & Gupta 2017).

* one-shot: prune once to the final sparsity ``s_f`` (then fine-tune).
* iterative: ``rounds`` rounds of prune + fine-tune; round ``k`` (1-based) prunes to
  ``s_k = 1 - (1 - s_f)^(k / rounds)``, so each round removes the same fraction of what is left
  (Han et al. 2015's iterative pruning with a constant per-round rate).
* gradual: while training, every ``Δt`` steps from ``t_0`` for ``n`` pruning events the sparsity is
  raised along Zhu & Gupta's (2017, "To prune, or not to prune", eq. 1) cubic schedule

      s_t = s_f + (s_i - s_f) · (1 - (t - t_0) / (n Δt))³,   t ∈ {t_0, t_0 + Δt, ..., t_0 + n Δt}

  which prunes fast while redundancy is high and slowly near the end.
"""

from __future__ import annotations

from cimkit.config import check_range

__all__ = ["cubic_sparsity", "gradual_steps", "iterative_sparsities"]


def cubic_sparsity(step: int, s_i: float, s_f: float, t0: int, n: int, dt: int) -> float:
    """Zhu & Gupta's sparsity at optimizer step ``step`` (``s_i`` before ``t0``, ``s_f`` after
    ``t0 + n·dt``; between events it holds the value of the last event)."""
    check_range("dt", dt, 1)
    check_range("n", n, 1)
    if step < t0:
        return float(s_i)
    k = min((step - t0) // dt, n)  # pruning events done
    frac = k * dt / (n * dt)
    return float(s_f + (s_i - s_f) * (1.0 - frac) ** 3)


def gradual_steps(t0: int, n: int, dt: int) -> list[int]:
    """The optimizer steps at which the gradual schedule prunes: ``t0, t0 + dt, ..., t0 + n·dt``."""
    return [t0 + k * dt for k in range(n + 1)]


def iterative_sparsities(s_f: float, rounds: int) -> list[float]:
    """``[s_1, ..., s_rounds]`` with ``s_k = 1 - (1 - s_f)^(k / rounds)`` (the last one is ``s_f``)."""
    check_range("rounds", rounds, 1)
    check_range("sparsity", s_f, 0.0, 1.0, hi_open=True)
    return [1.0 - (1.0 - s_f) ** (k / rounds) for k in range(1, rounds + 1)]
