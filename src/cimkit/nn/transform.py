"""Transforms: one verb shape for every concern, dispatched on the config's type.

``apply_(model, config, filter_fn=None)`` looks up the handler registered for ``type(config)``
(``QuantConfig`` -> quantization, ``AnalogConfig`` -> crossbar mapping, ...) and applies it in
place, returning the model (or the new module when ``model`` itself was a single layer). A concern
registers its handler with :func:`register_transform`; a third-party package does the same.

Transformed layers follow one protocol so that transforms stack and undo: a transformed layer
has ``unwrap() -> nn.Module``, giving the layer one level down with the same parameters (a
quantized layer gives its float layer; an analog layer gives the digital layer it computes,
quantized or not). :func:`undo_` unwraps every layer of a model down to plain PyTorch modules, so
``undo_(apply_(apply_(m, QuantConfig()), AnalogConfig()))`` has ``m``'s ``state_dict`` again.

Weight masks (:mod:`cimkit.nn.weights`: ``torch.nn.utils.parametrize`` parametrizations whose
module has ``is_weight_mask``) are not transformed layers; :func:`undo_` removes them too
(:func:`remove_weight_masks_`), restoring the unmasked weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.nn.utils import parametrize

from cimkit.errors import ConfigError
from cimkit.nn.walk import FilterFn, set_module
from cimkit.plugins import load_plugins
from cimkit.registry import Registry

__all__ = [
    "TRANSFORMS", "Transformed", "apply_", "holds_transform", "is_transformed", "own_parametrized_class_", "register_transform",
    "remove_weight_masks_", "undo_", "unwrap_all",
]  # fmt: skip

Handler = Callable[..., nn.Module]


@runtime_checkable
class Transformed(Protocol):
    """A layer made by a transform; ``unwrap()`` returns the layer it was made from."""

    def unwrap(self) -> nn.Module: ...


class _Entry:
    def __init__(self, config_cls: type, handler: Handler, name: str) -> None:
        self.config_cls, self.handler, self.name = config_cls, handler, name


# name -> handler entry; the name is the config's short name ("quantize", "analog", ...)
TRANSFORMS: Registry[_Entry] = Registry("transform", loader=load_plugins)


def register_transform(config_cls: type, name: str, description: str = "") -> Callable[[Handler], Handler]:
    """Decorator: ``@register_transform(QuantConfig, "quantize", "...")`` on
    ``handler(model, config, filter_fn=None) -> model``."""

    def deco(fn: Handler) -> Handler:
        TRANSFORMS.add(name, _Entry(config_cls, fn, name), description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return deco


def _handler_for(config: Any) -> _Entry:
    for cls in type(config).__mro__:
        for name in TRANSFORMS:
            e = TRANSFORMS.get(name)
            if e.config_cls is cls:
                return e
    if load_plugins():  # a concern not imported yet may register it
        return _handler_for(config)
    known = ", ".join(TRANSFORMS.get(n).config_cls.__name__ for n in TRANSFORMS)
    raise ConfigError(f"apply_: no transform is registered for {type(config).__name__}; known configs: {known}")


def apply_(model: nn.Module, config: Any, filter_fn: FilterFn | None = None) -> nn.Module:
    """Apply the transform registered for ``type(config)`` to ``model`` in place; returns it."""
    return _handler_for(config).handler(model, config, filter_fn=filter_fn)


def is_transformed(module: nn.Module) -> bool:
    """Whether ``module`` is a layer made by a transform (it has ``unwrap``)."""
    return callable(getattr(module, "unwrap", None)) and isinstance(module, nn.Module)


def holds_transform(module: nn.Module) -> bool:
    """Whether a concern has transformed ``module`` (quantized, on crossbars, ...): :func:`is_transformed`
    less an adapter's standard layer (e.g. the ``nn.Linear`` standing in for GPT-2's ``Conv1D``), which
    every concern treats as the plain layer it is.

    An adapter's class declares ``adapter_layer = True`` beside its ``unwrap``. What counts is the
    class whose ``unwrap`` the layer runs: a concern's subclass of an adapter (a quantized
    ``TransposedLinear``) defines an ``unwrap`` of its own, so it is transformed."""
    if not is_transformed(module):
        return False
    owner = next((c for c in type(module).__mro__ if "unwrap" in c.__dict__), None)
    return owner is None or not owner.__dict__.get("adapter_layer", False)


def unwrap_all(module: nn.Module) -> nn.Module:
    """Unwrap ``module`` until it is a plain layer (same parameters)."""
    seen = 0
    while is_transformed(module):
        module = module.unwrap()  # type: ignore[attr-defined]
        seen += 1
        if seen > 64:  # pragma: no cover - a broken unwrap() returning itself
            raise ConfigError(f"undo_: {type(module).__name__}.unwrap() does not terminate")
    return module


def own_parametrized_class_(module: nn.Module) -> nn.Module:
    """Give a parametrized ``module`` a class of its own (a copy of its ``Parametrized*`` class).

    ``torch.nn.utils.parametrize`` keeps a parametrization's property on the module's class, and a
    deep copy of a parametrized module shares that class; adding or removing a parametrization on
    the copy would then change the original too. Call this before either."""
    if parametrize.is_parametrized(module):
        cls = type(module)
        ns = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
        module.__class__ = type(cls.__name__, cls.__bases__, ns)
    return module


def remove_weight_masks_(model: nn.Module, bake: bool = False) -> nn.Module:
    """Remove every weight-mask parametrization (a parametrization module with ``is_weight_mask``)
    from ``model``'s modules, in place; returns ``model``.

    ``bake=False`` restores the unmasked tensor (``leave_parametrized=False``); ``bake=True`` keeps
    the masked values (the zeros stay, the parametrization goes). Other parametrizations stay."""
    for mod in model.modules():
        plists = getattr(mod, "parametrizations", None)
        if plists is None or not parametrize.is_parametrized(mod):
            continue
        for pname in list(plists.keys()):
            plist = plists[pname]
            idx = [i for i, p in enumerate(plist) if getattr(p, "is_weight_mask", False)]
            if not idx:
                continue
            own_parametrized_class_(mod)
            if len(idx) == len(plist):
                parametrize.remove_parametrizations(mod, pname, leave_parametrized=bake)
                continue
            if bake:  # fold the masks into the stored tensor, then drop them
                mask = None
                for i in idx:
                    mask = plist[i].mask if mask is None else mask * plist[i].mask
                with torch.no_grad():
                    plist.original.mul_(mask.to(plist.original.dtype))
            for i in reversed(idx):
                del plist[i]
    return model


def undo_(model: nn.Module) -> nn.Module:
    """Replace every transformed layer of ``model`` by the plain layer it was made from and remove
    every weight mask (the unmasked weights come back), in place; returns ``model`` (or the plain
    layer when ``model`` itself was transformed)."""
    if is_transformed(model):
        return remove_weight_masks_(unwrap_all(model))
    for name, mod in list(model.named_modules()):
        if name and is_transformed(mod):
            try:
                model.get_submodule(name)
            except AttributeError:  # inside a layer replaced already
                continue
            set_module(model, name, unwrap_all(mod))
    return remove_weight_masks_(model)
