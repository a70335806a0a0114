"""The integer export's manifest pins its weights file and is validated field by field: an edited or
damaged export is a DataError naming the file, the layer and the field, never different weights."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from cimkit.errors import DataError
from cimkit.io import load_safetensors, save_safetensors
from cimkit.models import create
from cimkit.quant import QuantConfig, calibrate, export_quantized, load_quantized, quantize_
from cimkit.quant.export import read_manifest

torch.set_num_threads(1)

X = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def _export(tmp_path: Path, cfg: QuantConfig) -> tuple[Path, torch.Tensor]:
    torch.manual_seed(0)
    model = quantize_(create("lenet5").eval(), cfg)
    calibrate(model, [X])
    with torch.no_grad():
        ref = model(X)
    return export_quantized(model, tmp_path / "export"), ref


@pytest.fixture
def w4(tmp_path: Path) -> tuple[Path, torch.Tensor]:
    return _export(tmp_path, QuantConfig(w_bits=4, a_bits=8))


def _manifest(d: Path) -> dict[str, Any]:
    return json.loads((d / "manifest.json").read_text())


def _edit(d: Path, change: Any) -> None:
    m = _manifest(d)
    change(m)
    (d / "manifest.json").write_text(json.dumps(m))


def _fresh() -> torch.nn.Module:
    torch.manual_seed(1)
    return create("lenet5").eval()


def _refused(d: Path, *words: str) -> None:
    model = _fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DataError) as e:
        load_quantized(model, d)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    after = model.state_dict()  # the model is changed only once everything has been checked
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_untouched_export_loads_back_exactly(w4: tuple[Path, torch.Tensor]) -> None:
    d, ref = w4
    m = _manifest(d)
    assert m["weights_sha256"] == hashlib.sha256((d / "weights.safetensors").read_bytes()).hexdigest()
    assert read_manifest(d) == m
    with torch.no_grad():
        assert torch.equal(load_quantized(_fresh(), d)(X), ref)


@pytest.mark.parametrize(
    ("where", "key"),
    [("layers.features.0", "qmin"), ("layers.classifier.5", "codes"), ("layers.features.3", "weight_shape"),
     ("", "weights_sha256"), ("", "folded_bn"), ("", "layers"), ("layers.features.0.codes", "packed_bits"),
     ("layers.features.0.act", "scale")],
)  # fmt: skip
def test_a_missing_field_is_named(w4: tuple[Path, torch.Tensor], where: str, key: str) -> None:
    d, _ = w4

    def drop(m: dict[str, Any]) -> None:
        obj = m
        parts = where.split(".") if where else []
        if parts[:1] == ["layers"]:  # layer names contain dots
            obj, parts = m["layers"][".".join(parts[1:3])], parts[3:]
        for p in parts:
            obj = obj[p]
        del obj[key]

    _edit(d, drop)
    layer = ".".join(where.split(".")[1:3]) if where else None
    _refused(d, "manifest.json", f"'{key}'", *([f"layer '{layer}'"] if layer else []))


def test_edited_packed_bits_is_refused(w4: tuple[Path, torch.Tensor]) -> None:
    d, _ = w4
    _edit(d, lambda m: m["layers"]["features.0"]["codes"].update(packed_bits=2))  # 4-bit codes read as 2-bit
    _refused(d, "manifest.json", "layer 'features.0'", "'codes.packed_bits'", "packed_bits=4")


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [("w_bits", 2, ["'w_bits'", "config gives 4"]), ("qmax", 15, ["'qmax'"]), ("w_mode", "binary", ["'w_mode'"]),
     ("axis", None, ["'axis'"]), ("qmin", "-7", ["'qmin'", "integer"]), ("bias", 1, ["'bias'", "true/false"]),
     ("type", "Conv3d", ["'type'", "allowed"]), ("weight_shape", [6, 1, 5, 0], ["'weight_shape'"])],
)  # fmt: skip
def test_fields_that_contradict_the_config_or_have_wrong_types(
    w4: tuple[Path, torch.Tensor], field: str, value: Any, words: list[str]
) -> None:
    d, _ = w4
    _edit(d, lambda m: m["layers"]["features.0"].update({field: value}))
    _refused(d, "manifest.json", "layer 'features.0'", *words)


def test_activation_grid_fields_are_checked(w4: tuple[Path, torch.Tensor]) -> None:
    d, _ = w4
    _edit(d, lambda m: m["layers"]["features.3"]["act"].update(scale=-0.1))
    _refused(d, "layer 'features.3'", "'scale'")
    _edit(d, lambda m: m["layers"]["features.3"]["act"].update(scale=0.1, bits=4))
    _refused(d, "layer 'features.3'", "'bits'")


def test_weights_file_must_stay_inside_the_export(w4: tuple[Path, torch.Tensor]) -> None:
    d, _ = w4
    _edit(d, lambda m: m.update(weights_file="../weights.safetensors"))
    _refused(d, "'weights_file'")


def test_an_edited_or_damaged_weights_file_is_refused(w4: tuple[Path, torch.Tensor]) -> None:
    d, _ = w4
    wf = d / "weights.safetensors"
    tensors, meta = load_safetensors(wf)
    tensors["features.0.weight.scale"] = tensors["features.0.weight.scale"] * 1.5  # a valid file, other weights
    save_safetensors(wf, tensors, meta)
    _refused(d, "weights.safetensors", "sha256")
    wf.write_bytes(wf.read_bytes()[:-10])
    _refused(d, "weights.safetensors", "sha256")


def _replace_tensor(d: Path, name: str, value: torch.Tensor) -> None:
    """Change a tensor and re-pin the file in the manifest, as a careless tool would."""
    wf = d / "weights.safetensors"
    tensors, meta = load_safetensors(wf)
    tensors[name] = value
    save_safetensors(wf, tensors, meta)
    sha = hashlib.sha256(wf.read_bytes()).hexdigest()
    _edit(d, lambda m: m.update(weights_sha256=sha))


def test_tensors_must_agree_with_the_manifest(w4: tuple[Path, torch.Tensor], tmp_path: Path) -> None:
    d, _ = w4
    t, _ = load_safetensors(d / "weights.safetensors")
    codes = t["features.0.weight.codes"]
    _replace_tensor(d, "features.0.weight.codes", codes[:-1])
    _refused(d, "layer 'features.0'", "'features.0.weight.codes'", "needs 75")  # 6·1·5·5 codes at 4 bits
    _replace_tensor(d, "features.0.weight.codes", codes)
    _replace_tensor(d, "features.0.weight.scale", torch.ones(1))
    _refused(d, "layer 'features.0'", "'features.0.weight.scale'", "shape [1], expected [6]")
    _replace_tensor(d, "features.0.weight.scale", t["features.0.weight.scale"])
    _replace_tensor(d, "features.0.weight.zero_point", t["features.0.weight.zero_point"].float())
    _refused(d, "layer 'features.0'", "'features.0.weight.zero_point'", "dtype")
    _replace_tensor(d, "features.0.weight.zero_point", t["features.0.weight.zero_point"])
    _replace_tensor(d, "features.0.bias", torch.zeros(5))
    _refused(d, "layer 'features.0'", "'features.0.bias'")

    # ternary codes are stored in 2 bits as q + 1 in {0, 1, 2}: the pattern 3 is no code
    dt, _ = _export(tmp_path / "t", QuantConfig(w_mode="ternary_twn", a_bits=8))
    tt, _ = load_safetensors(dt / "weights.safetensors")
    bad = tt["features.0.weight.codes"].clone()
    bad[0] = 0b11111111
    _replace_tensor(dt, "features.0.weight.codes", bad)
    _refused(dt, "layer 'features.0'", "outside the grid [-1, 1]")
