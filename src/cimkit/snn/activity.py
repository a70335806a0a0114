"""Activity of a spiking network measured in a run, for the cost model to price.

:func:`measure_activity` (or the :class:`ActivityMonitor` context manager around any evaluation)
counts, per inference (one input sample over all ``T`` time steps):

**Neuron layers** (:class:`NeuronActivity`): ``neurons`` (per sample), ``spikes`` (nonzero
outputs), ``updates`` (``neurons · T``: every neuron's state is updated every step),
``rate`` (``spikes / updates``).

**Weighted layers** (:class:`SynapseActivity`, every Linear/Conv, digital or analog):

* ``input_events``: nonzero input values; ``binary_input``: every input was 0 or one common
  level ``input_level`` (a spike train: one word-line pulse per event, no multi-bit DAC);
* ``synops``: synaptic operations, ``Σ_events fan-out``, counted exactly (a Linear's event reaches
  ``out_features`` synapses; a convolution's event reaches every output it is in the receptive
  field of, times the output channels of its group); on non-binary inputs these are MACs;
* ``dense_macs``: what the layer computes when every input is processed, ``macs_per_step · T``,
  and ``macs_per_step`` (= one pass of the ANN with the same layer);
* ``reads``: input vectors applied to the crossbar (Linear: one per step; conv: one per output
  position per step), ``reads_per_step`` (= ``reads / T``), ``nonzero_reads`` (vectors with at
  least one event: an event-driven array can skip the others);
* ``analog``, ``arrays`` (physical arrays read per input vector: row tiles × column blocks, 0 for
  a digital layer), ``row_tiles``.

All counts are floats per inference (means over the measured samples). :class:`SpikeStats`
holds both lists plus ``time_steps`` and ``samples``, totals as properties, and ``to_dict()`` for
``results.json`` (the ``activity`` entry of the ``to_snn`` step's and the ``time_steps``
protocol's details).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cimkit.analog.layers import AnalogLayer
from cimkit.errors import ConfigError
from cimkit.snn.neurons import SpikingNeuron
from cimkit.snn.simulate import SpikingNet

__all__ = ["ActivityMonitor", "NeuronActivity", "SpikeStats", "SynapseActivity", "measure_activity", "single_level"]


@dataclass
class NeuronActivity:
    """One neuron layer, per inference (see the module docstring)."""

    name: str
    kind: str
    neurons: int
    spikes: float
    updates: float
    rate: float


@dataclass
class SynapseActivity:
    """One Linear/Conv layer, per inference (see the module docstring)."""

    name: str
    kind: str  # linear | conv1d | conv2d
    fan_in: int  # inputs per output (in_features, or C/groups · kernel size)
    fan_out: int  # outputs one input value reaches at most (out_features, or C_out/groups · kernel size)
    input_events: float
    binary_input: bool
    input_level: float | None
    synops: float
    dense_macs: float
    macs_per_step: float
    reads: float
    reads_per_step: float
    nonzero_reads: float
    analog: bool
    arrays: int
    row_tiles: int


@dataclass
class SpikeStats:
    """Activity of one measurement: per-layer lists, ``time_steps`` T and ``samples`` measured."""

    time_steps: int
    samples: int
    neurons: list[NeuronActivity] = field(default_factory=list)
    synapses: list[SynapseActivity] = field(default_factory=list)

    @property
    def spikes(self) -> float:
        """Spikes per inference, all neuron layers."""
        return sum(n.spikes for n in self.neurons)

    @property
    def neuron_updates(self) -> float:
        return sum(n.updates for n in self.neurons)

    @property
    def synops(self) -> float:
        """Synaptic operations per inference on binary (spike) inputs."""
        return sum(s.synops for s in self.synapses if s.binary_input)

    @property
    def macs(self) -> float:
        """Multiply-accumulates per inference on non-binary inputs (e.g. an analog first layer)."""
        return sum(s.synops for s in self.synapses if not s.binary_input)

    @property
    def ann_macs(self) -> float:
        """MACs of one pass of the equivalent ANN (every weighted layer once, dense)."""
        return sum(s.macs_per_step for s in self.synapses)

    @property
    def reads(self) -> float:
        return sum(s.reads for s in self.synapses)

    def totals(self) -> dict[str, float]:
        return {"spikes": self.spikes, "neuron_updates": self.neuron_updates, "synops": self.synops,
                "macs": self.macs, "ann_macs": self.ann_macs, "crossbar_reads": self.reads}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"time_steps": self.time_steps, "samples": self.samples, "totals": self.totals(),
                "neurons": [asdict(n) for n in self.neurons], "synapses": [asdict(s) for s in self.synapses]}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SpikeStats:
        return cls(int(d["time_steps"]), int(d["samples"]), [NeuronActivity(**n) for n in d.get("neurons", [])],
                   [SynapseActivity(**s) for s in d.get("synapses", [])])  # fmt: skip


def single_level(x: Tensor) -> tuple[float | None, bool]:
    """``(level, single)``: a nonzero value of ``x`` (None if ``x`` is all zero) and whether every
    nonzero entry equals it (spikes of one height). Two reductions and one comparison pass."""
    mx, mn = float(x.amax()), float(x.amin())
    if mx == 0.0 and mn == 0.0:
        return None, True
    lvl = mx if mx != 0.0 else mn
    return lvl, bool(((x == 0) | (x == lvl)).all())


_KINDS = ((nn.Conv2d, "conv2d"), (nn.Conv1d, "conv1d"), (nn.Linear, "linear"))


def _kind(m: nn.Module) -> str | None:
    for cls, k in _KINDS:
        if isinstance(m, cls):
            return k
    return None


class _Acc:
    def __init__(self) -> None:
        self.v: dict[str, float] = {}
        self.level: float | None = None
        self.binary = True
        self.neurons = 0

    def add(self, k: str, x: float) -> None:
        self.v[k] = self.v.get(k, 0.0) + float(x)


class ActivityMonitor:
    """``with ActivityMonitor(snn) as mon: evaluate(...)``; then ``mon.stats()`` (module docstring)."""

    def __init__(self, model: SpikingNet) -> None:
        if not isinstance(model, SpikingNet):
            raise ConfigError("activity: the model is not a cimkit.snn.SpikingNet (convert it with to_snn)")
        self.model = model
        self.samples = 0
        self.acc: dict[str, _Acc] = {}
        self.meta: dict[str, tuple[str, nn.Module]] = {}
        self._hooks: list[Any] = []

    def __enter__(self) -> ActivityMonitor:
        self._hoist = self.model.hoist
        self.model.hoist = False  # count every step's computation
        self._hooks.append(self.model.register_forward_pre_hook(self._count_samples))
        for name, m in self.model.net.named_modules():
            if isinstance(m, SpikingNeuron):
                self.meta[name] = ("neuron", m)
                self._hooks.append(m.register_forward_hook(self._neuron_hook(name)))
            elif _kind(m) is not None:
                self.meta[name] = (_kind(m) or "", m)
                self._hooks.append(m.register_forward_hook(self._synapse_hook(name, m)))
        return self

    def __exit__(self, *exc: Any) -> None:
        self.model.hoist = self._hoist
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    def _count_samples(self, _m: nn.Module, args: tuple[Any, ...]) -> None:
        self.samples += int(args[0].shape[0])

    def _neuron_hook(self, name: str) -> Any:
        def hook(_m: nn.Module, _i: Any, out: Tensor) -> None:
            a = self.acc.setdefault(name, _Acc())
            a.neurons = int(math.prod(out.shape[1:]))
            a.add("spikes", int(torch.count_nonzero(out.detach())))
            a.add("rows", out.shape[0])

        return hook

    def _synapse_hook(self, name: str, mod: nn.Module) -> Any:
        def hook(m: nn.Module, inp: tuple[Tensor, ...], out: Tensor) -> None:
            x = inp[0].detach()
            a = self.acc.setdefault(name, _Acc())
            nz = x != 0
            lvl, same = single_level(x)
            if lvl is not None:
                if not same or (a.level is not None and not math.isclose(a.level, lvl, rel_tol=1e-6)):
                    a.binary = False
                a.level = lvl if a.level is None else a.level
            a.add("events", int(nz.sum()))
            kind = self.meta[name][0]
            if kind == "linear":
                rows = x.numel() // x.shape[-1]
                nzf = nz.reshape(rows, x.shape[-1])
                a.add("synops", float(nzf.sum()) * m.out_features)
                a.add("reads", rows)
                a.add("nonzero_reads", int(nzf.any(-1).sum()))
                a.add("macs", rows * m.in_features * m.out_features)
                a.add("rows", rows)
                return
            conv = F.conv2d if kind == "conv2d" else F.conv1d
            g = m.groups
            ones = torch.ones(g, m.in_channels // g, *m.kernel_size, dtype=x.dtype, device=x.device)
            nzf, pad = nz.to(x.dtype), m.padding
            if m.padding_mode != "zeros":
                nzf, pad = F.pad(nzf, m._reversed_padding_repeated_twice, mode=m.padding_mode), 0
            cnt = conv(nzf, ones, None, m.stride, pad, m.dilation, g)  # (R, g, *out) events per receptive field
            positions = int(math.prod(cnt.shape[2:]))
            a.add("synops", float(cnt.sum()) * (m.out_channels // g))
            a.add("reads", x.shape[0] * positions)
            a.add("nonzero_reads", int((cnt.sum(1) > 0).sum()))
            k = int(math.prod(m.kernel_size))
            a.add("macs", x.shape[0] * positions * m.out_channels * (m.in_channels // g) * k)
            a.add("rows", x.shape[0])

        return hook

    def stats(self) -> SpikeStats:
        t = int(self.model.num_steps)
        n = max(self.samples, 1)
        out = SpikeStats(t, self.samples)
        for name, (kind, m) in self.meta.items():
            a = self.acc.get(name)
            if a is None:
                continue
            if kind == "neuron":
                upd = a.neurons * a.v.get("rows", 0.0) / n
                sp = a.v.get("spikes", 0.0) / n
                out.neurons.append(NeuronActivity(name, type(m).__name__, a.neurons, sp, upd, sp / upd if upd else 0.0))
                continue
            if kind == "linear":
                fan_in, fan_out = m.in_features, m.out_features
            else:
                k = int(math.prod(m.kernel_size))
                fan_in, fan_out = m.in_channels // m.groups * k, m.out_channels // m.groups * k
            geo = getattr(m, "geometry", None) if isinstance(m, AnalogLayer) else None
            reads = a.v.get("reads", 0.0) / n
            macs = a.v.get("macs", 0.0) / n
            out.synapses.append(SynapseActivity(
                name=name, kind=kind, fan_in=fan_in, fan_out=fan_out, input_events=a.v.get("events", 0.0) / n,
                binary_input=a.binary, input_level=a.level, synops=a.v.get("synops", 0.0) / n, dense_macs=macs,
                macs_per_step=macs / t, reads=reads, reads_per_step=reads / t,
                nonzero_reads=a.v.get("nonzero_reads", 0.0) / n, analog=geo is not None,
                arrays=int(geo.arrays) if geo is not None else 0, row_tiles=int(geo.n_tiles) if geo is not None else 0,
            ))  # fmt: skip
        return out


@torch.no_grad()
def measure_activity(model: SpikingNet, batches: list[Tensor]) -> SpikeStats:
    """Run ``model`` on ``batches`` (inputs only; one tensor counts as one batch) and return the
    :class:`SpikeStats` per inference."""
    if isinstance(batches, Tensor):
        batches = [batches]
    was = model.training
    model.eval()
    try:
        with ActivityMonitor(model) as mon:
            for xb in batches:
                model(xb)
    finally:
        model.train(was)
    return mon.stats()
