"""Regression of a signal (e.g. an implicit neural representation of an image): MSE and PSNR."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from cimkit.config import check_range
from cimkit.tasks.base import TASKS, MetricSums, Task


def psnr_db(mse: float, peak: float) -> float:
    """Peak signal-to-noise ratio ``10 log10(peak² / mse)`` in dB (``inf`` for a perfect fit)."""
    if mse <= 0:
        return float("inf")
    return 10.0 * math.log10(peak * peak / mse)


@TASKS.register("regression", "real-valued outputs vs targets: MSE (training loss), PSNR in dB (primary)")
class Regression(Task):
    """``out`` and ``y`` of the same shape. Metrics: ``mse`` (mean over all elements, in squared
    target units), ``loss`` (the same), ``psnr`` (dB, primary, higher is better) for a signal whose
    peak-to-peak range is ``peak`` (1.0 for intensities in [0, 1], 2.0 for [-1, 1]). Distillation
    from a teacher is the MSE between the two outputs (``temperature`` unused)."""

    name = "regression"
    primary = "psnr"
    higher_is_better = True
    units = {"psnr": "dB", "mse": "target units²", "loss": "target units²", "n": "count"}

    def __init__(self, peak: float = 1.0) -> None:
        check_range("peak", peak, 0.0, lo_open=True)
        self.peak = float(peak)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(out, y.reshape(out.shape))

    def accumulate(self, sums: MetricSums, out: Tensor, y: Tensor) -> None:
        err = float(F.mse_loss(out.float(), y.reshape(out.shape).float(), reduction="sum"))
        sums.add("mse", err, out.numel())
        sums.n += int(out.shape[0])

    def finalize(self, sums: MetricSums) -> dict[str, float]:
        mse = sums.mean("mse")
        return {"psnr": psnr_db(mse, self.peak), "mse": mse, "loss": mse, "n": sums.n}

    def distill(self, student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
        return F.mse_loss(student, teacher)
