"""Pooling layers of spiking networks.

* :class:`SpikingMaxPool2d`: max pooling of spike trains gated by the spike counts so far
  (Rueckauer et al., Front. Neurosci. 11:682, 2017, Sec. 2.2.3): at each step every pooling
  window passes the current spike of the input neuron that has fired most often up to and
  including this step (ties: the first in the window, as ``max_pool2d``). Its output rate tends to
  the largest input rate, the spiking counterpart of ``max(ReLU(x))``. Plain max pooling of spikes
  would pass the OR of the window and overestimate the rate. Vectorised over time: one cumulative
  sum, one ``max_pool2d`` with indices on the counts, one gather.
* :class:`SumPool2d`: sum pooling (NIR's ``SumPool2d``), average pooling times the window size.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from cimkit.errors import ConfigError
from cimkit.snn.neurons import Temporal

__all__ = ["SpikingMaxPool2d", "SumPool2d"]


class SpikingMaxPool2d(Temporal):
    """Count-gated max pooling of ``(T·B, C, H, W)`` spike trains (see the module docstring)."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation

    @classmethod
    def from_max_pool(cls, m: nn.MaxPool2d, name: str = "") -> SpikingMaxPool2d:
        if m.ceil_mode or m.return_indices:
            raise ConfigError(f"max pooling '{name}': ceil_mode/return_indices are not supported for spike trains")
        return cls(m.kernel_size, m.stride, m.padding, m.dilation)

    def forward(self, x: Tensor) -> Tensor:
        s = self.unfold(x)  # (T, B, C, H, W)
        counts = s.detach().cumsum(0).reshape(x.shape)  # (T·B, C, H, W) spikes so far
        _, idx = F.max_pool2d(counts, self.kernel_size, self.stride, self.padding, self.dilation, return_indices=True)
        out = x.flatten(2).gather(2, idx.flatten(2))  # (T·B, C, Ho·Wo)
        return out.view(idx.shape)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, num_steps={self.num_steps}"


class SumPool2d(nn.AvgPool2d):
    """Sum over each window (``AvgPool2d`` with ``divisor_override = 1``)."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0) -> None:
        super().__init__(kernel_size, stride, padding, divisor_override=1)
