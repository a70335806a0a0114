"""Time-batched simulation: :class:`SpikingNet` runs a network of stateless layers and neurons
over ``T`` time steps.

``forward(x)`` encodes ``x`` (B, ...) into ``(T, B, ...)`` (:mod:`cimkit.snn.encoders`), folds
time into the batch, ``(T·B, ...)``, and calls the wrapped network **once**: every stateless layer
(conv, linear, pooling, flatten, residual adds) processes all time steps in one call, and only the
neuron layers (:mod:`cimkit.snn.neurons`) step through time inside. The network's output
``(T·B, K)`` is unfolded to ``(T, B, K)`` and reduced by the ``readout``:

* ``mean``: ``(1/T) Σ_t out_t`` (B, K), the rate (or the average current of a non-spiking output
  layer, the usual read-out of converted networks);
* ``sum``: ``Σ_t out_t``, spike counts for a spiking output layer;
* ``last``: ``out_{T-1}``;
* ``sequence``: the whole ``(T, B, K)`` (what :class:`cimkit.snn.SpikingClassification` scores).

**Hoisting.** With the direct encoder every step sees the same input, so the deterministic
stateless layers in front of the first neuron layer of an ``nn.Sequential`` network (plain
Conv/Linear/pooling/flatten/BatchNorm; dropout only in eval mode; never an analog or quantized
layer, whose reads are noisy or stateful) compute the same thing ``T`` times: ``hoist = True``
(default) runs them once on ``(B, ...)`` and repeats their output over time. The result and its
gradient are identical (the gradient of the repeat sums over steps); the activity monitor turns it
off so that its counts describe the per-step computation. Image batches ``(T·B, C, H, W)`` are
laid out ``channels_last`` (``channels_last = True``): the same values, and CPU convolutions on
large batches run markedly faster in that layout.

Since the readouts ``mean``/``sum``/``last`` give ``(B, K)``, a :class:`SpikingNet` is a drop-in
classifier for the rest of cimkit (evaluation, fine-tuning by backpropagation through time,
quantization and crossbar mapping of its layers). Without gradients, large batches are split so
that ``T·B`` stays under ``chunk_rows``.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import torch
from torch import Tensor, nn

from cimkit.config import as_enum, check_range
from cimkit.snn.encoders import DirectEncoder, Encoder, make_encoder
from cimkit.snn.neurons import Temporal, set_num_steps

__all__ = ["Readout", "SpikingNet"]


_PURE = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
         nn.Flatten, nn.Identity, nn.BatchNorm1d, nn.BatchNorm2d)  # fmt: skip


def _pure(m: nn.Module) -> bool:
    """Deterministic and stateless over time: an exact instance of a plain torch layer (not a
    quantized/analog subclass), dropout only when not training."""
    if isinstance(m, nn.Dropout):
        return not m.training
    return type(m) in _PURE or (isinstance(m, nn.Identity) and not list(m.children()))


class Readout(str, Enum):
    """How the output sequence ``(T, B, K)`` is reduced (see the module docstring)."""

    MEAN = "mean"
    SUM = "sum"
    LAST = "last"
    SEQUENCE = "sequence"


class SpikingNet(nn.Module):
    """``net`` simulated for ``num_steps`` steps with ``encoder`` and ``readout`` (module docstring)."""

    def __init__(self, net: nn.Module, num_steps: int = 8, encoder: Encoder | str | None = None,
                 readout: Readout | str = "mean", chunk_rows: int = 8192, hoist: bool = True,
                 channels_last: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.hoist = bool(hoist)
        self.channels_last = bool(channels_last)
        self.net = net
        self.encoder = make_encoder(encoder)
        self.readout = as_enum("readout", readout, Readout)
        check_range("chunk_rows", chunk_rows, 1)
        self.chunk_rows = int(chunk_rows)
        self.num_steps = num_steps
        self.conversion: dict[str, Any] = {}  # what cimkit.snn.to_snn did (thresholds, folded neurons, ...)

    @property
    def num_steps(self) -> int:
        return self._num_steps

    @num_steps.setter
    def num_steps(self, t: int) -> None:
        check_range("num_steps", t, 1, 1_000_000)
        self._num_steps = int(t)
        set_num_steps(self.net, self._num_steps)

    def _prefix(self) -> int:
        """How many leading modules of a Sequential ``net`` may run once for all steps (0: none)."""
        if not (self.hoist and isinstance(self.encoder, DirectEncoder) and isinstance(self.net, nn.Sequential)):
            return 0
        n = 0
        for m in self.net:
            if isinstance(m, Temporal) or not _pure(m):
                break
            n += 1
        return n

    def _layout(self, x: Tensor) -> Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _run(self, x: Tensor) -> Tensor:
        t, b = self._num_steps, x.shape[0]
        k = self._prefix()
        x = self._layout(x)
        if k:
            h = self.net[:k](x)  # (B, ...) once: the same at every step
            h = self._layout(h.unsqueeze(0).expand(t, *h.shape).reshape(t * b, *h.shape[1:]))  # (T·B, ...)
            out = self.net[k:](h)
        else:
            xs = self.encoder(x, t)  # (T, B, ...)
            out = self.net(self._layout(xs.reshape(t * b, *x.shape[1:])))  # (T·B, K)
        out = out.reshape(t, b, *out.shape[1:])  # (T, B, K)
        r = self.readout
        if r is Readout.MEAN:
            return out.mean(0)
        if r is Readout.SUM:
            return out.sum(0)
        if r is Readout.LAST:
            return out[-1]
        return out

    def forward(self, x: Tensor) -> Tensor:
        set_num_steps(self.net, self._num_steps)  # a submodule may have been swapped since
        rows = self._num_steps * x.shape[0]
        if torch.is_grad_enabled() or rows <= self.chunk_rows:
            return self._run(x)
        per = max(1, self.chunk_rows // self._num_steps)
        outs = [self._run(x[i : i + per]) for i in range(0, x.shape[0], per)]
        return torch.cat(outs, dim=1 if self.readout is Readout.SEQUENCE else 0)

    def describe(self) -> dict[str, Any]:
        return {"num_steps": self._num_steps, "encoder": self.encoder.describe(), "readout": self.readout.value}

    def extra_repr(self) -> str:
        return f"num_steps={self._num_steps}, encoder={self.encoder!r}, readout={self.readout.value}"
