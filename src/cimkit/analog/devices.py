"""Memory-device models for analog crossbars: presets with citations and pure functions.

Conventions (see also ``PHYSICS.md``):

* **Units.** Conductances are in µS inside this module; times in seconds; wire resistance in Ω.
* **Time origin.** ``t`` is the time since programming finished, ``t >= 0``. PCM drift follows
  Joshi et al. 2020 written with aihwkit's origin: ``g(t) = g_prog * ((t + t0) / t0) ** (-nu)``, so
  ``t = 0`` is "just programmed" (factor 1) and the factor is <= 1 for every ``t >= 0``. The
  accumulated 1/f read noise is evaluated at ``t + t0`` as well (aihwkit's ``PCMLikeNoiseModel``).
* **Where noise is sampled.** Programming noise, device-to-device gain, stuck-at faults, drift
  exponents and RRAM relaxation draws: once per :func:`program_devices` call (per chip / seed).
  Read noise: per read (the analog layers draw it on every forward).
* **Clamping.** Conductances are clamped at ``>= 0`` after every noise step, as the cited models do
  (no upper clamp: the PCM and RRAM fits do not have one).

Device presets live in :data:`DEVICES`; every number is a :class:`DeviceConfig` field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from cimkit import native
from cimkit.analog.periphery import gaussian_noise
from cimkit.config import Config, check_range
from cimkit.errors import ConfigError
from cimkit.registry import Registry

__all__ = [
    "DEVICES",
    "DeviceConfig",
    "DeviceState",
    "DriftModel",
    "device_preset",
    "devices_at",
    "drift_exponents",
    "drift_factor",
    "ir_drop_factor",
    "program_conductance",
    "program_devices",
    "programming_noise_std",
    "quantize_levels",
    "read_noise_std",
    "relaxation_std",
    "sample_read",
    "sample_stuck_at",
]

_G_REL_MIN = 1e-7  # aihwkit's _ZERO_CLIP: floor of g/g_max inside the log of the drift fit


class DriftModel(str, Enum):
    """How programmed conductances change with time."""

    NONE = "none"
    POWER_LAW = "power_law"  # PCM: g * ((t + t0)/t0)^-nu, nu per device
    RELAXATION = "relaxation"  # RRAM: random walk away from the target, std fitted at a few times


@dataclass
class DeviceConfig(Config):
    """One memory device: conductance range, programming/drift/read statistics, non-idealities.

    All conductances in µS, times in seconds, ``r_wire`` in Ω. The defaults are the PCM model of
    Nandakumar et al. ICECS 2019 / Joshi et al. Nat. Commun. 2020 (preset ``pcm``).

    * ``prog_coeffs``: programming-noise std ``sigma = sum_i c_i (g/g_max)^i`` in µS, fitted at
      ``g_max = prog_coeffs_g_ref``; it is scaled by ``g_max / prog_coeffs_g_ref`` and ``prog_noise_scale``.
    * ``nu_*``: PCM drift exponent ``nu ~ |N(mu, sigma)|`` with
      ``mu = clip(nu_mu_slope * ln(g/g_max) + nu_mu_offset, nu_mu_min, nu_mu_max)`` and the same
      form for ``sigma`` (``nu_std_*``), scaled by ``drift_scale``.
    * ``read_q_*``: PCM accumulated 1/f read noise ``sigma_read = g_drift * Q_s * sqrt(ln((t + t0 +
      t_read) / (2 t_read)))`` with ``Q_s = min(read_q_coeff / max((g_prog/g_max)^read_q_exp, 1e-3),
      read_q_max)``, scaled by ``read_noise_scale``; ``read_noise_std`` adds white read noise (µS).
    * ``relax_times`` / ``relax_coeffs``: RRAM total deviation-from-target std polynomials fitted at
      those times (``prog_coeffs`` holds the fit at ``prog_time``); in between the std is
      interpolated linearly in ``ln t``, beyond the last time it is held.
    * ``n_levels``: programmable levels between ``g_min`` and ``g_max`` (0 = continuous).
    * ``d2d_std``: relative std of a per-device gain error (device-to-device variation).
    * ``p_stuck_min`` / ``p_stuck_max``: stuck-at-fault rates at ``g_min`` (SA0, high resistance)
      and ``g_max`` (SA1, low resistance); stuck devices neither program nor drift.
    * ``r_wire``: wire resistance between neighbouring cells (Ω), for :func:`ir_drop_factor`.
    """

    drift_model: DriftModel = DriftModel.POWER_LAW
    g_max: float = 25.0
    g_min: float = 0.0
    n_levels: int = 0
    prog_coeffs: tuple[float, ...] = (0.26348, 1.9650, -1.1731)
    prog_coeffs_g_ref: float = 25.0
    prog_noise_scale: float = 1.0
    prog_time: float = 1.0
    d2d_std: float = 0.0
    p_stuck_min: float = 0.0
    p_stuck_max: float = 0.0
    t0: float = 20.0
    nu_mu_slope: float = -0.0155
    nu_mu_offset: float = 0.0244
    nu_mu_min: float = 0.049
    nu_mu_max: float = 0.1
    nu_std_slope: float = -0.0125
    nu_std_offset: float = -0.0059
    nu_std_min: float = 0.008
    nu_std_max: float = 0.045
    drift_scale: float = 1.0
    read_q_coeff: float = 0.0088
    read_q_exp: float = 0.65
    read_q_max: float = 0.2
    t_read: float = 250e-9
    read_noise_scale: float = 1.0
    read_noise_std: float = 0.0
    relax_times: tuple[float, ...] = ()
    relax_coeffs: tuple[tuple[float, ...], ...] = ()
    r_wire: float = 0.0

    def __post_init__(self) -> None:
        check_range("g_max", self.g_max, 0.0, lo_open=True)
        check_range("g_min", self.g_min, 0.0, self.g_max, hi_open=True)
        check_range("n_levels", self.n_levels, 0, 1 << 20)
        if self.n_levels == 1:
            raise ConfigError("n_levels: 1 is not allowed; allowed: 0 (continuous) or >= 2")
        if not self.prog_coeffs:
            raise ConfigError("prog_coeffs: must hold at least one coefficient (use [0.0] for none)")
        check_range("prog_coeffs_g_ref", self.prog_coeffs_g_ref, 0.0, lo_open=True)
        for name in ("prog_noise_scale", "d2d_std", "drift_scale", "read_noise_scale", "read_noise_std"):
            check_range(name, getattr(self, name), 0.0)
        check_range("prog_time", self.prog_time, 0.0, lo_open=True)
        check_range("p_stuck_min", self.p_stuck_min, 0.0, 1.0)
        check_range("p_stuck_max", self.p_stuck_max, 0.0, 1.0)
        if self.p_stuck_min + self.p_stuck_max > 1.0:
            raise ConfigError(
                f"p_stuck_min + p_stuck_max: {self.p_stuck_min + self.p_stuck_max} is out of range; allowed: [0, 1]"
            )
        check_range("t0", self.t0, 0.0, lo_open=True)
        check_range("t_read", self.t_read, 0.0, lo_open=True)
        check_range("read_q_coeff", self.read_q_coeff, 0.0)
        check_range("read_q_max", self.read_q_max, 0.0)
        check_range("nu_mu_min", self.nu_mu_min, 0.0, self.nu_mu_max)
        check_range("nu_std_min", self.nu_std_min, 0.0, self.nu_std_max)
        check_range("r_wire", self.r_wire, 0.0)
        if len(self.relax_times) != len(self.relax_coeffs):
            raise ConfigError(
                f"relax_coeffs: {len(self.relax_coeffs)} polynomials for {len(self.relax_times)} "
                "relax_times; allowed: one polynomial per time"
            )
        prev = self.prog_time
        for i, t in enumerate(self.relax_times):
            if not t > prev:
                raise ConfigError(f"relax_times[{i}]: {t!r} is out of range; allowed: increasing times > prog_time")
            prev = t
        for i, c in enumerate(self.relax_coeffs):
            if not c:
                raise ConfigError(f"relax_coeffs[{i}]: empty polynomial; allowed: >= 1 coefficient")
        if self.drift_model == DriftModel.RELAXATION and not self.relax_times:
            raise ConfigError("relax_times: drift_model 'relaxation' needs at least one relax time")

    @property
    def g_range(self) -> float:
        """``g_max - g_min`` in µS: the conductance span a weight is mapped onto."""
        return self.g_max - self.g_min

    @property
    def is_ideal(self) -> bool:
        """True when programming, drift and reads are exact (only levels/IR/faults may remain)."""
        return (
            self.prog_noise_scale * max(abs(c) for c in self.prog_coeffs) == 0.0
            and self.drift_model == DriftModel.NONE
            and not self.has_read_noise
            and self.d2d_std == 0.0
            and self.p_stuck_min == 0.0
            and self.p_stuck_max == 0.0
        )

    @property
    def has_read_noise(self) -> bool:
        return (self.read_q_coeff * self.read_noise_scale > 0.0) or self.read_noise_std > 0.0


# ----------------------------------------------------------------------------- presets

DEVICES: Registry[DeviceConfig] = Registry("device preset")

DEVICES.add(
    "ideal",
    DeviceConfig(
        drift_model=DriftModel.NONE,
        prog_coeffs=(0.0,),
        read_q_coeff=0.0,
    ),
    "exact conductances: no programming noise, drift or read noise (g_max 25 µS)",
)
DEVICES.add(
    "pcm",
    DeviceConfig(),
    "PCM, Nandakumar et al. ICECS 2019 / Joshi et al. Nat. Commun. 2020 (aihwkit PCMLikeNoiseModel)",
    source="S. R. Nandakumar et al., ICECS 2019, doi:10.1109/ICECS46596.2019.8964852; "
    "V. Joshi et al., Nat. Commun. 11, 2473 (2020); formulas as in aihwkit PCMLikeNoiseModel",
)
_RRAM_WAN2022 = DeviceConfig(
    drift_model=DriftModel.RELAXATION,
    g_max=40.0,
    g_min=0.0,
    # deviation-from-target std polynomials (µS, ascending powers of g/g_max, fitted at g_max = 40 µS)
    # read off Wan et al. 2022 at 1 s, 1 day and 2 days (coefficients as in aihwkit ReRamWan2022NoiseModel)
    prog_coeffs=(0.348, 16.030, -43.853, 45.393, -16.815),
    prog_coeffs_g_ref=40.0,
    prog_time=1.0,
    relax_times=(86400.0, 172800.0),
    relax_coeffs=(
        (0.701, 22.086, -50.773, 47.095, -16.458),
        (0.782, 20.274, -43.507, 37.062, -11.934),
    ),
    read_q_coeff=0.0,
    read_noise_std=0.4,  # ~1 % of g_max short-term read noise, aihwkit's recommendation for this model
)
DEVICES.add(
    "rram",
    _RRAM_WAN2022,
    "RRAM, Wan et al. Nature 2022 (NeuRRAM) relaxation statistics, g_max 40 µS",
    source="W. Wan et al., Nature 608, 504 (2022), doi:10.1038/s41586-022-04992-8; polynomial fit "
    "as in aihwkit ReRamWan2022NoiseModel; 1 % g_max read noise as aihwkit recommends",
)
DEVICES.add(
    "rram_saf",
    _RRAM_WAN2022.replace(p_stuck_min=0.0175, p_stuck_max=0.0904),
    "RRAM (Wan 2022) with stuck-at faults SA0 1.75 % / SA1 9.04 % (rates used in ITT-RNA)",
    source="stuck-at rates of Chen et al. IEEE TC 2015 as used by Xia et al. DAC 2017 and "
    "ITT-RNA, Z. Song et al. IEEE TCAD 2020, doi:10.1109/TCAD.2020.2989373",
)


def device_preset(name: str, **overrides: object) -> DeviceConfig:
    """A copy of the preset ``name`` with some fields changed (validated)."""
    return DEVICES.get(name).replace(**overrides)


# ----------------------------------------------------------------------------- pure functions


def _poly(x: Tensor, coeffs: tuple[float, ...]) -> Tensor:
    """``sum_i c_i x^i`` by Horner's rule."""
    out = torch.full_like(x, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = out * x + c
    return out


def _poly_(x: Tensor, coeffs: tuple[float, ...]) -> Tensor:
    """``sum_i c_i x^i`` by Horner's rule in one new tensor."""
    out = torch.full_like(x, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out.mul_(x).add_(c)
    return out


def programming_noise_std(g_target: Tensor, dev: DeviceConfig) -> Tensor:
    """Std (µS) of the programming error at target ``g_target`` (µS): the ``prog_coeffs`` polynomial.

    Nandakumar et al. 2019 (PCM) / Wan et al. 2022 at ``prog_time`` (RRAM); clamped at >= 0.
    """
    sigma = _poly(g_target / dev.g_max, dev.prog_coeffs)
    return (sigma * (dev.g_max / dev.prog_coeffs_g_ref * dev.prog_noise_scale)).clamp_(min=0.0)


def quantize_levels(g: Tensor, dev: DeviceConfig) -> Tensor:
    """Round target conductances to ``n_levels`` equally spaced levels in [g_min, g_max] (0 = as is)."""
    if dev.n_levels == 0:
        return g
    step = dev.g_range / (dev.n_levels - 1)
    return ((g - dev.g_min) / step).round().clamp(0, dev.n_levels - 1) * step + dev.g_min


def program_conductance(g_target: Tensor, dev: DeviceConfig, generator: torch.Generator | None) -> Tensor:
    """One programming of every device: ``g_target + sigma_prog(g_target) * N(0, 1)``, clamped >= 0.

    Only the programming error; :func:`program_devices` adds levels, device gain and stuck-at faults.
    """
    noise = torch.randn(g_target.shape, generator=generator, device=g_target.device, dtype=g_target.dtype)
    return (g_target + programming_noise_std(g_target, dev) * noise).clamp_(min=0.0)


def sample_stuck_at(
    shape: torch.Size | tuple[int, ...],
    dev: DeviceConfig,
    generator: torch.Generator | None,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Boolean masks ``(stuck_at_g_min, stuck_at_g_max)``; disjoint, rates ``p_stuck_min``/``p_stuck_max``."""
    u = torch.rand(tuple(shape), generator=generator, device=device)
    low = u < dev.p_stuck_min
    high = (u >= dev.p_stuck_min) & (u < dev.p_stuck_min + dev.p_stuck_max)
    return low, high


def drift_exponents(g_target: Tensor, dev: DeviceConfig, generator: torch.Generator | None) -> Tensor:
    """PCM drift exponents ``nu = |N(mu(g), sigma(g))| * drift_scale`` (Joshi et al. 2020 fit).

    ``mu`` and ``sigma`` are linear in ``ln(g_target/g_max)`` and clipped (see :class:`DeviceConfig`).
    """
    g_rel = (g_target / dev.g_max).abs().clamp(min=_G_REL_MIN)
    log_g = torch.log(g_rel)
    mu = (dev.nu_mu_slope * log_g + dev.nu_mu_offset).clamp_(dev.nu_mu_min, dev.nu_mu_max)
    sig = (dev.nu_std_slope * log_g + dev.nu_std_offset).clamp_(dev.nu_std_min, dev.nu_std_max)
    noise = torch.randn(g_target.shape, generator=generator, device=g_target.device, dtype=g_target.dtype)
    return (mu + sig * noise).abs_() * dev.drift_scale


def drift_factor(t: float, nu: Tensor, t0: float) -> Tensor:
    """Conductance drift factor ``((t + t0) / t0) ** (-nu)`` for ``t`` seconds since programming."""
    if t < 0:
        raise ConfigError(f"t: {t!r} is out of range; allowed: [0, inf) seconds since programming")
    return torch.exp(-nu * math.log((t + t0) / t0))


def read_noise_std(g_prog: Tensor, g_drift: Tensor, t: float, dev: DeviceConfig) -> Tensor:
    """Std (µS) of one read at ``t`` s after programming: PCM 1/f noise plus white ``read_noise_std``.

    ``sigma_1f = |g_drift| * Q_s(g_prog) * sqrt(ln((t + t0 + t_read) / (2 t_read)))`` with
    ``Q_s = min(read_q_coeff / max((|g_prog|/g_max)^read_q_exp, 1e-3), read_q_max)``
    (Nandakumar et al. 2019; aihwkit ``PCMLikeNoiseModel``), then ``sqrt(sigma_1f^2 + read_noise_std^2)``.
    """
    out = torch.zeros_like(g_drift)
    if dev.read_q_coeff * dev.read_noise_scale > 0.0:
        t_eff = t + dev.t0
        g_r = (g_prog.abs() / dev.g_max).clamp(min=1e-12)  # a floor below the 1e-3 clamp: same result
        q_s = (dev.read_q_coeff / (g_r**dev.read_q_exp).clamp(min=1e-3)).clamp(max=dev.read_q_max)
        acc = math.sqrt(math.log((t_eff + dev.t_read) / (2.0 * dev.t_read)))
        out = g_drift.abs() * q_s * (acc * dev.read_noise_scale)
    if dev.read_noise_std > 0.0:
        out = torch.sqrt(out * out + dev.read_noise_std**2)
    return out


def relaxation_std(g_target: Tensor, t: float, dev: DeviceConfig) -> Tensor:
    """Std (µS) of the RRAM relaxation added on top of the programming error at ``t`` s.

    The total deviation-from-target std ``s(g, t)`` is the ``prog_coeffs`` polynomial at
    ``prog_time`` and the ``relax_coeffs`` polynomials at ``relax_times`` (Wan et al. 2022),
    interpolated linearly in ``ln t`` and held beyond the last time; the relaxation part is
    ``sqrt(max(s(g, t)^2 - s(g, prog_time)^2, 0))`` so that programming + relaxation has std ``s``.
    """
    if t <= dev.prog_time or not dev.relax_times:
        return torch.zeros_like(g_target)
    times = (dev.prog_time, *dev.relax_times)
    polys = (dev.prog_coeffs, *dev.relax_coeffs)
    scale = dev.g_max / dev.prog_coeffs_g_ref * dev.prog_noise_scale
    x = g_target / dev.g_max
    s0 = (_poly(x, polys[0]) * scale).clamp(min=0.0)
    if t >= times[-1]:
        s_t = (_poly(x, polys[-1]) * scale).clamp(min=0.0)
    else:
        k = max(i for i in range(len(times)) if times[i] <= t)
        w = (math.log(t) - math.log(times[k])) / (math.log(times[k + 1]) - math.log(times[k]))
        lo = (_poly(x, polys[k]) * scale).clamp(min=0.0)
        hi = (_poly(x, polys[k + 1]) * scale).clamp(min=0.0)
        s_t = (1 - w) * lo + w * hi
    return torch.sqrt((s_t * s_t - s0 * s0).clamp(min=0.0))


def _near_end_load(g: Tensor, dim: int) -> Tensor:
    """``L_i = sum_{k<=i} sum_{j>=k} g_j`` along ``dim``: the first-order wire load seen by cell i."""
    rev = g.flip(dim).cumsum(dim).flip(dim)  # current through segment k: cells k.. far end
    return rev.cumsum(dim)


def ir_drop_factor(g: Tensor, r_wire: float) -> Tensor:
    """Per-cell attenuation of a crossbar's cells by wire resistance (first-order IR-drop model).

    ``g`` (µS) has shape ``(..., rows, cols)``: one physical array; row 0 is the row nearest the
    column sense amplifiers (virtual ground), column 0 the column nearest the row drivers, and
    ``r_wire`` (Ω) the wire resistance between neighbouring cells on both bit and word lines.

    Model: the crossbar is a linear resistive network, so each column current is exactly linear in
    the inputs, ``I_c = sum_i geff_ic x_i``. Expanding its nodal equations to first order in
    ``r_wire * g`` (cell currents ``g x`` flowing through the wire segments between them and the
    sense amplifier / driver) gives ``geff_ic = g_ic (1 - r_wire (B_ic + W_ic))`` with
    ``B_ic = sum_{k<=i} sum_{j>=k} g_jc`` (bit line) and ``W_ic = sum_{m<=c} sum_{c'>=m} g_ic'``
    (word line). We return the [0/1] Padé form ``1 / (1 + r_wire (B + W))``, equal to first order and
    always in (0, 1]. This is the linearised crossbar model used e.g. by Jain & Raghunathan,
    "CxDNN", ACM TECS 2019 and Chen et al., "Technological exploration of RRAM crossbar array for
    matrix-vector multiplication", JCST 2016; tests/analog checks it against an exact nodal solve.
    """
    if r_wire == 0.0:
        return torch.ones_like(g)
    load = _near_end_load(g, -2) + _near_end_load(g, -1)  # µS
    return 1.0 / (1.0 + (r_wire * 1e-6) * load)


# ----------------------------------------------------------------------------- device state


@dataclass
class DeviceState:
    """What one ``program`` call fixes for a set of devices (all tensors of the devices' shape).

    ``g_prog``: programmed conductance (µS); ``g_target``: intended conductance after level
    rounding (µS); ``drift``: PCM drift exponents ``nu`` or RRAM standard-normal relaxation draws
    (``None`` without drift); ``stuck``: mask of stuck devices (``None`` without faults).
    """

    g_target: Tensor
    g_prog: Tensor
    drift: Tensor | None
    stuck: Tensor | None


def program_devices(g_target: Tensor, dev: DeviceConfig, generator: torch.Generator | None) -> DeviceState:
    """Program devices to ``g_target`` (µS) once: levels, device gain, programming noise, faults, drift draws.

    Order: round to ``n_levels``; multiply by a per-device gain ``1 + d2d_std * N(0,1)``; add
    programming noise (clamped >= 0); stuck-at devices are then forced to ``g_min``/``g_max`` and get
    no drift. The draws are made in a fixed order from ``generator`` so a seed fixes the chip.
    """
    g_t = quantize_levels(g_target, dev)
    g_eff = g_t
    if dev.d2d_std > 0:
        gain = 1.0 + dev.d2d_std * torch.randn(g_t.shape, generator=generator, device=g_t.device)
        g_eff = (g_t * gain).clamp_(min=0.0)
    g_prog = program_conductance(g_eff, dev, generator)
    drift: Tensor | None = None
    if dev.drift_model == DriftModel.POWER_LAW:
        drift = drift_exponents(g_t, dev, generator)
    elif dev.drift_model == DriftModel.RELAXATION:
        drift = torch.randn(g_t.shape, generator=generator, device=g_t.device, dtype=g_t.dtype)
    stuck: Tensor | None = None
    if dev.p_stuck_min > 0 or dev.p_stuck_max > 0:
        low, high = sample_stuck_at(g_t.shape, dev, generator, g_t.device)
        g_prog = torch.where(low, torch.full_like(g_prog, dev.g_min), g_prog)
        g_prog = torch.where(high, torch.full_like(g_prog, dev.g_max), g_prog)
        stuck = low | high
        if drift is not None:
            drift = drift.masked_fill(stuck, 0.0)
    return DeviceState(g_target=g_t, g_prog=g_prog, drift=drift, stuck=stuck)


def devices_at(state: DeviceState, dev: DeviceConfig, t: float) -> tuple[Tensor, Tensor]:
    """Mean conductance and per-read noise std (both µS) ``t`` seconds after programming.

    PCM: ``g_prog * drift_factor`` and the 1/f read noise; RRAM: ``g_prog + relaxation_std * z``
    (clamped >= 0) and the white read noise; ideal: ``g_prog`` and zero.
    """
    if t < 0:
        raise ConfigError(f"t: {t!r} is out of range; allowed: [0, inf) seconds since programming")
    g = state.g_prog
    if dev.drift_model == DriftModel.POWER_LAW and state.drift is not None:
        g = g * drift_factor(t, state.drift, dev.t0)
    elif dev.drift_model == DriftModel.RELAXATION and state.drift is not None:
        g = (g + relaxation_std(state.g_target, t, dev) * state.drift).clamp_(min=0.0)
    sigma = read_noise_std(state.g_prog, g, t, dev)
    return g, sigma


def _buf(ws: dict[str, Tensor] | None, name: str, like: Tensor, shape: tuple[int, ...] | None = None) -> Tensor:
    """An uninitialised tensor shaped like ``like`` (or ``shape``, with its dtype and device), reused
    from the workspace ``ws`` when possible."""
    shape = tuple(like.shape) if shape is None else tuple(shape)
    b = ws.get(name) if ws is not None else None
    if b is None or tuple(b.shape) != shape or b.dtype != like.dtype or b.device != like.device:
        b = torch.empty(shape, dtype=like.dtype, device=like.device)
        if ws is not None:
            ws[name] = b
    return b


def sample_read(
    g_target: Tensor,
    dev: DeviceConfig,
    t: float,
    generator: torch.Generator | None,
    *,
    fast: bool = True,
    workspace: dict[str, Tensor] | None = None,
) -> Tensor:
    """One read, ``t`` s after programming, of freshly programmed devices (µS): what
    :func:`program_devices` + :func:`devices_at` + one read give, in few fused ops (for per-batch
    noise injection in hardware-aware training). ``fast`` draws the normals from the noise table
    (:func:`cimkit.analog.periphery.gaussian_noise`). With a ``workspace`` dict the temporaries (and
    the result, valid until the next call with the same workspace) live in reused buffers, which
    avoids fresh allocations on every training step.

    Levels, device gains, stuck-at faults and RRAM relaxation take the general (slower) route.
    """
    def noise(shape: torch.Size) -> Tensor:
        return gaussian_noise(shape, generator, device=g_target.device, dtype=g_target.dtype, fast=fast)

    if (
        dev.n_levels
        or dev.d2d_std > 0
        or dev.p_stuck_min > 0
        or dev.p_stuck_max > 0
        or (dev.drift_model == DriftModel.RELAXATION)
    ):
        state = program_devices(g_target, dev, generator)
        g_mean, sigma = devices_at(state, dev, t)
        return torch.addcmul(g_mean, sigma, noise(g_mean.shape)).clamp_(min=0.0)
    # One table window for the (up to) three normals, the conductance constants folded into the
    # polynomial and affine coefficients, and the two logarithms (and the two exponentials) of
    # the read-noise level and the drift exponent in one op over a two-plane buffer: few passes
    # over the devices, few ops for small layers. With the native kernels the elementwise work
    # between those two ops runs in three fused passes (:func:`_read_stages`).
    shape = g_target.shape
    n_draws = 1 + (dev.drift_model == DriftModel.POWER_LAW) + dev.has_read_noise
    z = noise((n_draws, *shape))
    p = _read_params(dev, t)
    planes = _buf(workspace, "planes", g_target, (p.has_q + p.drift, *shape))
    g = _buf(workspace, "g", g_target)
    if native.usable(g_target, z) and len(p.poly) <= native.MAX_POLY and p.std2 == 0.0:
        _read_stages_native(g_target, z, g, planes, p)
    else:
        _read_stages(g_target, z, g, planes, p, workspace)
    return g


@dataclass(frozen=True)
class _ReadParams:
    """The constants of :func:`sample_read`'s fast route (see :func:`_read_stages`); the tensor ops
    and the native kernels both round them to float32 where they use them."""

    poly: tuple[float, ...]  # programming-noise std (µS) as a polynomial in g (µS), c0 + c1 g + ...
    has_q: bool  # conductance-dependent (1/f) read noise: a plane for its level
    drift: bool  # power-law drift: a plane for the exponent
    q_floor: float  # floors inside the two logarithms (µS)
    d_floor: float
    neg_e: float  # -read_q_exp
    mu: tuple[float, float, float, float]  # drift exponent mean: slope, offset (in log µS), min, max
    sig: tuple[float, float, float, float]  # and its std
    neg_k: float  # -drift_scale * log((t + t0) / t0)
    cap: float
    read: bool  # read noise at all
    value: float  # the read-noise factor of the last fused multiply-add
    std2: float  # read_noise_std^2 added in quadrature (0: none)
    std: float  # the constant read-noise std (µS) without the 1/f term


def _read_params(dev: DeviceConfig, t: float) -> _ReadParams:
    g_max = dev.g_max
    # programming noise: sigma_p = max(0, poly(g / g_max) * g_max / g_ref * scale), Horner in g (µS)
    k = g_max / dev.prog_coeffs_g_ref * dev.prog_noise_scale
    poly = tuple(c * k / g_max**i for i, c in enumerate(dev.prog_coeffs))
    # Q_s = min(q_max, coeff / max((g/g_max)^e, 1e-3)) = coeff g_max^e min(cap, g^-e), with
    # g^-e = exp(-e log g); the 1e-12 g_max floor keeps log off its slow 0/-inf path and changes
    # nothing, since the power is floored at 1e-3 anyway
    has_q = dev.read_q_coeff * dev.read_noise_scale > 0.0 and dev.has_read_noise
    e = dev.read_q_exp
    value, std2 = 1.0, 0.0
    if has_q:
        acc = math.sqrt(math.log((t + dev.t0 + dev.t_read) / (2.0 * dev.t_read))) * dev.read_noise_scale
        value = dev.read_q_coeff * g_max**e * acc
        std2 = dev.read_noise_std**2 if dev.read_noise_std > 0.0 else 0.0
    # drift: nu ~ N(mu, sig), both affine in log(g_t / g_max) and clipped; g *= ((t + t0) / t0)^(-|nu|)
    log_gm = math.log(g_max)
    drift = dev.drift_model == DriftModel.POWER_LAW
    return _ReadParams(
        poly=poly, has_q=has_q, drift=drift, q_floor=1e-12 * g_max, d_floor=_G_REL_MIN * g_max, neg_e=-e,
        mu=(dev.nu_mu_slope, dev.nu_mu_offset - dev.nu_mu_slope * log_gm, dev.nu_mu_min, dev.nu_mu_max),
        sig=(dev.nu_std_slope, dev.nu_std_offset - dev.nu_std_slope * log_gm, dev.nu_std_min, dev.nu_std_max),
        neg_k=-dev.drift_scale * math.log((t + dev.t0) / dev.t0) if drift else 0.0,
        cap=min(dev.read_q_max / dev.read_q_coeff, 1e3) / g_max**e if has_q else 0.0,
        read=dev.has_read_noise, value=value, std2=std2, std=dev.read_noise_std,
    )  # fmt: skip


def _read_stages(g_t: Tensor, z: Tensor, g: Tensor, planes: Tensor, p: _ReadParams,
                 ws: dict[str, Tensor] | None) -> None:  # fmt: skip
    """The fast read as tensor ops, into ``g``: A (programmed g and the logs' arguments), log,
    B (the exponents), exp, C (drift and read noise). ``z`` (draws, ...) holds the normals."""
    iq, idr = 0, int(p.has_q)
    sig_p = _buf(ws, "sig_p", g_t)
    cs = p.poly
    if len(cs) == 1:
        sig_p.fill_(cs[0])
    else:
        torch.mul(g_t, cs[-1], out=sig_p).add_(cs[-2])
        for c in reversed(cs[:-2]):
            sig_p.mul_(g_t).add_(c)
    sig_p.clamp_(min=0.0)
    torch.addcmul(g_t, sig_p, z[0], out=g).clamp_(min=0.0)  # programmed
    if p.has_q:
        torch.clamp(g, min=p.q_floor, out=planes[iq])
    if p.drift:
        torch.clamp(g_t, min=p.d_floor, out=planes[idr])
    if planes.shape[0]:
        planes.log_()
    if p.has_q:
        planes[iq].mul_(p.neg_e)
    if p.drift:
        log_g = planes[idr]
        mu = torch.mul(log_g, p.mu[0], out=sig_p).add_(p.mu[1]).clamp_(p.mu[2], p.mu[3])
        sig = log_g.mul_(p.sig[0]).add_(p.sig[1]).clamp_(p.sig[2], p.sig[3])
        torch.mul(mu.addcmul_(sig, z[1]).abs_(), p.neg_k, out=log_g)
    if planes.shape[0]:
        planes.exp_()
    if p.drift:
        g.mul_(planes[idr])  # drifted
    if p.read:
        value = p.value
        if p.has_q:
            sigma = planes[iq].clamp_(max=p.cap).mul_(g)  # Q_s g / (coeff g_max^e)
            if p.std2 > 0.0:
                sigma = sigma.mul_(value).square_().add_(p.std2).sqrt_()
                value = 1.0
        else:
            sigma = sig_p.fill_(p.std)
        g.addcmul_(sigma, z[-1], value=value).clamp_(min=0.0)


def _read_stages_native(g_t: Tensor, z: Tensor, g: Tensor, planes: Tensor, p: _ReadParams) -> None:
    """:func:`_read_stages` with the three elementwise stages as fused native passes (same bits)."""
    lq = planes[0] if p.has_q else None
    ld = planes[int(p.has_q)] if p.drift else None
    z1 = z[1] if p.drift else None
    z2 = z[-1] if p.read else None
    native.device_read_a(g_t, z[0], g, lq, ld, p.poly, p.q_floor, p.d_floor)
    if planes.shape[0]:
        planes.log_()
        native.device_read_b(lq, ld, z1, p.neg_e, p.mu, p.sig, p.neg_k)
        planes.exp_()
    native.device_read_c(g, lq, ld, z2, p.cap, p.value, p.std, p.has_q)
