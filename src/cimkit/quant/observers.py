"""Range observers for calibration: min/max, percentile and MSE-optimal clipping.

An observer sees tensors (``update``), then ``qparams(bits, ...)`` gives the grid. Per-channel
observers (``axis`` set, used for weights) keep one range per slice along ``axis``.

* ``minmax``: the running extreme values (Jacob et al., CVPR 2018).
* ``percentile``: the ``p``-th / ``(100-p)``-th percentiles, averaged over batches (McKinstry et al.
  2019; Wu et al. 2020, "Integer quantization for deep learning inference", Sec. 4.2). Tensors with
  more than ``max_samples`` elements are subsampled with the observer's own seeded generator.
* ``mse``: the clipping range ``t·[lo, hi]``, ``t`` on a grid of ``n_grid`` values in
  ``[min_ratio, 1]``, that minimises the mean squared quantization error on the observed values
  (Banner et al. 2019; Wu et al. 2020 Sec. 4.2). Observed values are kept as a seeded reservoir of
  at most ``max_samples`` per channel.
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import Tensor

from cimkit.quant.functional import fake_quantize, qparams_from_range


class ObserverKind(str, Enum):
    MINMAX = "minmax"
    PERCENTILE = "percentile"
    MSE = "mse"


class Observer:
    """Collects range statistics; see the module docstring for the three kinds."""

    def __init__(
        self,
        kind: ObserverKind | str = ObserverKind.MINMAX,
        *,
        axis: int | None = None,
        percentile: float = 99.99,
        n_grid: int = 100,
        min_ratio: float = 0.05,
        max_samples: int = 1 << 16,
        seed: int = 0,
    ) -> None:
        self.kind = ObserverKind(kind)
        self.axis = axis
        self.percentile = percentile
        self.n_grid = n_grid
        self.min_ratio = min_ratio
        self.max_samples = max_samples
        self._gen = torch.Generator().manual_seed(seed)
        self.lo: Tensor | None = None
        self.hi: Tensor | None = None
        self.n_batches = 0
        self._samples: Tensor | None = None  # (C, S) kept values for MSE

    @property
    def seen(self) -> bool:
        return self.n_batches > 0

    def _as_rows(self, x: Tensor) -> Tensor:
        """``(C, K)`` view: one row per channel (or a single row)."""
        x = x.detach().float()
        if self.axis is None:
            return x.reshape(1, -1)
        return x.movedim(self.axis, 0).reshape(x.shape[self.axis], -1)

    def _subsample(self, rows: Tensor, k: int) -> Tensor:
        if rows.shape[1] <= k:
            return rows
        idx = torch.randperm(rows.shape[1], generator=self._gen)[:k].to(rows.device)
        return rows[:, idx]  # (C, k)

    def update(self, x: Tensor) -> None:
        """Observe one tensor (a batch of activations or a weight)."""
        if x.numel() == 0:
            return
        rows = self._as_rows(x)  # (C, K)
        if self.kind is ObserverKind.PERCENTILE:
            k = min(self.max_samples * 16, (1 << 24) // rows.shape[0])  # torch.quantile's size limit
            sample = self._subsample(rows, k)  # (C, k)
            q = torch.tensor([1 - self.percentile / 100, self.percentile / 100], device=rows.device)
            qs = torch.quantile(sample, q, dim=1)  # (2, C)
            lo, hi = qs[0], qs[1]
            if self.lo is None or self.hi is None:
                self.lo, self.hi = lo, hi
            else:  # running mean over batches
                n = self.n_batches
                self.lo = (self.lo * n + lo) / (n + 1)
                self.hi = (self.hi * n + hi) / (n + 1)
        else:
            lo, hi = rows.amin(dim=1), rows.amax(dim=1)  # (C,)
            self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
            self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)
            if self.kind is ObserverKind.MSE:
                keep = self._subsample(rows, self.max_samples)
                both = keep if self._samples is None else torch.cat([self._samples, keep], dim=1)
                self._samples = self._subsample(both, self.max_samples)
        self.n_batches += 1

    def qparams(
        self, bits: int, *, symmetric: bool, unsigned: bool = False, narrow: bool = True
    ) -> tuple[Tensor, Tensor, int, int]:
        """``(scale, zero_point, qmin, qmax)`` from what was observed (see ``qparams_from_range``)."""
        if self.lo is None or self.hi is None:
            raise RuntimeError("observer has seen no data")
        lo, hi = self.lo, self.hi
        if self.kind is ObserverKind.MSE and self._samples is not None:
            lo, hi = self._mse_range(bits, symmetric=symmetric, unsigned=unsigned, narrow=narrow)
        return qparams_from_range(lo, hi, bits, symmetric=symmetric, unsigned=unsigned, narrow=narrow)

    def _mse_range(self, bits: int, *, symmetric: bool, unsigned: bool, narrow: bool) -> tuple[Tensor, Tensor]:
        assert self.lo is not None and self.hi is not None and self._samples is not None
        x = self._samples  # (C, S)
        ratios = torch.linspace(self.min_ratio, 1.0, self.n_grid, device=x.device)  # (T,)
        best_err = torch.full_like(self.lo, float("inf"))  # (C,)
        best_t = torch.ones_like(self.lo)
        chunk = max(1, (1 << 24) // max(x.numel(), 1))
        for i in range(0, len(ratios), chunk):  # chunks bound memory; each is one batched op
            t = ratios[i : i + chunk].reshape(-1, 1)  # (T', 1)
            lo = (self.lo.reshape(1, -1) * t).reshape(-1)  # (T'·C,)
            hi = (self.hi.reshape(1, -1) * t).reshape(-1)
            s, z, qmin, qmax = qparams_from_range(lo, hi, bits, symmetric=symmetric, unsigned=unsigned, narrow=narrow)
            xt = x.unsqueeze(0).expand(len(t), -1, -1).reshape(-1, x.shape[1])  # (T'·C, S)
            err = (fake_quantize(xt, s, z, qmin, qmax, axis=0) - xt).pow(2).mean(dim=1)  # (T'·C,)
            err = err.reshape(len(t), -1)  # (T', C)
            e_min, idx = err.min(dim=0)  # (C,)
            better = e_min < best_err
            best_err = torch.where(better, e_min, best_err)
            best_t = torch.where(better, t.reshape(-1)[idx], best_t)
        return self.lo * best_t, self.hi * best_t


def observe_weight(
    w: Tensor,
    kind: ObserverKind | str,
    bits: int,
    *,
    per_channel: bool,
    symmetric: bool,
    percentile: float = 99.99,
) -> tuple[Tensor, Tensor, int, int]:
    """Grid of a weight tensor in one call: ``(scale (C,)|(1,), zero_point, qmin, qmax)``."""
    obs = Observer(kind, axis=0 if per_channel and w.dim() > 1 else None, percentile=percentile)
    obs.update(w)
    return obs.qparams(bits, symmetric=symmetric)


__all__ = ["Observer", "ObserverKind", "observe_weight"]
