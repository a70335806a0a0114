"""Quantization-clip-floor-shift activation (QCFS; Bu, Fang, Ding, Dai, Yu & Huang, "Optimal
ANN-SNN conversion for high-accuracy and ultra-low-latency spiking neural networks", ICLR 2022).

A ReLU replacement trained in the ANN: ``y = λ · clip(⌊x L / λ + φ⌋ / L, 0, 1)`` with ``L``
quantization levels, shift ``φ = 1/2`` and a trainable per-layer threshold ``λ``; the floor passes
its gradient straight through (as the authors' code). An IF neuron with threshold ``λ``, initial
membrane ``λ/2`` and reset by subtraction reproduces it in expectation at every ``T``, exactly at
``T = L`` for a constant input (the paper's Theorem 2); :func:`cimkit.snn.to_snn` does that
conversion.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cimkit.config import check_range

__all__ = ["QCFS"]


def _floor_ste(x: Tensor) -> Tensor:
    return x + (torch.floor(x) - x).detach()


class QCFS(nn.Module):
    """``λ · clip(⌊x L/λ + φ⌋ / L, 0, 1)`` with a learnable threshold ``λ`` (``threshold``)."""

    def __init__(self, levels: int = 8, threshold: float = 8.0, shift: float = 0.5, learn_threshold: bool = True) -> None:
        super().__init__()
        check_range("levels", levels, 1, 1 << 16)
        check_range("threshold", threshold, 0.0, lo_open=True)
        check_range("shift", shift, 0.0, 1.0)
        self.levels, self.shift = int(levels), float(shift)
        self.threshold = nn.Parameter(torch.tensor(float(threshold)), requires_grad=learn_threshold)

    def forward(self, x: Tensor) -> Tensor:
        lam = self.threshold.to(x.dtype)
        y = torch.clamp(x / lam, 0.0, 1.0)
        return _floor_ste(y * self.levels + self.shift) / self.levels * lam

    def extra_repr(self) -> str:
        return f"levels={self.levels}, threshold={float(self.threshold):.4g}, shift={self.shift:g}"
