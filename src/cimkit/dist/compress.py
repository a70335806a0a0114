"""Gradient compressors as pure tensor functions with explicit ``torch.Generator`` randomness.

Each compressor works on a flat gradient vector that may hold several layers back to back: a
``seg`` vector of layer (or chunk) ids per entry gives every layer its own scaler or norm, so a
whole DDP bucket is compressed in one batched pass. The single-tensor helpers (:func:`terngrad`,
:func:`qsgd`) use one segment.

* **TernGrad** (Wen et al., "TernGrad: Ternary Gradients to Reduce Communication in Distributed
  Deep Learning", NeurIPS 2017; reference code wenwei202/terngrad ``bingrad_common.py``):
  scaler per layer ``s = c·σ(g)`` (population std, ``c = 2.5``) or ``s = max|g|``; with
  ``u ~ U(0, s)`` each entry becomes ``s·sign(g)`` if ``u < |g|`` and 0 otherwise, so
  ``P(g̃ ≠ 0) = min(|g|/s, 1)`` and ``E[g̃] = clip(g, -s, s)``: unbiased where ``|g| ≤ s`` (always for
  the max scaler); entries beyond ``s`` become ``±s`` surely, which is TernGrad's gradient clipping.
* **QSGD** (Alistarh et al., "QSGD: Communication-Efficient SGD via Gradient Quantization and
  Encoding", NeurIPS 2017): with ``s`` levels and ``r = s·|v_i|/‖v‖₂``, ``l = ⌊r⌋``,
  ``Q(v_i) = ‖v‖₂·sign(v_i)·ξ_i/s`` where ``ξ_i = l + 1`` with probability ``r − l`` else ``l``.
  Unbiased, with ``E‖Q(v) − v‖² ≤ min(n/s², √n/s)·‖v‖²`` (their Lemma 3.1) for a vector (chunk)
  of ``n`` entries; the norm is taken per chunk of ``bucket_size`` entries as in the paper's
  experiments.
* **Top-k with error feedback** (Stich, Cordonnier & Jaggi, "Sparsified SGD with Memory",
  NeurIPS 2018; Lin et al., "Deep Gradient Compression", ICLR 2018): send the ``k`` largest
  ``|g + e|`` entries and keep the rest as the new residual ``e``, so over any number of steps
  ``Σ sent + e_T = Σ g`` exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum

import torch
from torch import Tensor

from cimkit.errors import ConfigError
from cimkit.train.compression import TernScaler

__all__ = [
    "TernScaler",
    "chunk_ids",
    "qsgd",
    "qsgd_bits",
    "qsgd_dequantize",
    "qsgd_quantize",
    "segment_ids",
    "segment_sum",
    "ternarize",
    "terngrad",
    "terngrad_decode",
    "terngrad_scalers",
    "topk_count",
    "topk_decode",
    "topk_ef",
]


# ----------------------------------------------------------------------------- segments


def segment_ids(sizes: Sequence[int], device: torch.device | str | None = None) -> Tensor:
    """``(sum(sizes),)`` long tensor: entry ``j`` of segment ``i`` gets id ``i``."""
    lens = torch.as_tensor(list(sizes), dtype=torch.long, device=device)  # (k,)
    return torch.repeat_interleave(torch.arange(len(lens), device=device), lens)  # (N,)


def chunk_ids(sizes: Sequence[int], bucket_size: int, device: torch.device | str | None = None) -> tuple[Tensor, int]:
    """Chunk ids for tensors of ``sizes`` laid back to back, each cut into chunks of ``bucket_size``.

    Chunks never straddle two tensors; ``bucket_size = 0`` gives one chunk per tensor. Returns
    ``(ids (N,), number of chunks)``.
    """
    if bucket_size < 0:
        raise ConfigError(f"bucket_size: {bucket_size!r} is out of range; allowed: integers >= 0")
    sizes = [int(s) for s in sizes]
    if bucket_size == 0:
        return segment_ids(sizes, device), len(sizes)
    per = [math.ceil(s / bucket_size) for s in sizes]  # chunks per tensor
    first = torch.as_tensor([0, *per[:-1]], dtype=torch.long, device=device).cumsum(0)  # (k,)
    starts = torch.as_tensor([0, *sizes[:-1]], dtype=torch.long, device=device).cumsum(0)  # (k,)
    seg = segment_ids(sizes, device)  # (N,)
    pos = torch.arange(seg.numel(), device=device) - starts[seg]  # (N,) position inside its tensor
    return first[seg] + pos // bucket_size, sum(per)


def segment_sum(values: Tensor, seg: Tensor, k: int) -> Tensor:
    """``(k,)`` sums of ``values`` per segment id."""
    return values.new_zeros(k).index_add_(0, seg, values)


# ----------------------------------------------------------------------------- TernGrad


def terngrad_scalers(
    g: Tensor,
    seg: Tensor | None = None,
    k: int = 1,
    scaler: TernScaler | str = TernScaler.STDDEV,
    c: float = 2.5,
) -> Tensor:
    """Per-segment TernGrad scalers ``(k,)`` (float32) of the flat gradient ``g``.

    ``stddev``: ``c·σ`` with σ the population standard deviation of the segment (two-pass);
    ``max``: ``max|g|``.
    """
    g32 = g.reshape(-1).float()  # (N,)
    if seg is None:
        seg = torch.zeros(g32.numel(), dtype=torch.long, device=g32.device)
    if TernScaler(scaler) is TernScaler.MAX:
        return g32.new_zeros(k).scatter_reduce_(0, seg, g32.abs(), "amax")  # (k,)
    n = segment_sum(torch.ones_like(g32), seg, k).clamp_min(1.0)  # (k,)
    mean = segment_sum(g32, seg, k) / n  # (k,)
    var = segment_sum((g32 - mean[seg]).square(), seg, k) / n  # (k,)
    return c * var.sqrt()


def ternarize(g: Tensor, s: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
    """Stochastic ternarization: ``sign(g)`` where ``u·s < |g|`` for ``u ~ U(0, 1)``, else 0 (int8).

    ``s`` is a scalar or broadcasts against ``g`` (per-entry scalers). Decode with ``t·s``.
    """
    u = torch.rand(g.shape, generator=generator, device=g.device, dtype=torch.float32)  # same shape as g
    keep = u * s < g.abs().float()
    return (torch.sign(g) * keep).to(torch.int8)


def terngrad(
    g: Tensor,
    generator: torch.Generator | None = None,
    scaler: TernScaler | str = TernScaler.STDDEV,
    c: float = 2.5,
) -> tuple[Tensor, Tensor]:
    """TernGrad on one layer's gradient (local scaler): ``(ternary int8 like g, scaler s ())``."""
    s = terngrad_scalers(g, scaler=scaler, c=c)[0]
    return ternarize(g, s, generator), s


