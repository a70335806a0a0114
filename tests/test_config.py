from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import pytest

from cimkit.config import Config, check_range, dumps_toml, loads_toml
from cimkit.errors import ConfigError
from cimkit.train import TrainConfig


class Color(str, Enum):
    RED = "red"
    GREEN = "green"


@dataclass
class Inner(Config):
    bits: int = 8

    def __post_init__(self) -> None:
        check_range("bits", self.bits, 1, 16)


@dataclass
class Outer(Config):
    name: str = "x"
    rate: float = 0.5
    color: Color = Color.RED
    tags: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    maybe: int | None = None
    extra: dict[str, float] = field(default_factory=dict)


def test_round_trip_json_and_toml() -> None:
    c = Outer(name="a b", rate=2, color=Color.GREEN, tags=["p", "q"], inner=Inner(4), maybe=3, extra={"k": 1.5})
    assert Outer.from_json(c.to_json()) == c
    assert Outer.from_toml(c.to_toml()) == c
    assert c.to_dict()["color"] == "green"


def test_int_coerced_to_float_and_enum_from_string() -> None:
    c = Outer.from_dict({"rate": 1, "color": "green"})
    assert isinstance(c.rate, float) and c.color is Color.GREEN


def test_unknown_key_did_you_mean() -> None:
    with pytest.raises(ConfigError, match=r"ratee: unknown key.*did you mean 'rate'"):
        Outer.from_dict({"ratee": 1.0})


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"rate": "fast"}, r"rate: expected a number, got 'fast'"),
        ({"color": "gren"}, r"color: 'gren' is not allowed \(did you mean 'green'\?\); allowed: red, green"),
        ({"inner": {"bits": 32}}, r"inner.bits: 32 is out of range; allowed: \[1, 16\]"),
        ({"inner": {"bitz": 3}}, r"inner.bitz: unknown key"),
        ({"tags": "p"}, r"tags: expected a list"),
        ({"maybe": 1.5}, r"maybe: 1.5 is not a valid"),
    ],
)
def test_bad_values_name_the_field(data: dict, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as e:
        Outer.from_dict(data)
    assert "\n" not in str(e.value)


def test_train_config_validation_and_replace() -> None:
    with pytest.raises(ConfigError, match="train.lr"):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError, match=r"did you mean 'adam'"):
        TrainConfig(optimizer="adm")
    t = TrainConfig().replace(epochs=3)
    assert t.epochs == 3 and TrainConfig.from_toml(t.to_toml()) == t


def test_toml_arrays_of_tables_round_trip() -> None:
    d = {"name": "e", "train": {"epochs": 2}, "variants": [{"kind": "fp32"}, {"kind": "ptq", "w_bits": 8}]}
    assert loads_toml(dumps_toml(d)) == d


def test_invalid_toml_is_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        loads_toml("a = = 1")
