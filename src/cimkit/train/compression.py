"""Which gradient compression a DDP run uses, and its parameters: :class:`CompressionConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from cimkit.config import Config, as_enum, check_range
from cimkit.errors import ConfigError

__all__ = ["CompressionConfig", "GradCompression", "TernScaler"]


class TernScaler(str, Enum):
    """How TernGrad picks the per-layer scaler ``s``."""

    STDDEV = "stddev"  # s = c·σ(g), the reference default (clip_factor 2.5)
    MAX = "max"  # s = max|g| (clip_factor 0 in the reference code): exactly unbiased


class GradCompression(str, Enum):
    """Gradient compression choices (``grad_compression`` in a train config)."""

    NONE = "none"  # fp32 all-reduce (PyTorch's allreduce_hook; identical to DDP without a hook)
    FP16 = "fp16"  # PyTorch default_hooks.fp16_compress_hook
    BF16 = "bf16"  # PyTorch default_hooks.bf16_compress_hook
    POWERSGD = "powersgd"  # PyTorch powerSGD_hook (Vogels et al., NeurIPS 2019)
    TERNGRAD = "terngrad"  # Wen et al. 2017: 2-bit stochastic ternary + max-shared scaler
    QSGD = "qsgd"  # Alistarh et al. 2017: s-level stochastic quantization of v/‖v‖
    TOPK = "topk"  # top-k sparsification with error feedback (Stich et al. 2018)


@dataclass
class CompressionConfig(Config):
    """Gradient compression for DDP (see :mod:`cimkit.dist.hooks` for the algorithms).

    Shared by terngrad / qsgd / topk: gradients of tensors with fewer than ``min_numel`` entries,
    and of the parameters named by ``float_params`` (``fnmatch`` patterns on parameter names) or
    of the last layer (``float_last_layer``), are all-reduced in float instead. ``seed`` seeds the
    per-rank, per-step stochastic rounding (so a resumed run draws the same numbers).

    TernGrad: ``terngrad_scaler`` ``stddev`` (``s = terngrad_c·σ``, reference default c = 2.5) or
    ``max`` (``s = max|g|``). QSGD: ``qsgd_levels`` = s ∈ [1, 127] (codes of 2, 4 or 8 bits) and a
    norm per chunk of ``qsgd_bucket_size`` entries (0 = per tensor). Top-k: ``topk_ratio`` of each
    tensor's entries. PowerSGD: PyTorch's ``PowerSGDState`` arguments (``powersgd_*``; vanilla
    all-reduce runs for the first ``powersgd_start_iter`` steps).
    """

    method: GradCompression = GradCompression.NONE
    terngrad_scaler: TernScaler = TernScaler.STDDEV
    terngrad_c: float = 2.5
    qsgd_levels: int = 7
    qsgd_bucket_size: int = 512
    topk_ratio: float = 0.01
    min_numel: int = 1
    float_last_layer: bool = False
    float_params: list[str] = field(default_factory=list)
    powersgd_rank: int = 1
    powersgd_start_iter: int = 1000
    powersgd_min_compression_rate: float = 2.0
    powersgd_error_feedback: bool = True
    powersgd_warm_start: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        self.method = as_enum("compression.method", self.method, GradCompression)
        self.terngrad_scaler = as_enum("compression.terngrad_scaler", self.terngrad_scaler, TernScaler)
        check_range("compression.terngrad_c", self.terngrad_c, 0.0, lo_open=True)
        check_range("compression.qsgd_levels", self.qsgd_levels, 1, 127)  # codes q + s in [0, 2s] fit 8 bits
        check_range("compression.qsgd_bucket_size", self.qsgd_bucket_size, 0)
        check_range("compression.topk_ratio", self.topk_ratio, 0.0, 1.0, lo_open=True)
        check_range("compression.min_numel", self.min_numel, 1)
        for i, p in enumerate(self.float_params):
            if not isinstance(p, str) or not p:
                raise ConfigError(f"compression.float_params[{i}]: {p!r} is not allowed; allowed: non-empty name patterns")
        check_range("compression.powersgd_rank", self.powersgd_rank, 1)
        check_range("compression.powersgd_start_iter", self.powersgd_start_iter, 0)
        if (self.powersgd_error_feedback or self.powersgd_warm_start) and self.powersgd_start_iter < 2:
            raise ConfigError(
                f"compression.powersgd_start_iter: {self.powersgd_start_iter!r} is out of range with error feedback "
                "or warm start on; allowed: integers >= 2 (DDP rebuilds its buckets after the first step)"
            )
        check_range("compression.powersgd_min_compression_rate", self.powersgd_min_compression_rate, 0.0, lo_open=True)
