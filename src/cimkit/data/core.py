"""The dataset registry, the in-memory :class:`Dataset` and :func:`load_dataset`.

A dataset is registered as a :class:`DatasetSpec`: its files (name, md5, URLs), a ``read`` function
turning the verified file bytes into raw arrays (cached in-process), and a ``build`` function turning
those into a normalized :class:`Dataset` given the dataset's options (a :class:`~cimkit.config.Config`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cimkit.config import Config
from cimkit.data.download import ENV_VAR, RemoteFile, download, read_verified, resolve_data_dir
from cimkit.data.loader import TensorLoader, subset
from cimkit.errors import ConfigError, DataError
from cimkit.plugins import load_plugins
from cimkit.registry import Registry

log = logging.getLogger("cimkit.data")


class DataKind(str, Enum):
    """What the samples are: images ``(N, C, H, W)`` float32, token windows ``(N, T)`` int64, or
    coordinates ``(N, D)`` float32 of a sampled signal (implicit neural representations)."""

    IMAGE = "image"
    TEXT = "text"
    COORDS = "coords"


# the task a dataset of each kind is scored with unless its builder says otherwise
DEFAULT_TASK = {DataKind.IMAGE: "classification", DataKind.TEXT: "next_token", DataKind.COORDS: "regression"}


@dataclass(repr=False)
class Dataset:
    """A whole dataset in memory.

    Images: ``x_*`` float32 ``(N, C, H, W)`` normalized per channel with the training split's
    ``mean``/``std`` (in units of the [0, 1]-scaled pixel); ``y_*`` int64 class ids.
    Text: ``x_*`` int64 ``(N, T)`` token ids, ``y_*`` int64 ``(N,)`` the id of the next token, or
    ``(N, T)`` the next token of every position (``targets = "sequence"``); ``vocab`` maps ids to
    characters; ``in_channels`` is 1 and ``input_size`` is ``(T,)``.
    Coordinates: ``x_*`` float32 ``(N, D)``, ``y_*`` float32 ``(N, K)`` signal values.

    ``task`` names the :mod:`cimkit.tasks` task the data is scored with; ``task_options`` its
    options (e.g. ``peak`` for regression); :meth:`model_spec` is what a model factory may take.
    """

    name: str
    kind: DataKind
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    in_channels: int
    input_size: tuple[int, ...]
    classes: list[str] = field(default_factory=list)
    vocab: list[str] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    source: str = ""
    task: str = ""
    task_options: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.task:
            self.task = DEFAULT_TASK[DataKind(self.kind)]

    def model_spec(self) -> dict[str, Any]:
        """What a model factory may take from this dataset (each factory uses the keys its
        signature names): ``in_channels``, ``num_classes``, ``input_size`` for every kind;
        text adds ``vocab_size`` and ``block_size`` (the window length); coordinates add
        ``in_features`` and ``out_features``."""
        spec: dict[str, Any] = {"in_channels": self.in_channels, "num_classes": self.num_classes,
                                "input_size": tuple(self.input_size)}  # fmt: skip
        if self.kind == DataKind.TEXT:
            spec["vocab_size"] = len(self.vocab) if self.vocab is not None else self.num_classes
            spec["block_size"] = int(self.x_train.shape[1])
        if self.kind == DataKind.COORDS:
            spec["in_features"] = int(self.x_train.shape[-1])
            spec["out_features"] = int(self.y_train.shape[-1]) if self.y_train.dim() > 1 else 1
        return spec

    def train_loader(
        self, batch_size: int = 128, shuffle: bool = True, seed: int = 0, drop_last: bool = False, **kw: Any
    ) -> TensorLoader:
        """A :class:`TensorLoader` over the training split (shuffled by default)."""
        return TensorLoader(self.x_train, self.y_train, batch_size, shuffle, seed, drop_last, **kw)

    def test_loader(self, batch_size: int = 1000, **kw: Any) -> TensorLoader:
        """A :class:`TensorLoader` over the test split, in order."""
        return TensorLoader(self.x_test, self.y_test, batch_size, False, **kw)

    def take(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> Dataset:
        """A copy keeping ``n_train``/``n_test`` random samples (None keeps all); stats unchanged."""
        xtr, ytr = (
            (self.x_train, self.y_train) if n_train is None else subset(self.x_train, self.y_train, n_train, seed)
        )
        xte, yte = (self.x_test, self.y_test) if n_test is None else subset(self.x_test, self.y_test, n_test, seed + 1)
        return dataclasses.replace(self, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)

    def denormalize(self, x: Tensor) -> Tensor:
        """Image tensor back to [0, 1] pixels (inverse of the stored normalization)."""
        if self.mean is None or self.std is None:
            raise DataError(f"dataset '{self.name}' ({self.kind.value}) has no normalization to undo")
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(shape)  # (1, C, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(shape)  # (1, C, 1, 1)
        return x * std + mean

    def decode(self, ids: Tensor) -> str:
        """Token ids -> text (text datasets)."""
        if self.vocab is None:
            raise DataError(f"dataset '{self.name}' is not a text dataset")
        return "".join(self.vocab[i] for i in ids.reshape(-1).tolist())

    def summary(self) -> dict[str, Any]:
        """JSON-able description: sizes, shapes, classes, normalization."""
        return {
            "name": self.name,
            "kind": self.kind.value,
            "train": len(self.x_train),
            "test": len(self.x_test),
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "input_size": list(self.input_size),
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
            "source": self.source,
            "task": self.task,
        }

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, kind={self.kind.value}, train={tuple(self.x_train.shape)}, "
            f"test={tuple(self.x_test.shape)}, num_classes={self.num_classes})"
        )


@dataclass
class NoOptions(Config):
    """A dataset without options."""


@dataclass
class DatasetSpec:
    """How to get and parse one dataset.

    ``read(blobs, where)`` receives ``{file name: verified bytes}`` (empty when ``files`` is empty)
    and returns raw arrays (cached per file version); ``build(raw, options)`` returns the Dataset.
    """

    name: str
    kind: DataKind
    files: tuple[RemoteFile, ...]
    read: Callable[[Mapping[str, bytes], str], dict[str, Any]]
    build: Callable[[dict[str, Any], Any], Dataset]
    options: type[Config] = NoOptions
    homepage: str = ""
    citation: str = ""


DATASETS: Registry[DatasetSpec] = Registry("dataset", loader=load_plugins)

_RAW_CACHE: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
_RAW_CACHE_SIZE = 4


def clear_cache() -> None:
    """Forget the in-process cache of parsed dataset files."""
    _RAW_CACHE.clear()


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names matching a shell-style pattern."""
    return DATASETS.list(pattern)


