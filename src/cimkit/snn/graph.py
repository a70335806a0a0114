"""The traced graph of a network (``torch.fx``): where its activations and max-pools are, and
which layers consume a node's output.

ANN→SNN conversion must replace every ReLU — ``nn.ReLU`` modules and functional ``F.relu`` calls
(ResNet blocks) alike — by its own neuron layer (a neuron has state, so a module called twice
needs two neurons). :func:`modularize` traces the model with :class:`LeafTracer` and, when some
activation is functional or a module is called more than once, returns a ``GraphModule`` in which
each such call is a fresh submodule (``snn_act<i>``, ``snn_pool<i>``); otherwise the model is
returned unchanged (same class, same names). Tracing treats every module without children and
every Linear/Conv (also quantized or analog ones) as a leaf.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from cimkit.errors import ConfigError
from cimkit.nn.walk import weighted_types
from cimkit.snn.neurons import Temporal
from cimkit.snn.pooling import SpikingMaxPool2d
from cimkit.snn.qcfs import QCFS

__all__ = ["LeafTracer", "Site", "consumers", "is_add", "modularize", "passthrough", "trace"]

_RELU_FNS = {F.relu, torch.relu}
_MAXPOOL_FNS = {F.max_pool2d, torch.max_pool2d}
_UNSUPPORTED_MODS = (nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Hardtanh, nn.Softmax,
                     nn.Mish, nn.Hardswish, nn.PReLU, nn.MaxPool1d, nn.MaxPool3d, nn.LSTM, nn.GRU, nn.MultiheadAttention)  # fmt: skip
_UNSUPPORTED_FNS = {F.gelu, F.silu, torch.sigmoid, torch.tanh, F.softmax, torch.softmax, F.leaky_relu, F.elu,
                    F.hardtanh, F.relu6, F.max_pool1d, F.mish, torch.matmul, torch.bmm}  # fmt: skip
# unary ops that commute with a positive per-layer scale (the spike amplitude passes through them)
_PASS_MODS = (nn.Flatten, nn.Dropout, nn.Identity, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
              nn.AdaptiveAvgPool2d, nn.MaxPool2d, nn.Unflatten)  # fmt: skip
_PASS_FNS = {torch.flatten, F.avg_pool2d, F.adaptive_avg_pool2d, F.avg_pool1d, F.adaptive_avg_pool1d, F.dropout}
_PASS_METHODS = {"flatten", "view", "reshape", "contiguous"}


class LeafTracer(fx.Tracer):
    """Leaves: torch's own leaves, every module without children, Linear/Conv layers (even
    quantized or analog ones) and temporal modules (neurons)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, (*weighted_types(), Temporal, QCFS)) or not list(m.children()):
            return True
        return super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """``model`` traced with :class:`LeafTracer` (ConfigError naming the reason if it cannot be)."""
    try:
        graph = LeafTracer().trace(model)
    except Exception as e:  # data-dependent control flow, unsupported ops, ...
        raise ConfigError(f"snn: the model cannot be traced with torch.fx ({type(e).__name__}: {e}); "
                          f"spiking conversion needs a traceable forward") from None  # fmt: skip
    return fx.GraphModule(model, graph)


@dataclass
class Site:
    """An activation or max-pool call: its graph node and the module path it runs as."""

    kind: str  # "relu" | "qcfs" | "maxpool"
    node: fx.Node
    target: str


