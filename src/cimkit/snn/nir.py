"""NIR export and import (the Neuromorphic Intermediate Representation; Pedersen et al., Nature
Communications 15:8122, 2024). Needs the ``snn`` extra (``pip install 'cimkit[snn]'``: ``nir``).

**Primitives.** ``nn.Linear`` ↔ ``Affine`` (``Linear`` without bias), ``nn.Conv1d/2d`` ↔
``Conv1d/2d``, ``nn.Flatten`` ↔ ``Flatten`` (dimensions without the batch axis),
:class:`~cimkit.snn.SumPool2d` ↔ ``SumPool2d``, ``nn.AvgPool2d`` (and global average pooling)
↔ ``AvgPool2d``, :class:`~cimkit.snn.LIF` ↔ ``LIF``, :class:`~cimkit.snn.IF` (or β = 1) ↔ ``IF``,
:class:`~cimkit.snn.CubaLIF` ↔ ``CubaLIF``; a spike amplitude other than 1 is a ``Scale`` node
after the neuron; residual adds are fan-in edges (NIR sums the inputs of a node). Every neuron
parameter is written per neuron (full feature shape, never a scalar: NIR issues #176, snnTorch #410).

**Discretization.** NIR neurons are continuous: ``τ dv/dt = (v_leak - v) + R I``, spike when
``v > v_threshold``, then ``v ← v_reset``; IF is ``dv/dt = R I``; CubaLIF adds
``τ_syn dI/dt = -I + w_in S``. A cimkit neuron with step ``dt`` and per-step decay ``β`` is
written with unit input gain: ``euler`` (``β = 1 - dt/τ``: snnTorch's convention) gives
``τ = dt/(1-β)``; ``exact`` (``β = e^{-dt/τ}``) gives ``τ = -dt/ln β``; both ``R = 1/(1-β)``
(so ``R(1-β) = 1``), ``v_leak = 0``, ``v_reset = 0``; IF ``R = 1/dt``; CubaLIF
``w_in = 1/(1-α)`` with ``α`` from ``τ_syn`` the same way. Time constants are float64, so
β survives the round trip bit-exactly in float32.

**Metadata** (what NIR itself does not carry, honoured on import): the graph's ``dt``,
``discretization``, ``num_steps``, ``readout``, ``encoder``; every neuron's
``reset_mechanism`` (NIR only knows reset to ``v_reset``, i.e. ``zero``; ``subtract`` and
``none`` are written with a warning, since other readers will reset to zero), ``reset_delay``
(NIR resets within the spiking step, cimkit's ``reset_delay = false``; the default delayed reset
is the same for IF/LIF with reset to zero, not for CubaLIF, which is also warned about),
``init_mem_frac``, ``dt``, ``discretization``. Importing a file without cimkit metadata (e.g.
snnTorch's export) uses ``dt`` (argument, default ``1e-4`` s as snnTorch), ``euler`` and NIR's
immediate reset to zero (what snnTorch's importer builds); an input gain
``κ ≠ 1`` (``R(1-β)`` for LIF, ``R·dt`` for IF, ``w_in(1-α)·R(1-β)`` for CubaLIF) becomes the
threshold ``v_threshold/κ`` (exactly equivalent spikes for ``v_reset = v_leak = 0``).
"""

from __future__ import annotations

import io
import logging
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nir
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.fx.passes.shape_prop import ShapeProp

import cimkit
from cimkit.errors import ConfigError, DataError
from cimkit.io import atomic_write_bytes
from cimkit.snn.encoders import make_encoder
from cimkit.snn.graph import is_add, trace
from cimkit.snn.neurons import (
    DEFAULT_DT,
    IF,
    LIF,
    CubaLIF,
    Discretization,
    SpikingNeuron,
    Temporal,
    beta_from_tau,
    set_num_steps,
    tau_from_beta,
)
from cimkit.snn.pooling import SumPool2d
from cimkit.snn.simulate import Readout, SpikingNet

__all__ = ["NIRNet", "ScaleLayer", "export_nir", "import_nir", "load_nir", "read_nir", "save_nir", "write_nir"]

log = logging.getLogger(__name__)

_PASS = (nn.Dropout, nn.Identity)


class ScaleLayer(nn.Module):
    """``y = x ⊙ scale`` (NIR ``Scale``)."""

    def __init__(self, scale: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.float())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale.to(x.dtype)


