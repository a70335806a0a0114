"""The weight-side protocol shared by every concern: masks that every later transform keeps.

A sparsity mask is a ``torch.nn.utils.parametrize`` parametrization of a layer's ``weight`` whose
module has ``is_weight_mask = True`` and a ``mask`` tensor (1 = kept, 0 = pruned). The plain layer
then computes with the masked weight; a transform that changes the weight afterwards (a
quantizer: a binary grid has no zero) re-applies the mask with :func:`remask`, so a pruned weight
stays exactly zero after quantization and on crossbars.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["remask", "weight_mask"]


def weight_mask(module: nn.Module, name: str = "weight") -> Tensor | None:
    """The combined mask of ``module``'s ``name`` parametrizations (None when it has none)."""
    plist = getattr(getattr(module, "parametrizations", None), name, None)
    if plist is None:
        return None
    mask = None
    for p in plist:
        if getattr(p, "is_weight_mask", False):
            m = p.mask
            mask = m if mask is None else mask * m
    return mask


def remask(module: nn.Module, w: Tensor, name: str = "weight") -> Tensor:
    """``w`` with ``module``'s weight mask applied again (``w`` unchanged without a mask)."""
    mask = weight_mask(module, name)
    return w if mask is None else w * mask.to(w.dtype)
