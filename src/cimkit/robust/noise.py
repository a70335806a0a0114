"""Relative Gaussian weight noise: for evaluation (perturb, evaluate, restore) and for training
(a reversible transform that perturbs the weights of every training forward).

The noise added to a weight matrix ``W`` (C_out, ...) at level ``σ`` is ``σ · s · N(0, 1)`` with
the reference scale ``s``:

* ``channel``: each output channel's abs-max, ``max_j |W[c, j]|`` (the "additive Gaussian noise,
  x % of abs-max per column" evaluation model of Büchel et al., NeurIPS 2025; on a crossbar a column
  holds one output channel);
* ``layer``: the layer's abs-max ``max |W|`` (aihwkit's additive weight noise relative to w_max);
* ``weight``: each weight's own magnitude ``|W[c, j]|`` (multiplicative noise, a device whose error
  scales with its conductance).

Noise-aware training (Murray & Edwards 1994; Joshi et al., Nat. Commun. 2020) draws fresh noise for
every training forward and lets the gradient of the noisy forward update the clean weights.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cimkit.config import Config, as_enum, check_range
from cimkit.errors import ConfigError
from cimkit.nn.adapters import standardize_
from cimkit.nn.transform import holds_transform, register_transform
from cimkit.nn.walk import FilterFn, select, set_module
from cimkit.utils import derive_seed

__all__ = [
    "NoiseConfig", "NoisyLayer", "Relative", "noise_scale", "noisy_layers", "perturbed_weights", "raw_weight",
    "remove_weight_noise_", "weight_noise_",
]  # fmt: skip


class Relative(str, Enum):
    """What a relative noise level is relative to (module docstring)."""

    CHANNEL = "channel"
    LAYER = "layer"
    WEIGHT = "weight"


def noise_scale(w: Tensor, relative: Relative | str) -> Tensor:
    """The reference scale ``s`` of ``w`` (module docstring), broadcastable against ``w``."""
    rel = Relative(relative)
    a = w.detach().abs()
    if rel is Relative.WEIGHT:
        return a
    if rel is Relative.LAYER or a.dim() < 2:
        return a.amax().reshape([1] * a.dim())
    return a.reshape(a.shape[0], -1).amax(dim=1).reshape(-1, *([1] * (a.dim() - 1)))  # (C, 1, ...)


def raw_weight(mod: nn.Module) -> Tensor:
    """The stored weight tensor of ``mod`` (the original under a ``parametrize`` parametrization)."""
    par = getattr(mod, "parametrizations", None)
    if par is not None and hasattr(par, "weight"):
        return par.weight.original
    w = mod.weight
    if not isinstance(w, Tensor):
        raise ConfigError(f"{type(mod).__name__} has no weight tensor")
    return w


@contextmanager
@torch.no_grad()
def perturbed_weights(model: nn.Module, level: float, seed: int, relative: Relative | str = Relative.CHANNEL,
                      layers: Sequence[str] | None = None) -> Iterator[nn.Module]:  # fmt: skip
    """Within the block, every weighted layer's weight (or those named in ``layers``) holds
    ``W + level · s · N(0, 1)``, drawn from a generator seeded by ``seed`` and the layer's name;
    the clean weights are restored on exit. Shared weights are perturbed once. Layers with a
    registered adapter (GPT-2's ``Conv1D``) become the standard layer they compute first, in place
    (:func:`cimkit.nn.standardize_`, as every transform does; ``cimkit.undo_`` gives them back), so
    ``s`` is taken per output channel there too; use the model the block yields."""
    check_range("level", level, 0.0)
    model = standardize_(model)
    refs = select(model)
    if layers is not None:
        names = set(layers)
        refs = [r for r in refs if r.name in names]
    saved: list[tuple[Tensor, Tensor]] = []
    seen: set[int] = set()
    try:
        for ref in refs:
            w = raw_weight(ref.module)
            if id(w) in seen or level == 0:
                continue
            seen.add(id(w))
            gen = torch.Generator(device=w.device).manual_seed(derive_seed(int(seed), "weight-noise", ref.name))
            noise = torch.randn(w.shape, generator=gen, device=w.device, dtype=w.dtype)
            saved.append((w, w.detach().clone()))
            w.add_(noise * noise_scale(w, relative) * level)
        yield model
    finally:
        for w, clean in saved:
            w.copy_(clean)


@dataclass
class NoiseConfig(Config):
    """Noise-aware training: every training forward of the selected Linear/Conv layers uses
    ``W + level · s · N(0, 1)`` (``relative`` picks ``s``; module docstring); evaluation is clean.
    ``include`` / ``skip``: layer-name patterns. ``seed`` seeds each layer's noise stream."""

    level: float = 0.01
    relative: Relative = Relative.CHANNEL
    include: list[str] = field(default_factory=lambda: ["*"])
    skip: list[str] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("level", self.level, 0.0, 10.0)
        self.relative = as_enum("relative", self.relative, Relative)
        for name in ("include", "skip"):
            v = getattr(self, name)
            if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
                raise ConfigError(f"{name}: expected a list of layer-name patterns, got {v!r}")


class NoisyLayer:
    """Mixin of layers that train with weight noise (``isinstance(m, NoisyLayer)``); made by
    :func:`weight_noise_`, sharing the layer's parameters; ``unwrap()`` gives the plain layer."""

    float_cls: type[nn.Module]
    noise_config: NoiseConfig
    noise_generator: torch.Generator
    weight: nn.Parameter
    training: bool

    def transformed_weight(self) -> Tensor:
        """The weight of this forward: noisy while training (gradient straight to the clean weight)."""
        w = self.weight
        cfg = self.noise_config
        if not self.training or cfg.level == 0:
            return w
        with torch.no_grad():
            n = torch.randn(w.shape, generator=self.noise_generator, device=w.device, dtype=w.dtype)
            delta = n * noise_scale(w, cfg.relative) * cfg.level
        return w + delta

    def unwrap(self) -> nn.Module:
        f = self.float_cls.__new__(self.float_cls)
        state = {k: (copy.copy(v) if isinstance(v, (dict, set)) else v) for k, v in self.__dict__.items()}
        for k in ("noise_config", "noise_generator"):
            state.pop(k, None)
        f.__dict__.update(state)
        return f


class _LinearNoise:
    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.transformed_weight(), self.bias)  # type: ignore[attr-defined]


