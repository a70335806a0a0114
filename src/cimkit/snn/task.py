"""The ``spiking_classification`` task: classes from output spike counts over ``T`` steps.

``out`` is the output sequence ``(T, B, K)`` of a :class:`~cimkit.snn.SpikingNet` with
``readout = "sequence"`` (spikes, or membranes of a non-spiking output layer); a ``(B, K)``
output (already reduced) is read as one step. Losses (snnTorch ``functional`` conventions):

* ``rate``: ``(1/T) Σ_t CE(out_t, y)`` (``ce_rate_loss``: every step's output as logits);
* ``count``: ``CE(Σ_t out_t, y)`` (``ce_count_loss``: the spike counts as logits).

Metrics: ``accuracy`` (primary; the class with the most output spikes, ties to the lowest index,
as ``snntorch.functional.accuracy_rate``), ``loss`` (the training loss, nats), ``output_spikes``
(output spikes per sample). ``num_steps``, ``encoder`` and ``encoder_options`` describe the
simulation: :meth:`SpikingClassification.wrap` builds the matching :class:`~cimkit.snn.SpikingNet`.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from cimkit.config import as_enum, check_range
from cimkit.snn.encoders import make_encoder
from cimkit.snn.simulate import Readout, SpikingNet
from cimkit.tasks.base import MetricSums, Task

__all__ = ["SpikeLoss", "SpikingClassification"]


class SpikeLoss(str, Enum):
    RATE = "rate"
    COUNT = "count"


class SpikingClassification(Task):
    """Classification from spike counts (module docstring)."""

    name = "spiking_classification"
    primary = "accuracy"
    higher_is_better = True
    units = {"accuracy": "fraction", "loss": "nats", "output_spikes": "count", "n": "count"}

    def __init__(self, num_steps: int = 25, encoder: str = "direct", loss: SpikeLoss | str = "rate",
                 encoder_options: dict[str, Any] | None = None) -> None:  # fmt: skip
        check_range("num_steps", num_steps, 1, 1_000_000)
        self.num_steps = int(num_steps)
        self.encoder_options = dict(encoder_options or {})
        make_encoder(encoder, **self.encoder_options)  # validate now
        self.encoder = encoder
        self.loss_kind = as_enum("loss", loss, SpikeLoss)

    def wrap(self, net: nn.Module) -> SpikingNet:
        """``net`` as a :class:`SpikingNet` with this task's steps and encoder, sequence readout."""
        return SpikingNet(net, self.num_steps, make_encoder(self.encoder, **self.encoder_options), Readout.SEQUENCE)

    @staticmethod
    def _seq(out: Tensor) -> Tensor:
        return out if out.dim() == 3 else out.unsqueeze(0)  # (T, B, K)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        seq = self._seq(out)
        if self.loss_kind is SpikeLoss.COUNT:
            return F.cross_entropy(seq.sum(0), y)
        t, b, k = seq.shape
        return F.cross_entropy(seq.reshape(t * b, k), y.repeat(t))  # = (1/T) Σ_t CE(out_t, y)

    def accumulate(self, sums: MetricSums, out: Tensor, y: Tensor) -> None:
        seq = self._seq(out.float())
        n = int(y.shape[0])
        counts = seq.sum(0)  # (B, K)
        sums.add("loss", float(self.loss(seq, y)) * n, n)
        sums.add("accuracy", int((counts.argmax(-1) == y).sum()), n)
        sums.add("output_spikes", float(counts.sum()), n)
        sums.n += n

    def finalize(self, sums: MetricSums) -> dict[str, float]:
        return {"accuracy": sums.mean("accuracy"), "loss": sums.mean("loss"), "output_spikes": sums.mean("output_spikes"),
                "n": sums.n}  # fmt: skip

    def __repr__(self) -> str:
        return f"SpikingClassification(num_steps={self.num_steps}, encoder={self.encoder!r}, loss={self.loss_kind.value!r})"
