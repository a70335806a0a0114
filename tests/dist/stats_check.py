"""A shared statistical check for the unbiasedness tests (importable from tests/dist)."""

from __future__ import annotations

import math

import torch

Z = 5.0  # per-entry tolerance in standard errors (P(|Z| > 5) ≈ 6e-7 per entry under the normal law)


def z_checks(mean: torch.Tensor, expect: torch.Tensor, var: torch.Tensor, m: int, pq: torch.Tensor) -> None:
    """Check the mean of ``m`` i.i.d. draws per entry against its expectation and per-draw variance.

    ``pq`` is the entry's largest per-worker ``p·(1−p)`` of its two-point draws. Entries with
    ``m·pq ≥ 5`` (normal approximation valid) must lie within ``Z`` standard errors, and their mean
    squared z-score (≈ χ²_n/n, standard deviation √(2/n)) within 5·√(2/n) of 1, which also checks
    the variance. Rarer entries are pooled: their summed error within ``Z`` of its standard
    deviation. Entries of zero variance must match exactly (up to float rounding).
    """
    zero = pq <= 1e-7
    atol = 1e-5 * float(expect.abs().max())
    assert torch.allclose(mean[zero], expect[zero], rtol=1e-5, atol=atol), "a deterministic entry is off"
    well = (m * pq >= 5) & ~zero
    z = (mean - expect)[well] / (var[well] / m).sqrt()
    assert float(z.abs().max()) < Z, f"max |z| = {float(z.abs().max()):.2f}"
    n = int(well.sum())
    assert n >= 50, f"only {n} entries are in the normal regime"
    assert abs(float(z.square().mean()) - 1.0) < 5 * math.sqrt(2 / n), f"mean z² = {float(z.square().mean()):.3f}"
    rare = ~well & ~zero
    if int(rare.sum()):
        pooled = float((mean - expect)[rare].sum()) / math.sqrt(float(var[rare].sum()) / m)
        assert abs(pooled) < Z, f"pooled z of {int(rare.sum())} rare entries = {pooled:.2f}"
