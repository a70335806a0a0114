"""Cost handlers: how each layer type describes what it does, registered per type.

A handler turns one module and its captured calls into a :class:`~cimkit.cost.LayerCost` (the
workload: MACs, bits, storage, and for crossbar layers the tile map). It is found on the module's
MRO, so a subclass inherits its base's handler and a transform's dynamically made class (a
quantized ``QuantLinear``, an analog ``AnalogQuantLinear``) is priced by the most specific one;
a handler may call ``nxt()`` to get the record of the next handler on the MRO and refine it (the
analog handler adds the crossbar map to the quantized layer's record)::

    @register_cost(MySpikingLinear)
    def _price(module, call, nxt):
        rec = nxt()                        # the nn.Linear record (MACs, storage)
        rec.macs = int(rec.macs * module.spike_rate)
        return rec

``shape=`` gives the handler's output-shape rule; the capture pass then skips the layer's compute
(it returns zeros of that shape), which keeps the pass fast and free of side effects (no read
noise drawn, no observer updated).

Sites (:func:`register_site`) price work that happens inside a *method* of a container module
rather than in a leaf module: the activation x activation products of attention
(``cimkit.models.gpt.CausalSelfAttention.attend``), which stay digital on CIM hardware.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from cimkit.cost.record import LayerCost
from cimkit.errors import ConfigError

__all__ = [
    "CostHandler", "Site", "handler_chain", "has_handler", "register_cost", "register_site", "run_handlers",
    "site_for",
]  # fmt: skip

Next = Callable[[], LayerCost]
HandlerFn = Callable[[nn.Module, Any, Next], LayerCost]
ShapeFn = Callable[[nn.Module, tuple], tuple]


@dataclass(frozen=True)
class CostHandler:
    cls: type
    fn: HandlerFn
    shape: ShapeFn | None = None


@dataclass(frozen=True)
class Site:
    """A method of a module type whose work is priced on its own: ``fn(module, call) -> LayerCost``
    with ``call.args`` the shapes of the method's tensor arguments."""

    cls: type
    method: str
    fn: Callable[[nn.Module, Any], LayerCost]


_HANDLERS: dict[type, CostHandler] = {}
_SITES: dict[type, Site] = {}


def register_cost(*types: type, shape: ShapeFn | None = None, replace: bool = False) -> Callable[[HandlerFn], HandlerFn]:
    """Decorator: price modules of ``types`` (and their subclasses) with ``fn(module, call, nxt)``.

    ``replace=True`` overrides a handler registered before (e.g. a built-in one); otherwise
    registering a type twice is an error."""
    if not types:
        raise ConfigError("register_cost: name at least one module type")

    def deco(fn: HandlerFn) -> HandlerFn:
        for t in types:
            if t in _HANDLERS and not replace:
                raise ValueError(f"cost handler for {t.__name__} is already registered (pass replace=True)")
            _HANDLERS[t] = CostHandler(t, fn, shape)
        return fn

    return deco


def register_site(cls: type, method: str, *, replace: bool = False) -> Callable[[Callable], Callable]:
    """Decorator: price calls of ``cls.<method>`` with ``fn(module, call) -> LayerCost``."""

    def deco(fn: Callable[[nn.Module, Any], LayerCost]) -> Callable[[nn.Module, Any], LayerCost]:
        if cls in _SITES and not replace:
            raise ValueError(f"cost site for {cls.__name__} is already registered (pass replace=True)")
        if not callable(getattr(cls, method, None)):
            raise ConfigError(f"register_site: {cls.__name__} has no method '{method}'")
        _SITES[cls] = Site(cls, method, fn)
        return fn

    return deco


def handler_chain(module: nn.Module) -> list[CostHandler]:
    """The handlers on ``type(module)``'s MRO, most specific first."""
    return [_HANDLERS[c] for c in type(module).__mro__ if c in _HANDLERS]


def has_handler(module: nn.Module) -> bool:
    return any(c in _HANDLERS for c in type(module).__mro__)


def site_for(module: nn.Module) -> Site | None:
    for c in type(module).__mro__:
        if c in _SITES:
            return _SITES[c]
    return None


def run_handlers(module: nn.Module, call: Any, chain: list[CostHandler] | None = None) -> LayerCost:
    """The record of ``module`` from its handler chain (each may refine the next one's record)."""
    chain = handler_chain(module) if chain is None else chain
    if not chain:
        raise ConfigError(f"no cost handler for {type(module).__name__}; register one with cimkit.cost.register_cost")
    head, rest = chain[0], chain[1:]
    return head.fn(module, call, lambda: run_handlers(module, call, rest))