def describe_datasets(pattern: str = "*") -> list[tuple[str, str]]:
    """``(name, one-line description)`` for ``cimkit list datasets``."""
    return DATASETS.describe(pattern)


def get_spec(name: str) -> DatasetSpec:
    """The spec of ``name`` (``fashion_mnist`` is accepted for ``fashion-mnist``)."""
    if name not in DATASETS and isinstance(name, str) and name.lower().replace("_", "-") in DATASETS:
        name = name.lower().replace("_", "-")
    return DATASETS.get(name)


def _locate(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None, allow_download: bool, show: bool) -> Path:
    """The folder holding all of ``spec.files`` (downloading missing ones when allowed)."""
    base, how = resolve_data_dir(data_dir)
    folder = base / spec.name
    for cand in (folder, base):
        if all((cand / f.name).is_file() for f in spec.files):
            return cand
    missing = [f for f in spec.files if not (folder / f.name).is_file()]
    if allow_download:
        created = [p for p in (folder, *folder.parents) if not p.exists()]  # made by the download, if any
        try:
            for f in missing:
                download(f, folder, show_progress=show)
        except DataError as e:
            reason = f"download failed ({e})"
            for p in created:  # leave no empty folders behind after a failed first download
                if p.is_dir() and not any(p.iterdir()):
                    p.rmdir()
        else:
            return folder
    else:
        reason = "downloads are disabled"
    names = ", ".join(f.name for f in missing)
    raise DataError(
        f"dataset '{spec.name}': missing {names} in {folder} (data dir from {how}); {reason}; "
        f"put the official files there, or point cimkit at a folder that holds {spec.name}/ "
        f"with --data-dir DIR or {ENV_VAR}=DIR"
    )


def _raw(spec: DatasetSpec, data_dir: str | os.PathLike[str] | None, allow_download: bool, show: bool) -> dict:
    if not spec.files:
        key: tuple[Any, ...] = (spec.name,)
        folder = None
    else:
        folder = _locate(spec, data_dir, allow_download, show)
        stats = []
        for f in spec.files:
            st = (folder / f.name).stat()
            stats.append((f.name, f.md5, st.st_size, st.st_mtime_ns))
        key = (spec.name, str(folder.resolve()), tuple(stats))
    if key in _RAW_CACHE:
        _RAW_CACHE.move_to_end(key)
        return _RAW_CACHE[key]
    t0 = time.perf_counter()
    blobs = {f.name: read_verified(folder / f.name, f.md5) for f in spec.files} if folder else {}
    raw = spec.read(blobs, str(folder) if folder else spec.name)
    raw["source"] = str(folder) if folder else raw.get("source", "")
    log.debug("read %s in %.2fs", spec.name, time.perf_counter() - t0)
    _RAW_CACHE[key] = raw
    while len(_RAW_CACHE) > _RAW_CACHE_SIZE:
        _RAW_CACHE.popitem(last=False)
    return raw


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    *,
    progress: bool = True,
    **options: Any,
) -> Dataset:
    """Load a registered dataset whole into memory.

    Files are looked up in ``<data_dir>/<name>/`` (or ``<data_dir>/`` itself) where ``data_dir`` is
    the argument, else ``$CIMKIT_DATA``, else ``$XDG_CACHE_HOME/cimkit`` (``~/.cache/cimkit``).
    Missing files are downloaded from the official source when ``download`` is true (progress bar
    on a terminal when ``progress``), every file's md5 is checked before parsing, and any problem
    raises a one-line :class:`~cimkit.errors.DataError`. ``options`` are the dataset's own settings
    (e.g. ``seq_len``/``stride`` for text, ``test_fraction`` for digits); unknown ones raise
    :class:`~cimkit.errors.ConfigError`.
    """
    spec = get_spec(name)
    if options and not dataclasses.fields(spec.options):
        raise ConfigError(f"dataset '{spec.name}' takes no options; got {', '.join(sorted(options))}")
    opts = spec.options.from_dict(options, where=f"dataset '{spec.name}' option ")
    raw = _raw(spec, data_dir, download, progress)
    ds = spec.build(raw, opts)
    ds.source = raw.get("source", "")
    return ds
