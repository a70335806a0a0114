"""An experiment refuses a distributed strategy whose gradient compression is not the one its
``[train]`` table asks for (the options would otherwise be silently ignored)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cimkit.errors import ConfigError
from cimkit.experiment import ExperimentConfig, run_experiment
from cimkit.train.compression import CompressionConfig
from cimkit.train.strategy import SingleProcess


class _TwoRanks(SingleProcess):
    """A strategy that reports two ranks (no process group: the check runs before any work)."""

    def __init__(self, compression: CompressionConfig) -> None:
        super().__init__()
        self.compression = compression

    @property
    def world_size(self) -> int:
        return 2


def _cfg(**train: object) -> ExperimentConfig:
    return ExperimentConfig.from_dict({"name": "x", "dataset": "digits", "model": "small_cnn",
                                       "train": {"epochs": 1, **train}, "variants": [{"kind": "fp32"}]})  # fmt: skip


def test_mismatched_compression_options_are_a_config_error(tmp_path: Path) -> None:
    cfg = _cfg(grad_compression="powersgd", compression={"powersgd_start_iter": 10})
    with pytest.raises(ConfigError, match="powersgd_start_iter"):
        run_experiment(cfg, tmp_path / "a", progress=False, strategy=_TwoRanks(CompressionConfig(method="powersgd")))
    with pytest.raises(ConfigError, match="grad_compression"):
        run_experiment(_cfg(), tmp_path / "b", progress=False, strategy=_TwoRanks(CompressionConfig(method="terngrad")))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before the folder is made
