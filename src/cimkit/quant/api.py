"""The one verb and its companions: ``quantize_``, ``calibrate``, ``freeze_``, ``dequantize_``.

::

    fold_bn_(model)                                  # optional: Conv+BN -> Conv
    quantize_(model, QuantConfig(w_bits=4, a_bits=4, overrides={"@first": {"w_bits": 8}}))
    calibrate(model, batches)                        # PTQ: observe ranges on a few batches
    fit(model, loader, train_cfg)                    # QAT: fine-tune the fake-quantized model
    freeze_(model)                                   # freeze weight grids (export reads them)
    dequantize_(model)                               # back to the float layers

``quantize_`` is also reachable as ``cimkit.apply_(model, QuantConfig(...))`` (the transform
registered for :class:`QuantConfig`), and ``cimkit.undo_`` undoes it like every other transform.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from cimkit.errors import ConfigError, DataError
from cimkit.nn.adapters import standardize_
from cimkit.nn.transform import register_transform
from cimkit.nn.walk import FilterFn, select, set_module
from cimkit.quant.config import QuantConfig, as_quant_config
from cimkit.quant.layers import FLOAT_TYPES, QuantLayer
from cimkit.quant.quantizers import ActQuantizer

log = logging.getLogger("cimkit.quant")

_set_module = set_module  # the shared one (cimkit.nn.walk)


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every ``nn.Linear``/``nn.Conv1d``/``nn.Conv2d`` (subclasses included:
    quantized, parametrized or analog layers are found too), in module registration order
    (``named_modules``), which is the forward order for Sequential-style models."""
    return [(r.name, r.module) for r in select(model, FLOAT_TYPES)]


def quantize_(
    model: nn.Module,
    config: QuantConfig | str | dict[str, Any],
    filter_fn: FilterFn | None = None,
) -> nn.Module:
    """Swap the quantizable layers of ``model`` for quantized ones, in place; returns ``model``.

    ``config`` is a :class:`QuantConfig`, a preset name (``cimkit.quant.QUANT_PRESETS``) or a dict.
    Each layer gets ``config.for_layer(name)`` (overrides applied; ``skip`` patterns stay float).
    ``filter_fn(name, module) -> bool`` can further exclude layers. Layers that are already
    quantized are re-quantized with the new config (their calibration is reset). If ``model`` is
    itself a single Linear/Conv layer, the quantized layer is returned (use the return value).
    Activation quantizers initialize lazily; call :func:`calibrate` for proper ranges.
    """
    cfg = as_quant_config(config)
    model = standardize_(model)  # e.g. GPT-2's Conv1D -> an equivalent nn.Linear (undone by undo_)
    layers = select(model, FLOAT_TYPES)
    if not layers:
        raise ConfigError("quantize_: the model has no nn.Linear / nn.Conv1d / nn.Conv2d layers")
    todo = [(ref, cfg.for_layer(ref.name, index=ref.index, count=ref.count)) for ref in layers]
    if cfg.embeddings:
        todo += [(ref, cfg.for_layer(ref.name)) for ref in select(model, nn.Embedding)]
    for ref, lc in todo:
        name, mod = ref.name, ref.module
        if filter_fn is not None and not filter_fn(name, mod):
            continue
        if lc is None:
            continue
        if isinstance(mod, QuantLayer) and type(mod).unwrap is not QuantLayer.unwrap:
            raise ConfigError(
                f"quantize_: layer '{name}' is already mapped by another transform ({type(mod).__name__}); "
                f"quantize before mapping onto crossbars"
            )
        if not isinstance(mod, QuantLayer) and callable(getattr(mod, "transformed_weight", None)):
            raise ConfigError(
                f"quantize_: layer '{name}' ({type(mod).__name__}) already computes with a transformed weight of "
                f"its own (e.g. BitLinear's ternary weights); leave it out with skip = ['{name}'] or undo_ it first"
            )
        if not isinstance(mod, QuantLayer) and _own_forward(mod):  # e.g. already on crossbars
            raise ConfigError(
                f"quantize_: layer '{name}' ({type(mod).__name__}) has a forward of its own (e.g. it is already on "
                f"crossbars), which the quantized layer would replace; quantize before mapping onto crossbars, "
                f"leave it out with skip = ['{name}'], or undo_ it first"
            )
        base = mod.to_float() if isinstance(mod, QuantLayer) else mod
        _check_layer(name, base, lc)
        new = QuantLayer.from_float(base, lc)
        if name == "":
            return new  # type: ignore[return-value]
        set_module(model, name, new)  # type: ignore[arg-type]
    return model


