"""A damaged baseline cache (weights, their metadata, the training checkpoint) is reported by name
and retrained, and the retrained baseline is the one an undamaged run trains."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import safetensors.torch as st
import torch

from cimkit.experiment import ExperimentConfig, run_experiment
from cimkit.io import load_safetensors

CFG = ExperimentConfig.from_dict({"name": "damage", "seed": 1, "threads": 1, "dataset": "digits", "model": "small_cnn",
                                  "model_args": {"width": 4}, "train": {"epochs": 1, "batch_size": 128, "lr": 0.01},
                                  "variants": [{"kind": "fp32"}]})  # fmt: skip


def _files(out: Path) -> tuple[Path, Path]:
    (weights,) = (out / "cache").glob("baseline-*[0-9a-f].safetensors")
    (state,) = (out / "cache").glob("baseline-*-train/state.safetensors")
    return weights, state


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, torch.Tensor]]:
    out = tmp_path_factory.mktemp("ref")
    res = run_experiment(CFG, out, progress=False)
    return res, load_safetensors(_files(out)[0])[0]


def _rerun(out: Path, caplog: pytest.LogCaptureFixture) -> tuple[dict, str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cimkit"):
        res = run_experiment(CFG, out, progress=False)
    return res, "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def _same_baseline(out: Path, res: dict, reference: tuple[dict, dict[str, torch.Tensor]]) -> None:
    ref_res, ref_w = reference
    w, _ = load_safetensors(_files(out)[0])  # rewritten, readable again
    assert w.keys() == ref_w.keys() and all(torch.equal(w[k], ref_w[k]) for k in w)
    assert res["variants"][0]["metrics"] == ref_res["variants"][0]["metrics"]
    assert res["baseline"]["reused"] is False and res["complete"]


@pytest.mark.parametrize("also_lose_checkpoint", [False, True], ids=["checkpoint-kept", "checkpoint-lost"])
def test_truncated_baseline_weights_are_retrained(
    tmp_path: Path, reference: tuple[dict, dict[str, torch.Tensor]], caplog: pytest.LogCaptureFixture,
    also_lose_checkpoint: bool,
) -> None:  # fmt: skip
    run_experiment(CFG, tmp_path, progress=False)
    weights, state = _files(tmp_path)
    weights.write_bytes(weights.read_bytes()[:-64])
    if also_lose_checkpoint:
        state.unlink()
    res, warned = _rerun(tmp_path, caplog)
    assert str(weights) in warned and "retraining the baseline" in warned
    _same_baseline(tmp_path, res, reference)
    again, warned = _rerun(tmp_path, caplog)
    assert again["baseline"]["reused"] is True and warned == ""


def test_truncated_metadata_of_an_older_cache_is_retrained(
    tmp_path: Path, reference: tuple[dict, dict[str, torch.Tensor]], caplog: pytest.LogCaptureFixture
) -> None:
    run_experiment(CFG, tmp_path, progress=False)
    weights, state = _files(tmp_path)
    # the cimkit 0.1 layout: bare weights, metadata in weights + ".json", here cut off mid-write
    st.save_file(load_safetensors(weights)[0], str(weights))
    side = weights.with_suffix(".safetensors.json")
    side.write_text('{"train_seconds": 0.4, "seconds_per_epoch": 0.4, "hist')
    state.unlink()
    res, warned = _rerun(tmp_path, caplog)
    assert str(side) in warned and "retraining the baseline" in warned
    _same_baseline(tmp_path, res, reference)


def test_truncated_training_checkpoint_trains_from_scratch(
    tmp_path: Path, reference: tuple[dict, dict[str, torch.Tensor]], caplog: pytest.LogCaptureFixture
) -> None:
    run_experiment(CFG, tmp_path, progress=False)
    weights, state = _files(tmp_path)
    weights.unlink()  # as if training had been interrupted before the baseline was saved
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 3])
    res, warned = _rerun(tmp_path, caplog)
    assert str(state) in warned and "training from scratch" in warned
    _same_baseline(tmp_path, res, reference)


def test_cache_keys_change_with_the_cimkit_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cached checkpoint is never reused by another release (its key hashes the version)."""
    from cimkit.experiment import context

    parts = ("mnist", {}, "lenet5", {"epochs": 1}, 0)
    key = context.config_hash(*parts)
    assert context.config_hash(*parts) == key  # stable
    monkeypatch.setattr(context, "__version__", "999.0")
    assert context.config_hash(*parts) != key
