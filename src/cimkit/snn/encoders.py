"""Input encoders: a static input ``x`` (B, ...) becomes ``T`` time steps ``(T, B, ...)``.

* ``direct``: the same analog value at every step (the first layer integrates it as a constant
  current; Rueckauer et al., Front. Neurosci. 11:682, 2017, "analog input"; snnTorch tutorials 5-6);
* ``rate``: Bernoulli (discrete-time Poisson) spikes with probability ``p = clamp(gain·x + offset, 0, 1)``
  per step, drawn from the encoder's own seeded ``torch.Generator`` (snnTorch ``spikegen.rate``).
  ``rescale = true`` emits ``(S - offset) / gain`` instead of ``S``, an unbiased estimate of ``x``
  for in-range values (what an ANN trained on normalised inputs expects after conversion);
* ``latency``: one spike per feature at step ``t = round((1 - p)(T - 1))`` (``linear``) or
  ``t = round((T - 1) ln(1/p) / ln(1/threshold))`` (``log``, the RC-charging code of snnTorch's
  ``spikegen.latency``, normalised to the window); features with ``p < threshold`` stay silent.

For images normalised with per-channel ``mean`` / ``std`` (cimkit's datasets), ``gain = std`` and
``offset = mean`` give ``p`` = the pixel intensity in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from cimkit.config import check_range
from cimkit.errors import ConfigError
from cimkit.registry import Registry

__all__ = ["ENCODERS", "DirectEncoder", "Encoder", "LatencyEncoder", "RateEncoder", "make_encoder"]


class Encoder:
    """``encoder(x, T) -> (T, B, ...)``. ``spiking``: whether the output is binary spikes."""

    name: str = ""
    spiking: bool = False

    def __call__(self, x: Tensor, num_steps: int) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def reseed(self, seed: int) -> None:
        """Restart the encoder's random stream (no-op for deterministic encoders)."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.describe().items() if k != "name")
        return f"{type(self).__name__}({args})"


class DirectEncoder(Encoder):
    """The same input at every time step."""

    name = "direct"

    def __call__(self, x: Tensor, num_steps: int) -> Tensor:
        return x.unsqueeze(0).expand(num_steps, *x.shape)  # (T, B, ...) view


Scale = float | tuple[float, ...] | list[float]


def _per_channel(v: Scale, name: str) -> float | tuple[float, ...]:
    vals = [float(u) for u in v] if isinstance(v, (list, tuple)) else [float(v)]
    for u in vals:
        check_range(name, u, -1e6, 1e6)
    return tuple(vals) if isinstance(v, (list, tuple)) else vals[0]


def _affine(x: Tensor, v: float | tuple[float, ...]) -> Tensor | float:
    """A scalar, or a per-channel tuple viewed as ``(C, 1, ...)`` against ``x`` (B, C, ...)."""
    if isinstance(v, float):
        return v
    if x.dim() < 2 or x.shape[1] != len(v):
        raise ConfigError(f"encoder: {len(v)} per-channel values for an input of shape {tuple(x.shape)}")
    return torch.tensor(v, dtype=x.dtype, device=x.device).view(-1, *([1] * (x.dim() - 2)))


def _prob(x: Tensor, gain: float | tuple[float, ...], offset: float | tuple[float, ...]) -> Tensor:
    return (x * _affine(x, gain) + _affine(x, offset)).clamp_(0.0, 1.0)


class RateEncoder(Encoder):
    """Bernoulli spikes with ``P(S = 1) = clamp(gain·x + offset, 0, 1)`` per step (seeded)."""

    name = "rate"

    def __init__(self, gain: Scale = 1.0, offset: Scale = 0.0, seed: int = 0, rescale: bool = False) -> None:
        self.gain, self.offset = _per_channel(gain, "gain"), _per_channel(offset, "offset")
        if any(g <= 0 for g in (self.gain if isinstance(self.gain, tuple) else (self.gain,))):
            raise ConfigError(f"gain: {gain!r} is out of range; allowed: > 0")
        self.seed, self.rescale = int(seed), bool(rescale)
        self.spiking = not self.rescale
        self._gen: torch.Generator | None = None

    def reseed(self, seed: int) -> None:
        self.seed = int(seed)
        self._gen = None

    def _generator(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._gen.device != device:
            self._gen = torch.Generator(device=device).manual_seed(self.seed)
        return self._gen

    def __call__(self, x: Tensor, num_steps: int) -> Tensor:
        p = _prob(x, self.gain, self.offset)  # (B, ...)
        u = torch.rand((num_steps, *x.shape), generator=self._generator(x.device), device=x.device, dtype=x.dtype)
        s = (u < p.unsqueeze(0)).to(x.dtype)  # (T, B, ...)
        if not self.rescale:
            return s
        return (s - _affine(x, self.offset)) / _affine(x, self.gain)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "gain": self.gain, "offset": self.offset, "seed": self.seed, "rescale": self.rescale}


class LatencyEncoder(Encoder):
    """One spike per feature, earlier for larger ``p = clamp(gain·x + offset, 0, 1)``."""

    name = "latency"
    spiking = True

    def __init__(self, gain: Scale = 1.0, offset: Scale = 0.0, threshold: float = 0.01, code: str = "linear") -> None:
        check_range("threshold", threshold, 0.0, 1.0, lo_open=True, hi_open=True)
        if code not in ("linear", "log"):
            raise ConfigError(f"code: {code!r} is not allowed; allowed: linear, log")
        self.gain, self.offset = _per_channel(gain, "gain"), _per_channel(offset, "offset")
        self.threshold, self.code = float(threshold), code

    def spike_times(self, x: Tensor, num_steps: int) -> Tensor:
        """Spike step of every feature (float; ``inf`` for silent features)."""
        p = _prob(x, self.gain, self.offset)
        if self.code == "linear":
            t = torch.round((1.0 - p) * (num_steps - 1))
        else:
            t = torch.round((num_steps - 1) * torch.log(1.0 / p.clamp(min=1e-30)) / math.log(1.0 / self.threshold))
        return torch.where(p >= self.threshold, t, torch.full_like(t, math.inf))

    def __call__(self, x: Tensor, num_steps: int) -> Tensor:
        t = self.spike_times(x, num_steps)  # (B, ...)
        steps = torch.arange(num_steps, device=x.device, dtype=x.dtype).view(-1, *([1] * x.dim()))
        return (steps == t.unsqueeze(0)).to(x.dtype)  # (T, B, ...)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "gain": self.gain, "offset": self.offset, "threshold": self.threshold,
                "code": self.code}  # fmt: skip


ENCODERS: Registry[Callable[..., Encoder]] = Registry("encoder")
ENCODERS.add("direct", DirectEncoder, "the analog input at every step (constant current)")
ENCODERS.add("rate", RateEncoder, "Bernoulli spikes, p = clamp(gain·x + offset) per step (seeded generator)")
ENCODERS.add("latency", LatencyEncoder, "one spike per feature, earlier for larger intensity (linear or log code)")


def make_encoder(spec: Encoder | str | None = None, **options: Any) -> Encoder:
    """An encoder from an instance or a registered name (``None`` = ``direct``) and its options."""
    if isinstance(spec, Encoder):
        if options:
            raise ConfigError("encoder: options given with an Encoder instance; pass one or the other")
        return spec
    factory = ENCODERS.get(spec or "direct")
    try:
        return factory(**options)
    except TypeError:
        raise ConfigError(f"encoder '{spec}': unknown option(s) {sorted(options)}") from None
