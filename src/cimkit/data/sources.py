"""The registered datasets: digits, mnist, fashion-mnist, cifar10, tinyshakespeare.

File names, md5 sums and mirrors are those of the official releases (the MNIST/FashionMNIST md5s
and mirror order are torchvision's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cimkit.config import Config, check_choice, check_range
from cimkit.data.core import DATASETS, DataKind, Dataset, DatasetSpec
from cimkit.data.download import RemoteFile
from cimkit.data.formats import encode_chars, gunzip, read_cifar10_tar, read_idx
from cimkit.errors import ConfigError, DataError


def register(spec: DatasetSpec, description: str) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS` (entry meta: ``kind``, ``homepage``, ``citation``)."""
    DATASETS.add(spec.name, spec, description, kind=spec.kind.value, homepage=spec.homepage, citation=spec.citation)
    return spec


# ----------------------------------------------------------------------------- image helpers


def channel_stats(x: torch.Tensor, levels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std of integer pixels ``x`` (N, C, H, W) scaled to [0, 1] by ``levels``.

    Uses a histogram of the integer values per channel (float64), so the figures do not depend on
    float32 summation order.
    """
    if x.numel() == 0:
        raise DataError("cannot compute normalization statistics of an empty training set")
    means, stds = [], []
    values = np.arange(levels + 1, dtype=np.float64) / levels  # (levels+1,) pixel values in [0, 1]
    for c in range(x.shape[1]):  # C <= 3
        counts = torch.bincount(x[:, c].reshape(-1), minlength=levels + 1)  # (levels+1,) on uint8 directly
        if len(counts) > levels + 1:
            raise DataError(f"pixel value {len(counts) - 1} exceeds the dataset's maximum {levels}")
        hist = counts.numpy().astype(np.float64)  # (levels+1,)
        n = hist.sum()
        mean = float((hist * values).sum() / n)
        var = float((hist * (values - mean) ** 2).sum() / n)
        means.append(mean)
        stds.append(max(var, 1e-12) ** 0.5)
    return tuple(means), tuple(stds)


def normalize(x: torch.Tensor, levels: int, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Integer pixels (N, C, H, W) -> float32 ``(x / levels - mean) / std`` per channel."""
    m = torch.tensor(mean, dtype=torch.float64)  # (C,)
    s = torch.tensor(std, dtype=torch.float64)  # (C,)
    scale = (1.0 / (levels * s)).to(torch.float32).view(1, -1, 1, 1)  # (1, C, 1, 1)
    shift = (-m / s).to(torch.float32).view(1, -1, 1, 1)  # (1, C, 1, 1)
    return x.to(torch.float32).mul_(scale).add_(shift)  # (N, C, H, W)


def image_dataset(
    name: str,
    raw: dict[str, Any],
    *,
    x_train: torch.Tensor | None = None,
    y_train: torch.Tensor | None = None,
    x_test: torch.Tensor | None = None,
    y_test: torch.Tensor | None = None,
) -> Dataset:
    """A normalized image :class:`Dataset` from uint8 raw arrays (statistics cached in ``raw``)."""
    xtr = raw["x_train"] if x_train is None else x_train
    xte = raw["x_test"] if x_test is None else x_test
    ytr = raw["y_train"] if y_train is None else y_train
    yte = raw["y_test"] if y_test is None else y_test
    levels = int(raw["levels"])
    if x_train is None:
        if "stats" not in raw:
            raw["stats"] = channel_stats(xtr, levels)
        mean, std = raw["stats"]
    else:
        mean, std = channel_stats(xtr, levels)
    classes = list(raw["classes"])
    return Dataset(
        name=name,
        kind=DataKind.IMAGE,
        x_train=normalize(xtr, levels, mean, std),  # (N, C, H, W)
        y_train=ytr.clone(),  # (N,)
        x_test=normalize(xte, levels, mean, std),  # (M, C, H, W)
        y_test=yte.clone(),  # (M,)
        num_classes=len(classes),
        in_channels=int(xtr.shape[1]),
        input_size=(int(xtr.shape[2]), int(xtr.shape[3])),
        classes=classes,
        mean=mean,
        std=std,
    )


def _check_labels(y: np.ndarray, n_images: int, num_classes: int, what: str) -> None:
    if len(y) != n_images:
        raise DataError(f"{what}: {n_images} images but {len(y)} labels")
    if len(y) and int(y.max()) >= num_classes:
        raise DataError(f"{what}: label {int(y.max())} outside [0, {num_classes})")


# ----------------------------------------------------------------------------- digits (scikit-learn)


@dataclass
class DigitsOptions(Config):
    """Split of scikit-learn's 1,797 digits: stratified, ``test_fraction`` of each class to test."""

    test_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        check_range("test_fraction", self.test_fraction, 0.0, 1.0, lo_open=True, hi_open=True)


def _read_digits(blobs: Mapping[str, bytes], where: str) -> dict[str, Any]:
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "sklearn":
            raise DataError(
                "dataset 'digits' needs scikit-learn (it ships the 8x8 digits); install it with "
                "pip install 'cimkit[data]' (or pip install scikit-learn)"
            ) from None
        raise DataError(f"dataset 'digits': scikit-learn could not be imported ({e})") from None
    except ImportError as e:  # installed but broken (e.g. a compiled extension that fails to load)
        raise DataError(f"dataset 'digits': scikit-learn could not be imported ({type(e).__name__}: {e})") from None
    d = load_digits()
    images = np.asarray(d.images)  # (1797, 8, 8) float64 with integer values 0..16
    x = torch.from_numpy(np.rint(images).astype(np.uint8)[:, None])  # (1797, 1, 8, 8)
    y = torch.from_numpy(np.asarray(d.target, dtype=np.int64))  # (1797,)
    return {"x": x, "y": y, "levels": 16, "classes": [str(i) for i in range(10)], "source": "scikit-learn"}


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices with ``round(test_fraction * n_c)`` test samples of each class c."""
    rng = np.random.default_rng(seed)
    test_parts = []
    for c in np.unique(y):  # classes, not samples
        idx = np.flatnonzero(y == c)
        k = round(test_fraction * len(idx))
        test_parts.append(rng.permutation(idx)[:k])
    test = np.sort(np.concatenate(test_parts)) if test_parts else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(y), dtype=bool)
    mask[test] = False
    return np.flatnonzero(mask), test


def _build_digits(raw: dict[str, Any], opts: DigitsOptions) -> Dataset:
    train, test = stratified_split(raw["y"].numpy(), opts.test_fraction, opts.split_seed)
    tr, te = torch.from_numpy(train), torch.from_numpy(test)
    return image_dataset(
        "digits", raw, x_train=raw["x"][tr], y_train=raw["y"][tr], x_test=raw["x"][te], y_test=raw["y"][te]
    )


register(
    DatasetSpec(
        name="digits",
        kind=DataKind.IMAGE,
        files=(),
        read=_read_digits,
        build=_build_digits,
        options=DigitsOptions,
        homepage="https://archive.ics.uci.edu/dataset/80",
        citation="Alpaydin & Kaynak 1998, UCI optical recognition of handwritten digits (via scikit-learn)",
    ),
    "8x8 handwritten digits bundled with scikit-learn (1,797 images, 10 classes, no download; default)",
)

# ----------------------------------------------------------------------------- MNIST family

MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
MNIST_MD5 = (
    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "d53e105ee54ea40749a09fcbcd1e9432",
    "9fb629c4189551a2d022fa330f9573f3",
    "ec29112dd5afa0611ce80d1b7f02629c",
)
FASHION_MD5 = (
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "25c81989df183df01b3e8a0aad5dffbe",
    "bef4ecab320f06d8554ea6380940ec79",
    "bb300cfdad3c16e7a12a480ee83cd310",
)
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def _idx_files(md5s: tuple[str, ...], mirrors: tuple[str, ...]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(n, m, tuple(u + n for u in mirrors)) for n, m in zip(_IDX_NAMES, md5s))


def _idx_reader(classes: tuple[str, ...]):  # -> read function
    def read(blobs: Mapping[str, bytes], where: str) -> dict[str, Any]:
        out: dict[str, Any] = {"levels": 255, "classes": list(classes)}
        for split, prefix in (("train", "train"), ("test", "t10k")):
            img_name, lbl_name = f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"
            img = read_idx(gunzip(blobs[img_name], f"{where}/{img_name}"), f"{where}/{img_name}", ndim=3)
            lbl = read_idx(gunzip(blobs[lbl_name], f"{where}/{lbl_name}"), f"{where}/{lbl_name}", ndim=1)
            if img.dtype != np.uint8 or lbl.dtype != np.uint8:
                raise DataError(f"{where}: expected unsigned-byte IDX files for {split}")
            _check_labels(lbl, len(img), len(classes), f"{where}/{lbl_name}")
            out[f"x_{split}"] = torch.from_numpy(img[:, None].copy())  # (N, 1, 28, 28) uint8
            out[f"y_{split}"] = torch.from_numpy(lbl.astype(np.int64))  # (N,)
        return out

    return read


def _image_builder(name: str):  # -> build function
    def build(raw: dict[str, Any], opts: Config) -> Dataset:
        return image_dataset(name, raw)

    return build


register(
    DatasetSpec(
        name="mnist",
        kind=DataKind.IMAGE,
        files=_idx_files(MNIST_MD5, MNIST_MIRRORS),
        read=_idx_reader(tuple(str(i) for i in range(10))),
        build=_image_builder("mnist"),
        homepage="http://yann.lecun.com/exdb/mnist/",
        citation="LeCun, Bottou, Bengio & Haffner 1998, Proc. IEEE 86(11)",
    ),
    "MNIST handwritten digits, 28x28 grey, 60k train / 10k test (official IDX files)",
)

register(
    DatasetSpec(
        name="fashion-mnist",
        kind=DataKind.IMAGE,
        files=_idx_files(FASHION_MD5, FASHION_MIRRORS),
        read=_idx_reader(FASHION_CLASSES),
        build=_image_builder("fashion-mnist"),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        citation="Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747",
    ),
    "Zalando Fashion-MNIST clothing, 28x28 grey, 60k train / 10k test, 10 classes (IDX files)",
)

# ----------------------------------------------------------------------------- CIFAR-10

CIFAR10_FILE = "cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


def _read_cifar10(blobs: Mapping[str, bytes], where: str) -> dict[str, Any]:
    arr = read_cifar10_tar(blobs[CIFAR10_FILE], f"{where}/{CIFAR10_FILE}")
    return {
        "x_train": torch.from_numpy(arr["x_train"]),  # (50000, 3, 32, 32) uint8
        "y_train": torch.from_numpy(arr["y_train"]),  # (50000,)
        "x_test": torch.from_numpy(arr["x_test"].copy()),  # (10000, 3, 32, 32) uint8
        "y_test": torch.from_numpy(arr["y_test"]),  # (10000,)
        "levels": 255,
        "classes": arr["classes"],
    }


register(
    DatasetSpec(
        name="cifar10",
        kind=DataKind.IMAGE,
        files=(RemoteFile(CIFAR10_FILE, CIFAR10_MD5, ("https://www.cs.toronto.edu/~kriz/" + CIFAR10_FILE,)),),
        read=_read_cifar10,
        build=_image_builder("cifar10"),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        citation="Krizhevsky 2009, Learning Multiple Layers of Features from Tiny Images (tech. report)",
    ),
    "CIFAR-10 colour images, 3x32x32, 50k train / 10k test, 10 classes (official python batches)",
)

# ----------------------------------------------------------------------------- tinyshakespeare

SHAKESPEARE_FILE = "input.txt"
SHAKESPEARE_MD5 = "6fb458f1232090904fb40fe944165e91"
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


@dataclass
class TextOptions(Config):
    """Character windows of ``seq_len`` ids starting every ``stride`` chars. ``targets``: ``next``
    (y = the id after the window, shape (N,)) or ``sequence`` (y = the window shifted by one, shape
    (N, seq_len): every position predicts its next character, as GPT-style models train)."""

    seq_len: int = 64
    stride: int | None = None  # None: seq_len (non-overlapping inputs)
    train_fraction: float = 0.9
    targets: str = "next"

    def __post_init__(self) -> None:
        check_choice("targets", self.targets, ("next", "sequence"))
        check_range("seq_len", self.seq_len, 1)
        if self.stride is not None:
            check_range("stride", self.stride, 1)
        check_range("train_fraction", self.train_fraction, 0.0, 1.0, lo_open=True, hi_open=True)


def _read_text(blobs: Mapping[str, bytes], where: str) -> dict[str, Any]:
    try:
        text = blobs[SHAKESPEARE_FILE].decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}/{SHAKESPEARE_FILE}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    vocab, ids = encode_chars(text)
    return {"vocab": vocab, "ids": torch.from_numpy(ids)}  # ids: (n_chars,) int64


def windows(
    ids: torch.Tensor, seq_len: int, stride: int, sequence: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token stream (L,) -> inputs (N, seq_len) and next-token targets, one window per stride:
    (N,) the token after each window, or with ``sequence`` (N, seq_len) the window shifted by one."""
    if len(ids) < seq_len + 1:
        return ids.new_zeros((0, seq_len)), ids.new_zeros((0, seq_len) if sequence else (0,))
    w = ids.unfold(0, seq_len + 1, stride)  # (N, seq_len + 1) view
    y = w[:, 1:] if sequence else w[:, seq_len]  # (N, seq_len) or (N,)
    return w[:, :seq_len].contiguous(), y.contiguous()


def _build_text(raw: dict[str, Any], opts: TextOptions) -> Dataset:
    ids: torch.Tensor = raw["ids"]  # (L,)
    split = int(len(ids) * opts.train_fraction)
    stride = opts.stride or opts.seq_len
    seq = opts.targets == "sequence"
    x_train, y_train = windows(ids[:split], opts.seq_len, stride, seq)  # (N, T), (N,) | (N, T)
    x_test, y_test = windows(ids[split:], opts.seq_len, stride, seq)  # (M, T), (M,) | (M, T)
    if len(x_train) == 0 or len(x_test) == 0:
        raise ConfigError(
            f"dataset 'tinyshakespeare' option seq_len: {opts.seq_len} is too long for the "
            f"{len(ids) - split}-character test split"
        )
    vocab = list(raw["vocab"])
    return Dataset(
        name="tinyshakespeare",
        kind=DataKind.TEXT,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=len(vocab),
        in_channels=1,
        input_size=(opts.seq_len,),
        classes=vocab,
        vocab=vocab,
    )


register(
    DatasetSpec(
        name="tinyshakespeare",
        kind=DataKind.TEXT,
        files=(RemoteFile(SHAKESPEARE_FILE, SHAKESPEARE_MD5, (SHAKESPEARE_URL,)),),
        read=_read_text,
        build=_build_text,
        options=TextOptions,
        homepage="https://github.com/karpathy/char-rnn",
        citation="Karpathy 2015, char-rnn (tinyshakespeare)",
    ),
    "Shakespeare plays as characters (1.1 MB, 65 symbols): seq_len ids -> next char(s), 90/10 split",
)
