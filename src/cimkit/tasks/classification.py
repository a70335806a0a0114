"""Classification: cross-entropy loss, top-1 accuracy."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from cimkit.config import check_range
from cimkit.tasks.base import TASKS, MetricSums, Task


@TASKS.register("classification", "class logits (B, K) vs labels (B,): cross-entropy, top-1 accuracy (primary)")
class Classification(Task):
    """``out`` (B, K) logits, ``y`` (B,) class ids. Metrics: ``accuracy`` (fraction, primary),
    ``loss`` (mean cross-entropy, nats). ``label_smoothing`` applies to the training loss only."""

    name = "classification"
    primary = "accuracy"
    higher_is_better = True
    units = {"accuracy": "fraction", "loss": "nats", "n": "count"}

    def __init__(self, label_smoothing: float = 0.0) -> None:
        check_range("label_smoothing", label_smoothing, 0.0, 1.0, hi_open=True)
        self.label_smoothing = float(label_smoothing)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out, y, label_smoothing=self.label_smoothing)

    def accumulate(self, sums: MetricSums, out: Tensor, y: Tensor) -> None:
        n = int(y.shape[0])
        sums.add("loss", float(F.cross_entropy(out.float(), y, reduction="sum")), n)
        sums.add("accuracy", int((out.argmax(-1) == y).sum()), n)
        sums.n += n

    def finalize(self, sums: MetricSums) -> dict[str, float]:
        return {"accuracy": sums.mean("accuracy"), "loss": sums.mean("loss"), "n": sums.n}
