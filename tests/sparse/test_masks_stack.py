"""Masks survive quantization and crossbar mapping; empty arrays are not programmed, read exactly
zero and draw no read noise; every transform undoes back to the original weights."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import cimkit
from cimkit import analog
from cimkit.analog import AnalogConfig
from cimkit.errors import ConfigError
from cimkit.nn import apply_, undo_
from cimkit.quant import QuantConfig, calibrate, quantize_
from cimkit.sparse import SparsityConfig, bake_, get_mask, layer_masks, occupancy, sparsify_, unsparsify_
from cimkit.sparse.report import model_record

TILE = {"tile_rows": 64, "tile_cols": 32}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(200, 100), nn.ReLU(), nn.Linear(100, 40), nn.ReLU(), nn.Linear(40, 10)).eval()


X = torch.randn(32, 200, generator=torch.Generator().manual_seed(1))


def _block_sparse() -> nn.Module:
    net = _net()
    return sparsify_(net, SparsityConfig(pattern="block", sparsity=0.5, **TILE))


@pytest.mark.parametrize("qcfg", [QuantConfig(w_bits=4, a_bits=8), QuantConfig(w_mode="binary", a_bits=8),
                                  QuantConfig(w_mode="ternary_twn", a_bits=None)], ids=lambda c: c.label())  # fmt: skip
def test_pruned_weights_stay_zero_after_quantization(qcfg: QuantConfig) -> None:
    net = _block_sparse()
    masks = {k: v.clone() for k, v in layer_masks(net).items()}
    q = quantize_(net, qcfg)
    calibrate(q, [X])
    for i in (0, 2, 4):
        wq = q[i].transformed_weight()
        assert torch.equal(wq == 0, (masks[f"{i}.weight"] == 0) | (wq == 0))  # every pruned weight is 0
        assert bool((wq[masks[f"{i}.weight"] == 0] == 0).all())
        if qcfg.w_mode.value == "binary":  # a binary grid has no zero: only the mask gives zeros
            assert torch.equal(wq == 0, masks[f"{i}.weight"] == 0)


@pytest.mark.parametrize("mapping", ["standard", "offset"])
def test_empty_arrays_are_skipped_read_zero_and_draw_no_noise(mapping: str) -> None:
    q = quantize_(_block_sparse(), QuantConfig(w_mode="binary", a_bits=8))
    calibrate(q, [X])
    a = apply_(q, AnalogConfig(mapping=mapping, device="pcm", mapping_overrides=TILE)).eval()
    analog.calibrate(a, [X])
    analog.program(a, 0)
    analog.drift(a, 3600.0)
    n_empty = 0
    for i in (0, 2, 4):
        layer = a[i]
        g = layer.geometry
        occ = occupancy(layer.transformed_weight(), **TILE)
        assert torch.equal(layer.tile_occupancy(), occ)
        on = layer.chip.tile_on  # (T, N): the arrays that were programmed
        assert torch.equal(on, occ.repeat_interleave(g.tile_cols, 1)[:, : g.n_out])
        n_empty += int((~occ).sum())
        off = (~on).unsqueeze(1).expand(g.n_tiles, g.rows, g.n_out)  # (T, R, N)
        w1 = g.to_tiles(layer.effective_weight().detach())
        w2 = g.to_tiles(layer.effective_weight().detach())  # a second read: fresh read noise
        assert bool((w1[off] == 0).all())  # an empty array contributes exactly zero
        assert bool((w1[~off] != w2[~off]).any())  # programmed arrays are noisy ...
        assert torch.equal(layer.chip.read()[:, off], layer.chip.read()[:, off])  # ... empty ones never
        if bool(off.any()):
            assert float(layer.chip.g_sigma[:, :, off].abs().max()) == 0.0
    assert n_empty > 0
    occupied = sum(int(a[i].tile_occupancy().sum()) for i in (0, 2, 4))
    # the sparsity record (what the cost model reads) counts the same arrays
    rec_masked = model_record(quantize_(_block_sparse(), QuantConfig(w_mode="binary", a_bits=8)), X[:2], **TILE)
    assert rec_masked["total"]["occupied_arrays"] == occupied
    assert rec_masked["total"]["arrays"] - occupied == n_empty


def test_sparsify_quantize_analog_undo_restores_the_state_dict() -> None:
    net = _net()
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    types = [type(m) for m in net.modules()]
    m = apply_(net, SparsityConfig(pattern="nm", n=2, m=4))
    m = apply_(m, QuantConfig(w_bits=4, a_bits=8))
    calibrate(m, [X])
    m = apply_(m, AnalogConfig(device="rram_saf"))
    analog.program(m, 0)
    with torch.no_grad():
        m(X)
    out = undo_(m)
    assert [type(x) for x in out.modules()] == types
    sd = out.state_dict()
    assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in ref)


def test_undo_removes_only_mask_parametrizations() -> None:
    class Double(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return 2 * w

    net = _net()
    w0 = net[0].weight.detach().clone()
    parametrize.register_parametrization(net[0], "weight", Double())
    sparsify_(net, SparsityConfig(sparsity=0.5))
    assert bool((net[0].weight == 0).any())
    undo_(net)
    assert parametrize.is_parametrized(net[0], "weight") and not layer_masks(net)
    assert torch.equal(net[0].weight, 2 * w0)  # the other parametrization stays, the mask is gone


def test_unsparsify_and_bake() -> None:
    net = _net()
    w0 = net[0].weight.detach().clone()
    sparsify_(net, SparsityConfig(sparsity=0.7))
    masked = net[0].weight.detach().clone()
    baked = bake_(copy.deepcopy(net))
    assert type(baked[0]) is nn.Linear and torch.equal(baked[0].weight, masked)
    unsparsify_(net)
    assert type(net[0]) is nn.Linear and torch.equal(net[0].weight, w0)


def test_a_deep_copy_keeps_its_masks_when_the_original_is_baked() -> None:
    net = _net()
    sparsify_(net, SparsityConfig(sparsity=0.5))
    twin = copy.deepcopy(net)  # shares the parametrized class with net (torch.nn.utils.parametrize)
    bake_(net)
    sparsify_(twin, SparsityConfig(pattern="filter", coupled=False, sparsity=0.5))  # adds a bias mask on the twin
    assert get_mask(twin[0], "bias") is not None and type(net[0]) is nn.Linear
    with torch.no_grad():
        twin(X), net(X)


def test_masks_hold_through_training_and_checkpoints() -> None:
    net = _net()
    sparsify_(net, SparsityConfig(pattern="filter", sparsity=0.5), example_input=X[:2])
    pruned = net[0].weight.detach() == 0
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(5):
        opt.zero_grad()
        net(X).pow(2).mean().backward()
        opt.step()
    assert bool((net[0].weight[pruned] == 0).all()) and bool((net[0].weight[~pruned] != 0).all())
    sd = net.state_dict()
    assert "0.parametrizations.weight.0.mask" in sd
    other = sparsify_(_net(), SparsityConfig(pattern="filter", sparsity=0.5), example_input=X[:2])
    other.load_state_dict(sd)
    assert torch.equal(other[0].weight, net[0].weight)


def test_masks_must_come_before_other_transforms() -> None:
    q = quantize_(_net(), "w8a8")
    with pytest.raises(ConfigError, match="before quantizing"):
        sparsify_(q, SparsityConfig(sparsity=0.5))
    # an existing mask may be updated on a transformed layer
    q2 = quantize_(sparsify_(_net(), SparsityConfig(sparsity=0.5)), "w8a8")
    sparsify_(q2, SparsityConfig(sparsity=0.8))
    assert float((q2[0].transformed_weight() == 0).float().mean()) >= 0.8 - 1e-3


def test_transform_registry_knows_sparsify() -> None:
    assert "sparsify" in cimkit.nn.TRANSFORMS.list()