def _own_forward(mod: nn.Module) -> bool:
    """Whether ``mod`` computes with a forward of its own (an analog layer's crossbars, say), which
    the quantized layer's forward would replace: the quantizers wrap only the float layers' ops."""
    base = next((t for t in (*FLOAT_TYPES, nn.Embedding) if isinstance(mod, t)), None)
    return base is not None and type(mod).forward is not base.forward


def _check_layer(name: str, mod: nn.Module, cfg: QuantConfig) -> None:
    """A layer quantization can handle: weights with at least one element, all finite; a group
    size that divides its fan-in."""
    w = mod.weight
    if w.numel() == 0:
        raise ConfigError(
            f"quantize_: layer '{name or type(mod).__name__}' has an empty weight {tuple(w.shape)}; "
            f"a layer with no inputs or outputs cannot be quantized (skip it with skip = ['{name}'])"
        )
    if not bool(torch.isfinite(w).all()):
        raise ConfigError(f"quantize_: layer '{name or type(mod).__name__}' has NaN or infinite weights")
    fan_in = int(w[0].numel())
    if cfg.group_size and fan_in % cfg.group_size:
        raise ConfigError(
            f"group_size: {cfg.group_size} does not divide the fan-in {fan_in} of layer '{name or type(mod).__name__}'; "
            f"allowed: a divisor of every quantized layer's fan-in (or override it for that layer, or skip it)"
        )


@register_transform(QuantConfig, "quantize", "fake-quantize weights and input activations (QuantConfig)")
def _quantize_transform(model: nn.Module, config: QuantConfig, filter_fn: FilterFn | None = None) -> nn.Module:
    return quantize_(model, config, filter_fn)


def dequantize_(model: nn.Module) -> nn.Module:
    """Swap every quantized layer back to its float layer (same parameters), in place; returns
    ``model`` (or the float layer if ``model`` itself was a quantized layer)."""
    if isinstance(model, QuantLayer):
        return model.to_float()
    for name, mod in list(model.named_modules()):
        if isinstance(mod, QuantLayer):
            set_module(model, name, mod.to_float())
    return model


def quantized_layers(model: nn.Module) -> list[tuple[str, QuantLayer]]:
    """``(name, layer)`` of the cimkit quantized layers of ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLayer)]


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _inputs(batch: Any, caller: str = "calibrate") -> Any:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise DataError(f"{caller}: a batch must be a tensor or an (x, y) pair, got {type(batch).__name__}")


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[Any], *, max_batches: int | None = None, seed: int = 0) -> nn.Module:
    """Run ``batches`` (tensors or ``(x, y)`` pairs) through ``model`` in eval mode while every
    activation quantizer records its range, then fix the grids. Returns ``model``."""
    quants = [m for m in model.modules() if isinstance(m, ActQuantizer)]
    if not quants:
        return model
    for i, q in enumerate(quants):
        q.start_observing(seed=seed + i)
    was_training = model.training
    model.eval()
    dev = _device_of(model)
    n = 0
    try:
        for b in batches:
            if max_batches is not None and n >= max_batches:
                break
            model(_inputs(b).to(dev))
            n += 1
    finally:
        seen = [q.stop_observing() for q in quants]
        model.train(was_training)
    if n == 0:
        raise DataError("calibrate: no batches were given")
    if not all(seen):
        log.warning("calibrate: %d activation quantizer(s) saw no data (unused layers?)", seen.count(False))
    return model


@torch.no_grad()
def freeze_(model: nn.Module) -> nn.Module:
    """Freeze every weight quantizer's grid at its current value (after PTQ/QAT). The forward is
    unchanged; later weight updates keep the frozen scales. Returns ``model``."""
    for _, m in quantized_layers(model):
        m.w_quant.freeze(m.weight)
    return model


convert_ = freeze_  # the former name (``analog.convert`` swaps modules; this one freezes grids)


def layer_bits(model: nn.Module) -> dict[str, tuple[int, int | None]]:
    """``{name: (w_bits, a_bits)}`` of the quantized layers (``a_bits`` None = float inputs)."""
    return {n: (m.w_bits, m.a_bits) for n, m in quantized_layers(model)}
