"""Physical removal equals masking, for every registered model; sizes drop; the result is a plain model."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cimkit import analog
from cimkit.errors import ConfigError
from cimkit.models import create, list_models
from cimkit.nn import select, standardize_
from cimkit.nn.transform import holds_transform
from cimkit.quant import account
from cimkit.sparse import Pattern, SparsityConfig, analyze, layer_masks, sparsify_
from cimkit.sparse.removal import dead_units, remove, remove_

from ._models import build


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a, b, atol=1e-5 * max(1.0, float(b.abs().max())), rtol=1e-5))


@pytest.mark.parametrize("name", list_models())
def test_removal_equals_masking_for_every_model(name: str) -> None:
    model, x = build(name)
    model = standardize_(model)  # GPT-2's Conv1D as the nn.Linear it computes (what sparsify_ does first)
    g = analyze(model, x)
    if not g.prunable("channel"):
        pytest.skip(f"{name} has no prunable channel group: {[d.pinned for d in g.dims]}")
    if any(holds_transform(m) for m in model.modules()):  # e.g. bitnet_lm: built from BitLinear layers
        with pytest.raises(ConfigError, match="already transformed"):  # masks go on before quantization
            sparsify_(model, SparsityConfig(pattern="filter", sparsity=0.5), example_input=x, graph=g)
        return
    sparsify_(model, SparsityConfig(pattern="filter", sparsity=0.5), example_input=x, graph=g)
    with torch.no_grad():
        ref = model(x)
    before = account(model, x).total
    small = remove(model, x)
    assert not layer_masks(small)  # a plain model: no parametrization left (nothing finer-grained to keep)
    with torch.no_grad():
        got = small(x)
    assert got.shape == ref.shape and _close(got, ref)
    after = account(small, x).total
    assert after["params"] < before["params"] and after["macs"] < before["macs"]
    # every prunable dimension lost (about) half of its units
    for d in analyze(model, x).prunable("channel"):
        mod = small.get_submodule(d.producers[0])
        kept = mod.weight.shape[0] if not isinstance(mod, nn.Embedding) else mod.weight.shape[1]
        assert kept == d.size - int(0.5 * d.size), d.name


def test_resnet20_residual_streams_shrink_consistently() -> None:
    model, x = build("resnet20")
    g = analyze(model, x)
    stream = next(d for d in g.dims if "layer1.0.conv2" in d.producers)
    assert {"conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"} <= set(stream.producers)
    assert {"bn1", "layer1.0.bn2"} <= set(stream.norms) and "layer2.0.shortcut.0" in stream.consumers
    sparsify_(model, SparsityConfig(pattern="filter", sparsity=0.5), example_input=x, graph=g)
    with torch.no_grad():
        ref = model(x)
    small = remove(model, x)
    widths = {n: m.weight.shape[0] for n, m in small.named_modules() if n in stream.producers}
    assert len(set(widths.values())) == 1 and next(iter(widths.values())) == 4  # 8 -> 4, all coupled layers
    assert small.bn1.num_features == 4 and small.layer2[0].shortcut[0].in_channels == 4
    with torch.no_grad():
        assert _close(small(x), ref)


def test_char_gpt_heads_are_removed_with_the_head_count() -> None:
    model, x = build("char_gpt")
    g = analyze(model, x)
    heads = g.prunable("head")
    assert len(heads) == 1 and heads[0].size == 2 and heads[0].head_attr == "n_head"
    assert set(heads[0].producers) == {"blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v"}
    stream = next(d for d in g.dims if "tok_emb" in d.producers)
    assert stream.pinned and "LayerNorm" in stream.pinned  # the residual stream is normalised: never pruned
    sparsify_(model, SparsityConfig(pattern="head", sparsity=0.5), example_input=x, graph=g)
    with torch.no_grad():
        ref = model(x)
    small = remove(model, x)
    attn = small.blocks[0].attn
    assert attn.n_head == 1 and attn.q.out_features == 16 and attn.proj.in_features == 16
    with torch.no_grad():
        assert _close(small(x), ref)


def test_depth_pruning_zeroes_residual_branches_and_removal_keeps_outputs() -> None:
    model, x = build("resnet20")
    io: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    blocks = {n: m for n, m in model.named_modules() if n.count(".") == 1 and n.startswith("layer")}
    for n, b in blocks.items():
        def keep_io(m: nn.Module, i: tuple, o: torch.Tensor, n: str = n) -> None:
            io[n] = (i[0], o)  # the last forward

        b.register_forward_hook(keep_io)
    sparsify_(model, SparsityConfig(pattern="depth", sparsity=0.5), example_input=x)
    with torch.no_grad():
        ref = model(x)
    pruned = [n for n, b in blocks.items() if bool((b.conv1.weight == 0).all())]
    assert len(pruned) == 4  # floor(0.5 * 9) residual blocks
    for n in pruned:  # a pruned block computes relu(shortcut(x)): its branch adds exactly zero
        i, o = io[n]
        with torch.no_grad():
            assert torch.equal(o, torch.relu(blocks[n].shortcut(i)))
    small = remove(model, x)
    with torch.no_grad():
        assert _close(small(x), ref)
    for n in pruned:  # the branch shrinks to a one-channel, exactly-zero stub
        assert small.get_submodule(n).conv1.out_channels == 1


def test_consumer_columns_alone_make_a_channel_removable() -> None:
    model, x = build("vgg_small")
    with torch.no_grad():
        model.features[4].weight[:, :5] = 0  # conv2 ignores conv1's channels 0..4; conv1 and its BN are untouched
        ref = model(x)
    g = analyze(model, x)
    d = next(d for d in g.dims if d.producers == ["features.0"])
    assert dead_units(model, d) == [0, 1, 2, 3, 4]
    small = remove(model, x)
    assert small.features[0].out_channels == 11 and small.features[1].num_features == 11
    with torch.no_grad():
        assert _close(small(x), ref)


def test_removed_model_saves_quantizes_and_maps() -> None:
    model, x = build("lenet5")
    sparsify_(model, SparsityConfig(pattern="filter", sparsity=0.5), example_input=x)
    small = remove(model, x)
    fresh = copy.deepcopy(small)
    for p in fresh.parameters():
        p.data.zero_()
    fresh.load_state_dict(small.state_dict())
    a = analog.convert(fresh, "ideal", "ideal")
    with torch.no_grad():
        assert _close(a(x), small(x))
    assert [type(r.module) for r in select(small)] == [type(r.module) for r in select(create("lenet5"))]


def test_removal_keeps_finer_masks_when_asked() -> None:
    model, x = build("lenet5")
    sparsify_(model, SparsityConfig(pattern="filter", sparsity=0.5), example_input=x)
    sparsify_(model, SparsityConfig(pattern=Pattern.UNSTRUCTURED, sparsity=0.9))  # beyond the pruned filters
    with torch.no_grad():
        ref = model(x)
    small = copy.deepcopy(model)
    remove_(small, x, keep_masks=True)
    masks = layer_masks(small)
    assert "classifier.1.weight" in masks and masks["classifier.1.weight"].shape == small.classifier[1].weight.shape
    with torch.no_grad():
        assert _close(small(x), ref)


def test_removal_refuses_transformed_layers() -> None:
    from cimkit.errors import ConfigError
    from cimkit.quant import quantize_

    model, x = build("lenet5")
    quantize_(model, "w8a8")
    with pytest.raises(ConfigError, match="before quantizing"):
        remove_(model, x)


@pytest.mark.parametrize("name", ["resnet20", "char_gpt", "vgg_small"])
def test_shrink_equals_sparsify_then_remove(name: str) -> None:
    from cimkit.sparse.removal import shrink_

    model, x = build(name)
    cfg = SparsityConfig(pattern="filter", sparsity=0.4, scope="global")
    a = remove(sparsify_(copy.deepcopy(model), cfg, example_input=x), x)
    b = copy.deepcopy(model)
    res = shrink_(b, cfg, x)
    assert res.removed > 0 and not layer_masks(b)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_trace_restores_every_module_mode_and_leaves_no_hooks() -> None:
    # a training model with one submodule frozen in eval mode: the trace runs everything in eval
    # mode and then restores each module's own flag; no global or module hook stays behind
    from torch.nn.modules import module as torch_module

    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3)).train()
    net[1].eval()
    before = [m.training for m in net.modules()]
    seen: list[bool] = []
    net[0].register_forward_pre_hook(lambda m, a: seen.append(m.training))  # a training module
    hooks_before = (len(torch_module._global_forward_pre_hooks), len(torch_module._global_forward_hooks))
    g = analyze(net, torch.randn(2, 1, 8, 8))
    assert seen == [False]
    assert [m.training for m in net.modules()] == before
    assert (len(torch_module._global_forward_pre_hooks), len(torch_module._global_forward_hooks)) == hooks_before
    assert [d.name for d in g.prunable()] == ["0"]  # the last conv feeds the model output: pinned


def _graph_rows(g) -> list:
    """Everything a dependency graph says: dimensions, their units' positions, branches."""
    return g.describe() + [[sorted((tuple(k), v) for k, v in u.positions.items()) for u in d.units]
                           for d in g.dims] + [(b.name, b.layers, b.norms) for b in g.branches]  # fmt: skip


@pytest.mark.parametrize("name", list_models())
def test_per_channel_shortcut_gives_the_general_trace(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trace's shortcut for shadows known to be constant per channel (layer outputs, residual
    adds) records the same graph as the element-by-element rules it skips."""
    from cimkit.sparse import deps

    model, x = build(name)
    model = standardize_(model)
    fast = _graph_rows(analyze(model, x))
    monkeypatch.setattr(deps._Recorder, "channels", lambda self, atoms: None)
    slow = _graph_rows(analyze(model, x))
    assert fast == slow


def test_dimension_index_lists_every_units_positions() -> None:
    model, x = build("resnet20")
    g = analyze(model, x)
    for d in g.prunable():
        for m in d.members():
            idx = d.index(m)
            pos = [u.positions.get(m) for u in d.units]
            if idx is None:  # some unit lacks the member or has another width
                assert any(p is None for p in pos) or len({len(p) for p in pos}) > 1
            else:
                assert idx.tolist() == [list(p) for p in pos]
