"""Checkpoints that survive damage: every broken file is a DataError naming it, ``fit`` restarts
from scratch on a broken checkpoint, and tensors and counters can never come from different epochs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import safetensors.torch as st
import torch
from torch import nn

from cimkit.data import TensorLoader
from cimkit.errors import DataError
from cimkit.io import load_safetensors
from cimkit.models import create
from cimkit.train import TrainConfig, fit, load_model, save_model
from cimkit.train.checkpoint import STATE_KEY, load_training_state
from cimkit.train.loop import make_optimizer

torch.set_num_threads(1)

CFG = TrainConfig(epochs=4, batch_size=32, lr=3e-3, seed=5)  # 8 steps per epoch on 256 samples


def _toy(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()
    return x, y


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create("small_cnn", in_channels=1, num_classes=4, input_size=(8, 8), width=4)


def _loader() -> TensorLoader:
    x, y = _toy()
    return TensorLoader(x, y, 32, shuffle=True, seed=1)


def _weights(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Interrupt:
    def __init__(self, at_step: int) -> None:
        self.at, self.n = at_step, 0

    def __call__(self, model: nn.Module) -> None:
        self.n += 1
        if self.n == self.at:
            raise KeyboardInterrupt


def _checkpoint_after(epochs: int, directory: Path) -> Path:
    """Train from ``_model()`` and die 3 steps into epoch ``epochs + 1``: the checkpoint holds ``epochs``."""
    with pytest.raises(KeyboardInterrupt):
        fit(_model(), _loader(), CFG, checkpoint_dir=directory, progress=False, step_hooks=[_Interrupt(8 * epochs + 3)])
    return directory


@pytest.fixture(scope="module")
def uninterrupted() -> dict[str, torch.Tensor]:
    m = _model()
    fit(m, _loader(), CFG, progress=False)
    return _weights(m)


# ----------------------------------------------------------------------------- model files


def test_damaged_model_file_is_a_data_error_and_leaves_the_model_unchanged(tmp_path: Path) -> None:
    src = _model(1)
    path = save_model(tmp_path / "m.safetensors", src, {"accuracy": 0.5})
    good = path.read_bytes()
    flipped = bytearray(good)
    flipped[-7] ^= 0x10
    for damage, what in ((good[: len(good) // 2], "truncated"), (bytes(flipped), "checksum")):
        path.write_bytes(damage)
        m = _model(2)
        before = _weights(m)
        with pytest.raises(DataError, match=what) as e:
            load_model(path, m)
        assert str(path) in str(e.value) and _equal(_weights(m), before)
    path.write_bytes(good)
    other = create("mlp", in_channels=1, num_classes=4, input_size=(8, 8), hidden=(8,))
    before = _weights(other)
    with pytest.raises(DataError, match="does not fit this model"):
        load_model(path, other)
    assert _equal(_weights(other), before)
    m = _model(2)
    assert load_model(path, m) == {"accuracy": 0.5} and _equal(_weights(m), _weights(src))
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # one file: weights and metadata


def test_older_model_file_with_damaged_metadata_beside_it(tmp_path: Path) -> None:
    # cimkit 0.1 wrote the weights without metadata and the metadata to path + ".json"
    src = _model(1)
    path = tmp_path / "m.safetensors"
    st.save_file(dict(src.state_dict()), str(path))
    side = tmp_path / "m.safetensors.json"
    side.write_text('{"train_seconds": 1.5, "history": [{"epo')  # cut off mid-write
    with pytest.raises(DataError, match=r"m\.safetensors\.json.*not valid JSON"):
        load_model(path, _model(2))
    side.write_text('{"train_seconds": 1.5}')
    m = _model(2)
    assert load_model(path, m) == {"train_seconds": 1.5} and _equal(_weights(m), _weights(src))


# ----------------------------------------------------------------------------- training state


def test_damaged_training_state_warns_and_trains_from_scratch(
    tmp_path: Path, uninterrupted: dict[str, torch.Tensor], caplog: pytest.LogCaptureFixture
) -> None:
    state = _checkpoint_after(2, tmp_path) / "state.safetensors"
    state.write_bytes(state.read_bytes()[:-100])
    m = _model()
    before = _weights(m)
    with pytest.raises(DataError, match="state.safetensors"):
        load_training_state(tmp_path, m, make_optimizer(m, CFG))
    assert _equal(_weights(m), before)  # nothing was loaded
    with caplog.at_level(logging.WARNING, logger="cimkit"):
        res = fit(m, _loader(), CFG, checkpoint_dir=tmp_path, progress=False)
    assert res.resumed_from_epoch is None and len(res.history) == CFG.epochs
    assert any(str(state) in r.getMessage() and "from scratch" in r.getMessage() for r in caplog.records)
    assert _equal(_weights(m), uninterrupted)
    assert load_training_state(tmp_path, _model(3), make_optimizer(_model(3), CFG))["done"] is True  # replaced


def test_tensors_and_counters_of_different_epochs_cannot_be_paired(
    tmp_path: Path, uninterrupted: dict[str, torch.Tensor]
) -> None:
    """The crash between writing the tensors (epoch 2) and the JSON (still epoch 1) of a two-file
    checkpoint: with one file there is no second part to be stale, so the leftover JSON is ignored
    and the resume is exact."""
    ep1 = _checkpoint_after(1, tmp_path / "a") / "state.safetensors"
    ep1_json = load_safetensors(ep1)[1][STATE_KEY]
    assert json.loads(ep1_json)["counters"]["epoch"] == 1
    d = _checkpoint_after(2, tmp_path / "b")
    assert sorted(p.name for p in d.iterdir()) == ["state.safetensors"]
    (d / "state.json").write_text(ep1_json)  # the epoch-1 JSON beside the epoch-2 tensors
    m = _model(123)  # a fresh process starts from other random weights
    res = fit(m, _loader(), CFG, checkpoint_dir=d, progress=False)
    assert res.resumed_from_epoch == 2
    assert _equal(_weights(m), uninterrupted)
    assert not (d / "state.json").exists()  # the next save removed the stale part


def test_two_file_checkpoint_is_not_trusted(
    tmp_path: Path, uninterrupted: dict[str, torch.Tensor], caplog: pytest.LogCaptureFixture
) -> None:
    """A cimkit 0.1 pair (tensors without the structure inside, JSON beside them) cannot show that
    its parts belong together: it is reported, and training starts over instead of resuming from a
    possibly mismatched pair."""
    ep1_json = load_safetensors(_checkpoint_after(1, tmp_path / "a") / "state.safetensors")[1][STATE_KEY]
    tensors, _ = load_safetensors(_checkpoint_after(2, tmp_path / "b") / "state.safetensors")
    d = tmp_path / "legacy"
    d.mkdir()
    st.save_file(tensors, str(d / "state.safetensors"))  # epoch-2 tensors, as cimkit 0.1 wrote them
    (d / "state.json").write_text(ep1_json)  # epoch-1 structure and counters
    m = _model()
    with caplog.at_level(logging.WARNING, logger="cimkit"):
        res = fit(m, _loader(), CFG, checkpoint_dir=d, progress=False)
    assert res.resumed_from_epoch is None
    assert any("cannot be verified" in r.getMessage() for r in caplog.records)
    assert _equal(_weights(m), uninterrupted)


def test_checkpoint_for_another_model_is_refused_without_loading(tmp_path: Path) -> None:
    d = _checkpoint_after(1, tmp_path / "a")
    other = create("mlp", in_channels=1, num_classes=4, input_size=(8, 8), hidden=(8,))
    before = _weights(other)
    with pytest.raises(DataError, match="does not fit"):
        load_training_state(d, other, make_optimizer(other, CFG))
    assert _equal(_weights(other), before)
    shutil.rmtree(d)
    assert load_training_state(d, other, make_optimizer(other, CFG)) is None  # no checkpoint at all
