"""ANN→SNN conversion: threshold balancing (Rueckauer et al. 2017) and QCFS (Bu et al. 2022).

:func:`to_snn` turns a trained ReLU (or QCFS) network into a :class:`~cimkit.snn.SpikingNet` of
integrate-and-fire neurons:

1. BatchNorm is folded into the preceding Linear/Conv (:func:`cimkit.quant.fold_bn_`); a BN that
   cannot be folded stays, as the affine map it is in eval mode.
2. Every activation call becomes an IF neuron (:func:`cimkit.snn.graph.modularize` finds them,
   also functional ``F.relu`` in residual blocks) with reset by subtraction (which keeps the
   residual charge; Rueckauer et al., Front. Neurosci. 11:682, 2017, Sec. 2.1) and initial
   membrane ``θ/2`` (``init_mem_frac = 0.5``: the SNN counterpart of rounding, Bu et al. ICLR 2022).
3. Thresholds (data-based normalization): for a ReLU, ``θ_l = λ_l``, the maximum (``norm = "max"``,
   Diehl et al., IJCNN 2015) or the ``percentile``-th percentile (``"percentile"``, 99.9 by default;
   Rueckauer et al. 2017, Sec. 2.3) of the layer's positive activations on calibration batches;
   for a :class:`~cimkit.snn.QCFS` activation, ``θ_l`` is its trained ``λ``. With inputs in ANN
   units, an IF neuron with threshold ``λ`` fires at rate ``≈ clip(a/λ, 0, 1)`` for a ReLU input
   current ``a``, so a spike stands for the value ``λ``: its amplitude (``graded_spikes_factor``)
   is ``λ``, and wherever every consumer of a neuron is a Linear/Conv layer (through flatten,
   average or max pooling, dropout) the amplitude is folded into those layers' weights
   (``W ← λ W``) and the spikes become exactly 0/1 — the weight scaling of Rueckauer's
   normalization, with the threshold kept in ANN units. A neuron that also feeds a residual add
   keeps the amplitude (its spikes are one-level pulses of height ``λ``).
4. Max pooling of spike trains becomes count-gated max pooling
   (:class:`~cimkit.snn.SpikingMaxPool2d`); max pooling of currents (before the activation) stays.
   Average pooling, flatten, residual adds and biases (a constant current each step) need nothing.
5. The network is wrapped in a :class:`~cimkit.snn.SpikingNet` with ``num_steps`` steps, the
   ``encoder`` (direct analog input by default) and the ``mean`` readout: the last layer is not
   spiking, its output averaged over time (it converges to the ANN's logits).

:func:`qcfs_` is the ANN side of QCFS: it replaces every ReLU by ``QCFS(levels)`` with ``λ``
initialised from the activations (or a fixed value), optionally max pooling by average pooling;
then fine-tune the ANN and convert with ``method = "qcfs"`` (or ``auto``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import Tensor, nn

from cimkit.config import Config, as_enum, check_range
from cimkit.errors import ConfigError
from cimkit.nn.walk import set_module
from cimkit.quant.fold import fold_bn_
from cimkit.snn.encoders import Encoder, make_encoder
from cimkit.snn.graph import Site, consumers, modularize, passthrough
from cimkit.snn.neurons import IF, ResetMechanism
from cimkit.snn.pooling import SpikingMaxPool2d
from cimkit.snn.qcfs import QCFS
from cimkit.snn.simulate import Readout, SpikingNet

__all__ = ["ConvertConfig", "ConvertMethod", "NormMode", "activation_scales", "qcfs_", "to_snn"]

log = logging.getLogger(__name__)

_MAX_SAMPLES = 1 << 22  # activations kept per layer per batch for the percentile (random subsample)
_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


class NormMode(str, Enum):
    """Data-based threshold: the maximum or a percentile of the positive activations."""

    MAX = "max"
    PERCENTILE = "percentile"


class ConvertMethod(str, Enum):
    """``threshold_balance`` (ReLU networks), ``qcfs`` (QCFS networks), ``auto`` (whichever it has)."""

    AUTO = "auto"
    THRESHOLD_BALANCE = "threshold_balance"
    QCFS = "qcfs"


@dataclass
class ConvertConfig(Config):
    """ANN→SNN conversion (see :mod:`cimkit.snn.convert`): ``num_steps`` T, ``method``, ``norm`` and
    ``percentile`` (threshold balancing), ``reset_mechanism``, ``init_mem_frac`` (initial membrane /
    threshold), ``encoder`` (``direct`` | ``rate``; rate coding of normalised images rescales
    spikes back to the network's input units), ``fold_bn``, ``fold_amplitudes``."""

    num_steps: int = 32
    method: ConvertMethod = ConvertMethod.AUTO
    norm: NormMode = NormMode.PERCENTILE
    percentile: float = 99.9
    reset_mechanism: ResetMechanism = ResetMechanism.SUBTRACT
    init_mem_frac: float = 0.5
    encoder: str = "direct"
    fold_bn: bool = True
    fold_amplitudes: bool = True

    def __post_init__(self) -> None:
        check_range("num_steps", self.num_steps, 1, 100_000)
        self.method = as_enum("method", self.method, ConvertMethod)
        self.norm = as_enum("norm", self.norm, NormMode)
        check_range("percentile", self.percentile, 0.0, 100.0, lo_open=True)
        self.reset_mechanism = as_enum("reset_mechanism", self.reset_mechanism, ResetMechanism)
        check_range("init_mem_frac", self.init_mem_frac, 0.0, 1.0)
        if self.encoder not in ("direct", "rate"):
            raise ConfigError(f"encoder: {self.encoder!r} is not allowed for conversion; allowed: direct, rate")


def _subsample(v: Tensor, n: int, gen: torch.Generator) -> Tensor:
    if v.numel() <= n:
        return v
    idx = torch.randint(0, v.numel(), (n,), generator=gen, device=v.device)
    return v[idx]


@torch.no_grad()
def activation_scales(net: nn.Module, sites: list[Site], batches: list[Tensor], norm: NormMode | str = "percentile",
                      percentile: float = 99.9, seed: int = 0) -> dict[str, float]:  # fmt: skip
    """``λ`` per activation site: the max or ``percentile``-th percentile of its positive outputs
    over ``batches`` (the ANN's forward, eval mode)."""
    norm = as_enum("norm", norm, NormMode)
    if not batches:
        raise ConfigError("calib_batches: threshold balancing needs at least one calibration batch")
    mods = dict(net.named_modules())
    store: dict[str, list[Tensor]] = {s.target: [] for s in sites}
    gen = torch.Generator().manual_seed(seed)
    hooks = []
    for s in sites:
        def hook(_m: nn.Module, _i: Any, out: Tensor, name: str = s.target) -> None:
            pos = out.detach().flatten()
            pos = pos[pos > 0].float().cpu()
            store[name].append(pos.max().reshape(1) if norm is NormMode.MAX and pos.numel() else
                               _subsample(pos, _MAX_SAMPLES, gen))  # fmt: skip

        hooks.append(mods[s.target].register_forward_hook(hook))
    was = net.training
    net.eval()
    try:
        for xb in batches:
            net(xb)
    finally:
        for h in hooks:
            h.remove()
        net.train(was)
    out = {}
    for name, vals in store.items():
        v = torch.cat(vals) if vals else torch.zeros(0)
        if v.numel() == 0:
            log.warning("snn: activation '%s' was never positive on the calibration data; threshold 1.0", name)
            out[name] = 1.0
            continue
        if norm is NormMode.MAX:
            out[name] = float(v.max())
        else:
            k = max(1, min(v.numel(), math.ceil(percentile / 100.0 * v.numel())))
            out[name] = float(v.kthvalue(k).values)
    return out


def _fold_amplitudes(net: nn.Module, gm: Any, sites: dict[str, IF]) -> list[str]:
    """Fold each neuron's amplitude into the weights of its consumers when they are all plain
    Linear/Conv layers called once; returns the neurons folded."""
    mods = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[str(n.target)] = calls.get(str(n.target), 0) + 1
    folded = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or str(node.target) not in sites:
            continue
        ends = consumers(node, mods)
        ok = bool(ends) and all(
            e.op == "call_module" and type(mods[str(e.target)]) in _FOLDABLE and calls[str(e.target)] == 1 for e in ends
        )
        if not ok:
            continue
        neuron = sites[str(node.target)]
        lam = neuron.graded_spikes_factor.clone()
        with torch.no_grad():
            for e in ends:
                mods[str(e.target)].weight.mul_(lam.to(mods[str(e.target)].weight.dtype))
            neuron.graded_spikes_factor.fill_(1.0)
        folded.append(str(node.target))
    return folded


def to_snn(model: nn.Module, batches: list[Tensor], cfg: ConvertConfig | None = None, *,
           encoder: Encoder | None = None, seed: int = 0) -> SpikingNet:  # fmt: skip
    """Convert a trained ANN (in place: its layers are reused) into a :class:`SpikingNet` (module
    docstring). ``batches``: calibration inputs for threshold balancing; ``encoder`` overrides
    ``cfg.encoder`` (e.g. a rate encoder with the dataset's normalisation). The conversion record
    (thresholds, folded neurons) is in the result's ``conversion`` attribute."""
    cfg = cfg or ConvertConfig()
    if isinstance(model, SpikingNet):
        raise ConfigError("to_snn: the model is already a spiking network")
    model.eval()
    if cfg.fold_bn:
        fold_bn_(model)
    net, sites, gm = modularize(model)
    mods = dict(net.named_modules())
    acts = [s for s in sites if s.kind in ("relu", "qcfs")]
    if not acts:
        raise ConfigError("to_snn: the model has no ReLU or QCFS activation to turn into spiking neurons")
    has_q = any(s.kind == "qcfs" for s in acts)
    method = cfg.method
    if method is ConvertMethod.AUTO:
        method = ConvertMethod.QCFS if has_q else ConvertMethod.THRESHOLD_BALANCE
    if method is ConvertMethod.QCFS and not all(s.kind == "qcfs" for s in acts):
        raise ConfigError("method: 'qcfs' needs every activation to be QCFS (run the qcfs step and fine-tune first)")
    if method is ConvertMethod.QCFS:
        lams = {s.target: float(mods[s.target].threshold.detach().abs()) for s in acts}
    else:
        relus = [s for s in acts if s.kind == "relu"]
        lams = activation_scales(net, relus, batches, cfg.norm, cfg.percentile, seed)
        lams.update({s.target: float(mods[s.target].threshold.detach().abs()) for s in acts if s.kind == "qcfs"})
    # max pools fed (through pass-through ops) by an activation pool spike trains: gate them
    act_nodes = {s.node for s in acts}
    spiking_pools = []
    for s in sites:
        if s.kind != "maxpool":
            continue
        src = s.node.args[0]
        while hasattr(src, "op") and src not in act_nodes and src.op != "placeholder" and passthrough(src, mods):
            src = src.args[0]
        if src in act_nodes:
            spiking_pools.append(s)
    neurons: dict[str, IF] = {}
    for s in acts:
        lam = lams[s.target]
        n = IF(threshold=lam, reset_mechanism=cfg.reset_mechanism, init_mem_frac=cfg.init_mem_frac,
               graded_spikes_factor=lam)  # fmt: skip
        set_module(net, s.target, n)
        neurons[s.target] = n
    for s in spiking_pools:
        set_module(net, s.target, SpikingMaxPool2d.from_max_pool(mods[s.target], s.target))
    folded = _fold_amplitudes(net, gm, neurons) if cfg.fold_amplitudes else []
    snn = SpikingNet(net, cfg.num_steps, encoder or make_encoder(cfg.encoder), Readout.MEAN)
    snn.conversion = {
        "method": method.value, "thresholds": lams, "folded": folded, "spiking_pools": [s.target for s in spiking_pools],
        "norm": cfg.norm.value if method is ConvertMethod.THRESHOLD_BALANCE else None,
    }  # fmt: skip
    return snn


def qcfs_(model: nn.Module, levels: int = 8, batches: list[Tensor] | None = None, *, percentile: float = 99.9,
          init_threshold: float = 8.0, avg_pool: bool = False, seed: int = 0) -> nn.Module:  # fmt: skip
    """Replace every ReLU of ``model`` by :class:`QCFS` with ``levels`` (in place when all are
    modules called once; returns the model to use). ``λ`` starts at the ``percentile`` of the ReLU's
    positive outputs on ``batches`` (or ``init_threshold`` without batches); ``avg_pool`` also
    replaces max pooling by average pooling of the same geometry (Bu et al. use average pooling)."""
    check_range("levels", levels, 1, 1 << 16)
    net, sites, _ = modularize(model)
    mods = dict(net.named_modules())
    relus = [s for s in sites if s.kind == "relu"]
    if not relus:
        raise ConfigError("qcfs: the model has no ReLU to replace")
    lams = activation_scales(net, relus, batches, "percentile", percentile, seed) if batches else {}
    for s in relus:
        set_module(net, s.target, QCFS(levels, lams.get(s.target, init_threshold)))
    if avg_pool:
        for s in sites:
            if s.kind == "maxpool":
                m = mods[s.target]
                if m.dilation not in (1, (1, 1)) or m.ceil_mode:
                    raise ConfigError(f"qcfs: max pooling '{s.target}' with dilation/ceil_mode has no average twin")
                set_module(net, s.target, nn.AvgPool2d(m.kernel_size, m.stride, m.padding))
    return net