class NIRNet(nn.Module):
    """A NIR graph as a torch module: nodes run in topological order on the time-batched
    ``(T·B, ...)`` tensor; a node's input is the sum of its predecessors' outputs."""

    def __init__(self, modules: Mapping[str, nn.Module], order: list[str], preds: Mapping[str, list[str]],
                 input_name: str, output_name: str) -> None:  # fmt: skip
        super().__init__()
        self.nodes = nn.ModuleDict(dict(modules))
        self.order = list(order)
        self.preds = {k: list(v) for k, v in preds.items()}
        self.input_name, self.output_name = input_name, output_name

    def forward(self, x: Tensor) -> Tensor:
        vals: dict[str, Tensor] = {self.input_name: x}
        for name in self.order:
            ins = [vals[p] for p in self.preds[name]]
            v = ins[0]
            for u in ins[1:]:
                v = v + u
            vals[name] = v if name == self.output_name else self.nodes[name](v)
        return vals[self.output_name]


# ----------------------------------------------------------------------------- export


def _per_neuron(p: Tensor, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
    return np.ascontiguousarray(np.broadcast_to(p.detach().double().cpu().numpy(), shape)).astype(dtype)


def _neuron_nodes(m: SpikingNeuron, shape: tuple[int, ...]) -> tuple[nir.NIRNode, dict[str, Any]]:
    meta = {"reset_mechanism": m.reset_mechanism.value, "reset_delay": int(m.reset_delay),
            "init_mem_frac": float(m.init_mem_frac), "dt": m.dt, "discretization": m.discretization.value,
            "cimkit_class": type(m).__name__}  # fmt: skip
    th = _per_neuron(m.threshold, shape, np.float32)
    zeros = np.zeros(shape)
    dt, disc = m.dt, m.discretization
    if isinstance(m, CubaLIF):
        a, b = _per_neuron(m.alpha.clamp(0, 1), shape), _per_neuron(m.beta.clamp(0, 1), shape)
        node = nir.CubaLIF(tau_syn=tau_from_beta(torch.from_numpy(a), dt, disc).numpy(),
                           tau_mem=tau_from_beta(torch.from_numpy(b), dt, disc).numpy(),
                           r=1.0 / (1.0 - b), v_leak=zeros, v_threshold=th, v_reset=zeros.copy(), w_in=1.0 / (1.0 - a),
                           metadata=meta)  # fmt: skip
        return node, meta
    b = _per_neuron(m.beta.clamp(0, 1), shape)
    if isinstance(m, IF) or bool((b == 1.0).all()):
        return nir.IF(r=np.full(shape, 1.0 / dt), v_threshold=th, v_reset=zeros, metadata=meta), meta
    if bool((b >= 1.0).any()) or bool((b <= 0.0).any()):
        raise ConfigError("NIR export: a LIF layer mixes beta = 1 (no leak) or 0 with leaky neurons; NIR LIF needs 0 < beta < 1")
    tau = tau_from_beta(torch.from_numpy(b), dt, disc).numpy()
    return nir.LIF(tau=tau, r=1.0 / (1.0 - b), v_leak=zeros, v_threshold=th, v_reset=zeros.copy(), metadata=meta), meta


def _nir_exact(m: SpikingNeuron) -> bool:
    """Whether NIR's own semantics (immediate reset to zero) give this neuron's spikes: reset to zero,
    immediate, or delayed for IF/LIF (where both timings coincide)."""
    return m.reset_mechanism.value == "zero" and (not m.reset_delay or not isinstance(m, CubaLIF))


def _pool_arg(v: Any) -> np.ndarray:
    return np.array(v if isinstance(v, (tuple, list)) else (v, v))


def _module_node(m: nn.Module, name: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[nir.NIRNode]:
    """NIR node(s) for module ``m`` (more than one: a neuron with a spike amplitude, then a Scale)."""
    if isinstance(m, SpikingNeuron):
        feat = tuple(out_shape[1:])
        node, _ = _neuron_nodes(m, feat)
        g = m.graded_spikes_factor
        if g.dim() == 0 and float(g) == 1.0:
            return [node]
        return [node, nir.Scale(scale=_per_neuron(g, feat, np.float32))]
    if isinstance(m, nn.Linear):
        w = m.weight.detach().cpu().numpy()
        return [nir.Linear(weight=w) if m.bias is None else nir.Affine(weight=w, bias=m.bias.detach().cpu().numpy())]
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        if m.padding_mode != "zeros":
            raise ConfigError(f"NIR export: layer '{name}' uses padding_mode={m.padding_mode!r}; NIR convolutions pad with zeros")
        w = m.weight.detach().cpu().numpy()
        b = m.bias.detach().cpu().numpy() if m.bias is not None else np.zeros(w.shape[0], dtype=w.dtype)
        if isinstance(m, nn.Conv2d):
            return [nir.Conv2d(input_shape=tuple(in_shape[2:]), weight=w, stride=m.stride, padding=m.padding,
                               dilation=m.dilation, groups=m.groups, bias=b)]  # fmt: skip
        return [nir.Conv1d(input_shape=int(in_shape[2]), weight=w, stride=m.stride[0], padding=m.padding[0]
                           if not isinstance(m.padding, str) else m.padding, dilation=m.dilation[0], groups=m.groups,
                           bias=b)]  # fmt: skip
    if isinstance(m, nn.Flatten):
        return [_flatten(in_shape, m.start_dim, m.end_dim)]
    if isinstance(m, SumPool2d):
        return [nir.SumPool2d(kernel_size=_pool_arg(m.kernel_size), stride=_pool_arg(m.stride), padding=_pool_arg(m.padding))]
    if isinstance(m, nn.AvgPool2d):
        if m.divisor_override is not None or (not m.count_include_pad and np.any(_pool_arg(m.padding))) or m.ceil_mode:
            raise ConfigError(f"NIR export: average pooling '{name}' with divisor_override/ceil_mode/count_include_pad=False")
        return [nir.AvgPool2d(kernel_size=_pool_arg(m.kernel_size), stride=_pool_arg(m.stride), padding=_pool_arg(m.padding))]
    if isinstance(m, nn.AdaptiveAvgPool2d) and _pool_arg(m.output_size).tolist() == [1, 1]:
        k = np.array(in_shape[2:])
        return [nir.AvgPool2d(kernel_size=k, stride=k, padding=np.array([0, 0]))]
    raise ConfigError(f"NIR export: layer '{name}' ({type(m).__name__}) has no NIR primitive; supported: Linear, Conv1d, "
                      f"Conv2d, Flatten, SumPool2d, AvgPool2d, LIF, IF, CubaLIF")  # fmt: skip


def _flatten(in_shape: tuple[int, ...], start: int, end: int) -> nir.NIRNode:
    nd = len(in_shape)
    s = start if start >= 0 else nd + start
    e = end if end >= 0 else nd + end
    return nir.Flatten(input_type={"input": np.array(in_shape[1:])}, start_dim=s - 1, end_dim=e - 1)


def _propagate_shapes(gm: Any, net: nn.Module, example: Tensor) -> None:
    """Every graph node's output shape (``node.meta["shape"]``) on a one-step pass of ``example``."""
    steps = {n: m.num_steps for n, m in net.named_modules() if isinstance(m, Temporal)}
    set_num_steps(net, 1)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    finally:
        for n, m in net.named_modules():
            if n in steps:
                m.num_steps = steps[n]
    for node in gm.graph.nodes:
        tm = node.meta.get("tensor_meta")
        node.meta["shape"] = tuple(tm.shape) if hasattr(tm, "shape") else None


def _shape(node: Any) -> tuple[int, ...]:
    shp = node.meta.get("shape") if hasattr(node, "meta") else None
    if shp is None:
        raise ConfigError(f"NIR export: the shape of '{getattr(node, 'name', node)}' is not known")
    return shp


def export_nir(model: nn.Module, example: Tensor) -> nir.NIRGraph:
    """``model`` (a :class:`SpikingNet`, or a network of cimkit neurons and stateless layers) as a
    NIR graph; ``example``: one input batch ``(B, ...)`` (for the shapes). See the module docstring."""
    snn = model if isinstance(model, SpikingNet) else None
    net = snn.net if snn is not None else model
    x = example[:1]
    if snn is not None:
        x = snn.encoder(x, 1)[0]
    gm = trace(net)
    _propagate_shapes(gm, net, x)
    mods = dict(net.named_modules())
    nodes: dict[str, nir.NIRNode] = {}
    edges: list[tuple[str, str]] = []
    producers: dict[Any, list[str]] = {}
    neuron_meta: list[dict[str, Any]] = []

    def add(name: str, new: list[nir.NIRNode], srcs: list[str]) -> list[str]:
        prev = srcs
        for i, n in enumerate(new):
            key = name if i == 0 else f"{name}_scale"
            nodes[key] = n
            edges.extend((p, key) for p in prev)
            prev = [key]
        return prev

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            nodes["input"] = nir.Input(input_type={"input": np.array(x.shape[1:])})
            producers[node] = ["input"]
        elif node.op == "output":
            arg = node.args[0]
            nodes["output"] = nir.Output(output_type={"output": np.array(_shape(arg)[1:])})
            edges.extend((p, "output") for p in producers[arg])
        elif node.op == "call_module":
            m = mods[str(node.target)]
            srcs = producers[node.args[0]]
            if isinstance(m, _PASS) or type(m).__name__ == "FoldedBN":
                producers[node] = srcs
                continue
            ins, outs = _shape(node.args[0]), _shape(node)
            name = str(node.target).replace(".", "_")
            if isinstance(m, SpikingNeuron):
                neuron_meta.append({"dt": m.dt, "discretization": m.discretization.value, "nir_exact": _nir_exact(m),
                                    "leaky": not isinstance(m, IF),
                                    "reset": f"{type(m).__name__} reset {m.reset_mechanism.value} "
                                             f"({'delayed' if m.reset_delay else 'immediate'})"})  # fmt: skip
            producers[node] = add(name, _module_node(m, str(node.target), ins, outs), srcs)
        elif node.op in ("call_function", "call_method"):
            producers[node] = _function_node(node, producers, nodes, edges)
        else:
            raise ConfigError(f"NIR export: graph node {node.op} {node.target} is not supported")
    odd = sorted({d["reset"] for d in neuron_meta if not d["nir_exact"]})
    if odd:
        log.warning("NIR export: the neurons' metadata records %s; NIR itself only has an immediate reset to "
                    "v_reset (zero), which readers other than cimkit will use", ", ".join(odd))  # fmt: skip
    # the graph's dt/discretization: the first leaky neuron's (every neuron's own are in its metadata)
    leaky = [d for d in neuron_meta if d["leaky"]] or neuron_meta
    dt, disc = (leaky[0]["dt"], leaky[0]["discretization"]) if leaky else (DEFAULT_DT, "euler")
    meta: dict[str, Any] = {"producer": "cimkit", "cimkit_version": cimkit.__version__, "dt": float(dt),
                            "discretization": disc}  # fmt: skip
    if snn is not None:
        meta.update(num_steps=int(snn.num_steps), readout=snn.readout.value, encoder=snn.encoder.name)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def _function_node(node: Any, producers: dict[Any, list[str]], nodes: dict[str, nir.NIRNode],
                   edges: list[tuple[str, str]]) -> list[str]:  # fmt: skip
    t = node.target
    tensors = [a for a in node.args if hasattr(a, "op")]
    if is_add(node):
        if len(tensors) != len(node.args) or node.kwargs:
            raise ConfigError("NIR export: only adds of two tensors (residual connections) are supported")
        return [p for a in tensors for p in producers[a]]
    if t in (torch.flatten, "flatten"):
        args = [*node.args[1:], None, None]
        start = node.kwargs.get("start_dim", args[0] if args[0] is not None else 0)
        end = node.kwargs.get("end_dim", args[1] if args[1] is not None else -1)
        if int(start) == 0:
            raise ConfigError("NIR export: flatten over the batch dimension (start_dim = 0) is not supported")
        src = node.args[0]
        shape = _shape(src)
        name = f"flatten_{node.name}"
        nodes[name] = _flatten(shape, int(start), int(end))
        edges.extend((p, name) for p in producers[src])
        return [name]
    if t is F.adaptive_avg_pool2d and _pool_arg(node.args[1]).tolist() == [1, 1]:
        src = node.args[0]
        shape = _shape(src)
        k = np.array(shape[2:])
        name = f"avgpool_{node.name}"
        nodes[name] = nir.AvgPool2d(kernel_size=k, stride=k, padding=np.array([0, 0]))
        edges.extend((p, name) for p in producers[src])
        return [name]
    if t is F.dropout or t == "contiguous":
        return producers[node.args[0]]
    raise ConfigError(f"NIR export: the operation {getattr(t, '__name__', t)} has no NIR primitive")


# ----------------------------------------------------------------------------- import


def _meta(node: Any) -> dict[str, Any]:
    out = {}
    for k, v in (getattr(node, "metadata", None) or {}).items():
        if isinstance(v, bytes):
            v = v.decode("utf8")
        elif (isinstance(v, np.ndarray) and v.shape == ()) or isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def _arr(v: Any) -> np.ndarray:
    return np.asarray(v, dtype=np.float64)


def _gain_threshold(th: np.ndarray, gain: np.ndarray, name: str) -> Tensor:
    g = np.where(np.abs(gain - 1.0) < 1e-9, 1.0, gain)
    if not bool((g > 0).all()):
        raise DataError(f"NIR import: node '{name}' has a non-positive input gain")
    return torch.from_numpy(np.asarray(th, dtype=np.float64) / g).float()


def _check_zero(node: Any, name: str, *fields: str) -> None:
    for f in fields:
        v = getattr(node, f, None)
        if v is not None and not np.allclose(np.asarray(v, dtype=np.float64), 0.0):
            raise DataError(f"NIR import: node '{name}' has nonzero {f}; cimkit neurons need {f} = 0")


def _neuron(node: Any, name: str, dt: float, disc: Discretization, graph_meta: dict[str, Any]) -> nn.Module:
    meta = _meta(node)
    reset = meta.get("reset_mechanism", "zero")
    frac = float(meta.get("init_mem_frac", 0.0))
    dt = float(meta.get("dt", dt))
    disc = Discretization(meta.get("discretization", disc.value))
    kw = {"reset_mechanism": reset, "init_mem_frac": frac, "dt": dt, "reset_delay": bool(meta.get("reset_delay", 0))}
    if isinstance(node, nir.IF):
        _check_zero(node, name, "v_reset")
        th = _gain_threshold(_arr(node.v_threshold), _arr(node.r) * dt, name)
        return IF(threshold=th, **kw)
    if isinstance(node, nir.LIF):
        _check_zero(node, name, "v_leak", "v_reset")
        b = beta_from_tau(_arr(node.tau), dt, disc)
        th = _gain_threshold(_arr(node.v_threshold), _arr(node.r) * (1.0 - b.numpy()), name)
        return LIF(beta=b.float(), threshold=th, discretization=disc, **kw)
    _check_zero(node, name, "v_leak", "v_reset")
    a = beta_from_tau(_arr(node.tau_syn), dt, disc)
    b = beta_from_tau(_arr(node.tau_mem), dt, disc)
    gain = _arr(node.w_in) * (1.0 - a.numpy()) * _arr(node.r) * (1.0 - b.numpy())
    th = _gain_threshold(_arr(node.v_threshold), gain, name)
    return CubaLIF(alpha=a.float(), beta=b.float(), threshold=th, discretization=disc, **kw)


def _tuple(v: Any) -> Any:
    if isinstance(v, str):
        return v
    a = np.atleast_1d(np.asarray(v)).astype(int).tolist()
    return tuple(a) if len(a) > 1 else a[0]


def _module(node: Any, name: str, dt: float, disc: Discretization, gmeta: dict[str, Any]) -> nn.Module:
    if isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF)):
        return _neuron(node, name, dt, disc, gmeta)
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = torch.from_numpy(np.asarray(node.weight, dtype=np.float32))
        m = nn.Linear(w.shape[1], w.shape[0], bias=isinstance(node, nir.Affine))
        with torch.no_grad():
            m.weight.copy_(w)
            if isinstance(node, nir.Affine):
                m.bias.copy_(torch.from_numpy(np.asarray(node.bias, dtype=np.float32)))
        return m
    if isinstance(node, (nir.Conv2d, nir.Conv1d)):
        w = torch.from_numpy(np.asarray(node.weight, dtype=np.float32))
        cls = nn.Conv2d if isinstance(node, nir.Conv2d) else nn.Conv1d
        m = cls(w.shape[1] * int(node.groups), w.shape[0], tuple(w.shape[2:]), stride=_tuple(node.stride),
                padding=_tuple(node.padding), dilation=_tuple(node.dilation), groups=int(node.groups))  # fmt: skip
        with torch.no_grad():
            m.weight.copy_(w)
            m.bias.copy_(torch.from_numpy(np.asarray(node.bias, dtype=np.float32)))
        return m
    if isinstance(node, nir.Flatten):
        s, e = int(node.start_dim), int(node.end_dim)
        return nn.Flatten(s + 1 if s >= 0 else s, e + 1 if e >= 0 else e)
    if isinstance(node, nir.SumPool2d):
        return SumPool2d(_tuple(node.kernel_size), _tuple(node.stride), _tuple(node.padding))
    if isinstance(node, nir.AvgPool2d):
        return nn.AvgPool2d(_tuple(node.kernel_size), _tuple(node.stride), _tuple(node.padding))
    if isinstance(node, nir.Scale):
        return ScaleLayer(torch.from_numpy(np.asarray(node.scale, dtype=np.float32)))
    raise DataError(f"NIR import: node '{name}' of type {type(node).__name__} is not supported; supported: Affine, "
                    f"Linear, Conv1d, Conv2d, Flatten, SumPool2d, AvgPool2d, Scale, LIF, IF, CubaLIF")  # fmt: skip


