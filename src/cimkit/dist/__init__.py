"""Distributed data-parallel training on ``torch.distributed`` with gradient compression.

* :class:`SingleProcess` / :class:`DDPStrategy`: what a training loop calls (``setup``, ``wrap``,
  ``shard``, ``seed``, ``is_main``, ``barrier``, ``all_reduce_sum``, ``all_gather_object``, ``map``,
  ``comm_stats``, ``teardown``); :func:`strategy_from_env` picks one from torchrun's variables.
* :class:`CompressionConfig` / :class:`GradCompression`: ``none | fp16 | bf16 | powersgd | terngrad
  | qsgd | topk``; :func:`register_compression` puts the hook on any DDP model.
* Hooks usable directly with ``DistributedDataParallel.register_comm_hook``: :func:`terngrad_hook`,
  :func:`qsgd_hook`, :func:`topk_ef_hook` (with :class:`TernGradState`, :class:`QSGDState`,
  :class:`TopKState`), and byte-counting wrappers of PyTorch's all-reduce, fp16/bf16 and PowerSGD hooks.
* Pure compressors (:func:`terngrad`, :func:`ternarize`, :func:`qsgd`, :func:`topk_ef`) and 2-bit
  packing (:func:`pack_ternary`, :func:`unpack_ternary`, :func:`pack_bits`).
* :func:`spawn` starts local ranks on a file rendezvous; :func:`torchrun_command` builds torchrun's.
"""

from __future__ import annotations

from cimkit.dist.accounting import Collective, CommStats, ring_bytes
from cimkit.dist.compress import (
    TernScaler,
    chunk_ids,
    qsgd,
    qsgd_bits,
    qsgd_dequantize,
    qsgd_quantize,
    segment_ids,
    ternarize,
    terngrad,
    terngrad_decode,
    terngrad_scalers,
    topk_count,
    topk_decode,
    topk_ef,
)
from cimkit.train.compression import CompressionConfig, GradCompression
from cimkit.dist.errors import DistributedError
from cimkit.dist.hooks import (
    AllReduceState,
    BucketLayout,
    CastState,
    HookState,
    PowerSGDCountingState,
    QSGDState,
    TernGradState,
    TopKState,
    allreduce_hook,
    cast_hook,
    powersgd_hook,
    qsgd_hook,
    terngrad_bucket_bytes,
    terngrad_hook,
    topk_ef_hook,
)
from cimkit.dist.launch import spawn, torchrun_command
from cimkit.dist.pack import pack_bits, pack_ternary, packed_size, unpack_bits, unpack_ternary
from cimkit.dist.register import float_param_names, last_layer_param_names, register_compression
from cimkit.dist.shard import ShardedLoader, gather_items, shard_indices, split_items
from cimkit.dist.strategy import DDPStrategy, SingleProcess, Strategy, strategy_from_env, torchrun_env

__all__ = [
    "AllReduceState",
    "BucketLayout",
    "CastState",
    "Collective",
    "CommStats",
    "CompressionConfig",
    "DDPStrategy",
    "DistributedError",
    "GradCompression",
    "HookState",
    "PowerSGDCountingState",
    "QSGDState",
    "ShardedLoader",
    "SingleProcess",
    "Strategy",
    "TernGradState",
    "TernScaler",
    "TopKState",
    "allreduce_hook",
    "cast_hook",
    "chunk_ids",
    "float_param_names",
    "gather_items",
    "last_layer_param_names",
    "pack_bits",
    "pack_ternary",
    "packed_size",
    "powersgd_hook",
    "qsgd",
    "qsgd_bits",
    "qsgd_dequantize",
    "qsgd_hook",
    "qsgd_quantize",
    "register_compression",
    "ring_bytes",
    "segment_ids",
    "shard_indices",
    "spawn",
    "split_items",
    "strategy_from_env",
    "ternarize",
    "terngrad",
    "terngrad_bucket_bytes",
    "terngrad_decode",
    "terngrad_hook",
    "terngrad_scalers",
    "topk_count",
    "topk_decode",
    "topk_ef",
    "topk_ef_hook",
    "torchrun_command",
    "torchrun_env",
    "unpack_bits",
    "unpack_ternary",
]
