"""DDP communication hooks: TernGrad, QSGD, top-k with error feedback, and byte-counting wrappers
around PyTorch's all-reduce, fp16/bf16 and PowerSGD hooks.

Every hook takes ``(state, bucket)`` as ``DistributedDataParallel.register_comm_hook`` expects and
returns a future of the bucket's averaged flat gradient. Each state records what the hook sends
in ``state.stats`` (:class:`~cimkit.dist.accounting.CommStats`), measured on the communicated tensors.

**Which collectives, and why.** The compressed payloads travel with ``all_gather_single`` of
``uint8``/``int32`` tensors and scalers with ``all_reduce(MAX)`` / ``all_reduce(SUM)`` of float32:
gloo and NCCL both implement these for those dtypes. An all-reduce cannot carry the packed codes
(a sum of packed bytes is not the packing of the sums, and gloo has no 8-bit sum), so every rank
gathers all ranks' payloads and decodes and averages them locally, as PyTorch's own quantization
hooks do. Payloads have equal sizes on all ranks (they depend only on the bucket's shapes).

**TernGrad** per bucket (one scaler per parameter tensor = per layer):
``all_reduce(MAX)`` of the ``k`` local scalers (the shared scaler, TernGrad's synchronisation
point; waited for in the hook, since no collective may start from a future callback), then ternarize with the shared scaler, pack 2 bits per value, ``all_gather`` the
``ceil(N_t/4)`` bytes, decode ``(W, N_t)`` and average. Sent per bucket and rank:
``ceil(N_t/4) + 4·k + 4·N_f`` bytes (``N_t`` ternarized entries in ``k`` tensors, ``N_f`` float entries).

**QSGD**: codes of ``qsgd_bits(s)`` bits packed, followed by the float32 chunk norms as raw bytes, in
one ``uint8`` all-gather: ``ceil(N_q·bits/8) + 4·chunks`` bytes. **Top-k + EF**: the float32 values
(bit-cast to int32) and int32 indices of the ``K = Σ k_i`` picks in one ``int32`` all-gather:
``8·K`` bytes; the residuals stay on the rank, keyed by parameter name.

**Float tensors**: tensors with fewer than ``min_numel`` entries and parameters whose names are in
``float_names`` go through a plain float all-reduce (sum of ``g/W``). ``register_compression``
fills ``float_names`` from ``float_last_layer`` / ``float_params`` by parameter name; the hook maps
a bucket's tensors to names through ``bucket.parameters()`` (the order of ``bucket.gradients()``
and of the flat buffer) and the parameters' storage addresses.

**Randomness**: a generator on the gradient's device seeded with
``derive_seed(seed, "grad-compression", rank, step, bucket_index)``, so ranks draw independent
numbers, every run draws the same ones, and setting ``state.step`` on resume continues the stream.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

from cimkit.dist.accounting import Collective, CommStats
from cimkit.dist.compress import (
    TernScaler,
    chunk_ids,
    qsgd_bits,
    qsgd_dequantize,
    qsgd_quantize,
    segment_ids,
    ternarize,
    terngrad_scalers,
    topk_count,
    topk_ef,
)
from cimkit.dist.pack import pack_bits, packed_size, unpack_bits
from cimkit.utils import derive_seed

__all__ = [
    "AllReduceState",
    "BucketLayout",
    "CastState",
    "HookState",
    "PowerSGDCountingState",
    "QSGDState",
    "TernGradState",
    "TopKState",
    "allreduce_hook",
    "cast_hook",
    "powersgd_hook",
    "qsgd_hook",
    "terngrad_bucket_bytes",
    "terngrad_hook",
    "topk_ef_hook",
]

# DDP checks the hook annotations by identity, so they are real objects here (no postponed evaluation)
Future = torch.futures.Future


def _all_gather(out: Tensor, inp: Tensor, group: Any, async_op: bool = False) -> Any:
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # renamed in torch 2.13
    return gather(out, inp, group=group, async_op=async_op)


# ----------------------------------------------------------------------------- states


class HookState:
    """What every cimkit hook keeps: the process group, byte counters, the step counter and names."""

    def __init__(self, process_group: Any = None, *, param_names: Mapping[int, str] | None = None) -> None:
        self.process_group = process_group
        self.param_names: dict[int, str] = dict(param_names or {})  # data_ptr -> parameter name
        self.step = 0
        self.stats = CommStats(self.world_size)

    @property
    def group(self) -> Any:
        return self.process_group if self.process_group is not None else dist.group.WORLD

    @property
    def world_size(self) -> int:
        return dist.get_world_size(self.group)

    @property
    def rank(self) -> int:
        return dist.get_rank(self.group)

    def begin(self, bucket: dist.GradBucket) -> int:
        """The step this bucket belongs to (the counter advances after the iteration's last bucket)."""
        step = self.step
        if bucket.is_last():
            self.step += 1
        return step

    def name_of(self, p: Tensor) -> str:
        return self.param_names.get(p.data_ptr(), f"<param@{p.data_ptr():x}>")


class AllReduceState(HookState):
    """State of the byte-counting fp32 all-reduce (PyTorch's ``allreduce_hook``)."""


class CastState(HookState):
    """State of the byte-counting fp16/bf16 hooks (PyTorch's ``fp16_compress_hook`` / ``bf16_compress_hook``)."""

    def __init__(self, dtype: torch.dtype, process_group: Any = None, **kw: Any) -> None:
        if dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(f"CastState: dtype must be float16 or bfloat16, got {dtype}")
        self.dtype = dtype
        super().__init__(process_group, **kw)


class PowerSGDCountingState(HookState):
    """PyTorch's ``PowerSGDState`` (``.powersgd``) plus cimkit's byte counters."""

    def __init__(self, process_group: Any = None, *, param_names: Mapping[int, str] | None = None, **powersgd: Any) -> None:
        super().__init__(process_group, param_names=param_names)
        self.powersgd = powerSGD_hook.PowerSGDState(process_group=process_group, **powersgd)


@dataclass
class BucketLayout:
    """Which entries of a bucket's flat buffer are compressed (``mask``) and their layer ids (``seg``)."""

    names: list[str]
    sizes: list[int]
    compress: list[bool]
    mask: Tensor  # (N,) bool
    seg: Tensor  # (N_c,) long, index among the compressed tensors
    k: int  # number of compressed tensors
    n_comp: int
    n_float: int

    @property
    def comp_sizes(self) -> list[int]:
        return [s for s, c in zip(self.sizes, self.compress) if c]

    @property
    def comp_names(self) -> list[str]:
        return [n for n, c in zip(self.names, self.compress) if c]


class _CompressState(HookState):
    """Shared by the compressing hooks: what stays float, per-bucket layouts and the generator seed."""

    def __init__(
        self,
        process_group: Any = None,
        *,
        min_numel: int = 1,
        float_names: Iterable[str] = (),
        seed: int = 0,
        param_names: Mapping[int, str] | None = None,
    ) -> None:
        super().__init__(process_group, param_names=param_names)
        self.min_numel = int(min_numel)
        self.float_names = frozenset(float_names)
        self.seed = int(seed)
        self._layouts: dict[tuple[int, ...], BucketLayout] = {}

    def layout(self, bucket: dist.GradBucket) -> BucketLayout:
        params = bucket.parameters()
        key = tuple(p.data_ptr() for p in params)  # DDP rebuilds buckets once, after the first step
        lay = self._layouts.get(key)
        if lay is None:
            buf = bucket.buffer()
            names = [self.name_of(p) for p in params]
            sizes = [p.numel() for p in params]
            if sum(sizes) != buf.numel():
                raise RuntimeError(f"bucket {bucket.index()}: {sum(sizes)} gradient entries but a buffer of {buf.numel()}")
            comp = [s >= self.min_numel and n not in self.float_names for n, s in zip(names, sizes)]
            flags = torch.as_tensor(comp, dtype=torch.bool, device=buf.device)  # (tensors,)
            mask = torch.repeat_interleave(flags, torch.as_tensor(sizes, device=buf.device))  # (N,)
            csizes = [s for s, c in zip(sizes, comp) if c]
            lay = BucketLayout(names, sizes, comp, mask, segment_ids(csizes, buf.device), len(csizes),
                               sum(csizes), buf.numel() - sum(csizes))  # fmt: skip
            self._layouts[key] = lay
        return lay

    def generator(self, device: torch.device, step: int, bucket_index: int) -> torch.Generator:
        gen = torch.Generator(device=device)
        gen.manual_seed(derive_seed(self.seed, "grad-compression", self.rank, step, bucket_index))
        return gen


class TernGradState(_CompressState):
    """TernGrad hook state: ``scaler`` (``stddev`` with ``c``, or ``max``) plus the shared options."""

    def __init__(self, process_group: Any = None, *, scaler: TernScaler | str = TernScaler.STDDEV, c: float = 2.5,
                 **kw: Any) -> None:  # fmt: skip
        super().__init__(process_group, **kw)
        self.scaler = TernScaler(scaler)
        self.c = float(c)


class QSGDState(_CompressState):
    """QSGD hook state: ``levels`` = s and a norm per chunk of ``bucket_size`` entries (0 = per tensor)."""

    def __init__(self, process_group: Any = None, *, levels: int = 7, bucket_size: int = 512, **kw: Any) -> None:
        super().__init__(process_group, **kw)
        self.bits = qsgd_bits(levels)
        self.levels = int(levels)
        self.bucket_size = int(bucket_size)
        self._chunks: dict[tuple[int, ...], tuple[Tensor, int]] = {}

    def chunks(self, lay: BucketLayout, device: torch.device) -> tuple[Tensor, int]:
        key = tuple(lay.comp_sizes)
        got = self._chunks.get(key)
        if got is None:
            got = self._chunks[key] = chunk_ids(lay.comp_sizes, self.bucket_size, device)
        return got


class TopKState(_CompressState):
    """Top-k + error feedback state: ``ratio`` of each tensor's entries; ``residuals`` by parameter name."""

    def __init__(self, process_group: Any = None, *, ratio: float = 0.01, **kw: Any) -> None:
        super().__init__(process_group, **kw)
        self.ratio = float(ratio)
        self.residuals: dict[str, Tensor] = {}


# ----------------------------------------------------------------------------- plain and PyTorch hooks


def allreduce_hook(state: HookState, bucket: dist.GradBucket) -> Future[Tensor]:
    """PyTorch's ``allreduce_hook`` (same result as DDP without a hook), counting the fp32 bytes."""
    state.stats.record(state.begin(bucket), Collective.ALL_REDUCE, bucket.buffer())
    return default_hooks.allreduce_hook(state.process_group, bucket)


def cast_hook(state: CastState, bucket: dist.GradBucket) -> Future[Tensor]:
    """PyTorch's ``fp16_compress_hook`` / ``bf16_compress_hook``; counts the cast buffer's bytes."""
    buf = bucket.buffer()
    sent = torch.empty(buf.numel(), dtype=state.dtype, device="meta")  # the size of buf.to(dtype), no copy
    state.stats.record(state.begin(bucket), Collective.ALL_REDUCE, sent)
    if state.dtype is torch.float16:
        return default_hooks.fp16_compress_hook(state.process_group, bucket)
    return default_hooks.bf16_compress_hook(state.process_group, bucket)


def powersgd_hook(state: PowerSGDCountingState, bucket: dist.GradBucket) -> Future[Tensor]:
    """PyTorch's ``powerSGD_hook``; bytes from its own element accounting of the P, Q and uncompressed tensors.

    Before ``start_powerSGD_iter`` it all-reduces the whole buffer; afterwards it all-reduces the
    uncompressed tensors, then P, then Q, and adds their sizes to ``total_numel_after_compression``.
    """
    ps = state.powersgd
    step = state.begin(bucket)
    buf = bucket.buffer()
    vanilla = ps.iter < ps.start_powerSGD_iter
    before = ps.total_numel_after_compression
    fut = powerSGD_hook.powerSGD_hook(ps, bucket)
    numel = buf.numel() if vanilla else ps.total_numel_after_compression - before
    state.stats.record(step, Collective.ALL_REDUCE, torch.empty(numel, dtype=buf.dtype, device="meta"))
    return fut


# ----------------------------------------------------------------------------- compressing hooks


def _float_part(state: _CompressState, step: int, buf: Tensor, lay: BucketLayout) -> tuple[Tensor, Any]:
    """Start the float all-reduce of the uncompressed entries: ``(tensor, future)`` (None if there are none)."""
    if lay.n_float == 0:
        return buf.new_empty(0), None
    fl = buf[~lay.mask].div_(state.world_size)  # (N_f,) a copy, reduced in place
    state.stats.record(step, Collective.ALL_REDUCE, fl)
    return fl, dist.all_reduce(fl, group=state.group, async_op=True).get_future()


def _join(buf: Tensor, lay: BucketLayout, fl: Tensor, fut_float: Any, fut_comp: Any, decode: Any) -> Future[Tensor]:
    """One future for both collectives; the callback only reads finished tensors.

    Callbacks run on the communication threads, so they neither wait on other work nor start
    collectives (doing so can deadlock a gloo worker); ``collect_all`` waits for both instead.
    """

    def finish(_: Any) -> Tensor:
        if fut_comp is not None:
            buf[lay.mask] = decode().to(buf.dtype)
        if fut_float is not None:
            buf[~lay.mask] = fl
        return buf

    futs = [f for f in (fut_comp, fut_float) if f is not None]
    if not futs:
        return _done(buf)
    return torch.futures.collect_all(futs).then(finish)


def _done(value: Tensor) -> Future[Tensor]:
    fut: Future[Tensor] = torch.futures.Future()
    fut.set_result(value)
    return fut


def terngrad_hook(state: TernGradState, bucket: dist.GradBucket) -> Future[Tensor]:
    """TernGrad (Wen et al. 2017) on one DDP bucket; see the module docstring for the protocol.

    The scaler all-reduce (``4·k`` bytes) is waited for inside the hook: the shared scaler is needed
    before ternarizing, and a collective may not be started from a future callback.
    """
    step = state.begin(bucket)
    buf = bucket.buffer()  # (N,)
    lay = state.layout(bucket)
    fl, fut_float = _float_part(state, step, buf, lay)
    if lay.n_comp == 0:
        return _join(buf, lay, fl, fut_float, None, None)
    world, group, n = state.world_size, state.group, lay.n_comp
    g = buf[lay.mask].float()  # (N_t,)
    scal = terngrad_scalers(g, lay.seg, lay.k, state.scaler, state.c)  # (k,) local scalers
    state.stats.record(step, Collective.ALL_REDUCE, scal)
    dist.all_reduce(scal, op=dist.ReduceOp.MAX, group=group)  # the shared scaler: max over ranks
    s = scal[lay.seg]  # (N_t,) scaler of each entry's layer
    codes = ternarize(g, s, state.generator(buf.device, step, bucket.index())).to(torch.int32) + 1  # {0, 1, 2}
    packed = pack_bits(codes, 2)  # (ceil(N_t/4),) uint8
    state.stats.record(step, Collective.ALL_GATHER, packed)
    nbytes = packed.numel()
    out = packed.new_empty(world * nbytes)
    fut = _all_gather(out, packed, group, async_op=True).get_future()

    def decode() -> Tensor:
        tern = unpack_bits(out.view(world, nbytes), 2, n).to(torch.float32) - 1.0  # (W, N_t) in {-1, 0, 1}
        return tern.sum(0) * s / world

    return _join(buf, lay, fl, fut_float, fut, decode)


def qsgd_hook(state: QSGDState, bucket: dist.GradBucket) -> Future[Tensor]:
    """QSGD (Alistarh et al. 2017) on one DDP bucket: packed codes + chunk norms in one uint8 all-gather."""
    step = state.begin(bucket)
    buf = bucket.buffer()
    lay = state.layout(bucket)
    fl, fut_float = _float_part(state, step, buf, lay)
    if lay.n_comp == 0:
        return _join(buf, lay, fl, fut_float, None, None)
    world, group, s, bits = state.world_size, state.group, state.levels, state.bits
    chunks, k = state.chunks(lay, buf.device)
    gen = state.generator(buf.device, step, bucket.index())
    q, norms = qsgd_quantize(buf[lay.mask], s, gen, chunks, k)  # (N_q,) int8, (k,) float32
    codes = pack_bits(q.to(torch.int32) + s, bits)  # (ceil(N_q·bits/8),)
    payload = torch.cat([codes, norms.view(torch.uint8)])  # (P,) codes then the norms' raw bytes
    state.stats.record(step, Collective.ALL_GATHER, payload)
    nc, n = codes.numel(), lay.n_comp
    out = payload.new_empty(world * payload.numel())
    fut = _all_gather(out, payload, group, async_op=True).get_future()

    def decode() -> Tensor:
        rows = out.view(world, -1)  # (W, P)
        qs = unpack_bits(rows[:, :nc], bits, n).to(torch.int32) - s  # (W, N_q)
        nrm = rows[:, nc:].reshape(-1).clone().view(torch.float32).view(world, -1)  # (W, k) from a fresh, aligned copy
        return qsgd_dequantize(qs, nrm, s, chunks).mean(0)

    return _join(buf, lay, fl, fut_float, fut, decode)


def topk_ef_hook(state: TopKState, bucket: dist.GradBucket) -> Future[Tensor]:
    """Top-k with error feedback on one DDP bucket: values and indices in one int32 all-gather."""
    step = state.begin(bucket)
    buf = bucket.buffer()
    lay = state.layout(bucket)
    fl, fut_float = _float_part(state, step, buf, lay)
    if lay.n_comp == 0:
        return _join(buf, lay, fl, fut_float, None, None)
    world, group = state.world_size, state.group
    g = buf[lay.mask].float()  # (N_c,)
    idx_parts, val_parts, off = [], [], 0
    for name, size in zip(lay.comp_names, lay.comp_sizes):  # per layer: top-k has no segmented form
        k = topk_count(size, state.ratio)
        idx, vals, state.residuals[name] = topk_ef(g[off:off + size], state.residuals.get(name), k)
        idx_parts.append(idx + off)
        val_parts.append(vals)
        off += size
    idx = torch.cat(idx_parts).to(torch.int32)  # (K,)
    vals = torch.cat(val_parts)  # (K,) float32
    payload = torch.cat([vals.view(torch.int32), idx])  # (2K,)
    state.stats.record(step, Collective.ALL_GATHER, payload)
    kk, n = idx.numel(), lay.n_comp
    out = payload.new_empty(world * 2 * kk)
    fut = _all_gather(out, payload, group, async_op=True).get_future()

    def decode() -> Tensor:
        rows = out.view(world, 2, kk)  # (W, 2, K)
        dense = g.new_zeros(n).index_add_(0, rows[:, 1].reshape(-1).long(), rows[:, 0].reshape(-1).view(torch.float32))
        return dense / world

    return _join(buf, lay, fl, fut_float, fut, decode)


def terngrad_bucket_bytes(n_tern: int, k: int, n_float: int, float_bytes: int = 4) -> int:
    """TernGrad payload of one bucket per rank: ``ceil(N_t/4) + 4·k + float_bytes·N_f``."""
    return (packed_size(n_tern, 2) + 4 * k if n_tern else 0) + float_bytes * n_float
