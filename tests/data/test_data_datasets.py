"""Every registered dataset: shapes, dtypes, label ranges, counts, normalization; options and names."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cimkit.data import DATASETS, DataKind, clear_cache, get_spec, list_datasets, load_dataset
from cimkit.errors import ConfigError, DataError

# What each registered dataset must look like (a new dataset without an entry here fails a test).
EXPECTED = {
    "digits": dict(kind="image", chw=(1, 8, 8), classes=10, train=1438, test=359),
    "mnist": dict(kind="image", chw=(1, 28, 28), classes=10, train=60000, test=10000, mean=0.1307, std=0.3081),
    "fashion-mnist": dict(kind="image", chw=(1, 28, 28), classes=10, train=60000, test=10000, mean=0.2860, std=0.3530),
    "cifar10": dict(kind="image", chw=(3, 32, 32), classes=10, train=20, test=6),  # files written by the test
    "tinyshakespeare": dict(kind="text", classes=65),
    "image_fit": dict(kind="coords"),  # regression targets: tests/data/test_signals.py
}


def test_every_registered_dataset_is_covered() -> None:
    assert set(list_datasets()) == set(EXPECTED)
    for name, desc in DATASETS.describe():
        assert desc and "\n" not in desc, name
        assert DATASETS.entry(name).meta["kind"] == EXPECTED[name]["kind"] == get_spec(name).kind.value


@pytest.fixture
def data_dir_for(datasets_dir: Path, request: pytest.FixtureRequest):
    def get(name: str) -> Path | None:
        if name == "digits":
            return None  # bundled with scikit-learn
        if name == "cifar10":
            return request.getfixturevalue("cifar_files").folder
        return datasets_dir

    return get


@pytest.mark.parametrize("name", [n for n in list_datasets() if EXPECTED[n]["kind"] != "coords"])
def test_dataset_shapes_dtypes_labels(name: str, data_dir_for, offline: list[str]) -> None:
    exp = EXPECTED[name]
    ds = load_dataset(name, data_dir=data_dir_for(name))
    assert offline == []  # nothing was downloaded
    assert ds.name == name and ds.kind == DataKind(exp["kind"]) and get_spec(name).kind == ds.kind
    assert ds.num_classes == exp["classes"] == len(ds.classes)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        assert y.dtype == torch.int64 and y.shape == (len(x),)
        assert int(y.min()) >= 0 and int(y.max()) < ds.num_classes
    # every class occurs in the training split
    assert torch.bincount(ds.y_train, minlength=ds.num_classes).min() > 0 or name == "tinyshakespeare"
    if ds.kind == DataKind.IMAGE:
        assert (len(ds.x_train), len(ds.x_test)) == (exp["train"], exp["test"])
        assert ds.x_train.dtype == torch.float32 and ds.x_test.dtype == torch.float32
        assert tuple(ds.x_train.shape[1:]) == exp["chw"] == (ds.in_channels, *ds.input_size)
        assert tuple(ds.x_test.shape[1:]) == exp["chw"]
    else:
        assert ds.x_train.dtype == torch.int64 and ds.x_train.shape[1:] == (64,) and ds.input_size == (64,)
        assert ds.vocab is not None and len(ds.vocab) == ds.num_classes
        assert int(ds.x_train.max()) < ds.num_classes and int(ds.x_train.min()) >= 0


@pytest.mark.parametrize("name", [n for n in list_datasets() if EXPECTED[n]["kind"] == "image"])
def test_image_normalization(name: str, data_dir_for) -> None:
    exp = EXPECTED[name]
    ds = load_dataset(name, data_dir=data_dir_for(name))
    assert ds.mean is not None and ds.std is not None and len(ds.mean) == ds.in_channels
    # training split is standardized per channel with its own statistics
    std, mean = torch.std_mean(ds.x_train, dim=(0, 2, 3))  # (C,), (C,)
    torch.testing.assert_close(mean, torch.zeros(ds.in_channels), atol=1e-4, rtol=0)
    torch.testing.assert_close(std, torch.ones(ds.in_channels), atol=1e-4, rtol=0)
    if "mean" in exp:  # published MNIST / Fashion-MNIST figures
        assert ds.mean[0] == pytest.approx(exp["mean"], abs=1e-4)
        assert ds.std[0] == pytest.approx(exp["std"], abs=1e-4)
    # both splits are integer pixel levels under the same (train) normalization
    levels = 16 if name == "digits" else 255
    for xs in (ds.x_train[:2000], ds.x_test[-2000:]):
        px = ds.denormalize(xs.double()) * levels  # (2000, C, H, W)
        assert torch.allclose(px, px.round(), atol=1e-3)
        assert px.min() > -1e-3 and px.max() < levels + 1e-3


def test_cifar10_official_format_round_trip(cifar_files) -> None:
    ds = load_dataset("cifar10", data_dir=cifar_files.folder, download=False)
    assert ds.classes[0] == "airplane" and ds.classes[-1] == "truck"
    got = (ds.denormalize(ds.x_train.double()) * 255).round().to(torch.uint8)  # (N, 3, 32, 32)
    assert torch.equal(got, torch.from_numpy(cifar_files.x_train))  # batch order 1..5, CHW layout
    assert torch.equal(ds.y_train, torch.from_numpy(cifar_files.y_train))
    got_t = (ds.denormalize(ds.x_test.double()) * 255).round().to(torch.uint8)
    assert torch.equal(got_t, torch.from_numpy(cifar_files.x_test))
    assert torch.equal(ds.y_test, torch.from_numpy(cifar_files.y_test))
    ref = cifar_files.x_train.astype(np.float64) / 255  # (N, 3, 32, 32)
    np.testing.assert_allclose(ds.mean, ref.mean(axis=(0, 2, 3)), atol=1e-12)
    np.testing.assert_allclose(ds.std, ref.std(axis=(0, 2, 3)), atol=1e-12)


def test_digits_split_is_stratified_and_deterministic() -> None:
    from sklearn.datasets import load_digits

    counts = np.bincount(load_digits().target, minlength=10)
    a = load_dataset("digits")
    b = load_dataset("digits")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    test_counts = torch.bincount(a.y_test, minlength=10).numpy()
    np.testing.assert_array_equal(test_counts, np.rint(0.2 * counts).astype(int))
    np.testing.assert_array_equal(torch.bincount(a.y_train, minlength=10).numpy(), counts - test_counts)
    c = load_dataset("digits", split_seed=1, test_fraction=0.25)
    assert len(c.x_test) == int(np.rint(0.25 * counts).sum())
    d = load_dataset("digits", split_seed=1)
    assert not torch.equal(d.y_test, a.y_test) or not torch.equal(d.x_test, a.x_test)


def test_tinyshakespeare_windows(datasets_dir: Path) -> None:
    text = (datasets_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    ds = load_dataset("tinyshakespeare", data_dir=datasets_dir)
    assert ds.vocab == sorted(set(text))
    split = int(len(text) * 0.9)
    T = 64
    assert len(ds.x_train) == (split - (T + 1)) // T + 1
    assert len(ds.x_test) == (len(text) - split - (T + 1)) // T + 1
    for k in (0, 1, len(ds.x_train) - 1):
        assert ds.decode(ds.x_train[k]) == text[k * T : k * T + T]
        assert ds.vocab[int(ds.y_train[k])] == text[k * T + T]
    assert ds.decode(ds.x_test[0]) == text[split : split + T]
    assert ds.vocab[int(ds.y_test[-1])] == text[split + (len(ds.x_test) - 1) * T + T]
    # overlapping windows with a custom length and stride
    small = load_dataset("tinyshakespeare", data_dir=datasets_dir, seq_len=8, stride=3)
    assert small.x_train.shape[1:] == (8,) and small.input_size == (8,)
    assert small.decode(small.x_train[5]) == text[15:23] and small.vocab[int(small.y_train[5])] == text[23]
    assert len(small.x_train) == (split - 9) // 3 + 1


def test_options_and_names_errors(datasets_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'seq_len'"):
        load_dataset("tinyshakespeare", data_dir=datasets_dir, seq_lenn=3)
    with pytest.raises(ConfigError, match=r"seq_len.*out of range"):
        load_dataset("tinyshakespeare", data_dir=datasets_dir, seq_len=0)
    with pytest.raises(ConfigError, match=r"too long"):
        load_dataset("tinyshakespeare", data_dir=datasets_dir, seq_len=200_000)
    with pytest.raises(ConfigError, match=r"takes no options"):
        load_dataset("mnist", data_dir=datasets_dir, seq_len=3)
    with pytest.raises(ConfigError, match=r"test_fraction"):
        load_dataset("digits", test_fraction=1.5)
    with pytest.raises(ConfigError, match=r"unknown dataset 'mnsit' \(did you mean 'mnist'\?\)"):
        load_dataset("mnsit")
    assert load_dataset("fashion_mnist", data_dir=datasets_dir).name == "fashion-mnist"
    assert list_datasets("*mnist") == ["fashion-mnist", "mnist"]


def test_loads_are_independent_copies(datasets_dir: Path) -> None:
    a = load_dataset("mnist", data_dir=datasets_dir)
    ref = a.x_train[0].clone()
    a.x_train.mul_(0)
    a.y_train.fill_(3)
    b = load_dataset("mnist", data_dir=datasets_dir)  # served from the in-process cache
    assert torch.equal(b.x_train[0], ref) and int(b.y_train[0]) == 5  # first MNIST label is a 5


def test_dataset_take_and_loaders(datasets_dir: Path) -> None:
    ds = load_dataset("mnist", data_dir=datasets_dir)
    small = ds.take(n_train=1000, n_test=200, seed=3)
    assert (len(small.x_train), len(small.x_test), len(small.y_train)) == (1000, 200, 1000)
    assert small.mean == ds.mean and small.num_classes == 10
    assert len(small.train_loader(batch_size=128)) == math.ceil(1000 / 128)
    xb, yb = next(iter(small.test_loader(batch_size=50)))
    assert torch.equal(xb, small.x_test[:50]) and torch.equal(yb, small.y_test[:50])
    assert ds.summary()["train"] == 60000 and "Dataset('mnist'" in repr(ds)


def test_digits_without_sklearn_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_cache()
    monkeypatch.setitem(__import__("sys").modules, "sklearn.datasets", None)  # import fails
    with pytest.raises(DataError, match=r"scikit-learn.*cimkit\[data\]") as e:
        load_dataset("digits")
    assert "\n" not in str(e.value)
    clear_cache()