class _ConvNoise:
    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.transformed_weight(), self.bias)  # type: ignore[attr-defined]


_CLASSES: dict[type[nn.Module], type] = {}


def _noisy_class(src: type[nn.Module]) -> type:
    if src not in _CLASSES:
        ops = _LinearNoise if issubclass(src, nn.Linear) else _ConvNoise
        _CLASSES[src] = type(f"Noisy{src.__name__}", (NoisyLayer, ops, src), {"float_cls": src, "__module__": __name__})
    return _CLASSES[src]


@register_transform(NoiseConfig, "weight_noise", "train with relative Gaussian weight noise (NoiseConfig)")
def weight_noise_(model: nn.Module, config: NoiseConfig | None = None, filter_fn: FilterFn | None = None) -> nn.Module:
    """Make the selected plain ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` layers train with weight
    noise, in place; returns ``model``. Transformed layers (quantized, analog, ...) raise
    :class:`~cimkit.errors.ConfigError`: train with noise first, then apply those. Layers with a
    registered adapter (GPT-2's ``Conv1D``) first become the standard layer they compute
    (:func:`cimkit.nn.standardize_`); ``cimkit.undo_`` gives them back."""
    cfg = config or NoiseConfig()
    model = standardize_(model)
    refs = select(model, (nn.Linear, nn.Conv1d, nn.Conv2d), include=cfg.include, skip=cfg.skip, filter_fn=filter_fn)
    if not refs:
        raise ConfigError(f"weight_noise_: no Linear/Conv layer matches include={cfg.include} skip={cfg.skip}")
    for ref in refs:
        if holds_transform(ref.module) or callable(getattr(ref.module, "transformed_weight", None)):
            raise ConfigError(f"weight_noise_: layer '{ref.name}' is already transformed ({type(ref.module).__name__}); "
                              f"train with noise before quantizing or mapping it")  # fmt: skip
    for ref in refs:
        mod = ref.module
        new = _noisy_class(type(mod)).__new__(_noisy_class(type(mod)))
        new.__dict__.update({k: (copy.copy(v) if isinstance(v, (dict, set)) else v) for k, v in mod.__dict__.items()})
        new.noise_config = cfg
        new.noise_generator = torch.Generator(device=mod.weight.device).manual_seed(
            derive_seed(cfg.seed, "noise-aware", ref.name))
        if not ref.name:
            return new
        set_module(model, ref.name, new)
    return model


def noisy_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of the layers training with weight noise."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, NoisyLayer)]


def remove_weight_noise_(model: nn.Module) -> nn.Module:
    """Unwrap the layers made by :func:`weight_noise_` (only those), in place; returns ``model``."""
    if isinstance(model, NoisyLayer):
        return model.unwrap()
    for name, m in noisy_layers(model):
        set_module(model, name, m.unwrap())  # type: ignore[attr-defined]
    return model
