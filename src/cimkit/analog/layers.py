"""Analog layers: ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` computed on simulated crossbars.

One engine serves all three. A layer's weight matrix is tiled into ``(T, R, N)`` (row tiles, rows
per tile, outputs; see :mod:`cimkit.analog.mapping`), becomes normalised conductances
``A`` of shape ``(S, T, R, N)`` (``S`` weight slices) and every forward computes all per-tile,
per-slice, per-input-bit partial sums in **one** batched op: a ``bmm`` over tiles for linear
layers, a grouped convolution (groups = tiles) or unfold + batched matmul for convolutions, with
bit planes stacked into the batch and slices into the output channels. DAC, output noise, ADC
and the digital shift-and-add / scaling / drift compensation / bias are elementwise ops and one
weighted reduction on that result. When every conversion is exact (ideal ADC, no output noise)
the whole chain is linear, so it is folded into one effective weight and a single
``F.linear`` / ``F.conv`` (exact; the fastest route).

State: ``weight``/``bias`` keep the digital module's names (a converted model loads the digital
``state_dict``); ``input_range``/``output_range`` hold the DAC/ADC ranges. :meth:`program` fixes a
chip (non-persistent buffers, reproducible from the seed), :meth:`set_time` drifts it, and every
eval forward of a programmed layer reads the conductances with fresh read noise. Before
``program`` (and always in training mode) the layer maps its current weights exactly, plus the
hardware-aware-training noise when enabled.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cimkit.analog.devices import (
    DeviceConfig,
    DeviceState,
    devices_at,
    ir_drop_factor,
    program_devices,
    sample_read,
)
from cimkit.analog.hwa import HWAConfig, NoiseKind
from cimkit.analog.mapping import (
    Compensation,
    ConvRoute,
    MappingConfig,
    RangeMode,
    WeightPair,
    WeightScaling,
    slice_codes,
    slice_coefficients,
)
from cimkit.analog.periphery import adc_combine, bits_levels, gaussian_noise, range_quantize, subsample
from cimkit.errors import ConfigError

__all__ = ["AnalogConv1d", "AnalogConv2d", "AnalogLayer", "AnalogLinear"]

log = logging.getLogger(__name__)

_CALIB_MAX_ITEMS = 200_000
_CHUNK_ELEMS = 1 << 22  # partial sums per inference chunk (bounded memory, noise-table sized)


class AnalogLayer(nn.Module):
    """Base of the analog layers (see the module docstring). Build them with :func:`cimkit.analog.convert`."""

    kind: str = ""

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None,
        mapping: MappingConfig,
        device: DeviceConfig,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        self.mapping = mapping
        self.device_cfg = device
        self.input_range = nn.Parameter(
            torch.tensor(float(mapping.dac_range), device=weight.device),
            requires_grad=mapping.dac_range_mode == RangeMode.LEARNED,
        )
        self.output_range = nn.Parameter(
            torch.tensor(float(mapping.adc_range), device=weight.device),
            requires_grad=mapping.adc_range_mode == RangeMode.LEARNED,
        )
        # geometry: weight viewed as (N, C, ksz); rows of a tile = whole input channels
        self.n_out = weight.shape[0]
        self.n_in = weight.shape[1]
        self.ksz = int(math.prod(weight.shape[2:])) if weight.dim() > 2 else 1
        max_c = mapping.tile_rows // self.ksz
        if max_c == 0:
            raise ConfigError(
                f"tile_rows: {mapping.tile_rows} is smaller than one input channel's kernel "
                f"({self.ksz} rows); allowed: >= {self.ksz}"
            )
        self.n_tiles = -(-self.n_in // max_c)
        self.ch_per_tile = -(-self.n_in // self.n_tiles)
        self.rows = self.ch_per_tile * self.ksz
        self.n_in_pad = self.n_tiles * self.ch_per_tile
        self.register_buffer(
            "slice_coef", slice_coefficients(mapping.n_slices, mapping.slice_bits, weight.device), persistent=False
        )
        self.n_slices = int(self.slice_coef.numel())
        # programmed chip (None until program())
        for name in ("g_prog", "g_target", "drift_state", "g_mean", "g_sigma", "w_scale_prog", "ref_readout"):
            self.register_buffer(name, None, persistent=False)
        self.register_buffer("alpha", None, persistent=False)
        self.t_seconds: float = 0.0
        self.read_generator: torch.Generator | None = None
        self._a_cache: Tensor | None = None
        self._w_eff_cache: Tensor | None = None
        # hardware-aware training
        self.hwa: HWAConfig | None = None
        self.hwa_generator: torch.Generator | None = None
        self._hwa_ws: dict[str, Tensor] = {}  # reused buffers of the per-batch device simulation
        # calibration
        self._calib: str | None = None
        self._calib_samples: list[Tensor] = []
        self._calib_generator: torch.Generator | None = None
        self._warned_uncalibrated = False
        self.calibrated = False
        # routing ("auto" | "fold" | "tiled"): tests/benchmarks may force a route
        self.route = "auto"

    # ------------------------------------------------------------------ geometry helpers

    @property
    def programmed(self) -> bool:
        return self.g_prog is not None

    def to_tiles(self, w: Tensor) -> Tensor:
        """Weight (original shape) -> ``(T, R, N)`` tiles (input channels zero-padded)."""
        w3 = w.reshape(self.n_out, self.n_in, self.ksz)
        if self.n_in_pad > self.n_in:
            w3 = F.pad(w3, (0, 0, 0, self.n_in_pad - self.n_in))
        return w3.reshape(self.n_out, self.n_tiles, self.rows).permute(1, 2, 0)

    def from_tiles(self, wt: Tensor) -> Tensor:
        """``(T, R, N)`` tiles -> weight of the original shape (padding dropped)."""
        w3 = wt.permute(2, 0, 1).reshape(self.n_out, self.n_in_pad, self.ksz)[:, : self.n_in]
        return w3.reshape(self.weight.shape)

    def _row_mask(self, device: torch.device) -> Tensor:
        ones = torch.ones(self.n_out, self.n_in, self.ksz, device=device)
        return self.to_tiles(ones)[:, :, :1]  # (T, R, 1)

    def weight_scale(self, wt: Tensor) -> Tensor:
        """``w_max`` per (tile, column), shape ``(T, N)``, for the mapping's scaling (never 0)."""
        a = wt.detach().abs()
        sc = self.mapping.scaling
        if sc == WeightScaling.COLUMN:
            s = a.amax(dim=1)  # (T, N)
        elif sc == WeightScaling.TILE:
            cols = self.mapping.tile_cols
            n_blk = -(-self.n_out // cols)
            col = a.amax(dim=1)  # (T, N)
            col = F.pad(col, (0, n_blk * cols - self.n_out))
            s = col.view(-1, n_blk, cols).amax(-1).repeat_interleave(cols, dim=1)[:, : self.n_out]
        else:
            s = a.amax().expand(self.n_tiles, self.n_out)
        return s.clamp(min=1e-30)  # an all-zero column maps to zero conductances either way

    def codes(self, u: Tensor) -> Tensor:
        """Normalised weights ``u`` (T, R, N) in [-1, 1] -> device codes ``(S, D, T, R, N)`` in [0, 1]."""
        if self.mapping.pair == WeightPair.DIFFERENTIAL:
            v = torch.stack((u.clamp(min=0.0), (-u).clamp(min=0.0)))  # (2, T, R, N)
        else:
            v = (((u + 1.0) * 0.5) * self._row_mask(u.device)).unsqueeze(0)  # (1, T, R, N); unused rows off
        return slice_codes(v.clamp(0.0, 1.0), self.mapping.n_slices, self.mapping.slice_bits)

    def a_from_g(self, g: Tensor) -> Tensor:
        """Conductances ``(S, D, T, R, N)`` (µS) -> normalised analog weights ``A`` (S, T, R, N)."""
        inv = 1.0 / self.device_cfg.g_range
        if self.mapping.pair == WeightPair.DIFFERENTIAL:
            return (g[:, 0] - g[:, 1]) * inv
        return g[:, 0] * inv

    def a_from_codes(self, v: Tensor) -> Tensor:
        """Codes on an ideal device -> ``A`` (S, T, R, N)."""
        if self.mapping.pair == WeightPair.DIFFERENTIAL:
            return v[:, 0] - v[:, 1]
        return v[:, 0] + self.device_cfg.g_min / self.device_cfg.g_range

    def readout(self, a: Tensor) -> Tensor:
        """Reference read for drift compensation: per column ``sum |sum_s c_s A_s|``, shape ``(N,)``."""
        w = (a * self.slice_coef.view(-1, 1, 1, 1)).sum(0) if a.shape[0] > 1 else a[0]  # (T, R, N)
        return torch.linalg.vector_norm(w, ord=1, dim=(0, 1))

    def _compensation(self, ref: Tensor, cur: Tensor) -> Tensor | None:
        mode = self.mapping.compensation
        if mode == Compensation.NONE:
            return None
        if mode == Compensation.GLOBAL:
            c = cur.sum()
            a = ref.sum() / c if c > 0 else torch.ones((), device=ref.device)
            return a.expand(self.n_out).clone()
        return torch.where(cur > 0, ref / cur.clamp(min=1e-12), torch.ones_like(cur))

    # ------------------------------------------------------------------ programming and drift

    @torch.no_grad()
    def program(self, seed: int) -> None:
        """Program this layer's crossbars once from its current weights (reproducible from ``seed``).

        Samples programming noise, device gains, stuck-at faults and drift draws; then sets the time
        to 0 s and takes the drift-compensation reference read.
        """
        dev = self.device_cfg
        gen = torch.Generator(device=self.weight.device).manual_seed(int(seed) & (2**63 - 1))
        wt = self.to_tiles(self.weight.detach().float())
        w_scale = self.weight_scale(wt)
        v = self.codes(wt / w_scale.unsqueeze(1))  # (S, D, T, R, N)
        state = program_devices(dev.g_min + v * dev.g_range, dev, gen)
        self.g_prog = state.g_prog
        self.g_target = state.g_target if state.drift is not None else None
        self.drift_state = state.drift
        self.w_scale_prog = w_scale
        read_seed = int(torch.randint(0, 2**62, (1,), generator=gen).item())
        self.read_generator = torch.Generator(device=self.weight.device).manual_seed(read_seed)
        self.ref_readout = None
        self.set_time(0.0)

    def _device_state(self) -> DeviceState:
        g_target = self.g_target if self.g_target is not None else self.g_prog
        return DeviceState(g_target=g_target, g_prog=self.g_prog, drift=self.drift_state, stuck=None)

    def _ir(self, g: Tensor) -> Tensor:
        """IR-drop factors for conductances ``(S, D, T, R, N)``: arrays of R rows x tile_cols columns."""
        cols = self.mapping.tile_cols
        n_blk = -(-self.n_out // cols)
        gp = F.pad(g, (0, n_blk * cols - self.n_out)) if n_blk * cols > self.n_out else g
        shp = gp.shape
        arr = gp.view(*shp[:-1], n_blk, cols).transpose(-3, -2)  # (S, D, T, n_blk, R, cols)
        f = ir_drop_factor(arr, self.device_cfg.r_wire).transpose(-3, -2).reshape(shp)
        return f[..., : self.n_out]

    @torch.no_grad()
    def set_time(self, t_seconds: float) -> None:
        """Set the time since programming (s): drift, read-noise level, IR drop, drift compensation."""
        if not self.programmed:
            raise ConfigError("drift: the layer is not programmed; call cimkit.analog.program(model, seed) first")
        g_mean, sigma = devices_at(self._device_state(), self.device_cfg, float(t_seconds))
        if self.device_cfg.r_wire > 0:
            f = self._ir(g_mean)
            g_mean = g_mean * f
            sigma = sigma * f
        self.g_mean = g_mean
        self.g_sigma = sigma if bool((sigma > 0).any()) else None
        self.t_seconds = float(t_seconds)
        self._a_cache = None
        self._w_eff_cache = None
        cur = self.readout(self._read_a())
        if self.ref_readout is None:
            self.ref_readout = cur
        self.alpha = self._compensation(self.ref_readout, cur)

    def _read_a(self) -> Tensor:
        """One read of the programmed crossbars: ``A`` (S, T, R, N) with fresh read noise."""
        if self.g_sigma is None:
            if self._a_cache is None:
                self._a_cache = self.a_from_g(self.g_mean)
            return self._a_cache
        noise = gaussian_noise(
            self.g_mean.shape,
            self.read_generator,
            device=self.g_mean.device,
            dtype=self.g_mean.dtype,
            fast=self.mapping.fast_noise,
        )
        g = torch.addcmul(self.g_mean, self.g_sigma, noise).clamp_(min=0.0)
        return self.a_from_g(g)

    # ------------------------------------------------------------------ hardware-aware training

    def set_hwa(self, cfg: HWAConfig | None, seed: int = 0) -> None:
        """Enable per-batch weight-noise injection in training mode (``None`` disables)."""
        self.hwa = cfg
        self.hwa_generator = torch.Generator(device=self.weight.device).manual_seed(seed) if cfg is not None else None

    @torch.no_grad()
    def _hwa_noisy_a(self, a_clean: Tensor, v: Tensor | None, u: Tensor) -> Tensor:
        cfg = self.hwa
        if cfg is None:
            return a_clean
        gen = self.hwa_generator
        if cfg.noise == NoiseKind.ADDITIVE:
            return a_clean + cfg.noise_std * torch.randn(a_clean.shape, generator=gen, device=a_clean.device)
        if cfg.noise == NoiseKind.MULTIPLICATIVE:
            z = torch.randn(a_clean.shape, generator=gen, device=a_clean.device)
            return a_clean * (1.0 + cfg.noise_std * z)
        dev = self.device_cfg
        if cfg.device_noise_scale != 1.0:
            k = cfg.device_noise_scale
            dev = dev.replace(
                prog_noise_scale=dev.prog_noise_scale * k,
                read_noise_scale=dev.read_noise_scale * k,
                read_noise_std=dev.read_noise_std * k,
            )
        if v is not None:
            g_t = v.clone()
        elif self.mapping.pair == WeightPair.DIFFERENTIAL and self.mapping.slice_bits == 0:
            g_t = self._hwa_ws.get("codes")  # codes straight into a reused buffer
            if g_t is None or g_t.shape[2:] != u.shape:
                g_t = self._hwa_ws["codes"] = torch.empty((1, 2, *u.shape), device=u.device, dtype=u.dtype)
            torch.clamp(u, min=0.0, out=g_t[0, 0])
            torch.clamp(u, max=0.0, out=g_t[0, 1]).neg_()
        else:
            g_t = self.codes(u)
        g_t.mul_(dev.g_range).add_(dev.g_min)  # target conductances (S, D, T, R, N)
        g = sample_read(g_t, dev, cfg.sample_time(gen), gen, fast=self.mapping.fast_noise, workspace=self._hwa_ws)
        if dev.r_wire > 0:
            g = g * self._ir(g)
        a = self.a_from_g(g)
        alpha = self._compensation(self.readout(a_clean), self.readout(a))
        return a.mul_(alpha) if alpha is not None else a

    # ------------------------------------------------------------------ analog weights for a forward

    def _weights_from_parameters(self) -> tuple[Tensor, Tensor]:
        """``A`` (S, T, R, N) and ``w_scale`` (T, N) from the current weights (differentiable)."""
        wt = self.to_tiles(self.weight)
        w_scale = self.weight_scale(wt)
        u = wt / w_scale.unsqueeze(1)  # (T, R, N) in [-1, 1]
        if self.mapping.pair == WeightPair.DIFFERENTIAL:
            lin = u
        else:
            lin = (u + 1.0) * 0.5 + self.device_cfg.g_min / self.device_cfg.g_range
        v = None
        if self.mapping.slice_bits > 0:
            with torch.no_grad():
                v = self.codes(u.detach())
                a_q = self.a_from_codes(v)  # (S, T, R, N)
            a = a_q + (lin - lin.detach()).unsqueeze(0)  # STE: d a_s / d u = d lin / d u
        else:
            a = lin.unsqueeze(0)
        if self.training and self.hwa is not None and self.hwa.noise != NoiseKind.NONE:
            delta = self._hwa_noisy_a(a.detach(), v, u.detach()).sub_(a.detach())
            a = a + delta  # the noisy weights forward, the gradient straight to the clean ones
        return a, w_scale

    def analog_weights(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """What this forward computes with: ``(A, w_scale, alpha)``; a fresh read when programmed."""
        if self.programmed and not self.training:
            return self._read_a(), self.w_scale_prog, self.alpha
        a, w_scale = self._weights_from_parameters()
        return a, w_scale, None

    def effective_weight(self) -> Tensor:
        """The digital weight equivalent to one read (original shape), for inspection and the fold route."""
        a, w_scale, alpha = self.analog_weights()
        return self._fold(a, w_scale, alpha)

    def _fold(self, a: Tensor, w_scale: Tensor, alpha: Tensor | None) -> Tensor:
        k = w_scale if alpha is None else w_scale * alpha  # (T, N)
        w = (a * self.slice_coef.view(-1, 1, 1, 1)).sum(0) if a.shape[0] > 1 else a[0]  # (T, R, N)
        if self.mapping.pair == WeightPair.OFFSET:
            off = 2.0 * self.device_cfg.g_min / self.device_cfg.g_range + 1.0
            w = 2.0 * w - off * self._row_mask(w.device)
        return self.from_tiles(w * k.unsqueeze(1))

    # ------------------------------------------------------------------ the forward

    def _digital_op(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:  # overridden
        return F.linear(x, w, b)

    def forward(self, x: Tensor) -> Tensor:
        x = self._prepare_input(x)
        a, w_scale, alpha = self.analog_weights()
        y = self._analog_mvm(x, a, w_scale, alpha)
        return self._finish_output(y)

    def _prepare_input(self, x: Tensor) -> Tensor:
        return x

    def _finish_output(self, y: Tensor) -> Tensor:
        return y

    def _noise_generator(self) -> torch.Generator:
        if self.programmed and not self.training and self.read_generator is not None:
            return self.read_generator
        if self.hwa_generator is None:
            self.hwa_generator = torch.Generator(device=self.weight.device).manual_seed(0)
        return self.hwa_generator

    def _use_fold(self) -> bool:
        if self._calib == "dac" or self.route == "fold":
            return True
        if self.route == "tiled" or self._calib == "adc":
            return False
        return self.mapping.ideal_adc

    def _input_range(self, x: Tensor, grad: bool) -> tuple[Any, Any]:
        """DAC full scale ``(r, r_b)``: ``r`` a 0-d tensor, or ``(B,)`` when dynamic; ``r_b`` broadcasts over ``x``."""
        m = self.mapping
        if m.dac_range_mode == RangeMode.DYNAMIC:
            xf = x.detach().reshape(x.shape[0], -1)
            r = torch.maximum(xf.amax(1), xf.amin(1).neg_()).clamp_(min=1e-12)  # (B,) per-sample abs-max
            return r, r.view(-1, *([1] * (x.dim() - 1)))
        if m.dac_range_mode == RangeMode.CALIBRATED and not self.calibrated and self._calib is None:
            self._warn_uncalibrated()
        r = self.input_range if grad and self.input_range.requires_grad else self.input_range.detach()
        r = r.abs() + 1e-12
        return r, r

    def _warn_uncalibrated(self) -> None:
        if not self._warned_uncalibrated:
            log.warning(
                "analog layer %s uses calibrated ranges but was never calibrated; using the configured "
                "initial ranges (call cimkit.analog.calibrate(model, batches))",
                type(self).__name__,
            )
            self._warned_uncalibrated = True

    def _bit_planes(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """Integer DAC codes ``q`` (B, ...) -> sign-magnitude bit planes ``(P, B, ...)`` in {-1, 0, 1}
        and their shift-and-add weights ``2^k`` (P,)."""
        n_planes = self.mapping.dac_bits - 1
        pw = torch.pow(2.0, torch.arange(n_planes, device=q.device, dtype=q.dtype))  # (P,)
        mag = q.abs().unsqueeze(0)  # (1, B, ...)
        planes = torch.floor(mag / pw.view(-1, *([1] * q.dim()))).remainder_(2.0).mul_(q.sign().unsqueeze(0))
        return planes, pw

    def _out_numel_per_sample(self, x: Tensor) -> int:
        return 1

    def _coef(self, w_scale: Tensor, alpha: Tensor | None, plane_coef: Tensor | None) -> Tensor:
        """Digital weight of every conversion: ``(P, T, S, N)`` = planes x slices x w_scale x compensation."""
        k = w_scale if alpha is None else w_scale * alpha  # (T, N)
        if self.mapping.pair == WeightPair.OFFSET:
            k = k * 2.0
        coef = (k.unsqueeze(1) * self.slice_coef.view(1, -1, 1)).unsqueeze(0)  # (1, T, S, N)
        if plane_coef is not None:
            coef = coef * plane_coef.view(-1, 1, 1, 1)  # (P, T, S, N)
        return coef

    def _offset_coef(self, w_scale: Tensor, alpha: Tensor | None) -> Tensor:
        """Offset mapping: weight of the digital ``sum(x)`` per tile, ``-(2 g_min/g_range + 1) w_scale alpha``."""
        off = 2.0 * self.device_cfg.g_min / self.device_cfg.g_range + 1.0
        return -off * (w_scale if alpha is None else w_scale * alpha)  # (T, N)

    def _analog_mvm(self, x: Tensor, a: Tensor, w_scale: Tensor, alpha: Tensor | None) -> Tensor:
        grad = torch.is_grad_enabled() and (
            x.requires_grad or a.requires_grad or self.input_range.requires_grad or self.output_range.requires_grad
        )
        if self._calib == "dac":
            self._calib_samples.append(subsample(x, _CALIB_MAX_ITEMS, self._calib_generator))
        if self._use_fold():
            return self._mvm_fold(x, a, w_scale, alpha, grad)
        if grad:
            return self._mvm_grad(x, a, w_scale, alpha)
        m = self.mapping
        per_sample = m.n_planes * self.n_tiles * self.n_slices * self.n_out * self._out_numel_per_sample(x)
        chunk = max(1, _CHUNK_ELEMS // max(per_sample, 1))
        if x.shape[0] <= chunk:
            return self._mvm_nograd(x, a, w_scale, alpha)
        # bounded memory: the batch in chunks of many samples (each chunk fully batched)
        return torch.cat([self._mvm_nograd(xc, a, w_scale, alpha) for xc in x.split(chunk)])

    def _dac_quantized(self) -> bool:
        return self.mapping.dac_bits > 0 and self._calib != "dac"

    def _mvm_fold(self, x: Tensor, a: Tensor, w_scale: Tensor, alpha: Tensor | None, grad: bool) -> Tensor:
        """Exact when every conversion is exact: the DAC, then one digital op with the effective weight."""
        cacheable = not grad and self.programmed and not self.training and self.g_sigma is None
        if cacheable and self._w_eff_cache is not None:
            w_eff = self._w_eff_cache  # noise-free programmed chip: the same weight on every read
        else:
            w_eff = self._fold(a, w_scale, alpha)
            if cacheable:
                self._w_eff_cache = w_eff
        if not self._dac_quantized():
            return self._digital_op(x, w_eff, self.bias)
        levels = bits_levels(self.mapping.dac_bits)
        _, r_b = self._input_range(x, grad)
        if grad:
            xq = range_quantize(x, r_b, levels, learn_range=self.mapping.dac_range_mode == RangeMode.LEARNED)
        else:
            xq = (x * (levels / r_b)).clamp_(-levels, levels).round_().mul_(r_b / levels)
        return self._digital_op(xq, w_eff, self.bias)

    @torch.no_grad()
    def _mvm_nograd(self, x: Tensor, a: Tensor, w_scale: Tensor, alpha: Tensor | None) -> Tensor:
        """Inference: in-place ops on the partial sums; scalar gains folded into ``A``."""
        m = self.mapping
        bsz = x.shape[0]
        # DAC: analog input x_rep * u in [-1, 1]; digital value x ~= x_rep * u * x_full
        r, r_b = self._input_range(x, False)
        if self._dac_quantized():
            levels = bits_levels(m.dac_bits)
            x_rep = x * (levels / r_b)
            if not _per_sample(r):  # a per-sample abs-max range never clips
                x_rep.clamp_(-levels, levels)
            x_rep.round_()  # integer codes
            u: Any = 1.0 / levels
        else:
            x_rep, u = x, 1.0 / r
        x_dig, u_dig, x_full = x_rep, u, r
        n_planes, plane_coef = 1, None
        if m.bit_serial and self._dac_quantized():
            planes, pw = self._bit_planes(x_rep)  # (P, B, ...)
            n_planes, plane_coef = planes.shape[0], pw * u  # each plane applied at full scale (u = 1)
            x_rep = planes.reshape(n_planes * bsz, *x.shape[1:])
            u = 1.0
        adc_on = m.adc_bits > 0 and self._calib != "adc"
        levels_adc = bits_levels(m.adc_bits) if adc_on else 0
        adc_mult = levels_adc / (float(self.output_range.detach().abs()) + 1e-12) if adc_on else 1.0
        u_ps = _per_sample(u)
        pre = adc_mult if u_ps else float(u) * adc_mult  # scalar gains folded into the weights
        z, z5 = self._tiled_partial_sums(x_rep, a * pre, n_planes, bsz)  # z5: (P, B, T, S, N, *sp)
        if u_ps:
            z5.mul_(_ps(u, z5.dim(), lead=1))
        if self._calib == "adc":
            self._calib_samples.append(subsample(z5, _CALIB_MAX_ITEMS, self._calib_generator))
        if m.out_noise > 0:
            noise = gaussian_noise(z.shape, self._noise_generator(), device=z.device, dtype=z.dtype, fast=m.fast_noise)
            z.add_(noise, alpha=m.out_noise * adc_mult)
        if adc_on:
            z.clamp_(-levels_adc, levels_adc).round_()
        # digital: shift-and-add (planes, slices), tiles, w_scale, compensation, full scale, bias
        coef = self._coef(w_scale, alpha, plane_coef) * (1.0 / adc_mult)  # (P, T, S, N)
        n_sp = z5.dim() - 5
        if _per_sample(x_full):
            fac = coef.unsqueeze(1) * x_full.view(1, -1, 1, 1, 1)  # (P, B, T, S, N)
        else:
            fac = (coef * x_full).unsqueeze(1)  # (P, 1, T, S, N)
        fac = fac.view(*fac.shape, *([1] * n_sp))
        if n_planes * self.n_tiles * self.n_slices == 1:
            y = z5.reshape(bsz, self.n_out, *z5.shape[5:]).mul_(fac.reshape(fac.shape[1], self.n_out, *fac.shape[5:]))
        else:
            y = z5.mul_(fac).sum(dim=(0, 2, 3))  # (B, N, *sp)
        if m.pair == WeightPair.OFFSET:
            sx = self._tile_input_sums(x_dig)  # (B, T, *sp)
            off = torch.einsum("bt...,tn->bn...", sx, self._offset_coef(w_scale, alpha))
            y.add_(off.mul_(_ps(u_dig * x_full, off.dim())))
        if self.bias is not None:
            y.add_(self.bias.view(1, -1, *([1] * n_sp)))
        return y

    def _mvm_grad(self, x: Tensor, a: Tensor, w_scale: Tensor, alpha: Tensor | None) -> Tensor:
        """Training: the same chain with STE converters and learnable ranges; scalar gains are folded
        into ``A`` and the digital coefficients, so the activations see few elementwise passes."""
        m = self.mapping
        bsz = x.shape[0]
        r, r_b = self._input_range(x, True)
        dynamic = _per_sample(r)
        if self._dac_quantized():
            levels = bits_levels(m.dac_bits)
            if m.dac_range_mode == RangeMode.LEARNED:
                x_rep, u = range_quantize(x, r_b, levels, learn_range=True), 1.0 / r  # x units
            else:
                x_rep = range_quantize(x, r_b, levels, out="codes", clip=not dynamic)  # integer codes
                u = 1.0 / levels
        else:
            x_rep, u = (x / r_b, 1.0) if dynamic else (x, 1.0 / r)
        x_dig, u_dig = x_rep, u
        n_planes, plane_coef = 1, None
        if m.bit_serial and self._dac_quantized():
            levels = bits_levels(m.dac_bits)
            x_norm = x_rep * u  # (B, ...) in [-1, 1]
            planes, pw = self._bit_planes((x_norm.detach() * levels).round_())
            planes = planes + (x_norm - x_norm.detach()).unsqueeze(0)  # STE: sum_k 2^k / levels == 1
            n_planes, plane_coef = planes.shape[0], pw / levels
            x_rep, u = planes.reshape(n_planes * bsz, *x.shape[1:]), 1.0
        single = n_planes * self.n_tiles * self.n_slices == 1
        learn_adc = m.adc_range_mode == RangeMode.LEARNED
        fused = single and m.adc_bits > 0 and not learn_adc
        gain = 1.0
        if fused:  # fold the ADC gain into the weights: partial sums come out in ADC units
            levels_adc = bits_levels(m.adc_bits)
            r_adc = float(self.output_range.detach().abs()) + 1e-12
            gain = levels_adc / r_adc
        z_base, z5 = self._tiled_partial_sums(x_rep, a * (u * gain), n_planes, bsz)  # (P, B, T, S, N, *sp)
        n_sp = z5.dim() - 5
        noise = None
        if m.out_noise > 0:
            noise = gaussian_noise(
                z5.shape, self._noise_generator(), device=z5.device, dtype=z5.dtype, fast=m.fast_noise
            )
        if fused:  # digital factor per (sample, column): w_scale * alpha * full scale / ADC gain
            k = w_scale[0] if alpha is None else w_scale[0] * alpha  # (N,)
            if m.pair == WeightPair.OFFSET:
                k = k * 2.0
            f = (_ps(r, 2) * k.view(1, -1)) * (1.0 / gain)  # (B|1, N)
            f = f.view(*f.shape, *([1] * n_sp))
            # the op's own output (not a view of it): converted in place without an autograd rebase
            z = (
                z_base
                if z_base.shape == (bsz, self.n_out, *z5.shape[5:])
                else z5.reshape(bsz, self.n_out, *z5.shape[5:])
            )
            nz = noise.view(z.shape) if noise is not None else None
            y = adc_combine(z, nz, m.out_noise * gain, levels_adc, f, self.bias)
        else:
            if noise is not None:
                z5 = torch.add(z5, noise, alpha=m.out_noise)
            if m.adc_bits > 0:
                r_adc_t = (self.output_range if learn_adc else self.output_range.detach()).abs() + 1e-12
                z5 = range_quantize(z5, r_adc_t, bits_levels(m.adc_bits), learn_range=learn_adc)
            coef = self._coef(w_scale, alpha, plane_coef)  # (P, T, S, N)
            fac = coef.unsqueeze(1) * _ps(r, 5, lead=1)  # (P, B|1, T, S, N)
            fac = fac.view(*fac.shape, *([1] * n_sp))
            bias = self.bias.view(1, -1, *([1] * n_sp)) if self.bias is not None else None
            if single:
                z = z5.reshape(bsz, self.n_out, *z5.shape[5:])
                f = fac.reshape(fac.shape[1], self.n_out, *fac.shape[5:])
                y = torch.addcmul(bias, z, f) if bias is not None else z * f
            else:
                y = (z5 * fac).sum(dim=(0, 2, 3))  # (B, N, *sp)
                if bias is not None:
                    y = y + bias
        if m.pair == WeightPair.OFFSET:
            sx = self._tile_input_sums(x_dig)  # (B, T, *sp)
            off = torch.einsum("bt...,tn->bn...", sx, self._offset_coef(w_scale, alpha))
            y = y + off * _ps(u_dig * r, off.dim())
        return y

    # overridden by subclasses
    def _tiled_partial_sums(self, x_rep: Tensor, a: Tensor, n_planes: int, bsz: int) -> tuple[Tensor, Tensor]:
        """All partial sums: ``(z, z5)`` with ``z`` the op's output tensor and ``z5`` its view
        ``(P, B, T, S, N, *spatial)``."""
        raise NotImplementedError

    def _tile_input_sums(self, xn: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        m = self.mapping
        return (
            f"{self.n_in}x{self.ksz}->{self.n_out}, tiles={self.n_tiles}x{self.rows} rows, "
            f"slices={self.n_slices}, dac={m.dac_bits}b/{m.dac_range_mode.value}, "
            f"adc={m.adc_bits}b/{m.adc_range_mode.value}, programmed={self.programmed}, t={self.t_seconds:g}s"
        )

    def to_digital(self) -> nn.Module:  # overridden
        raise NotImplementedError


def _per_sample(v: Any) -> bool:
    return isinstance(v, Tensor) and v.dim() > 0


def _ps(v: Any, ndim: int, lead: int = 0) -> Any:
    """A per-sample ``(B,)`` factor viewed to broadcast over ``ndim`` dims with the batch at ``lead``."""
    if not _per_sample(v):
        return v
    return v.view(*([1] * lead), -1, *([1] * (ndim - lead - 1)))


class AnalogLinear(AnalogLayer):
    """``nn.Linear`` on analog tiles (inputs ``(..., in_features)``)."""

    kind = "linear"

    def __init__(self, linear: nn.Linear, mapping: MappingConfig, device: DeviceConfig) -> None:
        super().__init__(linear.weight, linear.bias, mapping, device)
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self._lead: tuple[int, ...] = ()

    def _prepare_input(self, x: Tensor) -> Tensor:
        self._lead = tuple(x.shape[:-1])
        return x.reshape(-1, x.shape[-1])

    def _finish_output(self, y: Tensor) -> Tensor:
        return y.reshape(*self._lead, self.out_features)

    def _tiled_partial_sums(self, x_rep: Tensor, a: Tensor, n_planes: int, bsz: int) -> tuple[Tensor, Tensor]:
        t, r, s, n = self.n_tiles, self.rows, self.n_slices, self.n_out
        pb = x_rep.shape[0]
        if self.n_in_pad > self.n_in:
            x_rep = F.pad(x_rep, (0, self.n_in_pad - self.n_in))
        a_l = a.permute(1, 2, 0, 3).reshape(t, r, s * n)  # (T, R, S*N)
        if t == 1:
            z = torch.matmul(x_rep, a_l[0])  # (PB, S*N)
        else:
            xt = x_rep.reshape(pb, t, r).transpose(0, 1)  # (T, PB, R)
            z = torch.bmm(xt, a_l)  # (T, PB, S*N)
        z5 = z.view(t, n_planes, bsz, s, n).permute(1, 2, 0, 3, 4)  # (P, B, T, S, N)
        return z, z5

    def _tile_input_sums(self, xn: Tensor) -> Tensor:
        if self.n_in_pad > self.n_in:
            xn = F.pad(xn, (0, self.n_in_pad - self.n_in))
        return xn.reshape(xn.shape[0], self.n_tiles, self.rows).sum(-1)  # (B, T)

    def to_digital(self) -> nn.Linear:
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        lin = lin.to(device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.weight)
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin


class _AnalogConvNd(AnalogLayer):
    """Shared code of the analog convolutions (``groups == 1``)."""

    _nd = 2

    def __init__(self, conv: nn.Conv1d | nn.Conv2d, mapping: MappingConfig, device: DeviceConfig) -> None:
        if conv.groups != 1:
            raise ConfigError(f"groups: {conv.groups} is not supported on analog tiles; allowed: 1")
        super().__init__(conv.weight, conv.bias, mapping, device)
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.kernel_size = tuple(conv.kernel_size)
        self.stride = tuple(conv.stride)
        self.dilation = tuple(conv.dilation)
        self.padding_mode = conv.padding_mode
        self.padding = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
        self._rev_pad = tuple(conv._reversed_padding_repeated_twice) if conv.padding_mode != "zeros" else ()
        self._conv = F.conv1d if self._nd == 1 else F.conv2d

    def _prepare_input(self, x: Tensor) -> Tensor:
        if self.padding_mode != "zeros":
            x = F.pad(x, self._rev_pad, mode=self.padding_mode)
        return x

    def _pad_arg(self) -> Any:
        return 0 if self.padding_mode != "zeros" else self.padding

    def _digital_op(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return self._conv(x, w, b, self.stride, self._pad_arg(), self.dilation)

    def _pad_channels(self, x: Tensor) -> Tensor:
        if self.n_in_pad > self.n_in:
            pad = [0, 0] * self._nd + [0, self.n_in_pad - self.n_in]
            x = F.pad(x, pad)
        return x

    def _route(self) -> ConvRoute:
        r = self.mapping.conv_route
        if r == ConvRoute.AUTO:
            return ConvRoute.GROUPED
        if r == ConvRoute.UNFOLD and (self._nd != 2 or isinstance(self._pad_arg(), str)):
            return ConvRoute.GROUPED
        return r

    def _tiled_partial_sums(self, x_rep: Tensor, a: Tensor, n_planes: int, bsz: int) -> tuple[Tensor, Tensor]:
        t, s, n = self.n_tiles, self.n_slices, self.n_out
        x_rep = self._pad_channels(x_rep)
        if self._route() == ConvRoute.UNFOLD:
            cols = F.unfold(x_rep, self.kernel_size, self.dilation, self._pad_arg(), self.stride)  # (PB, C*k, L)
            pb, _, nl = cols.shape
            a_u = a.permute(1, 0, 3, 2).reshape(t, s * n, self.rows)  # (T, S*N, R)
            z = torch.matmul(a_u, cols.view(pb, t, self.rows, nl))  # (PB, T, S*N, L)
            out_hw = _conv_out_size(x_rep.shape[2:], self.kernel_size, self.stride, self._pad_arg(), self.dilation)
            z5 = z.view(n_planes, bsz, t, s, n, *out_hw)
            return z, z5
        w = a.permute(1, 0, 3, 2).reshape(t * s * n, self.ch_per_tile, *self.kernel_size)  # (T*S*N, Cg, *k)
        z = self._conv(x_rep, w, None, self.stride, self._pad_arg(), self.dilation, t)  # (PB, T*S*N, *sp)
        z5 = z.view(n_planes, bsz, t, s, n, *z.shape[2:])
        return z, z5

    def _out_numel_per_sample(self, x: Tensor) -> int:
        pad = self._pad_arg()
        if pad == "same":
            return int(math.prod(x.shape[2:]))
        return int(math.prod(_conv_out_size(x.shape[2:], self.kernel_size, self.stride, pad, self.dilation)))

    def _tile_input_sums(self, xn: Tensor) -> Tensor:
        xn = self._pad_channels(xn)
        ones = torch.ones(self.n_tiles, self.ch_per_tile, *self.kernel_size, device=xn.device, dtype=xn.dtype)
        return self._conv(xn, ones, None, self.stride, self._pad_arg(), self.dilation, self.n_tiles)

    def to_digital(self) -> nn.Module:
        cls = nn.Conv1d if self._nd == 1 else nn.Conv2d
        conv = cls(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=self.bias is not None,
            padding_mode=self.padding_mode,
        ).to(device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.weight)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv


def _conv_out_size(
    size: torch.Size, kernel: tuple[int, ...], stride: tuple[int, ...], padding: Any, dilation: tuple[int, ...]
) -> tuple[int, ...]:
    if padding == "valid":
        padding = 0
    pad = padding if isinstance(padding, tuple) else (padding,) * len(kernel)
    return tuple(
        (size[i] + 2 * pad[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(len(kernel))
    )


class AnalogConv1d(_AnalogConvNd):
    """``nn.Conv1d`` (``groups == 1``) on analog tiles."""

    kind = "conv1d"
    _nd = 1


class AnalogConv2d(_AnalogConvNd):
    """``nn.Conv2d`` (``groups == 1``) on analog tiles."""

    kind = "conv2d"
    _nd = 2
