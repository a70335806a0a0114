"""The shared seams of every concern: the layer walk and the transform protocol.

See :mod:`cimkit.nn.walk` (select layers, name patterns, per-layer rule tables, ``set_module``) and
:mod:`cimkit.nn.transform` (``apply_`` dispatched on the config's type, ``undo_``).
"""

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
    "FIRST", "LAST", "TRANSFORMS", "FilterFn", "LayerRef", "Rules", "Transformed", "apply_", "base_type",
    "is_transformed", "matches", "register_transform", "register_weighted_type", "select", "set_module",
    "undo_", "unwrap_all", "weighted_types",
]  # fmt: skip
