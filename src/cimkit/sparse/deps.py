"""Dependency analysis: which channels of which layers must be pruned together.

The model's forward is traced once on an example input, and every channel every layer produces is
followed through the computation as an *atom* (an integer id carried by a shadow tensor of the
same shape as the activation; ``-1`` = not a layer's channel). Shape operations (view, reshape,
flatten, permute, transpose, indexing, split, cat, ...) are replayed on the shadow tensor, so
flattening, concatenation and head splits are tracked position by position; an elementwise add of
two tracked tensors (a residual) unites the atoms it adds; attention
(``F.scaled_dot_product_attention``) unites all channels of one head of q, k and v. What cannot be
followed exactly *pins* the atoms it touches (they are never pruned): normalisations across
channels (LayerNorm, GroupNorm), ops that do not map zero to zero (sigmoid, exp, adding a
constant), unknown functions, grouped convolutions, and the model's outputs. A shadow known to be
constant per channel (a layer's output, and what identities and residual adds make of it) carries
its per-channel atoms along, so that the next layer and the next add read them without comparing
or sorting every element (the same graph; tested against the element-by-element rules).

The result (:class:`DepGraph`) lists

* **dimensions** (:class:`Dimension`): the sets of united channels (*units*) that share the same
  producing layers, e.g. one conv's filters with its BatchNorm and the next layer's input columns;
  one residual stream (the stem, every block's last conv and BN, the shortcut convs); the MLP hidden
  units or the heads of a transformer block. Each unit lists, per member tensor (``module``,
  ``param``, ``dim``, role ``out``/``in``/``norm``), the positions it occupies.
* **branches** (:class:`Branch`): residual branches ``f`` of ``x + f(x)`` (the layers that feed
  one operand of a residual add and not the other), for depth pruning.

The trace uses a :class:`torch.overrides.TorchFunctionMode` on the real forward (not symbolic
``torch.fx`` tracing), because models check their input shapes in Python (``char_gpt`` does), which a
symbolic trace cannot follow; the recorded data flow is the same for any data-independent control
flow. Known leaf modules (Linear/Conv, BatchNorm, LayerNorm/GroupNorm, Embedding) are handled as
units through module hooks; everything else is seen as the torch functions it calls.

Cf. DepGraph (Fang et al., CVPR 2023; Torch-Pruning), which builds the same groups from an
autograd graph.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode

from cimkit.errors import ConfigError
from cimkit.nn.adapters import has_unadapted
from cimkit.nn.walk import weighted_types

__all__ = ["HEAD_ATTRS", "HEAD_WIDTH_ATTRS", "Branch", "DepGraph", "Dimension", "Member", "Unit", "analyze"]

# attribute names a module may hold its head count in (updated when heads are removed)
HEAD_ATTRS = ("n_head", "n_heads", "num_heads", "num_attention_heads")
# attribute names a module may hold the width of all its heads together in (GPT-2's ``split_size``,
# BERT's ``all_head_size``; scaled with the head count when heads are removed)
HEAD_WIDTH_ATTRS = ("split_size", "all_head_size", "inner_dim")

_SHAPE = {
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "t", "unsqueeze", "squeeze", "expand",
    "expand_as", "view_as", "reshape_as", "__getitem__", "narrow", "select", "split", "chunk", "unbind", "cat",
    "concat", "concatenate", "stack", "repeat", "movedim", "moveaxis", "swapaxes", "swapdims", "flip", "roll",
    "tile", "split_with_sizes", "tensor_split", "getitem",
}  # fmt: skip
_IDENTITY = {
    "contiguous", "clone", "detach", "to", "float", "double", "half", "bfloat16", "type", "type_as",
    "requires_grad_", "cpu", "relu", "relu_", "relu6", "gelu", "silu", "silu_", "tanh", "tanh_", "hardtanh",
    "hardtanh_", "leaky_relu", "leaky_relu_", "elu", "elu_", "hardswish", "mish", "softsign", "dropout",
    "dropout_", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout", "neg",
    "__neg__", "abs", "sin", "square", "__pos__",
}  # fmt: skip
_SPATIAL = {
    "max_pool1d", "max_pool2d", "max_pool3d", "_max_pool1d", "_max_pool2d", "_max_pool3d",
    "max_pool1d_with_indices", "max_pool2d_with_indices", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "_adaptive_max_pool1d", "_adaptive_max_pool2d", "adaptive_max_pool2d_with_indices",
    "interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "lp_pool1d", "lp_pool2d",
}  # fmt: skip
_REDUCE = {"sum", "mean", "amax", "amin", "max", "min", "std", "var", "nansum", "nanmean"}
_ADD = {"add", "__add__", "__radd__", "__iadd__", "add_", "sub", "__sub__", "__rsub__", "__isub__", "sub_",
        "subtract"}  # fmt: skip
_MUL = {"mul", "__mul__", "__rmul__", "__imul__", "mul_", "multiply"}
_DIV = {"div", "__truediv__", "__itruediv__", "div_", "true_divide", "divide"}
_POW = {"pow", "__pow__", "__ipow__", "pow_", "float_power"}  # x ** e with e > 0 keeps x's zeros
# ops whose shifted inputs stay shifted (or become zero-preserving) instead of being pinned
_ELEMENTWISE = _IDENTITY | _ADD | _MUL | _DIV | _POW | {"masked_fill"}
_NO_TENSOR_RESULT = {"size", "dim", "__get__", "numel", "is_floating_point", "__len__", "stride", "is_contiguous",
                     "__bool__", "item", "tolist", "__format__", "__repr__", "__iter__"}  # fmt: skip


class Member(NamedTuple):
    """One tensor a unit occupies: ``module.param`` along ``dim``; role ``out`` (a producer's
    filters), ``in`` (a consumer's input columns) or ``norm`` (a BatchNorm's channels)."""

    module: str
    param: str
    dim: int
    role: str


@dataclass
class Unit:
    """One prunable unit (a channel, or a head): its positions (indices along ``Member.dim``, ascending)
    per member tensor."""

    positions: dict[Member, tuple[int, ...]]

    def size(self) -> int:
        return max((len(p) for m, p in self.positions.items() if m.role == "out"), default=0)


@dataclass
class Dimension:
    """Units that share their producing layers (see the module docstring)."""

    name: str  # the first producing layer (with ``:heads`` for head dimensions)
    kind: str  # "channel" | "head"
    producers: list[str]
    consumers: list[str]
    norms: list[str]
    units: list[Unit]
    pinned: str | None = None  # why these units can never be pruned
    head_owner: str | None = None  # the module whose head count changes (head dimensions)
    head_attr: str | None = None
    _index: dict[Member, Tensor | None] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def size(self) -> int:
        return len(self.units)

    def members(self) -> list[Member]:
        """Every member tensor of the dimension's units (in first-seen order)."""
        out: dict[Member, None] = {}
        for u in self.units:
            out.update(dict.fromkeys(u.positions))
        return list(out)

    def index(self, m: Member) -> Tensor | None:
        """``(units, k)`` positions of every unit in member ``m`` (CPU, cached), or None when some
        unit has no slice there or the units occupy different numbers of positions."""
        if m not in self._index:
            pos = [u.positions.get(m) for u in self.units]
            ok = all(p is not None for p in pos) and len({len(p) for p in pos}) == 1
            self._index[m] = torch.tensor([i for p in pos for i in p], dtype=torch.long).view(len(pos), -1) if ok else None
        return self._index[m]


