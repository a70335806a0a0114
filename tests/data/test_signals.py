"""image_fit: coordinates and intensities, area resizing, holdout split, scikit-image pictures."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from cimkit.data import clear_cache, load_dataset
from cimkit.data.signals import synthetic_image
from cimkit.errors import ConfigError, DataError
from cimkit.models import create
from cimkit.tasks import get_task


def block_mean(img: np.ndarray, size: int) -> np.ndarray:
    """Reference area reduction (H, W) -> (size, size) when size divides H and W."""
    f = img.shape[0] // size
    return img.reshape(size, f, size, f).mean(axis=(1, 3))


def test_shapes_ranges_and_grid() -> None:
    ds = load_dataset("image_fit", size=64)
    assert ds.kind.value == "coords" and ds.task == "regression" and ds.task_options == {"peak": 1.0}
    assert ds.x_train.shape == (4096, 2) and ds.y_train.shape == (4096, 1)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.float32
    assert torch.equal(ds.x_train, ds.x_test) and torch.equal(ds.y_train, ds.y_test)  # train = test = all
    assert float(ds.x_train.min()) == -1.0 and float(ds.x_train.max()) == 1.0
    assert float(ds.y_train.min()) >= 0.0 and float(ds.y_train.max()) <= 1.0
    assert float(ds.y_train.var()) > 0.01  # not a flat picture
    # row-major pixel order: column 0 runs left -> right along a row, column 1 top -> bottom
    assert torch.allclose(ds.x_train[:64, 0], torch.linspace(-1, 1, 64)) and (ds.x_train[:64, 1] == -1).all()
    assert torch.allclose(ds.x_train[::64, 1], torch.linspace(-1, 1, 64)) and (ds.x_train[::64, 0] == -1).all()
    assert ds.extras["grid"] == (64, 64)


def test_area_resize_matches_block_means() -> None:
    full = synthetic_image(512).double().numpy()
    ds = load_dataset("image_fit", size=128)
    got = ds.y_train.reshape(128, 128).double().numpy()
    np.testing.assert_allclose(got, block_mean(full, 128), atol=1e-6)


def test_orientation_of_the_synthetic_picture() -> None:
    # the disc of level 0.90 is centred at (u, v) = (-0.45, -0.35): upper left; the one of 0.15 at (0.40, -0.45)
    ds = load_dataset("image_fit", size=128)
    for (u, v), level in (((-0.45, -0.35), 0.90), ((0.40, -0.45), 0.15)):
        i = int(((ds.x_train - torch.tensor([u, v])) ** 2).sum(1).argmin())
        assert abs(float(ds.y_train[i, 0]) - level) <= 0.3 * 0.05 + 1e-6  # level + the faint grating


def test_deterministic() -> None:
    a = load_dataset("image_fit", size=32)
    clear_cache()
    b = load_dataset("image_fit", size=32)
    assert torch.equal(a.y_train, b.y_train) and torch.equal(a.x_train, b.x_train)
    assert torch.equal(synthetic_image(64), synthetic_image(64))


@pytest.mark.parametrize("k", [2, 3])
def test_holdout_split(k: int) -> None:
    full = load_dataset("image_fit", size=30)
    ds = load_dataset("image_fit", size=30, holdout=k)
    tr, te = ds.extras["train_index"], ds.extras["test_index"]
    assert len(tr) + len(te) == 900 and len(set(tr.tolist()) & set(te.tolist())) == 0
    rows, cols = te // 30, te % 30
    assert ((rows + cols) % k == 0).all() and len(te) == sum((r + c) % k == 0 for r in range(30) for c in range(30))
    assert torch.equal(ds.x_test, full.x_train[te]) and torch.equal(ds.y_train, full.y_train[tr])


def test_model_spec_builds_siren() -> None:
    ds = load_dataset("image_fit", size=16)
    spec = ds.model_spec()
    assert spec["in_features"] == 2 and spec["out_features"] == 1
    m = create("siren", **spec)
    assert m(ds.x_test).shape == ds.y_test.shape
    task = get_task(ds.task, **ds.task_options)
    assert task.peak == 1.0


@pytest.mark.parametrize(
    ("opts", "match"),
    [
        ({"image": "cameraman"}, r"image: 'cameraman' is not allowed \(did you mean 'camera'\?\)"),
        ({"size": 1024}, r"size: 1024 is out of range"),
        ({"size": 1}, r"size: 1 is out of range"),
        ({"holdout": 1}, r"holdout: 1 is out of range"),
    ],
)
def test_bad_options(opts: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_dataset("image_fit", **opts)


def test_missing_scikit_image_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_cache()  # the pictures are cached per process once loaded
    monkeypatch.setitem(sys.modules, "skimage", None)
    with pytest.raises(ImportError) as real:
        import skimage  # noqa: F401
    with pytest.raises(DataError, match=r"cimkit\[inr\]") as e:
        load_dataset("image_fit", image="camera")
    assert str(real.value) in str(e.value)
    clear_cache()


def test_camera() -> None:
    skdata = pytest.importorskip("skimage.data", reason="scikit-image is not installed (pip install 'cimkit[inr]')")
    ds = load_dataset("image_fit", image="camera", size=128)
    ref = block_mean(skdata.camera().astype(np.float64) / 255.0, 128)
    np.testing.assert_allclose(ds.y_train.reshape(128, 128).double().numpy(), ref, atol=1e-6)
    assert ds.extras["image"] == "camera"


def test_astronaut_gray_matches_rgb2gray() -> None:
    skimage = pytest.importorskip("skimage", reason="scikit-image is not installed (pip install 'cimkit[inr]')")
    from skimage.color import rgb2gray

    ds = load_dataset("image_fit", image="astronaut_gray", size=64)
    ref = block_mean(rgb2gray(skimage.data.astronaut()).astype(np.float64), 64)
    np.testing.assert_allclose(ds.y_train.reshape(64, 64).double().numpy(), ref, atol=1e-5)
