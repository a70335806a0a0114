"""Plugin of the sparsity concern: the ``sparsify`` transform, the ``prune`` / ``regularize`` /
``remove`` pipeline steps, the ``sparse`` evaluation protocol and the ``cimkit list`` topics."""

import fnmatch

from cimkit.plugins import TOPICS
from cimkit.sparse import sparsify, steps  # noqa: F401  (register the transform, steps and protocol)
from cimkit.sparse.config import Pattern


def _patterns(pattern: str = "*") -> list[tuple[str, str]]:
    doc = {
        "unstructured": "single weights",
        "nm": "N:M: at most n non-zero in every m consecutive weights of the reduction axis (2:4)",
        "filter": "output channels; coupled (default): with bias, BatchNorm, next inputs and residual partners",
        "channel": "input channels (coupled: the same groups, scored by their consumers)",
        "shape": "filter shapes: columns of the unrolled weight matrix (c, kh, kw)",
        "block": "crossbar-shaped blocks: one physical array (row tile x column block)",
        "tile_column": "TinyADC: the largest weights of every array column kept (bounds the ADC range)",
        "head": "attention heads (q/k/v rows and output-projection columns)",
        "depth": "whole residual branches",
    }
    return [(p.value, doc[p.value]) for p in Pattern if fnmatch.fnmatchcase(p.value, pattern)]


TOPICS.add("sparsity-patterns", _patterns, "sparsity patterns (SparsityConfig.pattern)")
