"""CompressionConfig: defaults, validation naming the field, did-you-mean, TOML round trip."""

from __future__ import annotations

import pytest

from cimkit.dist import CompressionConfig, GradCompression, TernScaler
from cimkit.errors import ConfigError


def test_defaults_follow_the_references() -> None:
    cfg = CompressionConfig()
    assert cfg.method is GradCompression.NONE
    assert cfg.terngrad_scaler is TernScaler.STDDEV and cfg.terngrad_c == 2.5  # TernGrad README
    assert cfg.min_numel == 1 and not cfg.float_last_layer  # reference size_to_binarize=1, quantize_logits
    assert cfg.powersgd_rank == 1 and cfg.powersgd_start_iter == 1000  # PowerSGDState defaults


def test_round_trip_and_enum_coercion() -> None:
    cfg = CompressionConfig.from_dict({"method": "terngrad", "terngrad_scaler": "max", "float_params": ["fc3.*"]})
    assert cfg.method is GradCompression.TERNGRAD and cfg.terngrad_scaler is TernScaler.MAX
    assert CompressionConfig.from_toml(cfg.to_toml()) == cfg
    assert CompressionConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"method": "ternrgad"}, r"method: 'ternrgad' is not allowed \(did you mean 'terngrad'"),
        ({"terngrad_scaler": "min"}, r"terngrad_scaler: .min. is not allowed"),
        ({"terngrad_c": 0.0}, r"compression\.terngrad_c: 0\.0 is out of range"),
        ({"qsgd_levels": 0}, r"compression\.qsgd_levels: 0 .*\[1, 127\]"),
        ({"qsgd_levels": 200}, r"compression\.qsgd_levels: 200"),
        ({"qsgd_bucket_size": -1}, r"compression\.qsgd_bucket_size"),
        ({"topk_ratio": 0.0}, r"compression\.topk_ratio"),
        ({"topk_ratio": 1.5}, r"compression\.topk_ratio"),
        ({"min_numel": 0}, r"compression\.min_numel"),
        ({"float_params": [""]}, r"compression\.float_params\[0\]"),
        ({"powersgd_rank": 0}, r"compression\.powersgd_rank"),
        ({"powersgd_start_iter": 1}, r"compression\.powersgd_start_iter: 1 .*>= 2"),
        ({"powersgd_min_compression_rate": 0.0}, r"compression\.powersgd_min_compression_rate"),
    ],
)
def test_bad_values_name_the_field(changes: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CompressionConfig.from_dict(changes)


def test_powersgd_start_iter_below_two_is_fine_without_error_feedback_and_warm_start() -> None:
    cfg = CompressionConfig(method="powersgd", powersgd_start_iter=0, powersgd_error_feedback=False,
                            powersgd_warm_start=False)  # fmt: skip
    assert cfg.powersgd_start_iter == 0


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match="did you mean 'topk_ratio'"):
        CompressionConfig.from_dict({"topk_ration": 0.1})
