"""Conv/Linear + BatchNorm folding (inference-time BN folded into the preceding layer's weights).

With BN in eval mode, ``bn(conv(x)) = γ·(W*x + b - μ)/sqrt(σ² + ε) + β``, so the folded layer has
``W' = W·γ/sqrt(σ²+ε)`` (per output channel) and ``b' = (b - μ)·γ/sqrt(σ²+ε) + β`` (Jacob et al.,
CVPR 2018, Sec. 3.2). The BN module is replaced by :class:`FoldedBN` (an identity that remembers
which layer absorbed it).

Which pairs are found:

* by tracing the model with ``torch.fx``: a BatchNorm1d/2d whose only input is the output of a
  Linear/Conv1d/Conv2d used nowhere else, each module called once (covers ResNets and any
  traceable graph);
* if tracing fails (data-dependent control flow), only a layer immediately followed by its BN inside
  the same ``nn.Sequential``.

Limits: BN without running statistics (``track_running_stats=False``) is not folded; folding uses
the running statistics, i.e. eval-mode semantics, so fold a trained model before PTQ/QAT; layers
that are already quantized are rejected (fold first, then quantize).
"""

from __future__ import annotations

import itertools
import logging

import torch
from torch import nn

from cimkit.errors import ConfigError
from cimkit.quant.layers import QuantLayer

log = logging.getLogger("cimkit.quant")

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
_BNS = (nn.BatchNorm1d, nn.BatchNorm2d)


class FoldedBN(nn.Identity):
    """Placeholder left where a BatchNorm was folded into ``folded_into``."""

    def __init__(self, folded_into: str = "") -> None:
        super().__init__()
        self.folded_into = folded_into

    def extra_repr(self) -> str:
        return f"folded into {self.folded_into!r}"


def _pairs_fx(model: nn.Module) -> list[tuple[str, str]] | None:
    try:
        import torch.fx as fx

        gm = fx.symbolic_trace(model)
    except Exception as e:  # tracing is best effort; fall back to Sequential scanning
        log.debug("fold_bn_: torch.fx tracing failed (%s); scanning nn.Sequential only", e)
        return None
    mods = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), _BNS):
            continue
        if len(node.args) != 1 or node.kwargs:
            continue
        src = node.args[0]
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) != 1:
            continue
        if type(mods.get(src.target)) not in _LAYERS and not isinstance(mods.get(src.target), QuantLayer):
            continue
        if calls.get(src.target) == 1 and calls.get(node.target) == 1:
            pairs.append((str(src.target), str(node.target)))
    return pairs


def _pairs_sequential(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        items = list(mod.named_children())
        for (n1, m1), (n2, m2) in itertools.pairwise(items):
            if (type(m1) in _LAYERS or isinstance(m1, QuantLayer)) and isinstance(m2, _BNS):
                pre = f"{name}." if name else ""
                pairs.append((pre + n1, pre + n2))
    return pairs


def bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(layer_name, bn_name)`` pairs that :func:`fold_bn_` would fold."""
    pairs = _pairs_fx(model)
    return _pairs_sequential(model) if pairs is None else pairs


@torch.no_grad()
def fold_layer_bn(layer: nn.Module, bn: nn.Module) -> None:
    """Fold ``bn`` (eval-mode statistics) into ``layer``'s weight and bias, in place."""
    if bn.running_mean is None or bn.running_var is None:
        raise ConfigError("fold_bn_: BatchNorm without running statistics cannot be folded")
    w = layer.weight
    if w.shape[0] != bn.num_features:
        raise ConfigError(f"fold_bn_: {bn.num_features} BN features do not match {w.shape[0]} output channels")
    inv = torch.rsqrt(bn.running_var.float() + bn.eps)  # (C,)
    gamma = bn.weight if bn.affine else torch.ones_like(inv)
    beta = bn.bias if bn.affine else torch.zeros_like(inv)
    k = (gamma * inv).to(w.dtype)  # (C,)
    w.mul_(k.reshape(-1, *([1] * (w.dim() - 1))))
    b = layer.bias if layer.bias is not None else torch.zeros_like(k)
    new_b = ((b - bn.running_mean) * k + beta).to(w.dtype)  # (C,)
    if layer.bias is None:
        layer.bias = nn.Parameter(new_b)
    else:
        layer.bias.copy_(new_b)


def fold_bn_(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a Linear/Conv layer into it (module docstring);
    the BN becomes :class:`FoldedBN`. In place; returns ``model``."""
    mods = dict(model.named_modules())
    n = 0
    for lname, bname in bn_pairs(model):
        layer, bn = mods[lname], mods[bname]
        if isinstance(layer, QuantLayer):
            raise ConfigError(f"fold_bn_: layer '{lname}' is already quantized; fold BatchNorm before quantize_")
        if not bn.track_running_stats:
            log.warning("fold_bn_: %s has no running statistics; not folded", bname)
            continue
        fold_layer_bn(layer, bn)
        parent_name, _, child = bname.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, FoldedBN(lname))
        n += 1
    log.debug("fold_bn_: folded %d BatchNorm layer(s)", n)
    return model
