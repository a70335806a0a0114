"""Analog layers: ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` computed on simulated crossbars.

An analog layer is made from a digital layer by :meth:`AnalogLayer.from_digital` (what
:func:`cimkit.analog.convert` calls): it becomes an instance of a subclass of the digital layer's
own class (``AnalogLinear`` for ``nn.Linear``; ``AnalogQuantLinear`` for a quantized
``QuantLinear``, made once and cached), sharing its parameters and sub-modules, so the
``state_dict`` keeps the digital names, a quantized layer keeps its weight and activation
quantizers, and :meth:`~AnalogLayer.unwrap` gives the digital layer back. Weight-side transforms
are read through the digital layer's protocol: the crossbars are programmed with
``transformed_weight()`` (the quantized weight, when there is one) and, when the layer has a weight
grid (``weight_grid()``), each weight maps onto exactly the grid's levels.

One engine serves all three layer types. The weight matrix is tiled into ``(T, R, N)`` (row tiles,
rows per tile, outputs; :mod:`cimkit.analog.tiling`), becomes normalised conductances ``A`` of
shape ``(S, T, R, N)`` (``S`` weight slices; :mod:`cimkit.analog.cells`) and every forward computes
all per-tile, per-slice, per-input-bit partial sums in **one** batched op — a ``bmm`` over tiles for
linear layers, a grouped convolution (groups = tiles) or unfold + batched matmul for convolutions —
then the converter chain of :mod:`cimkit.analog.mvm`. The programmed chip (noise, faults, drift)
lives in the layer's ``chip`` (:mod:`cimkit.analog.chip`). Before ``program`` (and always in
training mode) the layer maps its current weights exactly, plus the hardware-aware-training noise
when enabled (``weight_noise``, set by :func:`cimkit.analog.set_hwa`).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cimkit.analog.cells import a_from_codes, device_codes
from cimkit.analog.chip import Chip
from cimkit.analog.devices import DeviceConfig
from cimkit.analog.inference_plan import programmed_linear
from cimkit.analog.mapping import ConvRoute, MappingConfig, RangeMode, WeightPair, WeightScaling, slice_coefficients
from cimkit.analog.mvm import effective_weight, mvm
from cimkit.analog.tiling import TileGeometry
from cimkit.analog.training_plan import trained_linear
from cimkit.analog.workspace import scratch
from cimkit.errors import ConfigError

__all__ = ["AnalogConv1d", "AnalogConv2d", "AnalogLayer", "AnalogLinear", "analog_class", "analog_layers"]

log = logging.getLogger(__name__)

# attributes an analog layer adds on top of its digital layer (removed again by unwrap)
_ANALOG_PARAMS = ("input_range", "output_range")
_ANALOG_BUFFERS = ("slice_coef",)
_ANALOG_MODULES = ("chip",)
_ANALOG_ATTRS = (
    "mapping", "device_cfg", "geometry", "weight_shape", "n_slices", "weight_noise", "hwa_generator", "_hwa_ws",
    "recorder", "calibrated", "_warned_uncalibrated", "route", "conversion_counter", "layer_name",
)  # fmt: skip


def _shallow_state(mod: nn.Module) -> dict[str, Any]:
    """A copy of ``mod.__dict__`` whose dicts/sets are new containers holding the same objects."""
    return {k: (copy.copy(v) if isinstance(v, (dict, set)) else v) for k, v in mod.__dict__.items()}


class AnalogLayer(nn.Module):
    """Mixin of the analog layers (``isinstance(m, AnalogLayer)``); see the module docstring.

    Extra state: ``mapping`` (:class:`MappingConfig`), ``device_cfg`` (:class:`DeviceConfig`),
    ``geometry`` (:class:`TileGeometry`), ``input_range`` / ``output_range`` (DAC / ADC ranges,
    parameters: learnable when the mapping says ``learned``), ``chip`` (the programmed state).
    """

    _source_cls: ClassVar[type[nn.Module]]
    kind: ClassVar[str] = ""

    # ------------------------------------------------------------------ construction and undo

    @classmethod
    def from_digital(
        cls, mod: nn.Module, mapping: MappingConfig, device: DeviceConfig, name: str = ""
    ) -> AnalogLayer:
        """The analog twin of the digital layer ``mod`` (sharing its parameters and sub-modules)."""
        if isinstance(mod, AnalogLayer):
            raise ConfigError(f"analog.convert: layer '{name}' is already analog")
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)) and mod.groups != 1:
            raise ConfigError(f"groups: {mod.groups} is not supported on analog tiles (layer '{name}'); allowed: 1")
        acls = analog_class(type(mod))
        obj = acls.__new__(acls)
        obj.__dict__.update(_shallow_state(mod))
        obj._analog_init(mapping, device, name)
        return obj

    def _analog_init(self, mapping: MappingConfig, device: DeviceConfig, name: str) -> None:
        w = self.source_weight()
        if not bool(torch.isfinite(w.detach()).all()):
            raise ConfigError(f"analog.convert: layer '{name or type(self).__name__}' has NaN or infinite "
                              f"weights; they cannot be programmed onto crossbars")  # fmt: skip
        self.layer_name = name
        self.mapping = mapping
        self.device_cfg = device
        self.geometry = TileGeometry.of(w.shape, mapping.tile_rows, mapping.tile_cols, name or type(self).__name__)
        self.weight_shape = tuple(w.shape)
        dev, dt = w.device, w.dtype
        self.input_range = nn.Parameter(torch.tensor(float(mapping.dac_range), device=dev, dtype=dt),
                                        requires_grad=mapping.dac_range_mode == RangeMode.LEARNED)  # fmt: skip
        self.output_range = nn.Parameter(torch.tensor(float(mapping.adc_range), device=dev, dtype=dt),
                                         requires_grad=mapping.adc_range_mode == RangeMode.LEARNED)  # fmt: skip
        coef = slice_coefficients(mapping.n_slices, mapping.slice_bits, dev).to(dt)
        self.register_buffer("slice_coef", coef, persistent=False)
        self.n_slices = int(self.slice_coef.numel())
        self.chip = Chip()
        self.weight_noise = None  # a cimkit.analog.hwa weight-noise strategy (hardware-aware training)
        self.hwa_generator: torch.Generator | None = None
        self._hwa_ws: dict[str, Tensor] = {}
        self.recorder = None  # a cimkit.analog.calibration.RangeRecorder during calibration
        self.calibrated = False
        self._warned_uncalibrated = False
        self.route = "auto"  # "auto" | "fold" | "tiled": tests and benchmarks may force a route
        self.conversion_counter: dict[str, int] | None = None

    def unwrap(self) -> nn.Module:
        """The digital layer this analog layer was made from (same parameters and sub-modules)."""
        src = self._source_cls.__new__(self._source_cls)
        state = _shallow_state(self)
        for k in _ANALOG_PARAMS:
            state["_parameters"].pop(k, None)
        for k in _ANALOG_BUFFERS:
            state["_buffers"].pop(k, None)
            state.get("_non_persistent_buffers_set", set()).discard(k)
        for k in _ANALOG_MODULES:
            state["_modules"].pop(k, None)
        for k in _ANALOG_ATTRS:
            state.pop(k, None)
        src.__dict__.update(state)
        return src

    def to_digital(self) -> nn.Module:
        """Alias of :meth:`unwrap`."""
        return self.unwrap()

    def set_mapping(self, mapping: MappingConfig) -> None:
        """Use another mapping (same tile geometry required); forgets the programmed chip."""
        geom = TileGeometry.of(self.weight_shape, mapping.tile_rows, mapping.tile_cols, self.layer_name)
        self.mapping = mapping
        self.geometry = geom
        self.slice_coef = slice_coefficients(mapping.n_slices, mapping.slice_bits, self.slice_coef.device).to(
            self.slice_coef.dtype
        )
        self.n_slices = int(self.slice_coef.numel())
        self.input_range.requires_grad_(mapping.dac_range_mode == RangeMode.LEARNED)
        self.output_range.requires_grad_(mapping.adc_range_mode == RangeMode.LEARNED)
        self.chip.clear()

    # ------------------------------------------------------------------ the digital layer's weight

    def source_weight(self) -> Tensor:
        """The weight the digital layer computes with (after its weight-side transforms)."""
        fn = getattr(self, "transformed_weight", None)
        return fn() if fn is not None else self.weight

    def _grid(self) -> tuple[Tensor, int] | None:
        fn = getattr(self, "weight_grid", None)
        return fn() if fn is not None else None

    def weight_scale(self, wt: Tensor) -> Tensor:
        """``w_max`` per (tile, column), shape ``(T, N)``, for the mapping's scaling (never 0).

        With a weight grid (a quantized layer) ``w_max`` is the grid's full scale (``step · L``, with
        ``L`` the grid's largest code, or ``2^(n·b) - 1`` when ``n`` slices of ``b`` bits hold more),
        so every weight maps onto exactly one of the grid's levels; otherwise it is the largest
        ``|w|`` of the group."""
        g = self.geometry
        grid = self._grid()
        if grid is None:
            col = wt.detach().abs().amax(dim=1)  # (T, N)
        else:
            step, levels = grid
            m = self.mapping
            if m.slice_bits > 0 and 2 ** (m.n_slices * m.slice_bits) - 1 >= levels:
                levels = 2 ** (m.n_slices * m.slice_bits) - 1
            full = step.detach().to(wt.device, wt.dtype).reshape(-1).expand(g.n_out) * float(levels)  # (N,)
            col = full.unsqueeze(0).expand(g.n_tiles, g.n_out)  # (T, N)
        sc = self.mapping.scaling
        if sc == WeightScaling.COLUMN:
            s = col
        elif sc == WeightScaling.TILE:
            s = g.column_blocks(col).amax(-1, keepdim=True).expand(-1, -1, g.tile_cols)
            s = s.reshape(g.n_tiles, -1)[:, : g.n_out]
        else:
            s = col.amax().expand(g.n_tiles, g.n_out)
        return s.clamp(min=1e-30)  # an all-zero column maps to zero conductances either way

    def codes(self, u: Tensor) -> Tensor:
        """Normalised weights ``u`` (T, R, N) in [-1, 1] -> device codes ``(S, D, T, R, N)`` in [0, 1]."""
        m = self.mapping
        return device_codes(u, m.pair, m.n_slices, m.slice_bits, self.geometry.row_mask(u.device))

    # ------------------------------------------------------------------ programming and drift

    @property
    def programmed(self) -> bool:
        return self.chip.programmed

    @property
    def t_seconds(self) -> float:
        return self.chip.t_seconds

    @property
    def g_prog(self) -> Tensor | None:
        return self.chip.g_prog

    def tile_occupancy(self, wt: Tensor | None = None) -> Tensor:
        """``(T, n_blk)`` bool: which physical arrays (row tile x column block) hold a nonzero weight."""
        g = self.geometry
        if wt is None:
            wt = g.to_tiles(self.source_weight().detach())
        nz = wt.detach().ne(0).any(dim=1)  # (T, N)
        return g.column_blocks(nz.to(torch.uint8)).amax(-1).bool()  # (T, n_blk)

    @torch.no_grad()
    def program(self, seed: int) -> None:
        """Program this layer's crossbars once from its current weights (reproducible from ``seed``).

        Samples programming noise, device gains, stuck-at faults and drift draws; arrays whose
        weights are all zero are left unprogrammed. Then sets the time to 0 s and takes the
        drift-compensation reference read.
        """
        dev, g = self.device_cfg, self.geometry
        wt = g.to_tiles(self.source_weight().detach())  # (T, R, N)
        w_scale = self.weight_scale(wt)
        v = self.codes(wt / w_scale.unsqueeze(1))  # (S, D, T, R, N)
        occ = self.tile_occupancy(wt)  # (T, n_blk)
        on = occ.repeat_interleave(g.tile_cols, dim=1)[:, : g.n_out]  # (T, N)
        self.chip.program(dev.g_min + v * dev.g_range, w_scale, dev, seed, tile_on=on)
        self.set_time(0.0)

    @torch.no_grad()
    def set_time(self, t_seconds: float, compensation: Any = None) -> None:
        """Set the time since programming (s): drift, read-noise level, IR drop, drift compensation
        (``compensation`` overrides the mapping's for this time only)."""
        self.chip.set_time(t_seconds, self.mapping, self.device_cfg, self.geometry, self.slice_coef, compensation)

    # ------------------------------------------------------------------ analog weights for a forward

    def _weights_from_parameters(self) -> tuple[Tensor, Tensor]:
        """``A`` (S, T, R, N) and ``w_scale`` (T, N) from the current weights (differentiable)."""
        g = self.geometry
        wt = g.to_tiles(self.source_weight())
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
                a_q = a_from_codes(v, self.mapping.pair, self.device_cfg)  # (S, T, R, N)
            a = a_q + (lin - lin.detach()).unsqueeze(0)  # STE: d a_s / d u = d lin / d u
        else:
            a = lin.unsqueeze(0)
        if self.training and self.weight_noise is not None:
            with torch.no_grad():
                delta = self.weight_noise(self, a.detach(), v, u.detach()).sub_(a.detach())
            a = a + delta  # the noisy weights forward, the gradient straight to the clean ones
        return a, w_scale

    def analog_weights(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """What this forward computes with: ``(A, w_scale, alpha)``; a fresh read when programmed."""
        if self.chip.programmed and not self.training:
            return self.chip.read(), self.chip.w_scale, self.chip.alpha
        a, w_scale = self._weights_from_parameters()
        return a, w_scale, None

    def effective_weight(self) -> Tensor:
        """The digital weight equivalent to one read (original shape), for inspection and the fold route."""
        a, w_scale, alpha = self.analog_weights()
        return effective_weight(self, a, w_scale, alpha)

    # ------------------------------------------------------------------ the forward

    def forward(self, x: Tensor) -> Tensor:
        fn = getattr(type(self), "transformed_input", None)  # a method of the source layer's class, if any
        if fn is not None:
            x = fn(self, x)  # e.g. the digital layer's activation quantizer
        x, lead = self._prepare_input(x)
        y = None
        if self.kind == "linear":  # few Python steps, the same arithmetic
            y = programmed_linear(self, x)
            if y is None:
                y = trained_linear(self, x)
        if y is None:
            a, w_scale, alpha = self.analog_weights()
            y = mvm(self, x, a, w_scale, alpha)
        return self._finish_output(y, lead)

    def _noise_generator(self) -> torch.Generator:
        if self.chip.programmed and not self.training and self.chip.read_generator is not None:
            return self.chip.read_generator
        if self.hwa_generator is None:
            self.hwa_generator = torch.Generator(device=self.slice_coef.device).manual_seed(0)
        return self.hwa_generator

    def _warn_uncalibrated(self) -> None:
        if not self._warned_uncalibrated:
            log.warning(
                "analog layer %s uses calibrated ranges but was never calibrated; using the configured "
                "initial ranges (call cimkit.analog.calibrate(model, batches))",
                self.layer_name or type(self).__name__,
            )
            self._warned_uncalibrated = True

    def _count_conversions(self, z5: Tensor, n_planes: int) -> None:
        """Tally what this forward converted, when a counter is attached (``conversion_counter``)."""
        c = self.conversion_counter
        if c is None:
            return
        c["adc"] = c.get("adc", 0) + int(z5.numel())
        c["forwards"] = c.get("forwards", 0) + 1
        c["planes"] = n_planes

    # overridden by the layer-type mixins
    def _prepare_input(self, x: Tensor) -> tuple[Tensor, Any]:
        return x, None

    def _finish_output(self, y: Tensor, lead: Any) -> Tensor:
        return y

    def _digital_op(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return F.linear(x, w, b)

    def _out_numel_per_sample(self, x: Tensor) -> int:
        return 1

    def _tiled_partial_sums(self, x_rep: Tensor, a: Tensor, n_planes: int, bsz: int) -> tuple[Tensor, Tensor]:
        """All partial sums: ``(z, z5)`` with ``z`` the op's output tensor and ``z5`` its view
        ``(P, B, T, S, N, *spatial)``."""
        raise NotImplementedError

    def _tile_input_sums(self, xn: Tensor) -> Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ compat accessors (geometry)

    @property
    def n_tiles(self) -> int:
        return self.geometry.n_tiles

    @property
    def rows(self) -> int:
        return self.geometry.rows

    @property
    def n_out(self) -> int:
        return self.geometry.n_out

    @property
    def n_in(self) -> int:
        return self.geometry.n_in

    @property
    def ksz(self) -> int:
        return self.geometry.ksz

    def extra_repr(self) -> str:
        m, g = self.mapping, self.geometry
        base = self._source_cls.extra_repr(self)
        return (
            f"{base}; analog: {g.n_in}x{g.ksz}->{g.n_out}, tiles={g.n_tiles}x{g.rows} rows, "
            f"slices={self.n_slices}, dac={m.dac_bits}b/{m.dac_range_mode.value}, "
            f"adc={m.adc_bits}b/{m.adc_range_mode.value}, programmed={self.programmed}, t={self.t_seconds:g}s"
        )


class _LinearAnalog(AnalogLayer):
    """``nn.Linear`` on analog tiles (inputs ``(..., in_features)``)."""

    kind = "linear"

    def _prepare_input(self, x: Tensor) -> tuple[Tensor, Any]:
        return x.reshape(-1, x.shape[-1]), tuple(x.shape[:-1])

    def _finish_output(self, y: Tensor, lead: Any) -> Tensor:
        return y.reshape(*lead, self.geometry.n_out)

    def _tiled_partial_sums(self, x_rep: Tensor, a: Tensor, n_planes: int, bsz: int) -> tuple[Tensor, Tensor]:
        g = self.geometry
        t, r, s, n = g.n_tiles, g.rows, self.n_slices, g.n_out
        pb = x_rep.shape[0]
        if g.n_in_pad > g.n_in:
            x_rep = F.pad(x_rep, (0, g.n_in_pad - g.n_in))
        a_l = a.permute(1, 2, 0, 3).reshape(t, r, s * n)  # (T, R, S*N)
        if t == 1:
            z = torch.matmul(x_rep, a_l[0])  # (PB, S*N)
        else:
            xt = x_rep.reshape(pb, t, r).transpose(0, 1)  # (T, PB, R)
            # per-tile sums are a temporary (summed over tiles by the caller): scratch memory unless
            # a calibration recorder may keep a view of them
            buf = scratch("tiles", (t, pb, s * n), x_rep.dtype, x_rep.device) if self.recorder is None else None
            z = torch.bmm(xt, a_l) if buf is None else torch.bmm(xt, a_l, out=buf)  # (T, PB, S*N)
        z5 = z.view(t, n_planes, bsz, s, n).permute(1, 2, 0, 3, 4)  # (P, B, T, S, N)
        return z, z5

    def _tile_input_sums(self, xn: Tensor) -> Tensor:
        g = self.geometry
        if g.n_in_pad > g.n_in:
            xn = F.pad(xn, (0, g.n_in_pad - g.n_in))
        return xn.reshape(xn.shape[0], g.n_tiles, g.rows).sum(-1)  # (B, T)


class _ConvAnalog(AnalogLayer):
    """Shared code of the analog convolutions (``groups == 1``)."""

    _nd = 2

    def _conv_fn(self) -> Any:
        return F.conv1d if self._nd == 1 else F.conv2d

    def _prepare_input(self, x: Tensor) -> tuple[Tensor, Any]:
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
        return x, None

    def _pad_arg(self) -> Any:
        return 0 if self.padding_mode != "zeros" else self.padding

    def _digital_op(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        return self._conv_fn()(x, w, b, self.stride, self._pad_arg(), self.dilation)

    def _pad_channels(self, x: Tensor) -> Tensor:
        g = self.geometry
        if g.n_in_pad > g.n_in:
            x = F.pad(x, [0, 0] * self._nd + [0, g.n_in_pad - g.n_in])
        return x

    def _route(self) -> ConvRoute:
        r = self.mapping.conv_route
        if r == ConvRoute.AUTO:
            return ConvRoute.GROUPED
        if r == ConvRoute.UNFOLD and (self._nd != 2 or isinstance(self._pad_arg(), str)):
            return ConvRoute.GROUPED
        return r

    def _tiled_partial_sums(self, x_rep: Tensor, a: Tensor, n_planes: int, bsz: int) -> tuple[Tensor, Tensor]:
        g = self.geometry
        t, s, n = g.n_tiles, self.n_slices, g.n_out
        x_rep = self._pad_channels(x_rep)
        if self._route() == ConvRoute.UNFOLD:
            cols = F.unfold(x_rep, self.kernel_size, self.dilation, self._pad_arg(), self.stride)  # (PB, C*k, L)
            pb, _, nl = cols.shape
            a_u = a.permute(1, 0, 3, 2).reshape(t, s * n, g.rows)  # (T, S*N, R)
            z = torch.matmul(a_u, cols.view(pb, t, g.rows, nl))  # (PB, T, S*N, L)
            out_hw = conv_out_size(x_rep.shape[2:], self.kernel_size, self.stride, self._pad_arg(), self.dilation)
            return z, z.view(n_planes, bsz, t, s, n, *out_hw)
        w = a.permute(1, 0, 3, 2).reshape(t * s * n, g.ch_per_tile, *self.kernel_size)  # (T*S*N, Cg, *k)
        z = self._conv_fn()(x_rep, w, None, self.stride, self._pad_arg(), self.dilation, t)  # (PB, T*S*N, *sp)
        return z, z.view(n_planes, bsz, t, s, n, *z.shape[2:])

    def _out_numel_per_sample(self, x: Tensor) -> int:
        pad = self._pad_arg()
        if pad == "same":
            return int(math.prod(x.shape[2:]))
        return int(math.prod(conv_out_size(x.shape[2:], self.kernel_size, self.stride, pad, self.dilation)))

    def _tile_input_sums(self, xn: Tensor) -> Tensor:
        g = self.geometry
        xn = self._pad_channels(xn)
        ones = torch.ones(g.n_tiles, g.ch_per_tile, *self.kernel_size, device=xn.device, dtype=xn.dtype)
        return self._conv_fn()(xn, ones, None, self.stride, self._pad_arg(), self.dilation, g.n_tiles)


class _Conv1dAnalog(_ConvAnalog):
    kind = "conv1d"
    _nd = 1


class _Conv2dAnalog(_ConvAnalog):
    kind = "conv2d"
    _nd = 2


def conv_out_size(
    size: torch.Size, kernel: tuple[int, ...], stride: tuple[int, ...], padding: Any, dilation: tuple[int, ...]
) -> tuple[int, ...]:
    """Spatial output size of a convolution."""
    if padding == "valid":
        padding = 0
    pad = padding if isinstance(padding, tuple) else (padding,) * len(kernel)
    return tuple(
        (size[i] + 2 * pad[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(len(kernel))
    )


_CLASSES: dict[type[nn.Module], type[AnalogLayer]] = {}


def analog_class(src: type[nn.Module]) -> type[AnalogLayer]:
    """The analog class for digital layer class ``src`` (made once and cached): a subclass of the
    layer-type mixin and of ``src`` itself."""
    if src in _CLASSES:
        return _CLASSES[src]
    if issubclass(src, AnalogLayer):
        raise ConfigError(f"{src.__name__} is already analog")
    if issubclass(src, nn.Linear):
        mixin: type[AnalogLayer] = _LinearAnalog
    elif issubclass(src, nn.Conv2d):
        mixin = _Conv2dAnalog
    elif issubclass(src, nn.Conv1d):
        mixin = _Conv1dAnalog
    else:
        raise ConfigError(f"analog.convert: {src.__name__} is not an nn.Linear / nn.Conv1d / nn.Conv2d layer")
    cls = type(f"Analog{src.__name__}", (mixin, src), {"_source_cls": src, "__module__": __name__})
    _CLASSES[src] = cls
    return cls


AnalogLinear = analog_class(nn.Linear)
AnalogConv1d = analog_class(nn.Conv1d)
AnalogConv2d = analog_class(nn.Conv2d)


def analog_layers(model: nn.Module) -> Iterator[tuple[str, AnalogLayer]]:
    """``(qualified name, layer)`` for every analog layer in ``model``."""
    for name, mod in model.named_modules():
        if isinstance(mod, AnalogLayer):
            yield name, mod