def terngrad_decode(t: Tensor, s: Tensor | float) -> Tensor:
    """``t·s`` in float32."""
    return t.float() * s


# ----------------------------------------------------------------------------- QSGD


def qsgd_bits(levels: int) -> int:
    """Bits per code for ``levels`` (codes ``q + s ∈ [0, 2s]``): the smallest of 2, 4, 8 that holds ``2s + 1``."""
    if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= 127:
        raise ConfigError(f"levels: {levels!r} is out of range; allowed: integers in [1, 127]")
    return next(b for b in (2, 4, 8) if 2 * levels + 1 <= 2**b)


def qsgd_quantize(
    g: Tensor,
    levels: int,
    generator: torch.Generator | None = None,
    chunks: Tensor | None = None,
    k: int = 1,
) -> tuple[Tensor, Tensor]:
    """QSGD of the flat ``g``: ``(q (N,) int8 in [-s, s], norms (k,) float32)``, one L2 norm per chunk id."""
    qsgd_bits(levels)
    g32 = g.reshape(-1).float()  # (N,)
    if chunks is None:
        chunks = torch.zeros(g32.numel(), dtype=torch.long, device=g32.device)
    norms = segment_sum(g32.square(), chunks, k).sqrt()  # (k,)
    nrm = norms[chunks]  # (N,)
    r = torch.where(nrm > 0, g32.abs() / nrm.clamp_min(torch.finfo(torch.float32).tiny), 0.0) * levels  # (N,) in [0, s]
    low = r.floor()
    u = torch.rand(r.shape, generator=generator, device=r.device, dtype=torch.float32)
    lvl = (low + (u < r - low).float()).clamp_max(levels)  # rounding error can push r a hair past s
    return (torch.sign(g32) * lvl).to(torch.int8), norms


def qsgd_dequantize(q: Tensor, norms: Tensor, levels: int, chunks: Tensor | None = None) -> Tensor:
    """``norm[chunk]·q/s`` in float32; ``q (..., N)`` with ``norms (..., k)`` (e.g. a stack over workers)."""
    if chunks is None:
        chunks = torch.zeros(q.shape[-1], dtype=torch.long, device=q.device)
    return q.float() * norms[..., chunks] / levels  # (..., N)


def qsgd(
    g: Tensor, levels: int, generator: torch.Generator | None = None, bucket_size: int = 0
) -> tuple[Tensor, Tensor]:
    """QSGD on one tensor: ``(q like g (int8), norms (chunks,))``; ``bucket_size = 0``: one norm."""
    chunks, k = chunk_ids([g.numel()], bucket_size, g.device)
    q, norms = qsgd_quantize(g, levels, generator, chunks, k)
    return q.view(g.shape), norms


# ----------------------------------------------------------------------------- top-k + error feedback


def topk_count(n: int, ratio: float) -> int:
    """Entries top-k keeps of ``n``: ``max(1, ceil(ratio·n))`` (0 for an empty tensor)."""
    return 0 if n == 0 else min(n, max(1, math.ceil(ratio * n)))


def topk_ef(g: Tensor, residual: Tensor | None, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """One top-k step with error feedback on the flattened ``g``.

    ``acc = g + residual``; returns ``(indices (k,) long, values (k,), new residual (N,))`` where the
    values are ``acc`` at the ``k`` largest ``|acc|`` and the new residual is ``acc`` with them zeroed.
    """
    flat = g.reshape(-1)
    acc = flat + residual if residual is not None else flat.clone()  # (N,) a new tensor either way
    idx = acc.abs().topk(k, sorted=False).indices  # (k,)
    vals = acc[idx]  # (k,) gathered copy
    acc.index_fill_(0, idx, 0)
    return idx, vals, acc


def topk_decode(idx: Tensor, vals: Tensor, n: int) -> Tensor:
    """Dense ``(n,)`` vector with ``vals`` summed at ``idx`` (both may hold several workers' picks)."""
    return vals.new_zeros(n).index_add_(0, idx.reshape(-1), vals.reshape(-1))