def _kind(node: fx.Node, mods: dict[str, nn.Module]) -> str | None:
    if node.op == "call_module":
        m = mods[str(node.target)]
        if isinstance(m, QCFS):
            return "qcfs"
        if type(m) is nn.ReLU:
            return "relu"
        if type(m) is nn.MaxPool2d:
            return "maxpool"
        if isinstance(m, _UNSUPPORTED_MODS):
            raise ConfigError(f"snn: layer '{node.target}' ({type(m).__name__}) has no spiking equivalent; "
                              f"supported activations: ReLU, QCFS (max pooling: MaxPool2d)")  # fmt: skip
    elif node.op == "call_function":
        if node.target in _RELU_FNS:
            return "relu"
        if node.target in _MAXPOOL_FNS:
            return "maxpool"
        if node.target in _UNSUPPORTED_FNS:
            raise ConfigError(f"snn: the call {getattr(node.target, '__name__', node.target)} in the forward has no "
                              f"spiking equivalent; supported activations: ReLU, QCFS")  # fmt: skip
    elif node.op == "call_method" and node.target in ("relu", "relu_"):
        return "relu"
    return None


def _maxpool_module(node: fx.Node) -> nn.MaxPool2d:
    args = list(node.args[1:]) + [None] * 5
    kw = dict(node.kwargs)
    if kw.get("ceil_mode") or kw.get("return_indices") or args[3] or args[4]:
        raise ConfigError("snn: max pooling with ceil_mode/return_indices is not supported for spike trains")
    k = kw.get("kernel_size", args[0])
    s = kw.get("stride", args[1])
    return nn.MaxPool2d(k, s if s else None, kw.get("padding", args[2] or 0), kw.get("dilation", 1))


def modularize(model: nn.Module) -> tuple[nn.Module, list[Site], fx.GraphModule]:
    """``(net, sites, gm)``: ``net`` is ``model`` itself when every activation / max-pool is a
    module called once, else a ``GraphModule`` where each is its own submodule; ``sites`` lists
    them in graph order; ``gm`` is the traced graph of ``net``."""
    gm = trace(model)
    mods = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[str(n.target)] = calls.get(str(n.target), 0) + 1
    found = [(n, k) for n in gm.graph.nodes if (k := _kind(n, mods)) is not None]
    rewrite = any(n.op != "call_module" or calls[str(n.target)] > 1 for n, _ in found)
    if not rewrite:
        return model, [Site(k, n, str(n.target)) for n, k in found], gm
    sites = []
    for i, (n, k) in enumerate(found):
        if n.op == "call_module" and calls[str(n.target)] == 1:
            sites.append(Site(k, n, str(n.target)))
            continue
        name = f"snn_{'pool' if k == 'maxpool' else 'act'}{i}"
        if n.op == "call_module":
            new: nn.Module = type(mods[str(n.target)])() if k == "relu" else copy.deepcopy(mods[str(n.target)])
        else:
            new = nn.ReLU() if k == "relu" else _maxpool_module(n)
        gm.add_submodule(name, new)
        with gm.graph.inserting_after(n):
            rep = gm.graph.call_module(name, (n.args[0],))
        n.replace_all_uses_with(rep)
        gm.graph.erase_node(n)
        sites.append(Site(k, rep, name))
    gm.graph.lint()
    gm.recompile()
    return gm, sites, gm


def passthrough(node: fx.Node, mods: dict[str, nn.Module]) -> bool:
    """Whether ``node`` is a unary op that commutes with a positive scale (flatten, pooling, dropout...)."""
    if node.op == "call_module":
        m = mods.get(str(node.target))
        return isinstance(m, (*_PASS_MODS, SpikingMaxPool2d))
    if node.op == "call_function":
        return node.target in _PASS_FNS
    if node.op == "call_method":
        return node.target in _PASS_METHODS
    return False


def consumers(node: fx.Node, mods: dict[str, nn.Module]) -> list[fx.Node]:
    """The nodes that consume ``node``'s output through pass-through ops (not themselves pass-through)."""
    out: list[fx.Node] = []
    todo = list(node.users)
    seen: set[fx.Node] = set()
    while todo:
        u = todo.pop()
        if u in seen:
            continue
        seen.add(u)
        if passthrough(u, mods):
            todo.extend(u.users)
        else:
            out.append(u)
    return out


def is_add(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in (operator.add, torch.add)) or (
        node.op == "call_method" and node.target == "add"
    )
