"""Integer export (safetensors + manifest) and ONNX (QDQ) export round trips."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cimkit.errors import DataError
from cimkit.models import create
from cimkit.quant import QuantConfig, calibrate, export_onnx, export_quantized, fold_bn_, load_quantized, quantize_
from cimkit.quant.export import pack_codes, unpack_codes
from cimkit.quant.functional import qrange

torch.set_num_threads(1)


def _need_safetensors() -> None:
    pytest.importorskip("safetensors", reason="integer export needs the safetensors extra")


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([1, 2, 4]), st.booleans(), st.integers(1, 300), st.integers(0, 10**6))
def test_pack_unpack_round_trip(bits: int, signed: bool, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    if bits == 1:
        qmin, qmax, q = -1, 1, torch.randint(0, 2, (n,), generator=g).float() * 2 - 1
    else:
        qmin, qmax = qrange(bits, signed=signed)
        q = torch.randint(qmin, qmax + 1, (n,), generator=g).float()
    packed = pack_codes(q, bits, qmin)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-n * bits // 8)
    assert torch.equal(unpack_codes(packed, bits, qmin, n), q)


def _trained_small_cnn() -> torch.nn.Module:
    model = create("small_cnn", input_size=(8, 8))
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 1.5, generator=g)
            m.weight.data.uniform_(0.5, 1.5, generator=g)
    return model.eval()


CONFIGS = [
    QuantConfig(),  # W8A8 per channel
    QuantConfig(w_bits=4, a_bits=4, lsq=True, w_symmetric=False),
    QuantConfig(w_mode="binary", a_bits=4, overrides={"@last": {"w_bits": 8}}),
    QuantConfig(w_mode="ternary_twn", a_bits=8, per_channel=False),
    QuantConfig(w_mode="ternary_absmean", a_bits=6, a_symmetric=True),
    QuantConfig(w_bits=6, a_bits=None, skip=["@first"]),
    QuantConfig(w_bits=12, a_bits=10),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.label())
def test_integer_export_loads_back_into_an_identical_model(cfg: QuantConfig, tmp_path) -> None:
    _need_safetensors()
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    model = fold_bn_(_trained_small_cnn())
    quantize_(model, cfg)
    calibrate(model, [x])
    if cfg.lsq:  # move the learned step sizes off their initial values
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 1 and p.numel() >= 1:
                    p.mul_(1.05)
    ref = model(x)
    export_quantized(model, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["folded_bn"] == {"features.1": "features.0", "features.4": "features.3"}
    loaded = load_quantized(create("small_cnn", input_size=(8, 8)), tmp_path)
    assert torch.equal(loaded(x), ref)
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
    # the codes file is as small as the bits say (packed for 1/2/4 bits)
    from safetensors.torch import load_file

    t = load_file(str(tmp_path / "weights.safetensors"))
    for name, e in manifest["layers"].items():
        codes = t[f"{name}.weight.codes"]
        n = torch.Size(e["weight_shape"]).numel()
        if e["w_bits"] in (1, 2, 4):
            assert codes.numel() == -(-n * e["w_bits"] // 8)
        else:
            assert codes.numel() == n and codes.element_size() == (1 if e["w_bits"] <= 8 else 2)


def test_load_rejects_a_different_architecture(tmp_path) -> None:
    _need_safetensors()
    model = quantize_(create("lenet5"), "w8a8")
    calibrate(model, [torch.randn(2, 1, 28, 28)])
    export_quantized(model, tmp_path)
    with pytest.raises(DataError, match="layer"):
        load_quantized(create("mlp"), tmp_path)
    with pytest.raises(DataError, match="manifest"):
        load_quantized(create("lenet5"), tmp_path / "nowhere")


def _step_bound(model: torch.nn.Module) -> float:
    """One activation step of the last layer's input, through the last layer's weights."""
    last = model.classifier[-1]
    with torch.no_grad():
        return float(last.a_quant.scale) * float(last.quantized_weight().abs().sum(1).max())


ONNX_CONFIGS = [
    QuantConfig(),
    QuantConfig(w_bits=4, a_bits=4),
    QuantConfig(w_mode="binary", a_bits=4),
    QuantConfig(w_bits=6, w_symmetric=False, a_symmetric=True, per_channel=False),
]


@pytest.mark.parametrize("cfg", ONNX_CONFIGS, ids=lambda c: f"{c.label()}-{'sym' if c.a_symmetric else 'asym'}")
def test_onnx_export_runs_in_onnxruntime_and_matches(cfg: QuantConfig, tmp_path) -> None:
    pytest.importorskip("onnx", reason="ONNX export needs the onnx extra (pip install 'cimkit[onnx]')")
    pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime (extra 'onnx')")
    import onnx

    from cimkit.quant.onnx_export import check_onnx

    torch.manual_seed(0)
    model = quantize_(create("lenet5").eval(), cfg)
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    calibrate(model, [x])
    path = export_onnx(model, x[:2], tmp_path / "m.onnx")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("QuantizeLinear") == 5 and ops.count("DequantizeLinear") == 10
    # grids narrower than int8/uint8 (4 bits, or the narrow signed -127..127) are clipped first
    assert ("Clip" in ops) == (cfg.a_bits != 8 or cfg.a_symmetric)
    res = check_onnx(model, path, x)
    # float accumulation order differs between ORT and PyTorch, so a value that sits on a rounding
    # boundary may land on the neighbouring code: outputs agree to within one quantization step
    assert res["max_abs_diff_reference"] <= _step_bound(model)
    assert res["median_abs_diff_reference"] <= 1e-6 * max(1.0, res["max_abs_ref"])  # most are exact
    assert res["max_abs_diff"] <= _step_bound(model)  # integer kernels: also within one step
    assert res["argmax_agreement"] >= 0.95


def test_onnx_int4_weights(tmp_path) -> None:
    pytest.importorskip("onnx", reason="ONNX export needs the onnx extra")
    pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime")
    import onnx

    from cimkit.quant.onnx_export import check_onnx

    torch.manual_seed(0)
    model = quantize_(create("lenet5").eval(), QuantConfig(w_bits=4, a_bits=4))
    x = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    calibrate(model, [x])
    path = export_onnx(model, x[:2], tmp_path / "m4.onnx", opset=21, int4=True)
    proto = onnx.load(str(path))
    codes = [t for t in proto.graph.initializer if t.name.endswith("w_codes")]
    assert len(codes) == 5 and all(t.data_type == onnx.TensorProto.INT4 for t in codes)
    res = check_onnx(model, path, x)
    assert res["max_abs_diff_reference"] <= _step_bound(model)
    assert res["median_abs_diff_reference"] <= 1e-6 * max(1.0, res["max_abs_ref"])
    assert res["max_abs_diff"] <= _step_bound(model)
