"""Datasets: a registry, md5-verified downloads, whole-in-memory tensors and a tensor-indexing loader.

>>> from cimkit.data import load_dataset, list_datasets
>>> ds = load_dataset("digits")              # scikit-learn's 8x8 digits, no files needed
>>> ds.x_train.shape, ds.num_classes         # (1437, 1, 8, 8) float32 normalized, 10
>>> for xb, yb in ds.train_loader(batch_size=64, seed=0): ...

Data folder: ``data_dir`` argument, else ``$CIMKIT_DATA``, else ``$XDG_CACHE_HOME/cimkit`` (or
``~/.cache/cimkit``); each dataset lives in ``<data_dir>/<name>/`` with its official file names.
"""

from __future__ import annotations

from cimkit.data import signals as _signals  # noqa: F401  (registers image_fit)
from cimkit.data import sources as _sources  # noqa: F401  (registers the datasets)
from cimkit.data.core import (
    DATASETS,
    DataKind,
    Dataset,
    DatasetSpec,
    clear_cache,
    describe_datasets,
    get_spec,
    list_datasets,
    load_dataset,
)
from cimkit.data.download import ENV_VAR, RemoteFile, default_data_dir, resolve_data_dir
from cimkit.data.formats import SafeUnpickler, read_idx, safe_unpickle
from cimkit.data.loader import TensorLoader, subset

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "DataKind",
    "Dataset",
    "DatasetSpec",
    "RemoteFile",
    "SafeUnpickler",
    "TensorLoader",
    "clear_cache",
    "default_data_dir",
    "describe_datasets",
    "get_spec",
    "list_datasets",
    "load_dataset",
    "read_idx",
    "resolve_data_dir",
    "safe_unpickle",
    "subset",
]