@dataclass
class Branch:
    """A residual branch: its weighted layers and normalisations (depth pruning zeroes them all)."""

    name: str  # the module the residual add happens in
    layers: list[str]
    norms: list[str]


@dataclass
class DepGraph:
    """The result of :func:`analyze`."""

    dims: list[Dimension] = field(default_factory=list)
    branches: list[Branch] = field(default_factory=list)

    def prunable(self, kind: str | None = None) -> list[Dimension]:
        """Dimensions that may be pruned (not pinned, more than one unit), optionally of one ``kind``."""
        return [d for d in self.dims if d.pinned is None and d.size > 1 and (kind is None or d.kind == kind)]

    def describe(self) -> list[dict[str, Any]]:
        """One JSON-able row per dimension."""
        return [{"name": d.name, "kind": d.kind, "units": d.size, "producers": d.producers, "consumers": d.consumers,
                 "norms": d.norms, "pinned": d.pinned} for d in self.dims]  # fmt: skip


# ----------------------------------------------------------------------------- union-find over atoms


class _Atoms:
    def __init__(self) -> None:
        self.parent: list[int] = []
        self.pin: dict[int, str] = {}
        self.head: dict[int, tuple[str, int]] = {}

    def new(self, n: int, pinned: str | None = None) -> Tensor:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        if pinned:
            for a in range(start, start + n):
                self.pin[a] = pinned
        return torch.arange(start, start + n, dtype=torch.long)

    def find(self, a: int) -> int:
        p = self.parent
        root = a
        while p[root] != root:
            root = p[root]
        while p[a] != root:
            p[a], a = root, p[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        if rb in self.pin:
            self.pin.setdefault(ra, self.pin.pop(rb))
        if rb in self.head:
            self.head.setdefault(ra, self.head.pop(rb))

    def union_pairs(self, a: Tensor, b: Tensor) -> None:
        both = (a >= 0) & (b >= 0) & (a != b)
        if bool(both.any()):
            n = len(self.parent)
            # one code per distinct (a, b) pair, -1 where either is untracked (no boolean indexing: slow)
            codes = torch.unique(torch.where(both, a * n + b, -1)).tolist()
            for c in codes:
                if c >= 0:
                    self.union(c // n, c % n)

    def pin_all(self, atoms: Tensor, reason: str) -> None:
        if atoms.numel() > 64 and not bool((atoms >= 0).any()):  # nothing tracked: skip the sort
            return
        for a in torch.unique(atoms).tolist():  # negative: untracked
            if a >= 0:
                self.pin.setdefault(self.find(a), reason)


# ----------------------------------------------------------------------------- the recorder


def _tensors(obj: Any) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _name(func: Any) -> str:
    n = getattr(func, "__name__", None)
    if n is None:
        n = str(func)
    return n


def _per_position(a: Tensor, dim: int) -> Tensor | None:
    """Atoms along ``dim`` if they are constant over every other dim, else None."""
    if a.dim() == 0 or a.numel() == 0:
        return None
    idx = [slice(0, 1)] * a.dim()
    idx[dim] = slice(None)
    first = a[tuple(idx)]  # position 0 of every other dim, kept as size-1 dims (a view)
    if not bool((a == first).all()):  # one broadcast comparison, no copy of a
        return None
    return first.reshape(-1).clone()


class _Recorder(TorchFunctionMode):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.uf = _Atoms()
        self.shadow: dict[int, tuple[Tensor, Tensor]] = {}  # id(t) -> (t kept alive, atoms)
        # id(atoms) -> (atoms kept alive, dim, per-channel atoms (C,), as a list): shadows known to be
        # constant over every dim but ``dim`` (a layer's outputs, and what adds and identities make of them)
        self.chan: dict[int, tuple[Tensor, int, Tensor, list[int]]] = {}
        # id(atoms) -> (atoms kept alive, the atoms there that are not zero when their channel is, reason):
        # a channel plus a constant (GELU's ``1 + tanh(...)``) is pinned only where it reaches anything but
        # elementwise arithmetic, so a product with the zero-preserving channel itself stays prunable
        self.shifted: dict[int, tuple[Tensor, Tensor, str]] = {}
        self.anc: dict[int, frozenset[str]] = {}  # id(t) -> weighted/norm layers it depends on
        self.inside: nn.Module | None = None  # the leaf module being run (its internals are not traced)
        self.busy = False  # the hooks' own tensor work is not traced
        self.stack: list[str] = []
        self.names = {id(m): n for n, m in model.named_modules()}
        self.prod: dict[str, Tensor] = {}  # producer -> atom per output channel
        self.prod_member: dict[str, tuple[str, int]] = {}  # producer -> (param, dim) of its channels
        self.cons: dict[str, Tensor] = {}  # consumer -> atom per input column
        self.norm: dict[str, Tensor] = {}  # BatchNorm -> atom per channel
        self.adds: list[tuple[str, frozenset[str], frozenset[str]]] = []
        self.heads: list[tuple[str, int, list[Tensor]]] = []

    # -------------------------------------------------------------- shadows

    def get(self, t: Tensor) -> Tensor:
        s = self.shadow.get(id(t))
        if s is not None and s[0] is t and s[1].shape == t.shape:
            return s[1]
        return torch.full(t.shape, -1, dtype=torch.long)

    def set(self, t: Tensor, atoms: Tensor, anc: frozenset[str]) -> None:
        if atoms.shape != t.shape:
            atoms = torch.full(t.shape, -1, dtype=torch.long)
        self.shadow[id(t)] = (t, atoms)
        self.anc[id(t)] = anc

    def ancestry(self, ts: Iterable[Tensor]) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for t in ts:
            out = out | self.anc.get(id(t), frozenset())
        return out

    def tracked(self, t: Tensor) -> bool:
        a = self.get(t)
        c = self.channels(a)
        if c is not None:
            return any(v >= 0 for v in c[3])
        return bool((a >= 0).any())

    def shift_of(self, atoms: Tensor) -> tuple[Tensor, str] | None:
        """``(shifted atoms, reason)`` of a shadow (see ``shifted``), if some are."""
        e = self.shifted.get(id(atoms))
        return (e[1], e[2]) if e is not None and e[0] is atoms else None

    def mark_shifted(self, atoms: Tensor, shifted: Tensor, reason: str) -> None:
        if bool((shifted >= 0).any()):
            self.shifted[id(atoms)] = (atoms, shifted, reason)

    def pin_shifted(self, ts: Iterable[Tensor]) -> None:
        """Pin the shifted channels of ``ts``: they reach something other than elementwise arithmetic."""
        for t in ts:
            e = self.shift_of(self.get(t))
            if e is not None:
                self.uf.pin_all(e[0], e[1])

    def channels(self, atoms: Tensor) -> tuple[Tensor, int, Tensor, list[int]] | None:
        """The per-channel entry of a shadow (see ``chan``), if it is known."""
        c = self.chan.get(id(atoms))
        return c if c is not None and c[0] is atoms else None

    def per_position(self, atoms: Tensor, dim: int) -> Tensor | None:
        """:func:`_per_position`, from the per-channel entry when the shadow has one."""
        c = self.channels(atoms)
        if c is not None and c[1] == dim % atoms.dim():
            return c[2]
        return _per_position(atoms, dim)

    # -------------------------------------------------------------- module hooks

    def is_leaf(self, m: nn.Module) -> bool:
        return isinstance(m, (*weighted_types(), nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
                              nn.Embedding, nn.modules.instancenorm._InstanceNorm))  # fmt: skip

    def pre_hook(self, m: nn.Module, args: Any) -> None:
        if id(m) not in self.names:
            return
        self.stack.append(self.names[id(m)])
        if self.inside is None and self.is_leaf(m):
            self.inside = m

    def post_hook(self, m: nn.Module, args: Any, out: Any) -> None:
        if id(m) not in self.names:
            return
        self.stack.pop()
        if self.inside is not m:
            return
        self.inside = None
        self.busy = True
        try:
            with torch._C.DisableTorchFunction():  # the recorder's own tensor work is not intercepted
                self._leaf(m, args, out)
        finally:
            self.busy = False

    def _leaf(self, m: nn.Module, args: Any, out: Any) -> None:
        name = self.names.get(id(m), "")
        self.pin_shifted(_tensors(args))
        x = args[0] if args and isinstance(args[0], Tensor) else None
        if not isinstance(out, Tensor):
            for t in _tensors(args):
                self.uf.pin_all(self.get(t), f"{name}: a layer returning {type(out).__name__}")
            return
        xa = self.get(x) if x is not None else None
        anc = self.ancestry([x] if x is not None else []) | {name}
        if isinstance(m, nn.Embedding):
            self.set(out, self._producer(name, m.embedding_dim, out, -1, ("weight", 1)), anc)
        elif isinstance(m, weighted_types()):
            cdim = -1 if isinstance(m, nn.Linear) else 1
            grouped = isinstance(m, nn.modules.conv._ConvNd) and m.groups != 1
            if xa is not None:
                feat = self.per_position(xa, cdim if cdim >= 0 else xa.dim() - 1)
                if feat is None or grouped:
                    self.uf.pin_all(xa, f"{name}: grouped convolution" if grouped else f"{name}: input channels "
                                    f"vary over positions")  # fmt: skip
                else:
                    self._record(self.cons, name, feat)
            n_out = out.shape[cdim]
            atoms = self._producer(name, n_out, out, cdim, ("weight", 0),
                                   pinned=f"{name}: grouped convolution" if grouped else None)  # fmt: skip
            self.set(out, atoms, anc)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and xa is not None:
            feat = self.per_position(xa, 1)
            if feat is None:
                self.uf.pin_all(xa, f"{name}: BatchNorm input channels vary over positions")
            else:
                self._record(self.norm, name, feat)
            self.set(out, xa, anc)  # shadows are never written in place: shared, not copied
        elif xa is not None:  # LayerNorm, GroupNorm, InstanceNorm: mix channels or shift zero
            self.uf.pin_all(xa, f"{name}: {type(m).__name__} normalises across channels")
            self.set(out, xa, anc)

    def _record(self, table: dict[str, Tensor], name: str, feat: Tensor) -> None:
        if name in table:  # a layer called twice: the same columns must be prunable in both calls
            prev = table[name]
            if prev.shape == feat.shape:
                self.uf.union_pairs(prev, feat)
            else:
                self.uf.pin_all(torch.cat([prev, feat]), f"{name}: called with different widths")
        else:
            table[name] = feat

    def _producer(self, name: str, n: int, out: Tensor, cdim: int, member: tuple[str, int],
                  pinned: str | None = None) -> Tensor:  # fmt: skip
        if name not in self.prod:
            self.prod[name] = self.uf.new(n, pinned)
            self.prod_member[name] = member
        per = self.prod[name]
        if per.numel() != n:
            return torch.full(out.shape, -1, dtype=torch.long)
        d = cdim if cdim >= 0 else out.dim() - 1
        shape = [1] * out.dim()
        shape[d] = n
        atoms = per.view(shape).expand(out.shape).clone()
        self.chan[id(atoms)] = (atoms, d, per, per.tolist())
        return atoms

    # -------------------------------------------------------------- functions

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.inside is not None or self.busy:
            return out
        name = _name(func)
        outs = _tensors(out)
        if not outs or name in _NO_TENSOR_RESULT:
            return out
        ins = _tensors(args) + _tensors(kwargs)
        anc = self.ancestry(ins)
        if not any(self.tracked(t) for t in ins):
            for o in outs:
                if id(o) not in {id(t) for t in ins}:
                    self.set(o, torch.full(o.shape, -1, dtype=torch.long), anc)
            return out
        if name not in _ELEMENTWISE:
            self.pin_shifted(ins)
        try:
            self._rule(name, func, args, kwargs, out, anc)
        except Exception as e:  # a rule that cannot replay an op must not break the user's forward
            for t in ins:
                self.uf.pin_all(self.get(t), f"{name}: {type(e).__name__}")
            for o in outs:
                self.set(o, torch.full(o.shape, -1, dtype=torch.long), anc)
        return out

    def _sub(self, obj: Any) -> Any:
        if isinstance(obj, Tensor):
            return self.get(obj)
        if isinstance(obj, (list, tuple)):
            return type(obj)(self._sub(o) for o in obj)
        return obj

    def _assign(self, out: Any, atoms: Any, anc: frozenset[str]) -> None:
        if isinstance(out, Tensor):
            self.set(out, atoms if isinstance(atoms, Tensor) else torch.full(out.shape, -1, dtype=torch.long), anc)
        elif isinstance(out, (list, tuple)):
            for i, o in enumerate(out):
                a = atoms[i] if isinstance(atoms, (list, tuple)) and i < len(atoms) else None
                self._assign(o, a, anc)

    def _rule(self, name: str, func: Any, args: tuple, kwargs: dict, out: Any, anc: frozenset[str]) -> None:
        x = args[0] if args and isinstance(args[0], Tensor) else None
        if name in _SHAPE or func is operator.getitem:
            first = self._sub(args[0])
            self._assign(out, func(first, *args[1:], **kwargs), anc)
        elif name in _IDENTITY and x is not None:
            self._assign(out, self.get(x), anc)
        elif name in _POW and x is not None:
            e = args[1] if len(args) > 1 else kwargs.get("exponent")
            if isinstance(e, (int, float)) and not isinstance(e, bool) and e > 0:  # 0 ** e = 0
                self._assign(out, self.get(x), anc)
            else:
                self._pin_unknown(name, args, kwargs, out, anc)
        elif name in _SPATIAL and x is not None:
            self._spatial(name, x, out, anc)
        elif name == "pad" and x is not None:
            pad = args[1] if len(args) > 1 else kwargs.get("pad", ())
            value = args[3] if len(args) > 3 else kwargs.get("value")
            if len(pad) > 2 * (x.dim() - 2) or (value not in (None, 0, 0.0)):
                self._pin_unknown(name, args, kwargs, out, anc)
            else:
                self._spatial(name, x, out, anc)
        elif name in _REDUCE and x is not None:
            self._reduce(name, x, args, kwargs, out, anc)
        elif name in _ADD | _MUL | _DIV:
            self._binary(name, args, out, anc)
        elif name == "masked_fill" and x is not None:
            value = args[2] if len(args) > 2 else kwargs.get("value")
            if isinstance(value, (int, float)) and value == 0:
                self._assign(out, self.get(x), anc)
            else:
                self._pin_unknown(name, args, kwargs, out, anc)
        elif name == "scaled_dot_product_attention":
            self._attention(args, kwargs, out, anc)
        else:
            self._pin_unknown(name, args, kwargs, out, anc)

    def _pin_unknown(self, name: str, args: tuple, kwargs: dict, out: Any, anc: frozenset[str]) -> None:
        for t in _tensors(args) + _tensors(kwargs):
            self.uf.pin_all(self.get(t), f"'{name}' cannot be followed channel by channel")
        self._assign(out, None, anc)

    def _spatial(self, name: str, x: Tensor, out: Any, anc: frozenset[str]) -> None:
        o = out[0] if isinstance(out, (list, tuple)) else out
        xa = self.get(x)
        if x.dim() < 3 or o.dim() != x.dim() or o.shape[:2] != x.shape[:2]:
            self._pin_unknown(name, (x,), {}, out, anc)
            return
        flat = xa.reshape(x.shape[0], x.shape[1], -1)  # (B, C, L)
        if flat.shape[2] == 0 or not bool((flat == flat[:, :, :1]).all()):
            self._pin_unknown(name, (x,), {}, out, anc)
            return
        per = flat[:, :, 0].reshape(*x.shape[:2], *([1] * (o.dim() - 2)))
        atoms = per.expand(o.shape).clone()
        if isinstance(out, (list, tuple)):
            self._assign(out, [atoms], anc)
        else:
            self._assign(out, atoms, anc)

    def _reduce(self, name: str, x: Tensor, args: tuple, kwargs: dict, out: Any, anc: frozenset[str]) -> None:
        dim = args[1] if len(args) > 1 and not isinstance(args[1], Tensor) else kwargs.get("dim")
        keep = args[2] if len(args) > 2 and isinstance(args[2], bool) else kwargs.get("keepdim", False)
        if dim is None or isinstance(dim, Tensor):
            self._pin_unknown(name, (x,), {}, out, anc)
            return
        dims = [dim] if isinstance(dim, int) else list(dim)
        xa = self.get(x)
        hi, lo = xa.amax(dim=dims, keepdim=bool(keep)), xa.amin(dim=dims, keepdim=bool(keep))
        if not bool((hi == lo).all()):
            self.uf.pin_all(xa, f"'{name}' sums over channels")
        atoms = torch.where(hi == lo, hi, torch.full_like(hi, -1))
        if isinstance(out, (list, tuple)):  # max/min with a dim: (values, indices)
            self._assign(out, [atoms], anc)
        else:
            self._assign(out, atoms, anc)

    def _binary(self, name: str, args: tuple, out: Any, anc: frozenset[str]) -> None:
        if not isinstance(out, Tensor) or len(args) < 2:
            self._pin_unknown(name, args, {}, out, anc)
            return
        a, b = args[0], args[1]
        if name.startswith("__r") and name not in ("__radd__", "__rmul__"):  # reflected: b op a
            a, b = b, a
        shp = out.shape
        if name not in _DIV and self._channel_binary(name, a, b, out, anc):
            return

        def atoms_val(v: Any) -> tuple[Tensor, Tensor]:
            if isinstance(v, Tensor):
                return torch.broadcast_to(self.get(v), shp), torch.broadcast_to(v.detach(), shp)
            return torch.full(shp, -1, dtype=torch.long), torch.full(shp, float(v) if isinstance(v, (int, float))
                                                                    else float("nan"))  # fmt: skip

        aa, av = atoms_val(a)
        ba, bv = atoms_val(b)
        ta, tb = aa >= 0, ba >= 0
        ea, eb = (self.shift_of(self.get(v)) if isinstance(v, Tensor) else None for v in (a, b))
        reason = (ea or eb or (None, f"'{name}' adds a constant"))[1]
        sa, sb = (torch.broadcast_to(e[0], shp) if e else torch.full(shp, -1, dtype=torch.long) for e in (ea, eb))
        if name in _ADD:
            self.uf.union_pairs(aa, ba)
            # a tracked channel plus a constant that is not zero: the sum is no longer zero when the channel
            # is; so is a sum with a shifted channel
            shifted = torch.where(sa >= 0, sa, sb)
            any_a, any_b = bool(ta.any()), bool(tb.any())
            all_a, all_b = any_a and bool(ta.all()), any_b and bool(tb.all())
            if any_a and not all_b:
                shifted = torch.where(shifted >= 0, shifted, torch.where(ta & ~tb & (bv != 0), aa, -1))
            if any_b and not all_a:
                shifted = torch.where(shifted >= 0, shifted, torch.where(tb & ~ta & (av != 0), ba, -1))
            if isinstance(a, Tensor) and isinstance(b, Tensor) and any_a and any_b:
                self.adds.append((self.stack[-1] if self.stack else "", self.anc.get(id(a), frozenset()),
                                  self.anc.get(id(b), frozenset())))  # fmt: skip
        elif name in _MUL:
            self.uf.union_pairs(aa, ba)
            # zero wherever one factor is a channel that is zero when pruned (the channels are united)
            zero = (ta & (sa < 0)) | (tb & (sb < 0))
            shifted = torch.where(zero, -1, torch.where(sa >= 0, sa, sb))
        else:  # division: the numerator keeps zeros, a tracked denominator does not
            self.uf.pin_all(ba, f"'{name}' divides by a channel")
            shifted = sa
        atoms = torch.where(ta, aa, ba)
        self.mark_shifted(atoms, shifted, reason)
        self._assign(out, atoms, anc)

    def _channel_binary(self, name: str, a: Any, b: Any, out: Tensor, anc: frozenset[str]) -> bool:
        """The common case of an add or product (a residual): two same-shape tensors whose every
        channel is tracked, constant over the other dims. Their channels are united pairwise in
        plain Python (no unique over every element); False when the case does not apply."""
        if not (isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == out.shape and b.shape == out.shape):
            return False
        aa, ba = self.get(a), self.get(b)
        ca, cb = self.channels(aa), self.channels(ba)
        if ca is None or cb is None or ca[1] != cb[1] or len(ca[3]) != len(cb[3]):
            return False
        if self.shift_of(aa) is not None or self.shift_of(ba) is not None:
            return False
        la, lb = ca[3], cb[3]
        if min(la, default=-1) < 0 or min(lb, default=-1) < 0:
            return False
        for x, y in zip(la, lb):
            if x != y:
                self.uf.union(x, y)
        if name in _ADD:
            self.adds.append((self.stack[-1] if self.stack else "", self.anc.get(id(a), frozenset()),
                              self.anc.get(id(b), frozenset())))  # fmt: skip
        self._assign(out, aa, anc)  # every channel of a is tracked: the sum's atoms are a's (shared)
        return True

    def _attention(self, args: tuple, kwargs: dict, out: Any, anc: frozenset[str]) -> None:
        names = ("query", "key", "value")
        q, k, v = (args[i] if len(args) > i else kwargs.get(names[i]) for i in range(3))
        mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
        if isinstance(mask, Tensor):
            self.uf.pin_all(self.get(mask), "attention mask")
        if not (isinstance(out, Tensor) and q.dim() == 4 and k.dim() == 4 and v.dim() == 4):
            self._pin_unknown("scaled_dot_product_attention", (q, k, v), {}, out, anc)
            return
        qa, ka, va = self.get(q), self.get(k), self.get(v)  # (B, H, T, D)
        n_head = q.shape[1]
        owner = self.stack[-1] if self.stack else ""
        per_head = []
        for h in range(n_head):  # heads of one attention call (a handful)
            atoms = torch.cat([qa[:, h].reshape(-1), ka[:, h].reshape(-1), va[:, h].reshape(-1)])
            atoms = torch.unique(atoms[atoms >= 0])
            for a in atoms[1:].tolist():
                self.uf.union(int(atoms[0]), a)
            per_head.append(atoms)
        self.heads.append((owner, n_head, per_head))
        vper = va[:, :, :1, :]  # value atoms are constant over time
        self._assign(out, vper.expand(out.shape).clone(), anc)


# ----------------------------------------------------------------------------- building the graph


def _forward(model: nn.Module, example: Any) -> Any:
    if isinstance(example, (tuple, list)):
        return model(*example)
    if isinstance(example, dict):
        return model(**example)
    return model(example)


@torch.no_grad()
def analyze(model: nn.Module, example: Any) -> DepGraph:
    """The coupled channel groups and residual branches of ``model`` for ``example`` (a tensor, a
    tuple of positional inputs or a dict of keyword inputs); see the module docstring.

    The model runs once in eval mode on the first sample (its mode is restored); nothing in it changes."""
    if example is None:
        raise ConfigError("example_input: coupled patterns (filter, channel, head, depth) and physical removal need "
                          "an example input to trace the model; pass example_input=<one input batch>")  # fmt: skip
    if has_unadapted(model):
        raise ConfigError("analyze: the model holds layers stored in another layout than the standard layer they "
                          "compute (e.g. GPT-2's Conv1D); call cimkit.nn.standardize_(model) first (sparsify_, "
                          "remove_ and the pipeline steps do)")  # fmt: skip
    if isinstance(example, Tensor) and example.dim() > 0 and example.shape[0] > 1:
        example = example[:1]  # one sample carries every channel: the shadows stay small
    rec = _Recorder(model)
    # two global hooks for the trace (not two per module): modules outside ``model`` are skipped
    handles = [register_module_forward_pre_hook(rec.pre_hook), register_module_forward_hook(rec.post_hook)]
    training = [m for m in model.modules() if m.training]  # their flags are restored after the trace
    if training:
        model.eval()
    try:
        with rec:
            out = _forward(model, example)
    finally:
        for h in handles:
            h.remove()
        for m in training:
            m.training = True
    for t in _tensors(out):
        rec.uf.pin_all(rec.get(t), "model output")
    return _build(model, rec)


def _head_attr(model: nn.Module, owner: str, n_head: int) -> str | None:
    try:
        mod = model.get_submodule(owner)
    except AttributeError:
        return None
    for a in HEAD_ATTRS:
        v = getattr(mod, a, None)
        if isinstance(v, int) and not isinstance(v, bool) and v == n_head:
            return a
    return None


def _build(model: nn.Module, rec: _Recorder) -> DepGraph:
    uf = rec.uf
    mods = dict(model.named_modules())
    root = [uf.find(a) for a in range(len(uf.parent))]  # every atom's root, looked up once
    for owner, n_head, per_head in rec.heads:
        for _h, atoms in enumerate(per_head):
            if atoms.numel():
                uf.head.setdefault(root[int(atoms[0])], (owner, n_head))
    units: dict[int, dict[Member, tuple[int, ...]]] = {}
    order: dict[int, tuple[int, int]] = {}  # root -> (producer index, first channel) for sorting
    producers_of: dict[int, list[str]] = {}

    def by_root(atoms: Tensor) -> dict[int, tuple[int, ...]]:
        """Positions of every root among the per-channel ``atoms`` (C,) (a few dozen channels:
        plain Python beats a handful of tiny tensor ops)."""
        groups: dict[int, list[int]] = {}
        for i, a in enumerate(atoms.reshape(-1).tolist()):
            if a >= 0:
                groups.setdefault(root[a], []).append(i)
        return {r: tuple(p) for r, p in groups.items()}

    for pi, (name, per) in enumerate(rec.prod.items()):
        param, d = rec.prod_member[name]
        mod = mods[name]
        bias = param == "weight" and d == 0 and getattr(mod, "bias", None) is not None
        m_w, m_b = Member(name, param, d, "out"), Member(name, "bias", 0, "out")
        for r, pos in by_root(per).items():
            u = units.setdefault(r, {})
            u[m_w] = pos
            if bias:
                u[m_b] = pos
            order.setdefault(r, (pi, pos[0]))
            producers_of.setdefault(r, []).append(name)
    for table, role in ((rec.cons, "in"), (rec.norm, "norm")):
        for name, feat in table.items():
            mod = mods[name]
            params = ["weight"] if role == "in" else [p for p in ("weight", "bias", "running_mean", "running_var")
                                                       if getattr(mod, p, None) is not None]  # fmt: skip
            members = [Member(name, p, 1 if role == "in" else 0, role) for p in params]
            for r, pos in by_root(feat).items():
                u = units.get(r)
                if u is not None:
                    u.update(dict.fromkeys(members, pos))
    # group the units into dimensions by their producers (and head owner)
    dims: dict[tuple, Dimension] = {}
    for r in sorted(units, key=order.__getitem__):
        prods = producers_of[r]
        head = uf.head.get(r)
        key = (tuple(prods), head)
        u = Unit(units[r])
        d = dims.get(key)
        if d is None:
            cons = sorted({m.module for m in u.positions if m.role == "in"})
            norms = sorted({m.module for m in u.positions if m.role == "norm"})
            kind = "head" if head is not None else "channel"
            d = dims[key] = Dimension(name=prods[0] + (":heads" if head else ""), kind=kind, producers=list(prods),
                                      consumers=cons, norms=norms, units=[])  # fmt: skip
            if head is not None:
                d.head_owner = head[0]
                d.head_attr = _head_attr(model, head[0], head[1])
                if d.head_attr is None:
                    d.pinned = (f"{head[0]}: no head-count attribute ({', '.join(HEAD_ATTRS)}) equal to "
                                f"{head[1]}; heads cannot be removed")  # fmt: skip
        d.units.append(u)
        if r in uf.pin and d.pinned is None:
            d.pinned = uf.pin[r]
    for d in dims.values():  # members of later units that the first unit lacks, in first-seen order
        for m in d.members():
            lst = d.consumers if m.role == "in" else d.norms if m.role == "norm" else None
            if lst is not None and m.module not in lst:
                lst.append(m.module)
    out = DepGraph(dims=list(dims.values()))
    out.branches = _branches(rec, mods)
    return out


def _branches(rec: _Recorder, mods: dict[str, nn.Module]) -> list[Branch]:
    weighted = weighted_types()
    seen: set[frozenset[str]] = set()
    out = []
    for owner, a, b in rec.adds:
        da, db = a - b, b - a
        ka = [n for n in da if isinstance(mods.get(n), weighted)]
        kb = [n for n in db if isinstance(mods.get(n), weighted)]
        if len(ka) == len(kb):
            continue  # not a residual (both sides carry as many layers)
        side = da if len(ka) > len(kb) else db
        key = frozenset(side)
        if key in seen:
            continue
        seen.add(key)
        order = list(mods)
        layers = sorted((n for n in side if isinstance(mods.get(n), weighted)), key=order.index)
        norms = sorted((n for n in side if not isinstance(mods.get(n), weighted)
                        and getattr(mods.get(n), "weight", None) is not None), key=order.index)  # fmt: skip
        out.append(Branch(owner, layers, norms))
    return out
