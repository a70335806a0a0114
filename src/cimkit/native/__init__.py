"""Fused CPU kernels for the analog forward and its gradients and for quantized inference
(optional; same bits as the tensor ops). A layer below :mod:`cimkit.quant` and :mod:`cimkit.analog`:
it imports nothing of cimkit.

On the CPU the analog forward of a linear layer spends as long in memory-bound elementwise passes
around the matmul (DAC range and codes, output noise, ADC clamp and round, column and row scales,
bias) as in the matmul itself. ``kernels.c`` does the DAC in one pass and the ADC with
its whole digital epilogue in another (inference), the DAC codes, the ADC codes and the digital
factor with their straight-through gradients (training), a programmed chip's noisy read, and the
elementwise stages of a fresh device read for hardware-aware training's device noise; and
quantized inference's quantize-dequantize with one scale in one pass. All use the same float32
operations in the same order as the tensor ops, so the results are bit-identical
(``tests/test_native.py``).

The C file is compiled on first use with the system C compiler (``$CC``, else ``cc``) into
``$CIMKIT_NATIVE_DIR`` (default ``$XDG_CACHE_HOME/cimkit/native``, i.e. ``~/.cache/cimkit/native``),
named by a hash of its source and flags, and loaded with :mod:`ctypes` (no PyTorch headers, well
under a second to build). Without a compiler, on other platforms, or with ``CIMKIT_NATIVE=0``, the
PyTorch route runs instead: same results, slower. :func:`status` says which.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "adc_codes", "adc_rows", "available", "col_scale", "dac_rows", "device_read_a", "device_read_b", "device_read_c",
    "enable", "fake_quant", "read_pairs", "ready", "row_scale", "status", "usable",
]

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("kernels.c")
_FLAGS = ["-O3", "-shared", "-fPIC", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fno-strict-aliasing",
          "-pthread"]
_lock = threading.Lock()
_state: dict[str, object] = {}  # "lib": CDLL | None, "why": str
_enabled = [True]


def _cache_dir() -> Path:
    env = os.environ.get("CIMKIT_NATIVE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cimkit" / "native"


def _build(cc: str, src: bytes) -> Path:
    """Compile the kernels (once per source, flags and compiler) and return the library's path."""
    key = hashlib.sha256(src + " ".join([cc, *_FLAGS]).encode()).hexdigest()[:16]
    out_dir = _cache_dir()
    lib = out_dir / f"kernels-{key}.so"
    if lib.is_file():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        c_file = Path(tmp) / "kernels.c"
        c_file.write_bytes(src)
        so = Path(tmp) / "lib.so"
        proc = subprocess.run([cc, *_FLAGS, "-o", str(so), str(c_file)], capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        if proc.returncode != 0:
            raise OSError(f"{cc} failed: {proc.stderr.strip()[-500:]}")
        os.replace(so, lib)  # atomic: a concurrent build writes the same bytes
    return lib


def _load() -> ctypes.CDLL | None:
    with _lock:
        if "lib" in _state:
            return _state["lib"]  # type: ignore[return-value]
        lib, why = None, ""
        if os.environ.get("CIMKIT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
            why = "disabled by CIMKIT_NATIVE=0"
        elif sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"):
            why = f"built only on x86-64 Linux (this is {sys.platform}/{platform.machine()})"
        else:
            cc = os.environ.get("CC") or "cc"
            if shutil.which(cc) is None:
                why = f"no C compiler ({cc!r} not found)"
            else:
                try:
                    lib = ctypes.CDLL(str(_build(cc, _SOURCE.read_bytes())))  # named by a hash of the source
                    _declare(lib)
                    why = "avx2+fma" if lib.cimkit_force_isa(-1) else "baseline x86-64"
                except (OSError, subprocess.SubprocessError) as e:
                    lib, why = None, f"build failed ({e})"
        if lib is None:
            log.debug("cimkit native kernels off: %s; the PyTorch route runs (same results)", why)
        _state["lib"], _state["why"] = lib, why
        return lib


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, f32, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
    lib.cimkit_force_isa.argtypes, lib.cimkit_force_isa.restype = [i32], i32
    lib.cimkit_dac_rows.argtypes = [p, p, p, i64, i64, f32, i32]
    lib.cimkit_dac_rows.restype = None
    lib.cimkit_adc_rows.argtypes = [p, p, p, i64, i64, i64, f32, f32, i32, p, p, p, i32]
    lib.cimkit_adc_rows.restype = None
    lib.cimkit_adc_codes.argtypes = [p, p, i64, i64, f32, f32, i32]
    lib.cimkit_adc_codes.restype = i32
    lib.cimkit_col_scale.argtypes = [p, p, p, i64, p, f32, p, p, f32, i64, i64, i64, i32, i32]
    lib.cimkit_col_scale.restype = None
    lib.cimkit_row_scale.argtypes = [p, p, p, i64, i64, f32, i32]
    lib.cimkit_row_scale.restype = None
    lib.cimkit_read_pairs.argtypes = [p, p, p, p, i64, i64, i64, f32, f32]
    lib.cimkit_read_pairs.restype = None
    lib.cimkit_device_read.argtypes = [i32, p, p, p, p, p, p, p, i64, p, i32, p, i32]
    lib.cimkit_device_read.restype = None
    lib.cimkit_fake_quant.argtypes = [p, p, i64, f32, f32, f32, f32, i32]
    lib.cimkit_fake_quant.restype = None
    lib.cimkit_train_weights.argtypes = [p, p, p, p, i64, i64, i64, f32, f32]
    lib.cimkit_train_weights.restype = None
    lib.cimkit_tiles_adc.argtypes = [p, p, p, i64, i64, f32, f32, f32, f32, p, p, p, i32]
    lib.cimkit_tiles_adc.restype = None
    lib.cimkit_tiles_adc_grad.argtypes = [p, p, p, i64, i64, i64, f32, p, p, i32]
    lib.cimkit_tiles_adc_grad.restype = None
    lib.cimkit_weight_grad.argtypes = [p, p, p, i64, i64, i64, i64, i64, i64, f32]
    lib.cimkit_weight_grad.restype = None
    lib.cimkit_adc_scale.argtypes = [p, p, p, i64, i64, f32, f32, p, i64, p, f32, p, i32]
    lib.cimkit_adc_scale.restype = i32


def available() -> bool:
    """Whether the fused kernels are built and loaded (builds them on the first call)."""
    return _load() is not None


def status() -> str:
    """One line: which kernels run (``native (avx2+fma)``, or why the PyTorch route runs)."""
    lib = _load()
    if lib is not None and not _enabled[0]:
        return f"pytorch (switched off by cimkit.native.enable(False); kernels {_state['why']})"
    return f"native ({_state['why']})" if lib is not None else f"pytorch ({_state['why']})"


def enable(on: bool = True) -> bool:
    """Use the kernels where they apply (``True``, the default) or always the PyTorch route
    (``False``; e.g. to compare the two); returns the previous setting."""
    prev, _enabled[0] = _enabled[0], bool(on)
    return prev


def ready() -> bool:
    """Enabled and already loaded (no build, no lock: for per-call checks after :func:`usable` said yes)."""
    return _enabled[0] and _state.get("lib") is not None


def usable(*tensors: Tensor | None) -> bool:
    """The kernels apply: enabled, library loaded, every tensor a contiguous float32 CPU tensor."""
    if not _enabled[0] or _load() is None:
        return False
    return all(
        t is None or (t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous()) for t in tensors
    )


def _ptr(t: Tensor | None, offset: int = 0) -> int | None:
    return None if t is None else t.data_ptr() + offset * t.element_size()


def dac_rows(x: Tensor, q: Tensor, levels: int) -> Tensor:
    """Per-row abs-max DAC of ``x`` (R, C): integer codes into ``q`` (R, C); returns the ranges (R,).

    The same as ``r = max(x.amax(1), -x.amin(1)).clamp(min=1e-12)``, ``q = round(x * (levels / r))``."""
    lib = _load()
    assert lib is not None and x.shape == q.shape and x.dim() == 2
    r = torch.empty(x.shape[0], dtype=x.dtype)  # (R,)
    lib.cimkit_dac_rows(_ptr(x), _ptr(q), _ptr(r), x.shape[0], x.shape[1], float(levels), torch.get_num_threads())
    return r


def adc_codes(z: Tensor, noise: Tensor | None, sigma: float, levels: int) -> bool:
    """The training ADC in place: ``z = round(clamp(z + sigma * noise, -levels, levels))``; returns
    whether any code is at full scale (as ``max(z.amax(), -z.amin()) >= levels``)."""
    lib = _load()
    assert lib is not None and (noise is None or noise.numel() == z.numel())
    rows = z.shape[0] if z.dim() > 1 else 1
    return bool(lib.cimkit_adc_codes(_ptr(z), _ptr(noise), rows, z.numel() // max(rows, 1), float(sigma),
                                     float(levels), torch.get_num_threads()))  # fmt: skip


COL_MUL, COL_MUL_ADD, COL_FMA, COL_STE = 0, 1, 2, 3  # col_scale modes (kernels.c)


def col_scale(c: Tensor, r: Tensor, k: Tensor, inv: float, bias: Tensor | None, mode: int,
              out: Tensor, codes: Tensor | None = None, levels: int = 0) -> Tensor:  # fmt: skip
    """``c`` (B, N, ...) times ``f[b, n] = (r[b] * k[n]) * inv`` (``r`` (B,) or one value), into
    ``out`` (may be ``c``): ``COL_MUL`` ``c * f``; ``COL_MUL_ADD`` ``c * f + bias`` (two roundings);
    ``COL_FMA`` ``addcmul(bias, c, f)``; ``COL_STE`` ``where(|codes| < levels, c, 0) * f``."""
    lib = _load()
    bsz, n = c.shape[0], c.shape[1]
    assert lib is not None and k.shape == (n,) and r.numel() in (1, bsz) and out.shape == c.shape
    s = c.numel() // max(bsz * n, 1)
    lib.cimkit_col_scale(_ptr(c), _ptr(out), _ptr(r), int(r.numel() > 1), _ptr(k), float(inv), _ptr(bias),
                         _ptr(codes), float(levels), bsz, n, s, mode, torch.get_num_threads())  # fmt: skip
    return out


def row_scale(g: Tensor, r: Tensor, levels: int, out: Tensor | None = None) -> Tensor:
    """``g`` (R, C) times ``levels / r`` per row (``r`` (R,)): the DAC codes' gradient, as
    ``g * (levels / r[:, None])``; into ``out`` (may be ``g``) or a new tensor."""
    lib = _load()
    assert lib is not None and g.dim() == 2 and r.shape == (g.shape[0],)
    out = torch.empty_like(g) if out is None else out
    lib.cimkit_row_scale(_ptr(g), _ptr(out), _ptr(r), g.shape[0], g.shape[1], float(levels), torch.get_num_threads())
    return out


def adc_rows(z: Tensor, noise: Tensor | None, sigma: float, levels: int | None, k: Tensor, s: Tensor,
             bias: Tensor | None, out: Tensor, noise_offset: int = 0) -> Tensor:  # fmt: skip
    """ADC and digital epilogue of ``T`` row tiles: ``z`` (T, R, N) partial sums in ADC units,
    ``noise`` like ``z`` (or None; or ``z.numel()`` contiguous values from element ``noise_offset``
    of a longer tensor), ``k`` (T, N) column coefficients, ``s`` (R,) row scales, ``bias`` (N,) or
    None; writes ``out`` (R, N), which may be ``z`` itself when ``T == 1``.

    The same as ``bias + (round(clamp(z + sigma * noise, -levels, levels)) * k).sum(0) * s[:, None]``
    (no clamp or round when ``levels`` is None), summed over tiles in order."""
    lib = _load()
    t, r, n = z.shape
    assert lib is not None and out.shape == (r, n) and k.shape == (t, n) and s.shape == (r,)
    assert t == 1 or out.data_ptr() != z.data_ptr()
    assert noise is None or noise.numel() >= noise_offset + z.numel()
    lib.cimkit_adc_rows(_ptr(z), _ptr(noise, noise_offset), _ptr(out), t, r, n, float(sigma), float(levels or 0),
                        int(levels is not None), _ptr(k), _ptr(s), _ptr(bias), torch.get_num_threads())  # fmt: skip
    return out


def read_pairs(g_mean: Tensor, g_sigma: Tensor, noise: Tensor, inv: float, post: float = 1.0,
               noise_offset: int = 0, out: Tensor | None = None) -> Tensor:  # fmt: skip
    """One noisy read of conductances ``(S, D, ...)`` (µS, ``D`` = 2 devices of a differential pair or
    1) to ``A`` ``(S, ...)``: the same as ``g = addcmul(g_mean, g_sigma, noise).clamp_(min=0)``, then
    ``(g[:, 0] - g[:, 1]) * inv`` (or ``g[:, 0] * inv``), then ``* post`` (a no-op when 1). ``noise``
    is like ``g_mean``, or a longer contiguous tensor read from element ``noise_offset``; ``A`` is
    written into ``out`` (contiguous, ``(S, ...)``) when given."""
    lib = _load()
    s, d = g_mean.shape[:2]
    assert lib is not None and d in (1, 2) and g_sigma.shape == g_mean.shape
    assert noise.is_contiguous() and noise.numel() >= noise_offset + g_mean.numel()
    a = torch.empty(s, *g_mean.shape[2:], dtype=g_mean.dtype) if out is None else out
    assert a.numel() * d == g_mean.numel() and a.is_contiguous()
    lib.cimkit_read_pairs(_ptr(g_mean), _ptr(g_sigma), _ptr(noise, noise_offset), _ptr(a), s, d, a[0].numel(),
                          float(inv), float(post))  # fmt: skip
    return a


def train_weights(w: Tensor, tiles: int, c: float, noise: Tensor | None = None,
                  std: float = 0.0) -> tuple[Tensor, Tensor]:
    """The analog training forward's weights from ``w`` (N, C), ``C = T · R``, per-column scaling:
    ``w_scale[t, n] = max(max_r |w[n, tR + r]|, 1e-30)`` (T, N) and the matmul operand ``A · c`` in
    ``w``'s layout, ``u = w / w_scale``, ``A = u`` or, with channel noise of relative std ``std``
    (standard normals ``noise``, T · R · N contiguous values in (T, R, N) order),
    ``σ = (std · max_{t,r} |w[n, ·]|) / w_scale``, ``A = u + (fma(noise, σ, u) - u)``: the tensor
    operations of the general route (``addcmul`` is one fused multiply-add)."""
    lib = _load()
    n, cols = w.shape
    rows = cols // tiles
    assert lib is not None and rows * tiles == cols and w.is_contiguous()
    assert noise is None or (noise.is_contiguous() and noise.numel() == w.numel())
    a = torch.empty_like(w)
    ws = torch.empty(tiles, n, dtype=w.dtype)
    lib.cimkit_train_weights(_ptr(w), _ptr(a), _ptr(ws), _ptr(noise), tiles, rows, n, float(std),
                             float(c))  # fmt: skip
    return a, ws


def tiles_adc(z: Tensor, noise: Tensor | None, alpha: float, r_adc: Tensor, levels: int, w_scale: Tensor,
              r: Tensor, bias: Tensor | None) -> Tensor:
    """The training ADC of two row tiles (the general route's tensor operations, the same bits):
    ``z`` (2, B, N) partial sums become ``v = z + alpha · noise`` in place (``noise`` (B, 2, N)), and
    the result is ``Σ_t q(v_t) · (w_scale[t] · r[b]) (+ bias)`` (B, N) with ``q(v) = round(clamp(v ·
    (L / r_adc), ±L)) · (r_adc / L)``, the quotients rounded to float32 as tensor operations do."""
    lib = _load()
    t, bsz, n = z.shape
    assert lib is not None and t == 2 and w_scale.shape == (2, n) and r.shape == (bsz,)
    assert noise is None or noise.numel() == z.numel()
    lr = levels / r_adc  # 0-d tensors, rounded as the tensor route rounds them (levels · (1 / r_adc))
    rl = r_adc / levels
    y = torch.empty(bsz, n, dtype=z.dtype)
    lib.cimkit_tiles_adc(_ptr(z), _ptr(noise), _ptr(y), bsz, n, float(alpha), float(lr), float(rl), float(levels),
                         _ptr(w_scale), _ptr(r), _ptr(bias), torch.get_num_threads())  # fmt: skip
    return y


def tiles_adc_grad(gy: Tensor, z: Tensor, rf: float, w_scale: Tensor, r: Tensor) -> Tensor:
    """Gradient of :func:`tiles_adc` to the partial sums: ``gy · (w_scale[t] · r[b])`` where the noisy
    sum ``z`` (T, B, N) lies strictly inside ``(-rf, rf)``, else 0 (the ADC's straight-through mask)."""
    lib = _load()
    t, bsz, n = z.shape
    assert lib is not None and gy.shape == (bsz, n) and w_scale.shape == (t, n)
    out = torch.empty_like(z)
    lib.cimkit_tiles_adc_grad(_ptr(gy), _ptr(z), _ptr(out), t, bsz, n, float(rf), _ptr(w_scale), _ptr(r),
                              torch.get_num_threads())  # fmt: skip
    return out


def adc_scale(z: Tensor, noise: Tensor | None, sigma: float, levels: int, r: Tensor, k: Tensor, inv: float,
              bias: Tensor | None, out: Tensor) -> bool:
    """:func:`adc_codes` then :func:`col_scale` (``COL_MUL_ADD``, or ``COL_MUL`` without a bias) of
    a linear layer (``z`` (B, N)) in one pass: ``z`` becomes the codes, ``out`` the scaled result;
    returns whether a code is at full scale (where the caller may need another mode)."""
    lib = _load()
    bsz, n = z.shape
    assert lib is not None and out.shape == z.shape and k.shape == (n,) and r.numel() in (1, bsz)
    assert noise is None or noise.numel() == z.numel()
    return bool(lib.cimkit_adc_scale(_ptr(z), _ptr(noise), _ptr(out), bsz, n, float(sigma), float(levels), _ptr(r),
                                     int(r.numel() > 1), _ptr(k), float(inv), _ptr(bias), torch.get_num_threads()))  # fmt: skip


def weight_grad(ga: Tensor, w_scale: Tensor, c: float) -> Tensor:
    """The weight gradient of :func:`train_weights`' operand: ``(ga · c) / w_scale`` for ``ga``
    (T, R, N) of any strides, returned in the weight's layout (N, T·R), contiguous."""
    lib = _load()
    t, rows, n = ga.shape
    assert lib is not None and w_scale.shape == (t, n) and w_scale.is_contiguous()
    assert ga.dtype == torch.float32 and ga.device.type == "cpu" and ga.stride(1) * ga.stride(2) != 0
    gw = torch.empty(n, t * rows, dtype=ga.dtype)
    st, sr, sn = ga.stride()
    lib.cimkit_weight_grad(_ptr(ga), _ptr(gw), _ptr(w_scale), t, rows, n, st, sr, sn, float(c))
    return gw


MAX_POLY = 8  # coefficients of the programming-noise polynomial the device-read kernel takes


def _device_read(stage: int, n: int, gt: Tensor | None = None, z0: Tensor | None = None, z1: Tensor | None = None,
                 z2: Tensor | None = None, g: Tensor | None = None, lq: Tensor | None = None,
                 ld: Tensor | None = None, poly: tuple[float, ...] = (), k: tuple[float, ...] = ()) -> None:  # fmt: skip
    lib = _load()  # the caller checked usable() on flat contiguous float32 tensors of n elements
    assert lib is not None and len(poly) <= MAX_POLY
    consts = (ctypes.c_float * 18)(*k)  # float32, rounded to nearest as torch rounds a Python scalar
    coefs = (ctypes.c_float * MAX_POLY)(*poly)
    lib.cimkit_device_read(stage, _ptr(gt), _ptr(z0), _ptr(z1), _ptr(z2), _ptr(g), _ptr(lq), _ptr(ld), n, coefs,
                           len(poly), consts, torch.get_num_threads())  # fmt: skip


def device_read_a(g_t: Tensor, z0: Tensor, g: Tensor, lq: Tensor | None, ld: Tensor | None, poly: tuple[float, ...],
                  q_floor: float, d_floor: float) -> None:  # fmt: skip
    """Stage A of a fresh device read (µS), the same as ``g = addcmul(g_t, clamp(poly(g_t), min=0),
    z0).clamp(min=0)``, ``lq = clamp(g, min=q_floor)``, ``ld = clamp(g_t, min=d_floor)`` (``poly``
    by Horner's rule as :func:`cimkit.analog.devices._read_stages`)."""
    _device_read(0, g_t.numel(), gt=g_t, z0=z0, g=g, lq=lq, ld=ld, poly=poly, k=(q_floor, d_floor))


def device_read_b(lq: Tensor | None, ld: Tensor | None, z1: Tensor | None, neg_e: float,
                  mu_c: tuple[float, float, float, float], sig_c: tuple[float, float, float, float],
                  neg_k: float) -> None:  # fmt: skip
    """Stage B, in place on the logarithms: ``lq *= neg_e``; ``ld = |fma(clamp(ld s1 + s0),
    z1, clamp(ld m1 + m0))| * neg_k`` (drift exponents; ``mu_c``/``sig_c`` = slope, offset, min, max)."""
    n = (lq if lq is not None else ld).numel()  # at least one plane: the caller skips this stage without
    _device_read(1, n, z1=z1, lq=lq, ld=ld, k=(0.0, 0.0, neg_e, *mu_c, *sig_c, neg_k))


def device_read_c(g: Tensor, lq: Tensor | None, ld: Tensor | None, z2: Tensor | None, cap: float, value: float,
                  std: float, has_q: bool) -> None:  # fmt: skip
    """Stage C, in place on ``g``: drift (``g *= ld``) and read noise (``z2``; none when None) with
    std ``min(lq, cap) * g`` (``has_q``) or ``std``, as ``addcmul(g, sigma, z2, value=value)``;
    then ``clamp(min=0)``."""
    k = (0.0,) * 12 + (cap, value, 0.0, std, float(has_q), float(z2 is not None))  # k[14]: unused
    _device_read(2, g.numel(), z2=z2, g=g, lq=lq, ld=ld, k=k)


def fake_quant(x: Tensor, scale: float, zero_point: float, qmin: int, qmax: int) -> Tensor:
    """Quantize and dequantize with one scale and zero point in one pass, into a new tensor: the
    same as ``torch.div(x, scale).round_().add_(zero_point).clamp_(qmin, qmax).sub_(zero_point)
    .mul_(scale)`` (without the add and subtract for a zero zero point)."""
    lib = _load()
    assert lib is not None and x.is_contiguous()
    y = torch.empty_like(x)
    lib.cimkit_fake_quant(_ptr(x), _ptr(y), x.numel(), float(scale), float(zero_point), float(qmin), float(qmax),
                          torch.get_num_threads())  # fmt: skip
    return y


def force_isa(avx2: bool | None) -> bool:
    """Tests: run the AVX2+FMA build (True) or the baseline build (False); returns which runs now."""
    lib = _load()
    assert lib is not None
    return bool(lib.cimkit_force_isa(-1 if avx2 is None else int(avx2)))
