"""QuantConfig: validation, per-layer resolution, presets, round trips."""

from __future__ import annotations

import pytest

from cimkit.errors import ConfigError
from cimkit.quant import QUANT_PRESETS, QuantConfig, WMode, as_quant_config
from cimkit.quant.variants import PTQConfig, QATConfig


def test_defaults_and_round_trip() -> None:
    cfg = QuantConfig(w_bits=4, a_bits=None, overrides={"features.*": {"w_bits": 8}}, skip=["head"])
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg
    assert QuantConfig.from_json(cfg.to_json()) == cfg
    assert QuantConfig.from_toml(cfg.to_toml()).to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"w_bits": 0}, "w_bits"),
        ({"w_bits": 17}, "w_bits"),
        ({"a_bits": 1}, "a_bits"),
        ({"a_bits": 17}, "a_bits"),
        ({"observer": "minmx"}, "did you mean 'minmax'"),
        ({"w_mode": "binray"}, "did you mean 'binary'"),
        ({"overrides": {"fc": {"w_bitz": 4}}}, "did you mean 'w_bits'"),
        ({"overrides": {"fc": {"w_bits": 40}}}, "overrides.fc.w_bits"),
        ({"percentile": 101.0}, "percentile"),
    ],
)
def test_invalid_values_raise_config_error(kw: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        QuantConfig.from_dict(kw)


def test_binary_and_ternary_bits_are_normalized() -> None:
    assert QuantConfig(w_bits=1).w_mode is WMode.BINARY
    assert QuantConfig(w_mode="binary").w_bits == 1
    assert QuantConfig(w_mode="ternary_twn").w_bits == 2
    assert QuantConfig(w_mode="ternary_absmean", w_bits=8).w_bits == 2


def test_for_layer_applies_overrides_in_order_and_skip() -> None:
    cfg = QuantConfig(
        w_mode="binary",
        a_bits=4,
        overrides={"features.*": {"a_bits": 8}, "features.0": {"w_bits": 8}, "@last": {"w_bits": 6}},
        skip=["aux*"],
    )
    c0 = cfg.for_layer("features.0", index=0, count=5)
    assert (c0.w_mode, c0.w_bits, c0.a_bits) == (WMode.AFFINE, 8, 8)  # w_bits override implies affine
    c1 = cfg.for_layer("features.3", index=1, count=5)
    assert (c1.w_mode, c1.w_bits, c1.a_bits) == (WMode.BINARY, 1, 8)
    c4 = cfg.for_layer("fc", index=4, count=5)
    assert (c4.w_mode, c4.w_bits, c4.a_bits) == (WMode.AFFINE, 6, 4)
    assert cfg.for_layer("aux.head", index=2, count=5) is None
    assert c0.overrides == {} and c0.skip == []


def test_presets_and_as_quant_config() -> None:
    assert "w8a8" in QUANT_PRESETS and "binary_a4" in QUANT_PRESETS
    for name, desc in QUANT_PRESETS.describe():
        assert desc, name
        cfg = as_quant_config(name)
        assert QuantConfig.from_dict(cfg.to_dict()) == cfg
    assert as_quant_config({"w_bits": 4}).w_bits == 4
    with pytest.raises(ConfigError, match="did you mean 'w8a8'"):
        as_quant_config("w8a9")
    assert as_quant_config("binary_a4").label() == "WbinA4"


def test_variant_configs_validate_their_fields() -> None:
    assert PTQConfig.from_dict({"calib_batches": 4, "w_bits": 4}).quant_fields() == QuantConfig(w_bits=4)
    with pytest.raises(ConfigError, match="calib_batches"):
        PTQConfig.from_dict({"calib_batches": 0})
    with pytest.raises(ConfigError, match="epochs"):
        QATConfig.from_dict({"epochs": 0})
    q = QATConfig.from_dict({"epochs": 2, "lr": 1e-4, "w_mode": "ternary_twn"})
    assert QATConfig.from_dict(q.to_dict()) == q
