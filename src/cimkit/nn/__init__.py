"""The shared seams of every concern: the layer walk and the transform protocol.

See :mod:`cimkit.nn.walk` (select layers, name patterns, per-layer rule tables, ``set_module``) and
:mod:`cimkit.nn.transform` (``apply_`` dispatched on the config's type, ``undo_``).
"""

from cimkit.nn.adapters import ADAPTERS, TransposedLinear, register_adapter, standardize_
from cimkit.nn.transform import TRANSFORMS, Transformed, apply_, is_transformed, register_transform, undo_, unwrap_all
from cimkit.nn.walk import (
    FIRST,
    LAST,
    FilterFn,
    LayerRef,
    Rules,
    base_type,
    matches,
    register_weighted_type,
    select,
    set_module,
    weighted_types,
)

__all__ = [
    "ADAPTERS",
    "FIRST",
    "LAST",
    "TRANSFORMS",
    "FilterFn",
    "LayerRef",
    "Rules",
    "Transformed",
    "TransposedLinear",
    "apply_",
    "base_type",
    "is_transformed",
    "matches",
    "register_adapter",
    "register_transform",
    "register_weighted_type",
    "select",
    "set_module",
    "standardize_",
    "undo_",
    "unwrap_all",
    "weighted_types",
]  # fmt: skip
