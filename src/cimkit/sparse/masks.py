"""Masks as weight parametrizations that every later transform keeps.

A mask is a :class:`WeightMask` registered with ``torch.nn.utils.parametrize`` on a layer's
tensor (``weight``, and for pruned filters also ``bias`` and the BatchNorm ``weight``/``bias``):
the layer then computes with ``w ⊙ mask``; the protocol of :mod:`cimkit.nn.weights` makes the
quantizers re-apply it after quantizing (a binary grid has no zero) and the analog layers leave
all-zero arrays unprogrammed. Masks live in the ``state_dict`` (``parametrizations.weight.0.mask``),
so checkpoints, fine-tuning and resumed runs keep them; training updates only the kept weights'
effective values (the masked ones stay exactly zero).

::

    sparsify_(model, SparsityConfig(pattern="nm", n=2, m=4))                       # cimkit.sparse.sparsify
    sparsify_(model, SparsityConfig(pattern="filter", sparsity=0.5), example_input=x)  # coupled
    cimkit.apply_(model, SparsityConfig(pattern="block", sparsity=0.75))          # the same verb
    unsparsify_(model)   # or cimkit.undo_(model): the unmasked weights come back
    bake_(model)         # keep the zeros in the weights, drop the parametrizations

Pruning a layer that already has a mask multiplies the masks (pruning is monotone). Masks must be
added before quantization / analog mapping (a transformed layer's class would lose the
parametrization); updating an existing mask is allowed at any time.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from cimkit.errors import ConfigError
from cimkit.nn.transform import holds_transform, own_parametrized_class_, remove_weight_masks_

__all__ = ["WeightMask", "bake_", "get_mask", "layer_masks", "set_mask", "unsparsify_"]


class WeightMask(nn.Module):
    """Parametrization ``w -> w ⊙ mask`` (``mask``: 0/1 buffer in the tensor's dtype, persistent)."""

    is_weight_mask = True

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w: Tensor) -> Tensor:
        return w * self.mask.to(w.dtype)

    def extra_repr(self) -> str:
        return f"kept={int(self.mask.count_nonzero())}/{self.mask.numel()}"


def _mask_module(mod: nn.Module, name: str) -> WeightMask | None:
    plist = getattr(getattr(mod, "parametrizations", None), name, None)
    if plist is None:
        return None
    for p in plist:
        if isinstance(p, WeightMask):
            return p
    return None


def get_mask(mod: nn.Module, name: str = "weight") -> Tensor | None:
    """The :class:`WeightMask` of ``mod.<name>`` (None when there is none)."""
    p = _mask_module(mod, name)
    return None if p is None else p.mask


@torch.no_grad()
def set_mask(mod: nn.Module, name: str, mask: Tensor, *, replace: bool = False, where: str = "") -> None:
    """Mask ``mod.<name>`` with ``mask`` (0 = pruned): multiplied into an existing mask, or a new
    :class:`WeightMask` parametrization (``replace=True`` overwrites an existing mask)."""
    t = getattr(mod, name)
    if not isinstance(t, Tensor) or tuple(mask.shape) != tuple(t.shape):
        raise ConfigError(f"{where or type(mod).__name__}.{name}: mask shape {tuple(mask.shape)} does not fit the tensor "
                          f"{tuple(t.shape) if isinstance(t, Tensor) else t!r}")  # fmt: skip
    m = mask.to(device=t.device, dtype=t.dtype if t.is_floating_point() else torch.float32).clone()  # own storage
    p = _mask_module(mod, name)
    if p is not None:
        if replace:
            p.mask.copy_(m)
        else:
            p.mask.mul_(m)
        return
    if holds_transform(mod):
        raise ConfigError(
            f"sparsify: layer '{where or type(mod).__name__}' is already transformed ({type(mod).__name__}); add masks "
            f"before quantizing or mapping onto crossbars (an existing mask can be updated at any time)"
        )
    own_parametrized_class_(mod)  # a deep copy shares its class with the original: add the property to its own
    parametrize.register_parametrization(mod, name, WeightMask(m))


def layer_masks(model: nn.Module) -> dict[str, Tensor]:
    """``{"<module>.<tensor>": mask}`` of every :class:`WeightMask` in ``model``."""
    out = {}
    for mname, mod in model.named_modules():
        plists = getattr(mod, "parametrizations", None)
        if plists is None:
            continue
        for pname in plists:
            p = _mask_module(mod, pname)
            if p is not None:
                out[f"{mname}.{pname}" if mname else pname] = p.mask
    return out


def unsparsify_(model: nn.Module) -> nn.Module:
    """Remove every weight mask; the unmasked weights come back (what ``cimkit.undo_`` does too)."""
    return remove_weight_masks_(model, bake=False)


def bake_(model: nn.Module) -> nn.Module:
    """Remove every weight mask, keeping the masked values (the pruned weights stay zero)."""
    return remove_weight_masks_(model, bake=True)
