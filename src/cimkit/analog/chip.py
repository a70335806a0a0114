"""One programmed chip of a layer: conductances fixed by ``program``, drifted by ``set_time``, read
with fresh read noise on every forward.

Held by every analog layer as its ``chip`` submodule (non-persistent buffers: a chip is reproducible
from its seed and is not part of the ``state_dict``). Times are seconds since programming
(:mod:`cimkit.analog.devices`); conductances are µS.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cimkit import native
from cimkit.analog.cells import a_from_g, compensation_factor, readout
from cimkit.analog.devices import DeviceConfig, DeviceState, devices_at, ir_drop_factor, program_devices
from cimkit.analog.mapping import Compensation, MappingConfig, WeightPair
from cimkit.analog.periphery import gaussian_noise
from cimkit.analog.tiling import TileGeometry
from cimkit.errors import ConfigError

__all__ = ["Chip", "ir_factors"]

_STATE = ("g_prog", "g_target", "drift_state", "g_mean", "g_sigma", "w_scale", "ref_readout", "alpha", "tile_on")


def ir_factors(g: Tensor, geom: TileGeometry, dev: DeviceConfig) -> Tensor:
    """IR-drop factors for conductances ``(S, D, T, R, N)``: arrays of ``R`` rows x ``tile_cols`` columns."""
    blocks = geom.column_blocks(g).transpose(-3, -2)  # (S, D, T, n_blk, R, cols)
    f = ir_drop_factor(blocks, dev.r_wire).transpose(-3, -2)  # (S, D, T, R, n_blk, cols)
    return f.reshape(*g.shape[:-1], -1)[..., : geom.n_out]


class Chip(nn.Module):
    """Programmed state of one layer's crossbars (see the module docstring).

    ``program(g_target, w_scale, ...)`` draws programming noise, device gains, stuck-at faults and
    drift parameters once; ``set_time(t, compensation)`` evaluates drift, the read-noise level, IR
    drop and the drift-compensation factor ``alpha`` at ``t`` (the compensation mode is the call's,
    not written anywhere else); ``read()`` returns one read ``A`` (S, T, R, N) with fresh noise.
    """

    def __init__(self) -> None:
        super().__init__()
        for name in _STATE:
            self.register_buffer(name, None, persistent=False)
        self.t_seconds: float = 0.0
        self.compensation: Compensation = Compensation.NONE
        self.read_generator: torch.Generator | None = None
        self.fast_noise = True
        self._a_cache: Tensor | None = None
        self.w_eff_cache: Tensor | None = None

    @property
    def programmed(self) -> bool:
        return self.g_prog is not None

    def clear(self) -> None:
        """Forget the programmed chip."""
        for name in _STATE:
            setattr(self, name, None)
        self.read_generator = None
        self._a_cache = None
        self.w_eff_cache = None

    @torch.no_grad()
    def program(self, g_target: Tensor, w_scale: Tensor, dev: DeviceConfig, seed: int,
                tile_on: Tensor | None = None) -> None:  # fmt: skip
        """Program target conductances ``g_target`` (S, D, T, R, N) µS once, reproducibly from ``seed``.
        ``tile_on`` (T, N) marks the (row tile, column) groups that hold any nonzero weight; the
        others are left unprogrammed: they hold exactly their zero-weight target (``g_min`` for a
        differential pair, the mid level of the offset mapping, so the digital offset cancels), with
        no programming or read noise, drift or IR drop, and contribute exactly zero."""
        gen = torch.Generator(device=g_target.device).manual_seed(int(seed) & (2**63 - 1))
        state = program_devices(g_target, dev, gen)
        g_prog = state.g_prog
        if tile_on is not None and not bool(tile_on.all()):
            on = tile_on.view(1, 1, tile_on.shape[0], 1, tile_on.shape[1])  # (1, 1, T, 1, N)
            g_prog = torch.where(on, g_prog, g_target.to(g_prog.dtype))
        self.g_prog = g_prog
        self.g_target = state.g_target if state.drift is not None else None
        self.drift_state = state.drift
        self.w_scale = w_scale
        self.tile_on = tile_on
        read_seed = int(torch.randint(0, 2**62, (1,), generator=gen).item())
        self.read_generator = torch.Generator(device=g_target.device).manual_seed(read_seed)
        self.ref_readout = None

    def _device_state(self) -> DeviceState:
        g_target = self.g_target if self.g_target is not None else self.g_prog
        return DeviceState(g_target=g_target, g_prog=self.g_prog, drift=self.drift_state, stuck=None)

    @torch.no_grad()
    def set_time(self, t_seconds: float, mapping: MappingConfig, dev: DeviceConfig, geom: TileGeometry,
                 slice_coef: Tensor, compensation: Compensation | None = None) -> None:  # fmt: skip
        """Drift to ``t_seconds`` after programming (the first call takes the compensation's reference
        read); ``compensation`` (default: the mapping's) is used for this time only."""
        if not self.programmed:
            raise ConfigError("drift: the layer is not programmed; call cimkit.analog.program(model, seed) first")
        g_mean, sigma = devices_at(self._device_state(), dev, float(t_seconds))
        off = None
        if self.tile_on is not None and not bool(self.tile_on.all()):
            off = ~self.tile_on.view(1, 1, self.tile_on.shape[0], 1, self.tile_on.shape[1])
            g_mean = torch.where(off, self.g_prog, g_mean)  # its exact zero-weight target, undrifted
            sigma = sigma.masked_fill(off, 0.0)  # an unprogrammed array is never read
        if dev.r_wire > 0:
            f = ir_factors(g_mean, geom, dev)
            if off is not None:
                f = f.masked_fill(off, 1.0)
            g_mean = g_mean * f
            sigma = sigma * f
        self.g_mean = g_mean
        self.g_sigma = sigma if bool((sigma > 0).any()) else None
        self.t_seconds = float(t_seconds)
        self.fast_noise = mapping.fast_noise
        self._a_cache = None
        self.w_eff_cache = None
        self.compensation = mapping.compensation if compensation is None else Compensation(compensation)
        self._pair, self._dev = mapping.pair, dev
        cur = readout(self.read(), slice_coef)
        if self.ref_readout is None:
            self.ref_readout = cur
        self.alpha = compensation_factor(self.ref_readout, cur, self.compensation, geom.n_out)

    def read(self) -> Tensor:
        """One read of the programmed crossbars: ``A`` (S, T, R, N) with fresh read noise."""
        pair: WeightPair = self._pair
        if self.g_sigma is None:
            if self._a_cache is None:
                self._a_cache = a_from_g(self.g_mean, pair, self._dev)
            return self._a_cache
        noise = gaussian_noise(self.g_mean.shape, self.read_generator, device=self.g_mean.device,
                               dtype=self.g_mean.dtype, fast=self.fast_noise)  # fmt: skip
        if native.usable(self.g_mean, self.g_sigma, noise):  # one pass, the same bits as the three ops below
            return native.read_pairs(self.g_mean, self.g_sigma, noise, 1.0 / self._dev.g_range)
        g = torch.addcmul(self.g_mean, self.g_sigma, noise).clamp_(min=0.0)
        return a_from_g(g, pair, self._dev)

    def extra_repr(self) -> str:
        return f"programmed={self.programmed}, t={self.t_seconds:g}s, compensation={self.compensation.value}"
