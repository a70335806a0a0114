"""Layer adapters: a layer that computes what a standard layer computes, but stores its weight
differently, becomes that standard layer (reversibly) before a transform sees it.

GPT-2 (Hugging Face ``transformers``) computes its projections with ``transformers.pytorch_utils.Conv1D``:
a weight of shape ``(in, out)`` and ``y = x W + b``, i.e. an ``nn.Linear`` with the weight
transposed. Rather than teaching every concern (quantizers, crossbar tiling, masks, cost passes) a
second weight layout, :func:`standardize_` swaps such a layer for a :class:`TransposedLinear` (an
``nn.Linear`` holding ``Wᵀ``) whose ``unwrap()`` gives the original layer back, so
``cimkit.undo_`` restores the model. ``quantize_`` and ``analog.convert_`` call :func:`standardize_`
first; so can any pass that walks ``nn.Linear`` layers (a cost model).

Adapters are registered by the *qualified class name* of the layer type (no import of the
library that defines it is needed): ``register_adapter("transformers.pytorch_utils.Conv1D",
TransposedLinear.from_transposed)``. A concern's plugin module registers its adapters.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from cimkit.errors import ConfigError
from cimkit.nn.transform import is_transformed
from cimkit.nn.walk import set_module
from cimkit.plugins import load_plugins
from cimkit.registry import Registry

__all__ = ["ADAPTERS", "TransposedLinear", "adapter_for", "has_unadapted", "register_adapter", "standard_view",
           "standardize_"]  # fmt: skip

Adapter = Callable[[nn.Module], nn.Module]

# qualified class name ("package.module.Class") -> adapter(module) -> standard layer with unwrap()
ADAPTERS: Registry[Adapter] = Registry("layer adapter")


def register_adapter(qualname: str, adapter: Adapter, description: str = "") -> None:
    """Make layers of class ``qualname`` (``module.Class``, subclasses included) standard through ``adapter``."""
    ADAPTERS.add(qualname, adapter, description)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def adapter_for(module: nn.Module) -> Adapter | None:
    """The adapter registered for ``type(module)`` or one of its base classes, or None."""
    if not len(ADAPTERS):
        return None
    for cls in type(module).__mro__:
        q = _qualname(cls)
        if q in ADAPTERS:
            return ADAPTERS.get(q)
    return None


def has_unadapted(model: nn.Module) -> bool:
    """Whether ``model`` holds a layer with a registered adapter that :func:`standardize_` has not
    swapped yet (e.g. GPT-2's ``Conv1D``)."""
    load_plugins()
    return bool(len(ADAPTERS)) and any(adapter_for(m) is not None and not is_transformed(m) for m in model.modules())


def standard_view(model: nn.Module) -> nn.Module:
    """``model`` itself when no layer of it has a registered adapter, else a standardized deep copy
    (``model`` is left as it is): what a read-only pass (a cost or shape pass) should walk so an
    adapted layer (GPT-2's ``Conv1D``) is seen as the standard layer it computes, under the same name."""
    if not has_unadapted(model):
        return model
    return standardize_(copy.deepcopy(model))


def standardize_(model: nn.Module) -> nn.Module:
    """Swap every layer with a registered adapter for its standard equivalent, in place; returns
    ``model`` (or the new layer when ``model`` itself is such a layer). Transformed layers are left
    alone. The outputs are unchanged; ``cimkit.undo_`` swaps the original layers back."""
    load_plugins()  # adapters are registered by plugin modules
    if not len(ADAPTERS):
        return model
    root = adapter_for(model)
    if root is not None and not is_transformed(model):
        return root(model)
    for name, mod in list(model.named_modules()):
        if not name or is_transformed(mod):
            continue
        fn = adapter_for(mod)
        if fn is None:
            continue
        try:
            model.get_submodule(name)
        except AttributeError:  # inside a layer replaced already
            continue
        set_module(model, name, fn(mod))
    return model


class TransposedLinear(nn.Linear):
    """``nn.Linear`` made from a layer whose weight is stored ``(in, out)`` and that computes
    ``y = x W + b`` (GPT-2's ``Conv1D``): ``weight`` here is ``Wᵀ`` (``(out, in)``, a contiguous copy
    made once), the bias is the source's own ``Parameter``. :meth:`unwrap` writes the current
    weight back into the source layer's own weight ``Parameter`` (same object, layout ``(in, out)``)
    and returns that layer, with everything else it had (attributes, hooks) untouched.

    While converted, the source's weight holds an empty tensor (no second copy of the weights).
    The ``state_dict`` holds ``weight`` as ``(out, in)``. When the layer's sizes change (pruned
    channels removed), :meth:`unwrap` also writes them into the source's size attributes named by
    ``size_attrs`` (``(out, in)``, e.g. ``("nf", "nx")`` for GPT-2's ``Conv1D``; see :meth:`adapter`).
    """

    _source: nn.Module
    size_attrs: tuple[str, str] | None = None
    adapter_layer = True  # a plain layer to every concern (cimkit.nn.transform.holds_transform)

    @classmethod
    def adapter(cls, out_attr: str, in_attr: str) -> Adapter:
        """An adapter for a layer that keeps its output/input sizes in attributes ``out_attr`` /
        ``in_attr`` (GPT-2's ``Conv1D``: ``nf`` / ``nx``), so that a shrunken layer unwraps consistently."""

        def adapt(mod: nn.Module) -> TransposedLinear:
            lin = cls.from_transposed(mod)
            lin.__dict__["size_attrs"] = (out_attr, in_attr)
            return lin

        return adapt

    @classmethod
    def from_transposed(cls, mod: nn.Module) -> TransposedLinear:
        w = getattr(mod, "weight", None)
        if not isinstance(w, nn.Parameter) or w.dim() != 2:
            raise ConfigError(f"{type(mod).__name__}: expected a 2-D weight parameter (in, out) to adapt as a Linear")
        b = getattr(mod, "bias", None)
        lin = cls.__new__(cls)
        nn.Module.__init__(lin)
        lin.in_features, lin.out_features = int(w.shape[0]), int(w.shape[1])
        lin.weight = nn.Parameter(w.detach().t().contiguous(), requires_grad=w.requires_grad)  # (out, in)
        lin.bias = b if isinstance(b, nn.Parameter) else None
        lin.train(mod.training)
        lin.__dict__["_source"] = mod  # a plain attribute, not a submodule
        with torch.no_grad():
            w.data = torch.empty(0, dtype=w.dtype, device=w.device)
        return lin

    def unwrap(self) -> nn.Module:
        """The source layer, holding this layer's current weight in its own layout."""
        src = self._source
        with torch.no_grad():
            src.weight.data = self.weight.detach().t().contiguous()  # (in, out)
        src.weight.requires_grad_(self.weight.requires_grad)
        if self.bias is not None:
            src.bias = self.bias
        if self.size_attrs is not None:
            for attr, n in zip(self.size_attrs, (self.out_features, self.in_features)):
                if hasattr(src, attr):
                    setattr(src, attr, int(n))
        return src.train(self.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, from {type(self._source).__name__} (weight stored transposed there)"
