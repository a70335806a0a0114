"""Next-token prediction (language modelling): per-token cross-entropy, perplexity, bits per token."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from cimkit.tasks.base import TASKS, MetricSums, Task


@TASKS.register("next_token", "next-token logits (B, [T,] V) vs ids (B, [T]): loss in nats/token (primary), "
                "perplexity, bits per character")
class NextToken(Task):
    """``out`` (B, T, V) logits with ``y`` (B, T) target ids (every position predicts the next token),
    or ``out`` (B, V) with ``y`` (B,) (one prediction per window). Metrics, averaged over target
    tokens: ``loss`` (cross-entropy, nats per token; primary, lower is better), ``perplexity``
    (e^loss), ``bpc`` (loss / ln 2: bits per character for a character vocabulary), ``accuracy``
    (top-1 next-token accuracy, fraction)."""

    name = "next_token"
    primary = "loss"
    higher_is_better = False
    units = {"loss": "nats/token", "perplexity": "x", "bpc": "bits/token", "accuracy": "fraction", "n": "count"}

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    def accumulate(self, sums: MetricSums, out: Tensor, y: Tensor) -> None:
        logits = out.reshape(-1, out.shape[-1]).float()  # (B*T, V)
        t = y.reshape(-1)  # (B*T,)
        sums.add("loss", float(F.cross_entropy(logits, t, reduction="sum")), t.numel())
        sums.add("accuracy", int((logits.argmax(-1) == t).sum()), t.numel())
        sums.n += int(y.shape[0])

    def finalize(self, sums: MetricSums) -> dict[str, float]:
        loss = sums.mean("loss")
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "bpc": loss / math.log(2.0),
                "accuracy": sums.mean("accuracy"), "n": sums.n}  # fmt: skip
