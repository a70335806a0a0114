"""The one shape-capturing pass: which modules a model calls, with which shapes, per inference.

``capture(model, example_input)`` runs one forward pass of ``example_input`` (any batch size; counts
are divided by it) in eval mode without gradients and records, for every *priced* module, the
shapes of the tensors it was called with and returned. A module is priced when a cost handler is
registered for a class on its MRO (:mod:`cimkit.cost.handlers`), or when it is a leaf (no children:
ReLU, pooling, ...); the children of a priced module are not priced again (a quantized layer's
quantizers belong to it). Methods registered as sites (attention's ``attend``) are captured too.

Priced modules whose handler has an output-shape rule (Linear, Conv and everything made from them)
are not computed: the pass returns zeros of the right shape in their place, so it costs little
more than the elementwise work and changes no state (no read noise drawn on a programmed analog
chip, no activation observer updated). Training/eval modes are restored afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from cimkit.cost.handlers import CostHandler, Site, handler_chain, site_for
from cimkit.errors import ConfigError
from cimkit.nn.adapters import standard_view

__all__ = ["Call", "Capture", "Captured", "capture"]


@dataclass(frozen=True)
class Call:
    """One call: the shapes of its tensor arguments and of its (first tensor) output."""

    args: tuple[tuple[int, ...], ...]
    out: tuple[int, ...]


@dataclass
class Captured:
    """A priced module (or site) and its calls during the pass; ``batch`` divides every count."""

    name: str
    module: nn.Module
    chain: list[CostHandler]
    batch: int
    calls: list[Call] = field(default_factory=list)
    site: Site | None = None

    def per_inference(self, count: float) -> int:
        """``count`` over the whole batch -> per inference (rounded)."""
        return round(count / max(self.batch, 1))


@dataclass
class Capture:
    """What the pass saw: priced modules and sites in call order, the batch, the model's own
    parameters and floating-point buffers that no priced module holds (``other_params``,
    ``other_buffers``: value counts), and the input/output elements per inference."""

    layers: list[Captured]
    batch: int
    other_params: int
    other_buffers: int
    input_elements: int
    output_elements: int
    input_dtype: torch.dtype


def _shapes(items: Any) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(s) for s in t.shape) for t in items if isinstance(t, Tensor))


def _first_tensor(out: Any) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            t = _first_tensor(o)
            if t is not None:
                return t
    if isinstance(out, dict):
        for o in out.values():
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def _priced(model: nn.Module) -> tuple[list[tuple[str, nn.Module, list[CostHandler]]], list[tuple[str, nn.Module, Site]]]:
    """Priced modules (no priced ancestor) and site-bearing modules, in ``named_modules`` order."""
    priced: list[tuple[str, nn.Module, list[CostHandler]]] = []
    sites: list[tuple[str, nn.Module, Site]] = []
    covered: list[str] = []
    for name, mod in model.named_modules():
        if any(name == c or name.startswith(c + ".") for c in covered):
            continue
        site = site_for(mod)
        if site is not None:
            sites.append((name, mod, site))
        chain = handler_chain(mod)
        leaf = next(iter(mod.children()), None) is None
        if chain or (leaf and name != "" and site is None):
            priced.append((name, mod, chain))
            covered.append(name)
    return priced, sites


def _stub(entry: Captured, shape_fn: Any) -> Any:
    """A forward that records its call and returns zeros of the handler's output shape."""
    mod = entry.module

    def forward(*args: Any, **kwargs: Any) -> Tensor:
        x = next((a for a in args if isinstance(a, Tensor)), None)
        if x is None:
            raise ConfigError(f"cost: layer '{entry.name}' was called without a tensor argument")
        out_shape = tuple(int(s) for s in shape_fn(mod, args))
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        entry.calls.append(Call(_shapes(args), out_shape))
        return torch.zeros(out_shape, dtype=dtype, device=x.device)

    return forward


@torch.no_grad()
def capture(model: nn.Module, example_input: Any) -> Capture:
    """Run the shape-capturing pass (module docstring). ``example_input``: a tensor (or a tuple of
    positional arguments) with a leading batch dimension."""
    args = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    first = next((a for a in args if isinstance(a, Tensor)), None)
    if first is None:
        raise ConfigError("cost: example_input must be a tensor (or a tuple holding one) with a batch dimension")
    batch = int(first.shape[0]) if first.dim() > 0 else 1
    if batch < 1:
        raise ConfigError("cost: example_input has an empty batch; give at least one example")
    model = standard_view(model)  # GPT-2's Conv1D priced as the Linear it computes
    dev = next((p.device for p in model.parameters()), first.device)
    args = tuple(a.to(dev) if isinstance(a, Tensor) else a for a in args)

    priced, sites = _priced(model)
    entries = [Captured(name, mod, chain, batch) for name, mod, chain in priced]
    modes = [(m, m.training) for m in model.modules()]
    hooks: list[Any] = []
    stubbed: list[nn.Module] = []
    wrapped: list[tuple[nn.Module, str]] = []
    site_entries: list[Captured] = []
    try:
        model.eval()
        for e in entries:
            shape_fn = next((h.shape for h in e.chain if h.shape is not None), None)
            if shape_fn is not None:
                e.module.forward = _stub(e, shape_fn)  # type: ignore[method-assign]
                stubbed.append(e.module)
            else:
                hooks.append(e.module.register_forward_hook(
                    lambda m, i, o, e=e: e.calls.append(Call(_shapes(i), _out_shape(o)))))  # fmt: skip
        for name, mod, site in sites:
            se = Captured(f"{name}.{site.method}" if name else site.method, mod, [], batch, site=site)
            site_entries.append(se)
            orig = getattr(mod, site.method)

            def wrapper(*a: Any, _orig: Any = orig, _se: Captured = se, **k: Any) -> Any:
                out = _orig(*a, **k)
                _se.calls.append(Call(_shapes(a), _out_shape(out)))
                return out

            setattr(mod, site.method, wrapper)
            wrapped.append((mod, site.method))
        out = model(*args)
    finally:
        for h in hooks:
            h.remove()
        for m in stubbed:
            m.__dict__.pop("forward", None)
        for m, meth in wrapped:
            m.__dict__.pop(meth, None)
        for m, was in modes:
            m.training = was
    layers = _merge(entries, site_entries)
    covered = {id(p) for e in entries for p in _own_values(e.module)}
    other_p = sum(p.numel() for p in model.parameters() if id(p) not in covered)
    other_b = sum(b.numel() for b in model.buffers() if b.is_floating_point() and id(b) not in covered)
    out_t = _first_tensor(out)
    out_elems = int(out_t.numel()) // batch if out_t is not None else 0
    in_elems = int(first.numel()) // batch
    return Capture(layers, batch, int(other_p), int(other_b), in_elems, out_elems, first.dtype)


def _out_shape(o: Any) -> tuple[int, ...]:
    t = _first_tensor(o)
    return tuple(int(s) for s in t.shape) if t is not None else ()


def _own_values(mod: nn.Module) -> list[Tensor]:
    return [*mod.parameters(), *mod.buffers()]


def _merge(entries: list[Captured], sites: list[Captured]) -> list[Captured]:
    """Priced modules in ``named_modules`` order, each site right after the priced modules inside
    its container (the order of the table's rows; it changes no figure)."""
    out = list(entries)
    for s in sites:
        prefix = s.name.rsplit(".", 1)[0] if "." in s.name else ""
        idx = [i for i, e in enumerate(out) if e.name.startswith(prefix + ".") or e.name == prefix or not prefix]
        out.insert(idx[-1] + 1 if idx else len(out), s)
    return out
