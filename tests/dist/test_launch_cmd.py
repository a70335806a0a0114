"""Command lines and set-up errors that need no processes."""

from __future__ import annotations

import sys

import pytest

from cimkit.dist import DDPStrategy, strategy_from_env, torchrun_command, torchrun_env
from cimkit.dist.strategy import SingleProcess
from cimkit.errors import ConfigError

_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")


@pytest.fixture
def no_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in _ENV:
        monkeypatch.delenv(k, raising=False)


def test_torchrun_command_single_and_multi_node() -> None:
    one = torchrun_command(2, ["run", "exp.toml"])
    assert one == [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone",
                   "-m", "cimkit", "run", "exp.toml"]  # fmt: skip
    multi = torchrun_command(4, ["run", "e.toml"], nnodes=2, node_rank=1, rdzv_endpoint="node0:29400")
    assert "--nnodes=2" in multi and "--node-rank=1" in multi and "--rdzv-endpoint=node0:29400" in multi
    assert "--standalone" not in multi
    with pytest.raises(ConfigError, match="rdzv_endpoint"):
        torchrun_command(2, [], nnodes=2)
    with pytest.raises(ConfigError, match="nproc: 0"):
        torchrun_command(0, [])


def test_ddp_without_rendezvous_is_a_config_error(no_torchrun: None) -> None:
    assert not torchrun_env()
    with pytest.raises(ConfigError, match="no rendezvous"):
        DDPStrategy().setup()
    with pytest.raises(ConfigError, match="timeout_s"):
        DDPStrategy(timeout_s=0)


def test_strategy_from_env(no_torchrun: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(strategy_from_env(), SingleProcess)
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(k, v)
    assert isinstance(strategy_from_env(), DDPStrategy)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert isinstance(strategy_from_env(), SingleProcess)
