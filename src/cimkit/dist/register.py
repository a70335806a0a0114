"""``register_compression``: put the hook a :class:`CompressionConfig` names on a DDP model."""

from __future__ import annotations

import fnmatch
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cimkit.train.compression import CompressionConfig, GradCompression
from cimkit.dist.hooks import (
    AllReduceState,
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
    terngrad_hook,
    topk_ef_hook,
)
from cimkit.errors import ConfigError

__all__ = ["float_param_names", "last_layer_param_names", "register_compression"]


def last_layer_param_names(module: nn.Module) -> list[str]:
    """Names of the trainable parameters owned directly by the last module that owns any.

    "Last" is the order of ``module.named_modules()`` (the order sub-modules were assigned in
    ``__init__``), which for ``nn.Sequential`` heads and the usual ``features → classifier`` models
    is the output (logits) layer: TernGrad's ``--noquantize_logits`` keeps exactly those (weight and
    bias) in float. A model whose output layer is defined early needs ``float_params`` instead.
    """
    last: list[str] = []
    for prefix, sub in module.named_modules():
        own = [f"{prefix}.{n}" if prefix else n for n, p in sub.named_parameters(recurse=False) if p.requires_grad]
        if own:
            last = own
    return last


def float_param_names(module: nn.Module, cfg: CompressionConfig) -> set[str]:
    """Parameter names ``cfg`` keeps in float (``float_last_layer`` and ``float_params`` patterns)."""
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    out = set(last_layer_param_names(module)) if cfg.float_last_layer else set()
    for i, pat in enumerate(cfg.float_params):
        hit = fnmatch.filter(names, pat)
        if not hit:
            raise ConfigError(
                f"compression.float_params[{i}]: {pat!r} matches no trainable parameter; "
                f"parameters: {', '.join(names[:12])}{', ...' if len(names) > 12 else ''}"
            )
        out.update(hit)
    return out


def register_compression(
    ddp_model: DistributedDataParallel,
    cfg: CompressionConfig | None = None,
    process_group: Any = None,
) -> HookState:
    """Register the comm hook ``cfg.method`` names on ``ddp_model``; returns its state (``.stats`` counts bytes).

    ``none`` registers PyTorch's ``allreduce_hook`` (numerically what DDP does without a hook) so that
    fp32 runs are accounted like the others; ``fp16``/``bf16``/``powersgd`` are PyTorch's own hooks
    wrapped for byte counting; ``terngrad``/``qsgd``/``topk`` are :mod:`cimkit.dist.hooks`.
    A DDP model takes one hook, once, before its first backward pass.
    """
    if not isinstance(ddp_model, DistributedDataParallel):
        raise ConfigError(f"register_compression: expected a DistributedDataParallel model, got {type(ddp_model).__name__}")
    cfg = cfg or CompressionConfig()
    module = ddp_model.module
    names = {p.data_ptr(): n for n, p in module.named_parameters()}
    m = cfg.method
    state: HookState
    if m is GradCompression.NONE:
        state, hook = AllReduceState(process_group, param_names=names), allreduce_hook
    elif m in (GradCompression.FP16, GradCompression.BF16):
        dtype = torch.float16 if m is GradCompression.FP16 else torch.bfloat16
        state, hook = CastState(dtype, process_group, param_names=names), cast_hook
    elif m is GradCompression.POWERSGD:
        state = PowerSGDCountingState(
            process_group,
            param_names=names,
            matrix_approximation_rank=cfg.powersgd_rank,
            start_powerSGD_iter=cfg.powersgd_start_iter,
            min_compression_rate=cfg.powersgd_min_compression_rate,
            use_error_feedback=cfg.powersgd_error_feedback,
            warm_start=cfg.powersgd_warm_start,
            random_seed=cfg.seed,
        )
        hook = powersgd_hook
    else:
        common = {"min_numel": cfg.min_numel, "float_names": float_param_names(module, cfg), "seed": cfg.seed,
                  "param_names": names}  # fmt: skip
        if m is GradCompression.TERNGRAD:
            state, hook = TernGradState(process_group, scaler=cfg.terngrad_scaler, c=cfg.terngrad_c, **common), terngrad_hook
        elif m is GradCompression.QSGD:
            state, hook = QSGDState(process_group, levels=cfg.qsgd_levels, bucket_size=cfg.qsgd_bucket_size, **common), qsgd_hook
        else:
            state, hook = TopKState(process_group, ratio=cfg.topk_ratio, **common), topk_ef_hook
    ddp_model.register_comm_hook(state, hook)
    return state
