"""The cost model counts what the simulator does: ADC conversions of instrumented forwards, and the
tile geometry of the analog layers of every registered model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cimkit import analog
from cimkit.cost import SPECS, describe, estimate, price
from cimkit.mixed import layer_infos, tiles_formula
from cimkit.models import create, list_models, model_input_kind
from cimkit.quant import QuantConfig, quantize_

torch.set_num_threads(1)

# read whole tiles at once, as the simulator converts them
SPEC = SPECS.get("pcm_22nm").replace(parallel_rows=0)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(85, 12, 3, padding=1)  # 85 channels x 9 rows: 4 row tiles of 256 rows
        self.fc = nn.Linear(12 * 4 * 4, 300)  # 300 outputs: 2 column blocks
        self.out = nn.Linear(300, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        h = nn.functional.avg_pool2d(h, 2).flatten(1)
        return self.out(torch.relu(self.fc(h)))


def _counted(model: nn.Module, x: torch.Tensor) -> dict[str, dict[str, int]]:
    """ADC conversions of one inference forward, per analog layer (``conversion_counter``)."""
    counters = {}
    for name, layer in analog.analog_layers(model):
        layer.route = "tiled"  # the route that converts (the fold route is used for exact converters only)
        layer.conversion_counter = counters.setdefault(name, {})
    model.eval()
    with torch.no_grad():
        model(x)
    for _, layer in analog.analog_layers(model):
        layer.conversion_counter = None
    return counters


@pytest.mark.parametrize(
    "case",
    ["analog", "quantized", "bit_sliced", "bit_serial"],
)
def test_adc_conversions_equal_the_simulators(case: str) -> None:
    torch.manual_seed(0)
    model = Net()
    mapping = analog.mapping_preset("standard")
    if case == "quantized":
        quantize_(model, QuantConfig(w_bits=4, a_bits=8))
    elif case == "bit_sliced":
        mapping = analog.mapping_preset("standard", n_slices=4, slice_bits=2)
    elif case == "bit_serial":
        mapping = analog.mapping_preset("standard", bit_serial=True, dac_bits=6)
    amodel = analog.convert(model, mapping, "pcm")
    x = torch.randn(3, 85, 8, 8)
    counted = _counted(amodel, x)
    tab = estimate(amodel, x, SPEC)
    for name, layer in analog.analog_layers(amodel):
        rec = tab.layer(name)
        g = layer.geometry
        assert rec.hardware == "cim" and (rec.row_tiles, rec.col_blocks) == (g.n_tiles, g.col_blocks)
        assert rec.slices == layer.n_slices and rec.devices == 2  # differential pairs
        assert rec.planes == (5 if case == "bit_serial" else 1)  # sign-magnitude: dac_bits - 1 cycles
        assert rec.adc_conversions * x.shape[0] == counted[name]["adc"], name  # per inference x batch
        if case == "quantized":
            assert (rec.w_bits, rec.a_bits) == (4, 8)
    assert tab.layer("conv").row_tiles == 4  # whole channels per tile (the old formula said 3)
    assert tab.layer("fc").col_blocks == 2
    if case == "bit_sliced":
        assert tab.layer("fc").slices == 4 and tab.layer("fc").tiles == 1 * 2 * 4


_SPECS = {
    "image": {"in_channels": 1, "num_classes": 10, "input_size": (28, 28)},
    "text": {"in_channels": 1, "num_classes": 65, "input_size": (32,), "vocab_size": 65, "block_size": 32},
    "coords": {"in_channels": 1, "num_classes": 1, "input_size": (2,), "in_features": 2, "out_features": 1},
}


def _example(kind: str, spec: dict) -> torch.Tensor:
    if kind == "text":
        return torch.zeros(1, spec["block_size"], dtype=torch.long)
    if kind == "coords":
        return torch.zeros(4, spec["in_features"])
    return torch.zeros(1, spec["in_channels"], *spec["input_size"])


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("tile", [256, 64])
def test_tile_counts_equal_the_analog_layers_geometry(name: str, tile: int) -> None:
    kind = model_input_kind(name)
    spec = _SPECS[kind]
    model = create(name, **spec).eval()
    x = _example(kind, spec)
    amodel = analog.convert(model, analog.mapping_preset("standard", tile_rows=tile, tile_cols=tile), "ideal")
    hw = SPEC.replace(tile_rows=tile, tile_cols=tile, weight_pair="differential", bits_per_cell=8)
    plain = price(describe(model, x), hw)  # the float model as if mapped: the spec's tile geometry
    mapped = price(describe(amodel, x), hw)  # the analog model: each layer's own geometry
    infos = {i.name: i for i in layer_infos(model, x)}
    layers = list(analog.analog_layers(amodel))
    assert layers
    for lname, layer in layers:
        g = layer.geometry
        for tab in (plain, mapped):
            r = tab.layer(lname)
            assert (r.row_tiles, r.col_blocks) == (g.n_tiles, g.col_blocks), (lname, tab.spec_name)
            assert r.tiles == g.arrays * layer.n_slices and r.arrays == 2 * r.tiles
            assert r.rows_used == g.n_in * g.ksz and r.cols_used == g.n_out
        # mixed precision's tile budget uses the same geometry
        for bits in (2, 8):
            assert tiles_formula(infos[lname], bits, tile_rows=tile, tile_cols=tile) == g.arrays * bits
    assert math.isclose(plain.total()["tiles"], mapped.total()["tiles"])


def test_a_quantized_layer_on_a_spec_converts_as_the_analog_layer_it_would_become() -> None:
    torch.manual_seed(0)
    model = quantize_(Net(), QuantConfig(w_bits=4, a_bits=8))
    x = torch.randn(2, 85, 8, 8)
    hw = SPECS.get("rram_22nm").replace(tile_rows=128, tile_cols=128, bits_per_cell=1, weight_pair="offset",
                                        bit_serial=False, dac_bits=8, adc_bits=8, parallel_rows=0)  # fmt: skip
    on_spec = estimate(model, x, hw)  # quantized, not analog: mapped by the spec (4 slices of 1-bit cells)
    mapping = analog.mapping_preset("standard", tile_rows=128, tile_cols=128, pair="offset", n_slices=4,
                                    slice_bits=1, adc_range_mode="calibrated")  # fmt: skip
    amodel = analog.convert(model, mapping, "ideal")
    counted = _counted(amodel, x)
    for name, layer in analog.analog_layers(amodel):
        r = on_spec.layer(name)
        assert (r.slices, r.devices, r.planes) == (4, 1, 1)
        assert (r.row_tiles, r.col_blocks) == (layer.geometry.n_tiles, layer.geometry.col_blocks)
        assert r.adc_conversions * x.shape[0] == counted[name]["adc"], name
