"""Cross-check against Torch-Pruning's DependencyGraph (optional peer; skipped when absent)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cimkit.sparse import analyze

from ._models import build

tp = pytest.importorskip("torch_pruning", reason="Torch-Pruning is an optional peer (pip install --no-deps torch-pruning)")


def _tp_group(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> tuple[set[str], set[str]]:
    """(layers whose outputs, layers whose inputs) Torch-Pruning prunes with ``layer``'s first filter."""
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    names = {m: n for n, m in model.named_modules()}
    group = dg.get_pruning_group(layer, tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d)
                                 else tp.prune_linear_out_channels, idxs=[0])  # fmt: skip
    outs, ins = set(), set()
    for dep, _ in group:
        n = names.get(dep.target.module)
        if n is None:
            continue  # functional nodes (add, relu, ...)
        (ins if "in_channels" in dep.handler.__name__ else outs).add(n)
    return outs, ins


@pytest.mark.parametrize(("name", "layer"), [("resnet20", "conv1"), ("resnet20", "layer2.0.conv2"),
                                             ("resnet20", "layer3.1.conv1"), ("vgg_small", "features.4"),
                                             ("lenet5", "features.3")])  # fmt: skip
def test_coupled_groups_match_torch_pruning(name: str, layer: str) -> None:
    model, x = build(name)
    outs, ins = _tp_group(model, model.get_submodule(layer), x)
    dim = next(d for d in analyze(model, x).dims if layer in d.producers)
    assert set(dim.producers) | set(dim.norms) == outs
    assert set(dim.consumers) == ins
