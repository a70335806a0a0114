"""Spiking neuron layers: leaky integrate-and-fire (:class:`LIF`, alias :class:`Leaky`), integrate-
and-fire (:class:`IF`) and current-based LIF (:class:`CubaLIF`, alias :class:`Synaptic`).

Parameter names and semantics follow snnTorch's ``Leaky`` / ``Synaptic`` (Eshraghian et al., Proc.
IEEE 111(9), 2023): ``beta`` (membrane decay per step, clamped to [0, 1]), ``alpha`` (synaptic
decay), ``threshold``, ``reset_mechanism`` (``subtract`` / ``zero`` / ``none``), ``spike_grad``
(a :mod:`cimkit.snn.surrogate`; default arctan, α = 2), ``learn_beta`` / ``learn_alpha`` /
``learn_threshold``, ``graded_spikes_factor`` (spike amplitude); the same parameters give the
same spikes as snnTorch on the same input (``tests/snn/test_snntorch.py``). The discrete dynamics
are in :mod:`cimkit.snn.dynamics`.

Decays may be given as time constants instead: ``tau`` (or ``tau_mem`` / ``tau_syn``) in seconds
with an explicit step ``dt`` (s) and a ``discretization`` of ``τ dU/dt = -U + R I``:
``euler`` (``β = 1 - dt/τ``, snnTorch's NIR convention) or ``exact`` (``β = exp(-dt/τ)``, zero-order
hold). Both keep unit input gain (``R = 1/(1 - β)``); see :mod:`cimkit.snn.nir`. Every parameter
is a scalar shared by the layer or a tensor per neuron (or per channel, ``(C, 1, 1)``).

``reset_delay`` (default true, snnTorch's default) applies a spike's reset at the next step;
``false`` resets within the spiking step (NIR's semantics; :mod:`cimkit.snn.dynamics`). The two
give the same spikes for IF/LIF with reset to zero (or none), and for IF with reset by subtraction
as long as no step's input exceeds the threshold; they differ for CubaLIF with reset to zero.

**Time batching.** A neuron's ``forward`` takes the currents of all time steps at once, folded
into the batch: ``(T·B, *F)`` with time outermost, and returns spikes of the same shape; the
stateless layers around it (conv, linear, pooling) therefore run once on the whole ``(T·B)``
batch. ``num_steps`` (``T``) is set by :class:`cimkit.snn.SpikingNet` (or
:func:`set_num_steps`). State never leaks between forwards: every forward starts from
``U = init_mem_frac · θ`` (0 by default; ``0.5`` after ANN conversion), ``I = 0``.
:meth:`LIF.step` / :meth:`CubaLIF.step` are snnTorch-style single steps with explicit state.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from enum import Enum

import torch
from torch import Tensor, nn

from cimkit.config import as_enum, check_range
from cimkit.errors import ConfigError
from cimkit.snn.dynamics import (
    RESET_CODES,
    cuba_sequence,
    cuba_sequence_immediate,
    immediate_reset,
    lif_sequence,
    lif_sequence_immediate,
)
from cimkit.snn.surrogate import Surrogate, make_surrogate, spike

__all__ = [
    "IF", "LIF", "CubaLIF", "Discretization", "Leaky", "ResetMechanism", "SpikingNeuron", "Synaptic", "Temporal",
    "beta_from_tau", "neurons", "set_num_steps", "tau_from_beta", "temporal_modules",
]  # fmt: skip

DEFAULT_DT = 1e-4  # s: snnTorch's NIR export/import step


class ResetMechanism(str, Enum):
    """What a spike does to the membrane (applied at the next step, as snnTorch's ``reset_delay``)."""

    SUBTRACT = "subtract"
    ZERO = "zero"
    NONE = "none"


class Discretization(str, Enum):
    """Time constant ↔ per-step decay: ``euler`` ``β = 1 - dt/τ``; ``exact`` ``β = exp(-dt/τ)``."""

    EULER = "euler"
    EXACT = "exact"


def beta_from_tau(tau: Tensor | float, dt: float, discretization: Discretization | str = "euler") -> Tensor:
    """Per-step decay from a time constant ``tau`` (s) and step ``dt`` (s)."""
    d = as_enum("discretization", discretization, Discretization)
    t = torch.as_tensor(tau, dtype=torch.float64)
    if not bool((t > 0).all()) or not math.isfinite(dt) or dt <= 0:
        raise ConfigError(f"tau/dt: need tau > 0 and dt > 0 (seconds), got tau={tau!r}, dt={dt!r}")
    return torch.exp(-dt / t) if d is Discretization.EXACT else 1.0 - dt / t


def tau_from_beta(beta: Tensor | float, dt: float, discretization: Discretization | str = "euler") -> Tensor:
    """Time constant (s, float64) of a per-step decay ``beta`` in (0, 1) with step ``dt`` (s)."""
    d = as_enum("discretization", discretization, Discretization)
    b = torch.as_tensor(beta, dtype=torch.float64)
    if not bool(((b > 0) & (b < 1)).all()):
        raise ConfigError(f"beta: {beta!r} has no finite time constant; allowed: 0 < beta < 1")
    return -dt / torch.log(b) if d is Discretization.EXACT else dt / (1.0 - b)


def _tensor(name: str, v: Tensor | float, lo: float | None = None, hi: float | None = None) -> Tensor:
    t = v.detach().clone().float() if isinstance(v, Tensor) else torch.tensor(float(v))
    if not bool(torch.isfinite(t).all()):
        raise ConfigError(f"{name}: {v!r} must be finite")
    if lo is not None and not bool((t >= lo).all()):
        raise ConfigError(f"{name}: {v!r} is out of range; allowed: >= {lo}")
    if hi is not None and not bool((t <= hi).all()):
        raise ConfigError(f"{name}: {v!r} is out of range; allowed: <= {hi}")
    return t


class Temporal(nn.Module):
    """A module with state over time steps: it unfolds its ``(T·B, ...)`` input with ``num_steps``."""

    num_steps: int = 1

    def unfold(self, x: Tensor) -> Tensor:
        """``(T·B, *F)`` -> ``(T, B, *F)``."""
        t = int(self.num_steps)
        if x.dim() < 1 or x.shape[0] % t:
            raise ConfigError(f"num_steps: a batch of {x.shape[0]} rows is not T·B with T = {t} time steps "
                              f"(wrap the network in cimkit.snn.SpikingNet)")  # fmt: skip
        return x.reshape(t, x.shape[0] // t, *x.shape[1:])


class SpikingNeuron(Temporal):
    """Base of the neuron layers: threshold, reset, surrogate, initial membrane, spike amplitude."""

    def __init__(
        self,
        threshold: Tensor | float = 1.0,
        spike_grad: Surrogate | str | None = None,
        reset_mechanism: ResetMechanism | str = "subtract",
        learn_threshold: bool = False,
        init_mem_frac: float = 0.0,
        graded_spikes_factor: Tensor | float = 1.0,
        output: str = "spikes",
        dt: float = DEFAULT_DT,
        discretization: Discretization | str = "euler",
        record: bool = False,
        reset_delay: bool = True,
    ) -> None:
        super().__init__()
        th = _tensor("threshold", threshold)
        if not bool((th > 0).all()):
            raise ConfigError(f"threshold: {threshold!r} is out of range; allowed: > 0")
        if learn_threshold:
            self.threshold = nn.Parameter(th)
        else:
            self.register_buffer("threshold", th)
        self.register_buffer("graded_spikes_factor", _tensor("graded_spikes_factor", graded_spikes_factor))
        self.spike_grad = make_surrogate(spike_grad)
        self.reset_mechanism = as_enum("reset_mechanism", reset_mechanism, ResetMechanism)
        check_range("init_mem_frac", init_mem_frac, 0.0, 10.0)
        self.init_mem_frac = float(init_mem_frac)
        if output not in ("spikes", "membrane"):
            raise ConfigError(f"output: {output!r} is not allowed; allowed: spikes, membrane")
        self.output = output
        check_range("dt", dt, 0.0, lo_open=True)
        self.dt = float(dt)
        self.discretization = as_enum("discretization", discretization, Discretization)
        self.record = bool(record)
        self.reset_delay = bool(reset_delay)
        self.spk_rec: Tensor | None = None  # (T, B, *F) when record
        self.mem_rec: Tensor | None = None

    @property
    def learn_threshold(self) -> bool:
        return isinstance(self.threshold, nn.Parameter)

    def _finish(self, x: Tensor, spk: Tensor, mem: Tensor) -> Tensor:
        if self.record:
            self.spk_rec, self.mem_rec = spk, mem
        if self.output == "membrane":
            return mem.reshape(x.shape)
        g = self.graded_spikes_factor
        out = spk if g.dim() == 0 and float(g) == 1.0 else spk * g.to(spk.dtype)
        return out.reshape(x.shape)  # (T·B, *F)

    def _reset_code(self) -> int:
        return RESET_CODES[self.reset_mechanism.value]

    def _p(self, t: Tensor, x: Tensor) -> Tensor:
        return t if t.dtype == x.dtype and t.device == x.device else t.to(x.device, x.dtype)

    def extra_repr(self) -> str:
        th = self.threshold
        ths = f"{float(th):g}" if th.dim() == 0 else f"tensor{tuple(th.shape)}"
        return (f"threshold={ths}, reset={self.reset_mechanism.value}{'' if self.reset_delay else ' (immediate)'}, "
                f"surrogate={self.spike_grad!r}, "
                f"init_mem_frac={self.init_mem_frac:g}, num_steps={self.num_steps}")  # fmt: skip


def _decay(name: str, value: Tensor | float | None, tau: Tensor | float | None, dt: float,
           disc: Discretization | str, default: float | None) -> Tensor:  # fmt: skip
    if value is not None and tau is not None:
        raise ConfigError(f"{name}: give {name} or its time constant, not both")
    if tau is not None:
        return beta_from_tau(tau, dt, disc).float()
    if value is None:
        if default is None:
            raise ConfigError(f"{name}: missing; give {name} (per-step decay in [0, 1]) or a time constant with dt")
        value = default
    return _tensor(name, value)


class LIF(SpikingNeuron):
    """Leaky integrate-and-fire neurons (snnTorch ``Leaky``): ``U_t = β U_{t-1} + X_t - reset``,
    ``S_t = H(U_t - θ)``. ``beta`` or ``tau`` (s, with ``dt`` and ``discretization``)."""

    def __init__(
        self,
        beta: Tensor | float | None = None,
        threshold: Tensor | float = 1.0,
        spike_grad: Surrogate | str | None = None,
        learn_beta: bool = False,
        learn_threshold: bool = False,
        reset_mechanism: ResetMechanism | str = "subtract",
        *,
        tau: Tensor | float | None = None,
        dt: float = DEFAULT_DT,
        discretization: Discretization | str = "euler",
        init_mem_frac: float = 0.0,
        graded_spikes_factor: Tensor | float = 1.0,
        output: str = "spikes",
        record: bool = False,
        reset_delay: bool = True,
    ) -> None:
        super().__init__(threshold, spike_grad, reset_mechanism, learn_threshold, init_mem_frac, graded_spikes_factor,
                         output, dt, discretization, record, reset_delay)  # fmt: skip
        b = _decay("beta", beta, tau, self.dt, self.discretization, None)
        if learn_beta:
            self.beta = nn.Parameter(b)
        else:
            self.register_buffer("beta", b)

    @property
    def learn_beta(self) -> bool:
        return isinstance(self.beta, nn.Parameter)

    def tau(self) -> Tensor:
        """Membrane time constant (s, float64) for this layer's ``dt`` and ``discretization``."""
        return tau_from_beta(self.beta.detach(), self.dt, self.discretization)

    def forward(self, x: Tensor) -> Tensor:
        xs = self.unfold(x)  # (T, B, *F)
        fn = lif_sequence if self.reset_delay else lif_sequence_immediate
        spk, mem = fn(xs, self._p(self.beta, x), self._p(self.threshold, x), self.init_mem_frac, self._reset_code(),
                      self.spike_grad)  # fmt: skip
        return self._finish(x, spk, mem)

    def step(self, x: Tensor, mem: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One time step with explicit state, as snnTorch's ``spk, mem = lif(x, mem)``
        (``mem=None``: the initial membrane)."""
        th = self._p(self.threshold, x)
        if mem is None:
            mem = (th * self.init_mem_frac).expand_as(x)
        r = (mem > th).to(x.dtype).detach()
        b = self._p(self.beta, x).clamp(0.0, 1.0)
        if self.reset_mechanism is ResetMechanism.SUBTRACT:
            new = b * mem + x - r * th
        elif self.reset_mechanism is ResetMechanism.ZERO:
            new = b * (1.0 - r) * mem + x
        else:
            new = b * mem + x
        s = spike(new - th, self.spike_grad)
        if not self.reset_delay:
            new = immediate_reset(new, s, r, th, self._reset_code())
        return s * self._p(self.graded_spikes_factor, x), new


Leaky = LIF


class IF(LIF):
    """Integrate-and-fire neurons: :class:`LIF` with ``β = 1`` (no leak)."""

    def __init__(
        self,
        threshold: Tensor | float = 1.0,
        spike_grad: Surrogate | str | None = None,
        learn_threshold: bool = False,
        reset_mechanism: ResetMechanism | str = "subtract",
        *,
        init_mem_frac: float = 0.0,
        graded_spikes_factor: Tensor | float = 1.0,
        dt: float = DEFAULT_DT,
        output: str = "spikes",
        record: bool = False,
        reset_delay: bool = True,
    ) -> None:
        super().__init__(1.0, threshold, spike_grad, False, learn_threshold, reset_mechanism, dt=dt,
                         init_mem_frac=init_mem_frac, graded_spikes_factor=graded_spikes_factor, output=output,
                         record=record, reset_delay=reset_delay)  # fmt: skip


class CubaLIF(SpikingNeuron):
    """Current-based LIF (snnTorch ``Synaptic``): ``I_t = α I_{t-1} + X_t``,
    ``U_t = β U_{t-1} + I_t - reset``. ``alpha``/``beta`` or ``tau_syn``/``tau_mem`` (s)."""

    def __init__(
        self,
        alpha: Tensor | float | None = None,
        beta: Tensor | float | None = None,
        threshold: Tensor | float = 1.0,
        spike_grad: Surrogate | str | None = None,
        learn_alpha: bool = False,
        learn_beta: bool = False,
        learn_threshold: bool = False,
        reset_mechanism: ResetMechanism | str = "subtract",
        *,
        tau_syn: Tensor | float | None = None,
        tau_mem: Tensor | float | None = None,
        dt: float = DEFAULT_DT,
        discretization: Discretization | str = "euler",
        init_mem_frac: float = 0.0,
        graded_spikes_factor: Tensor | float = 1.0,
        output: str = "spikes",
        record: bool = False,
        reset_delay: bool = True,
    ) -> None:
        super().__init__(threshold, spike_grad, reset_mechanism, learn_threshold, init_mem_frac, graded_spikes_factor,
                         output, dt, discretization, record, reset_delay)  # fmt: skip
        a = _decay("alpha", alpha, tau_syn, self.dt, self.discretization, None)
        b = _decay("beta", beta, tau_mem, self.dt, self.discretization, None)
        for name, val, learn in (("alpha", a, learn_alpha), ("beta", b, learn_beta)):
            if learn:
                setattr(self, name, nn.Parameter(val))
            else:
                self.register_buffer(name, val)
        self.syn_rec: Tensor | None = None

    def tau_syn(self) -> Tensor:
        return tau_from_beta(self.alpha.detach(), self.dt, self.discretization)

    def tau_mem(self) -> Tensor:
        return tau_from_beta(self.beta.detach(), self.dt, self.discretization)

    def forward(self, x: Tensor) -> Tensor:
        xs = self.unfold(x)  # (T, B, *F)
        fn = cuba_sequence if self.reset_delay else cuba_sequence_immediate
        spk, mem, syn = fn(xs, self._p(self.alpha, x), self._p(self.beta, x), self._p(self.threshold, x),
                           self.init_mem_frac, self._reset_code(), self.spike_grad)  # fmt: skip
        if self.record:
            self.syn_rec = syn
        return self._finish(x, spk, mem)

    def step(self, x: Tensor, syn: Tensor | None = None, mem: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """One time step with explicit state (snnTorch's ``spk, syn, mem = lif(x, syn, mem)``)."""
        th = self._p(self.threshold, x)
        syn = torch.zeros_like(x) if syn is None else syn
        mem = (th * self.init_mem_frac).expand_as(x) if mem is None else mem
        r = (mem > th).to(x.dtype).detach()
        new_syn = self._p(self.alpha, x).clamp(0.0, 1.0) * syn + x
        new = self._p(self.beta, x).clamp(0.0, 1.0) * mem + new_syn
        if self.reset_mechanism is ResetMechanism.SUBTRACT:
            new = new - r * th
        elif self.reset_mechanism is ResetMechanism.ZERO:
            new = new * (1.0 - r)
        s = spike(new - th, self.spike_grad)
        if not self.reset_delay:
            new = immediate_reset(new, s, r, th, self._reset_code())
        return s * self._p(self.graded_spikes_factor, x), new_syn, new


Synaptic = CubaLIF


def temporal_modules(model: nn.Module) -> Iterator[tuple[str, Temporal]]:
    """``(name, module)`` of every :class:`Temporal` module (neurons, spiking pooling)."""
    for name, m in model.named_modules():
        if isinstance(m, Temporal):
            yield name, m


def neurons(model: nn.Module) -> list[tuple[str, SpikingNeuron]]:
    """``(name, neuron layer)`` pairs of ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, SpikingNeuron)]


def set_num_steps(model: nn.Module, num_steps: int) -> None:
    """Set ``T`` on every temporal module of ``model``."""
    check_range("num_steps", num_steps, 1, 1_000_000)
    for _, m in temporal_modules(model):
        m.num_steps = int(num_steps)
