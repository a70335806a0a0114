"""Per-layer records and prices against hand counts; totals; ADC swaps; digital baseline; handlers."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from cimkit import analog
from cimkit.cost import (
    ADDITIVE_FIELDS,
    AREA_COMPONENTS,
    ENERGY_COMPONENTS,
    SPECS,
    LayerCost,
    area_field,
    describe,
    energy_field,
    estimate,
    price,
    register_cost,
)
from cimkit.errors import CimkitError, ConfigError
from cimkit.models import create
from cimkit.quant import QuantConfig, account, quantize_

torch.set_num_threads(1)

# a CIM spec simple enough to count by hand: whole tiles read at once, offset pairs, 1 bit per cell
HAND = SPECS.get("rram_22nm").replace(parallel_rows=0, energy_factor=1.0, sensing_latency_factor=1.0)


class Two(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(300, 200)
        self.act = nn.ReLU()
        self.out = nn.Linear(200, 10, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.fc(x)))


def test_crossbar_layer_counts_and_energies_by_hand() -> None:
    tab = estimate(Two(), torch.zeros(3, 300), HAND)
    r = tab.layer("fc")
    # 300 inputs on 128-row tiles: 3 row tiles of 100 rows; 200 outputs: blocks of 128 and 72 columns
    assert (r.row_tiles, r.col_blocks) == (3, 2)
    s, p = 8, 8  # 8-bit float->8-bit weights on 1-bit cells (offset: 8 slices); 8 bit-serial input cycles
    assert (r.slices, r.devices, r.planes, r.w_bits, r.a_bits) == (s, 1, p, 8, 8)
    assert r.tiles == 3 * 2 * s == r.arrays
    assert r.adc_conversions == p * s * 3 * 200  # one conversion per (cycle, slice, row tile, output)
    assert r.cell_reads == p * s * 300 * 200
    assert r.dac_conversions == p * s * 300 * 2  # every row of each of the two column blocks' arrays
    assert r.shift_adds == r.adc_conversions and r.accum_adds == 200 * (3 - 1)
    assert r.utilisation == pytest.approx(300 * 200 / (6 * 128 * 128))
    assert r.macs == 300 * 200 and r.positions == 1
    # time: block 0's 128 columns through 16 ADCs: 8 conversions per read; 8 cycles
    adc = HAND.adc_model
    t_adc = adc.latency_ns(5)
    assert r.latency_us == pytest.approx(p * 8 * t_adc * 1e-3)
    # energies (µJ): cells, converters at the column resistance of 100 rows, drivers, shift-adds
    g = HAND.g_mean_us
    assert r.energy_array_uj == pytest.approx(r.cell_reads * 0.5 * 0.55**2 * g * 1.0 * 1e-9, rel=1e-9)  # 1 ns samples
    r_col = 1.0 / (100 * 0.5 * g * 1e-6)
    assert r.energy_adc_uj == pytest.approx(r.adc_conversions * adc.energy_pj(5, r_col, 0.55) * 1e-6, rel=1e-9)
    read_ns = (3 * 100 * 8 * 1.0 + 3 * 100 * 5 * 1.0) / (3 * 100 * 2)  # rows driven while 8 or 5 columns are sampled (1 ns each)
    assert r.energy_dac_uj == pytest.approx(r.dac_conversions * 0.5 * 3.9 * read_ns * 1e-9, rel=1e-9)
    acc = 8 + 8 + math.ceil(math.log2(300))
    add = HAND.arith.add_energy_pj(acc)
    assert r.energy_accumulation_uj == pytest.approx((r.shift_adds + r.accum_adds) * add * 1e-6, rel=1e-9)
    assert r.buffer_bits == (300 + 200) * 8
    # area: cells, one ADC and shift-adder per 8 columns of each tile, a driver per row of each array
    assert r.area_array_mm2 == pytest.approx(48 * 128 * 128 * 48 * 0.040**2 * 1e-6, rel=1e-9)
    assert r.area_adc_mm2 == pytest.approx(48 * 16 * adc.area_um2(5) * 1e-6, rel=1e-9)
    assert r.area_dac_mm2 == pytest.approx(48 * 128 * 0.166 * 1e-6, rel=1e-9)
    # the ReLU between them is digital work
    relu = tab.layer("act")
    assert relu.hardware == "digital" and relu.digital_ops == 200


def test_totals_are_the_sum_of_the_rows() -> None:
    model = create("resnet20", in_channels=3, num_classes=10, input_size=(32, 32)).eval()
    for spec in ("rram_22nm", "systolic_22nm", "isaac_32nm"):
        tab = estimate(model, torch.zeros(2, 3, 32, 32), spec)
        tot = tab.total()
        for f in ADDITIVE_FIELDS:
            assert tot[f] == pytest.approx(sum(getattr(r, f) for r in tab.layers), rel=1e-12), f
        for r in tab.layers:
            assert r.energy_uj == pytest.approx(sum(getattr(r, energy_field(c)) for c in ENERGY_COMPONENTS))
            assert r.area_mm2 == pytest.approx(sum(getattr(r, area_field(c)) for c in AREA_COMPONENTS))
        assert tot["tops_w"] == pytest.approx(2 * tot["macs"] / (tot["energy_uj"] * 1e-6) / 1e12)
        json.dumps(tab.to_dict())  # JSON-able
    # resnet20's 40.8 M MACs per 32x32 image (the convolutions and the classifier)
    assert tab.total()["macs"] == 40_813_184


def test_changing_the_adc_model_changes_only_the_adc_rows() -> None:
    model = create("vgg_small", in_channels=1, num_classes=10, input_size=(28, 28)).eval()
    d = describe(model, torch.zeros(1, 1, 28, 28))
    a = price(d, SPECS.get("rram_22nm"))
    b = price(d, SPECS.get("rram_22nm").replace(adc="isaac_32nm"))
    assert a.total()["energy_adc_uj"] != pytest.approx(b.total()["energy_adc_uj"])
    for ra, rb in zip(a.layers, b.layers):
        for c in ENERGY_COMPONENTS:
            if c != "adc":
                assert getattr(ra, energy_field(c)) == pytest.approx(getattr(rb, energy_field(c)), rel=1e-12), (ra.name, c)
        for c in AREA_COMPONENTS:
            if c != "adc":
                assert getattr(ra, area_field(c)) == pytest.approx(getattr(rb, area_field(c)), rel=1e-12), (ra.name, c)
        assert ra.adc_conversions == rb.adc_conversions
    assert b.describe_hardware()["adc"] == "isaac_32nm"


def test_digital_baseline_horowitz_mac_energy_is_the_tables() -> None:
    model = nn.Sequential(nn.Linear(64, 32, bias=False))
    quantize_(model, QuantConfig(w_bits=8, a_bits=8))
    tab = estimate(model, torch.zeros(4, 64), "horowitz_45nm")
    r = tab.layer("0")
    assert r.hardware == "digital" and (r.w_bits, r.a_bits) == (8, 8)
    assert r.energy_digital_uj == pytest.approx(64 * 32 * (0.2 + 0.03) * 1e-6, rel=1e-12)
    # weight-stationary 16x16 array: 4 x 2 folds of one vector each, plus fill and drain
    assert r.latency_us == pytest.approx(4 * 2 * (1 + 30) / 0.2 * 1e-3)
    fp = estimate(nn.Sequential(nn.Linear(64, 32, bias=False)), torch.zeros(1, 64), "horowitz_45nm").layer("0")
    assert fp.energy_digital_uj == pytest.approx(64 * 32 * (3.7 + 0.9) * 1e-6, rel=1e-12)  # float MACs


def test_attention_products_are_digital_and_counted() -> None:
    model = create("char_gpt", vocab_size=65, block_size=16, size="tiny").eval()
    tab = estimate(model, torch.zeros(2, 16, dtype=torch.long), "rram_22nm")
    att = [r for r in tab.layers if r.op == "matmul"]
    n_layer, n_head, c = 1, 2, 32
    assert len(att) == n_layer
    assert att[0].macs == 2 * n_head * 16 * 16 * (c // n_head)  # q kᵀ and ·v, dense
    assert att[0].digital_ops == n_head * 16 * 16 and att[0].hardware == "digital"
    assert att[0].energy_digital_uj > 0 and att[0].tiles == 0
    assert tab.layer("blocks.0.attn.q").hardware == "cim" and tab.layer("tok_emb").op == "lookup"


def test_size_bytes_is_one_definition() -> None:
    model = create("small_cnn", in_channels=1, num_classes=10, input_size=(8, 8)).eval()
    x = torch.zeros(1, 1, 8, 8)
    tab = estimate(model, x, "systolic_22nm")
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    assert tab.total()["size_bytes"] == 4 * (params + buffers)  # float: every value 4 bytes
    assert account(model, x).total["size_bytes"] == tab.total()["size_bytes"]
    quantize_(model, QuantConfig(w_bits=4, a_bits=8))
    q = estimate(model, x, "systolic_22nm")
    rep = account(model, x)
    assert rep.total["size_bytes"] == pytest.approx(q.total()["size_bytes"])
    for row in rep.layers:  # the quantization handler's storage: weights at 4 bits, per-channel scales, bias, grid
        r = q.layer(row["name"])
        assert row["size_bytes"] == r.size_bytes and (r.w_bits, r.a_bits) == (4, 8)


def test_capture_pass_changes_no_state() -> None:
    torch.manual_seed(0)
    model = Two()
    amodel = analog.convert(model, "standard", "pcm")
    analog.program(amodel, seed=1)
    amodel.eval()
    x = torch.randn(4, 300)
    torch.manual_seed(5)
    y1 = amodel(x)
    torch.manual_seed(5)
    analog.program(amodel, seed=1)  # the same chip again, then a cost estimate, then the same read
    estimate(amodel, x, "pcm_22nm")
    y2 = amodel(x)
    assert torch.equal(y1, y2)  # no read noise was drawn by the capture pass
    q = quantize_(Two(), QuantConfig(w_bits=4, a_bits=8))
    before = {k: v.clone() for k, v in q.state_dict().items()}
    q.train()
    estimate(q, torch.randn(8, 300) * 50, "rram_22nm")
    assert q.training and all(torch.equal(before[k], v) for k, v in q.state_dict().items())


def test_users_register_handlers_and_the_mro_dispatches() -> None:
    class MyLinear(nn.Linear):
        pass

    class Spiky(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    @register_cost(Spiky)
    def _spiky(mod: nn.Module, cap: object, nxt: object) -> LayerCost:
        return LayerCost(name="", type="Spiky", op="elementwise", digital_ops=7, a_bits=8)

    model = nn.Sequential(MyLinear(4, 3), Spiky())
    tab = estimate(model, torch.zeros(1, 4), "systolic_22nm")
    assert tab.layer("0").op == "linear" and tab.layer("0").macs == 12  # a subclass gets nn.Linear's handler
    assert tab.layer("1").digital_ops == 7 and tab.layer("1").energy_digital_uj > 0
    with pytest.raises(ValueError, match="already registered"):
        register_cost(Spiky)(_spiky)


def test_sparse_masks_leave_arrays_empty() -> None:
    from torch.nn.utils import parametrize

    class Mask(nn.Module):
        is_weight_mask = True

        def __init__(self, mask: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("mask", mask)

        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return w * self.mask

    model = Two()
    m = torch.ones(200, 300)
    m[:, 100:200] = 0  # the second row tile (inputs 100..199) holds no weight
    parametrize.register_parametrization(model.fc, "weight", Mask(m))
    r = estimate(model, torch.zeros(1, 300), HAND).layer("fc")
    assert r.nnz_weights == 200 * 200 and r.weights == 200 * 300
    assert r.tiles == 2 * 2 * 8  # 2 occupied row tiles x 2 blocks x 8 slices
    assert r.adc_conversions == 8 * 8 * 2 * 200
    a = analog.convert(model, analog.mapping_preset("standard", tile_rows=128, tile_cols=128), "ideal")
    occ = a.fc.tile_occupancy()
    assert occ.tolist() == [[True, True], [False, False], [True, True]]
    ra = estimate(a, torch.zeros(1, 300), HAND).layer("fc")
    assert ra.row_tiles == 3 and ra.tiles == 2 * 2 * 1  # the analog layer's own map: 1 slice, occupied arrays only


def test_table_outputs_and_errors() -> None:
    tab = estimate(Two(), torch.zeros(1, 300), "rram_22nm")
    text = tab.format()
    assert "rram_22nm" in text and "fc" in text and "total" in text and "TOPS/W" in text
    d = tab.to_dict()
    assert d["adc"] == "neurosim_flash_22nm" and d["spec"] == "rram_22nm" and len(d["layers"]) == len(tab.layers)
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(CimkitError, match="pandas"):
            tab.to_pandas()
    else:
        assert list(tab.to_pandas()["name"]) == [r.name for r in tab.layers]
    with pytest.raises(ConfigError, match="hardware spec"):
        estimate(Two(), torch.zeros(1, 300), "rram22")
    with pytest.raises(ConfigError, match="map_layers"):
        estimate(Two(), torch.zeros(1, 300), "rram_22nm", map_layers="some")
    with pytest.raises(ConfigError, match="example_input"):
        estimate(Two(), [1, 2], "rram_22nm")
