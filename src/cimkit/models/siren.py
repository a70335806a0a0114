"""SIREN: a sine-activated MLP representing a signal as a function of its coordinates (``siren``).

Sitzmann, Martel, Bergman, Lindell & Wetzstein, "Implicit Neural Representations with Periodic
Activation Functions", NeurIPS 2020 (Sec. 3.2 and supplement Sec. 1.5 for the initialization).

``f(x) = W_L h_{L-1} + b_L`` with ``h_0 = x`` and ``h_i = sin(ω0 · (W_i h_{i-1} + b_i))`` for
``i = 1 .. layers``. Weights are drawn as in the paper:

* first layer ``W_1 ~ U(-1/n, 1/n)`` with ``n = in_features`` (so ``ω0 W_1 x`` spans several
  periods of the sine over the input domain [-1, 1]);
* every later layer, the linear output layer included, ``W_i ~ U(-sqrt(6/n)/ω0, sqrt(6/n)/ω0)``
  with ``n`` its fan-in (the pre-activations ``ω0 (W h + b)`` are then ~ N(0, 1)-like and the
  activations arcsine-distributed at every depth);
* biases keep PyTorch's default ``U(-1/sqrt(n), 1/sqrt(n))``, as the paper's reference code does.

``ω0 = 30`` for every sine layer (the paper's value for images). Each layer is a plain
``nn.Linear`` followed by a :class:`Sine` module, so transforms reach every weight matrix.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cimkit.config import check_range
from cimkit.errors import ConfigError
from cimkit.models.registry import MODELS

__all__ = ["Sine", "Siren", "siren_init_"]


class Sine(nn.Module):
    """Elementwise ``sin(ω0 · x)``."""

    def __init__(self, omega0: float = 30.0) -> None:
        super().__init__()
        self.omega0 = float(omega0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega0 * x)  # same shape as x

    def extra_repr(self) -> str:
        return f"omega0={self.omega0}"


def siren_init_(layer: nn.Linear, omega0: float, first: bool) -> None:
    """SIREN initialization of ``layer.weight`` in place: ``U(-1/n, 1/n)`` for the first layer,
    ``U(-sqrt(6/n)/ω0, sqrt(6/n)/ω0)`` otherwise, ``n = layer.in_features`` (bias untouched)."""
    n = layer.in_features
    bound = 1.0 / n if first else math.sqrt(6.0 / n) / omega0
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound)


@MODELS.register("siren", "SIREN (Sitzmann et al. 2020): coordinates (N, D) -> sine MLP -> signal (N, K)",
                 inputs="coords")  # fmt: skip
class Siren(nn.Module):
    """Coordinates (N, in_features) float -> signal values (N, out_features).

    ``layers`` sine layers of width ``hidden`` (the first maps ``in_features -> hidden``, the others
    ``hidden -> hidden``) and a linear output layer ``hidden -> out_features``. The defaults
    (2 -> 64 x 3 -> 1) have 8,577 parameters. Modules: ``net.0, net.2, ...`` are the Linears,
    ``net.1, net.3, ...`` the :class:`Sine` activations, the last ``net`` entry the output Linear.
    """

    def __init__(
        self,
        in_features: int = 2,
        out_features: int = 1,
        hidden: int = 64,
        layers: int = 3,
        omega0: float = 30.0,
    ) -> None:
        super().__init__()
        for name, value in (("hidden", hidden), ("layers", layers)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name}: {value!r} is not an integer; allowed: integers >= 1")
            check_range(name, value, 1)
        check_range("omega0", omega0, 0.0, lo_open=True)
        self.omega0 = float(omega0)
        mods: list[nn.Module] = []
        d = in_features
        for i in range(layers):
            lin = nn.Linear(d, hidden)
            siren_init_(lin, self.omega0, first=i == 0)
            mods += [lin, Sine(self.omega0)]
            d = hidden
        out = nn.Linear(d, out_features)
        siren_init_(out, self.omega0, first=False)
        mods.append(out)
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (N, out_features)