def _topo(names: list[str], preds: dict[str, list[str]], start: str) -> list[str]:
    succ: dict[str, list[str]] = defaultdict(list)
    indeg = {n: 0 for n in names}
    for n, ps in preds.items():
        for p in ps:
            succ[p].append(n)
            indeg[n] += 1
    order, ready = [], [start]
    while ready:
        n = ready.pop(0)
        if n != start:
            order.append(n)
        for s in succ[n]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.append(s)
    if len(order) != len(names) - 1:
        raise DataError("NIR import: the graph has cycles (recurrent connections) or unreachable nodes; cimkit "
                        "imports feed-forward graphs")  # fmt: skip
    return order


def import_nir(graph: nir.NIRGraph, *, dt: float | None = None, discretization: str | None = None,
               num_steps: int | None = None, readout: str | None = None) -> SpikingNet:  # fmt: skip
    """A :class:`SpikingNet` running ``graph`` (see the module docstring for the conventions).
    Arguments override the graph's metadata; without metadata: ``dt = 1e-4`` s, ``euler``,
    ``num_steps = 1``, ``readout = "sequence"``, direct input."""
    gmeta = _meta(graph)
    d = float(dt if dt is not None else gmeta.get("dt", DEFAULT_DT))
    disc = Discretization(discretization or gmeta.get("discretization", "euler"))
    ins = [n for n, v in graph.nodes.items() if isinstance(v, nir.Input)]
    outs = [n for n, v in graph.nodes.items() if isinstance(v, nir.Output)]
    if len(ins) != 1 or len(outs) != 1:
        raise DataError(f"NIR import: need exactly one Input and one Output node, got {len(ins)} and {len(outs)}")
    preds: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        if a not in graph.nodes or b not in graph.nodes:
            raise DataError(f"NIR import: edge ({a!r}, {b!r}) names a node that is not in the graph (sub-graph ports "
                            f"are not supported)")  # fmt: skip
        preds[b].append(a)
    mods: dict[str, nn.Module] = {}
    keys: dict[str, str] = {}
    for n, v in graph.nodes.items():
        if isinstance(v, (nir.Input, nir.Output)):
            continue
        if isinstance(v, nir.NIRGraph):
            raise DataError(f"NIR import: node '{n}' is a sub-graph (recurrent layer); not supported")
        key = n.replace(".", "_")
        keys[n] = key
        mods[key] = _module(v, n, d, disc, gmeta)
    order = _topo(list(graph.nodes), preds, ins[0])
    keys[ins[0]], keys[outs[0]] = "input", "output"
    net = NIRNet(mods, [keys[n] for n in order], {keys[n]: [keys[p] for p in ps] for n, ps in preds.items() if ps},
                 "input", "output")  # fmt: skip
    t = int(num_steps if num_steps is not None else gmeta.get("num_steps", 1))
    r = Readout(readout or gmeta.get("readout", "sequence"))
    return SpikingNet(net, t, make_encoder(gmeta.get("encoder", "direct")), r)


def write_nir(path: str | Path, model_or_graph: nn.Module | nir.NIRGraph, example: Tensor | None = None) -> Path:
    """Write a NIR file (HDF5) atomically: a graph, or ``model`` exported with ``example``."""
    graph = model_or_graph
    if isinstance(model_or_graph, nn.Module):
        if example is None:
            raise ConfigError("write_nir: exporting a model needs an example input batch")
        graph = export_nir(model_or_graph, example)
    buf = io.BytesIO()
    nir.write(buf, graph)
    return atomic_write_bytes(path, buf.getvalue())


def read_nir(path: str | Path) -> nir.NIRGraph:
    """Read a NIR file (HDF5; no pickles) as a ``nir.NIRGraph``."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"NIR file {p} does not exist")
    try:
        return nir.read(str(p), type_check=False)
    except Exception as e:  # h5py / nir raise many kinds on a damaged file
        raise DataError(f"NIR file {p} cannot be read: {type(e).__name__}: {e}") from None


save_nir = write_nir


def load_nir(path: str | Path, **kwargs: Any) -> SpikingNet:
    """``import_nir(read_nir(path), **kwargs)``."""
    return import_nir(read_nir(path), **kwargs)
