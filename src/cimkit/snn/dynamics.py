"""The time loops of the neuron models, with hand-written backpropagation through time.

Everything here works on a whole sequence ``x`` of shape ``(T, B, *F)`` at once (``T`` time steps,
``B`` samples, ``F`` the neuron shape); the only Python loop is over time, and each step is one or
two fused tensor ops. Parameters (``beta``, ``alpha``, ``theta``) are tensors that broadcast
against ``F``: shared (shape ``()``), per channel (``(C, 1, 1)``) or per neuron (``F``).

Discrete dynamics (snnTorch's ``Leaky`` / ``Synaptic`` with its default ``reset_delay=True``: a
spike at step t-1 resets the membrane while step t integrates; ``r_t = H(U_{t-1} - θ)``, no
gradient flows through ``r_t``), spikes ``S_t = H(U_t - θ)``, ``H(x) = 1`` iff ``x > 0``:

* LIF, ``subtract``: ``U_t = β U_{t-1} + X_t - θ r_t``;
* LIF, ``zero``:     ``U_t = β (1 - r_t) U_{t-1} + X_t``;
* LIF, ``none``:     ``U_t = β U_{t-1} + X_t``;
* CubaLIF: ``I_t = α I_{t-1} + X_t`` and the LIF equations with ``I_t`` as input, except that
  ``zero`` resets the whole update, ``U_t = (1 - r_t)(β U_{t-1} + I_t)`` (snnTorch ``Synaptic``).

``U_{-1} = u0`` (the initial membrane; 0, or ``θ/2`` after ANN conversion), ``I_{-1} = 0``;
``β`` and ``α`` are clamped to ``[0, 1]`` as in snnTorch. IF is LIF with ``β = 1``.

With ``reset_delay = False`` (snnTorch's option; NIR's semantics: reset right after the spike)
the membrane ``V_t`` is reset within the step that spikes: ``P_t`` is the update above computed
from ``V_{t-1}`` (with ``r_t = H(V_{t-1} - θ)``), ``S_t = H(P_t - θ)``, and
``V_t = P_t - (S_t - r_t) θ`` (subtract) or ``V_t = P_t (1 - S_t + r_t)`` (zero), exactly as
snnTorch (``r_t`` is 0 except after an input of more than two thresholds). That mode runs the same
loop under autograd (the reset carries the spike's surrogate gradient, as in snnTorch).

Backward (the adjoint of the recursion): with ``g_t = ∂L/∂U_t|direct + ∂L/∂S_t · σ'(U_t - θ)``
and ``k_t = ∂U_t/∂U_{t-1}`` (``β``, or ``β(1 - r_t)`` for ``zero``), the total adjoint is
``a_t = g_t + k_{t+1} a_{t+1}``; ``∂L/∂X_t = a_t`` (LIF), and the parameter gradients are sums of
``a_t`` times the local derivatives (``∂U_t/∂β``, ``∂U_t/∂θ``). Tested against autograd through an
explicit step-by-step reference (``tests/snn/test_dynamics.py``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cimkit.snn.surrogate import Surrogate

__all__ = ["RESET_CODES", "cuba_sequence", "cuba_sequence_immediate", "immediate_reset", "lif_sequence", "lif_sequence_immediate"]

SUBTRACT, ZERO, NONE = 0, 1, 2
RESET_CODES = {"subtract": SUBTRACT, "zero": ZERO, "none": NONE}


def _reduce_to(g: Tensor, like: Tensor) -> Tensor:
    """``g`` (T, B, *F) summed down to the shape of the parameter ``like``."""
    return g.sum().reshape(like.shape) if like.dim() == 0 else g.sum_to_size(like.shape)


def _clamp_mask(p: Tensor) -> Tensor:
    """Gradient mask of ``p.clamp(0, 1)`` (1 inside the interval, as autograd's clamp)."""
    return ((p >= 0) & (p <= 1)).to(p.dtype)


def _adjoint_(a: Tensor, k: Tensor, per_t: bool) -> None:
    """``a_t += k_{t+1} a_{t+1}`` for ``t = T-2 … 0``, in place (``a`` (T, B, *F)); ``k`` is a scalar
    tensor or broadcastable against ``F``, or (``per_t``) one per step ``(T, B, *F)``."""
    scalar = float(k) if k.dim() == 0 else None
    for t in range(a.shape[0] - 2, -1, -1):
        if scalar is not None:
            a[t].add_(a[t + 1], alpha=scalar)
        else:
            a[t].addcmul_(a[t + 1], k[t + 1] if per_t else k)


# ----------------------------------------------------------------------------- LIF / IF


def _lif_forward(x: Tensor, b: Tensor, theta: Tensor, u0: Tensor, reset: int) -> tuple[Tensor, Tensor]:
    """Membrane potentials and spikes ``(T, B, *F)``; ``b`` is the clamped β. Three passes a step:
    the leaky update, the reset (subtract: ``U -= θ S_{t-1}``), the threshold (written as 0/1)."""
    mem = torch.empty_like(x)  # (T, B, *F)
    spk = torch.empty_like(x)  # (T, B, *F)
    th = float(theta) if theta.dim() == 0 else None
    prev, prev_s = u0, (u0 > theta).to(x.dtype)  # U_{-1} and its reset signal
    for t in range(x.shape[0]):
        cur = mem[t]  # (B, *F)
        if reset == ZERO:
            torch.addcmul(x[t], prev * (1.0 - prev_s), b, out=cur)
        else:
            torch.addcmul(x[t], prev, b, out=cur)
            if reset == SUBTRACT:
                if th is not None:
                    cur.sub_(prev_s, alpha=th)
                else:
                    cur.addcmul_(prev_s, theta, value=-1.0)
        torch.gt(cur, theta, out=spk[t])
        prev, prev_s = cur, spk[t]
    return mem, spk


def _resets(spk: Tensor, u0: Tensor, theta: Tensor) -> Tensor:
    """``r_t = H(U_{t-1} - θ)``: the spikes shifted by one step, ``r_0`` from the initial membrane."""
    return torch.cat([(u0 > theta).to(spk.dtype).unsqueeze(0), spk[:-1]])


class _LIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, beta: Tensor, theta: Tensor, frac: float, reset: int,
                surrogate: Surrogate) -> tuple[Tensor, Tensor]:  # fmt: skip
        b = beta.clamp(0.0, 1.0)
        u0 = (theta * frac).expand(x.shape[1:]).to(x.dtype)  # (B, *F)
        mem, spk = _lif_forward(x, b, theta, u0, reset)
        ctx.save_for_backward(beta, theta, mem, spk)
        ctx.set_materialize_grads(False)  # an unused output (usually mem) comes back as None, not zeros
        ctx.frac, ctx.reset, ctx.surrogate = frac, reset, surrogate
        return spk, mem

    @staticmethod
    def backward(ctx: Any, g_spk: Tensor | None, g_mem: Tensor | None) -> tuple[Any, ...]:
        beta, theta, mem, spk = ctx.saved_tensors
        b = beta.clamp(0.0, 1.0)
        frac, reset = ctx.frac, ctx.reset
        u0 = (theta * frac).expand(mem.shape[1:]).to(mem.dtype)
        need_r = reset == ZERO or (reset == SUBTRACT and ctx.needs_input_grad[2]) or ctx.needs_input_grad[1]
        r = _resets(spk, u0, theta) if need_r else None  # (T, B, *F) reset signals r_t
        gs = ctx.surrogate.derivative_(mem - theta).mul_(g_spk) if g_spk is not None else None  # ∂L/∂S σ'
        gs_theta = _reduce_to(gs, theta) if gs is not None and ctx.needs_input_grad[2] else None  # Σ σ' ∂L/∂S
        if gs is None:
            a = torch.zeros_like(mem) if g_mem is None else g_mem.clone()
        else:
            a = gs if g_mem is None else gs.add_(g_mem)
        # a (T, B, *F) starts as the direct gradient g_t and becomes the total adjoint in place:
        # a_t += k_{t+1} a_{t+1}, one fused op per step on memory already touched
        k = b * (1.0 - r) if reset == ZERO else b  # ∂U_t/∂U_{t-1}: (T, B, *F) or broadcastable
        _adjoint_(a, k, reset == ZERO)
        acc = a[0] * (k[0] if reset == ZERO else k)  # adjoint reaching U_{-1}
        grad_x = a if ctx.needs_input_grad[0] else None
        grad_beta = grad_theta = None
        if ctx.needs_input_grad[1]:
            prev = torch.cat([u0.unsqueeze(0), mem[:-1]])  # U_{t-1}
            d = a * prev if reset != ZERO else a * prev * (1.0 - r)  # a_t ∂U_t/∂β
            grad_beta = _reduce_to(d, beta) * _clamp_mask(beta)
        if ctx.needs_input_grad[2]:
            grad_theta = frac * _reduce_to(acc.unsqueeze(0), theta)  # via U_{-1} = frac·θ
            if gs_theta is not None:
                grad_theta = grad_theta - gs_theta  # ∂S_t/∂θ = -σ'
            if reset == SUBTRACT:
                grad_theta = grad_theta - _reduce_to(a * r, theta)  # ∂U_t/∂θ = -r_t
        return grad_x, grad_beta, grad_theta, None, None, None


def lif_sequence(x: Tensor, beta: Tensor, theta: Tensor, init_frac: float, reset: int,
                 surrogate: Surrogate) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Spikes and membranes ``(T, B, *F)`` of LIF neurons driven by ``x`` (T, B, *F); see the
    module docstring. ``reset``: a code of :data:`RESET_CODES`; ``init_frac``: ``U_{-1} = init_frac · θ``."""
    if torch.is_grad_enabled() and (x.requires_grad or beta.requires_grad or theta.requires_grad):
        return _LIF.apply(x, beta, theta, float(init_frac), reset, surrogate)
    with torch.no_grad():
        u0 = (theta * init_frac).expand(x.shape[1:]).to(x.dtype)
        mem, spk = _lif_forward(x, beta.clamp(0.0, 1.0), theta, u0, reset)
        return spk, mem


# ----------------------------------------------------------------------------- current-based LIF


def _cuba_forward(x: Tensor, a: Tensor, b: Tensor, theta: Tensor, u0: Tensor, reset: int) -> tuple[Tensor, Tensor]:
    syn = torch.empty_like(x)  # (T, B, *F)
    mem = torch.empty_like(x)  # (T, B, *F)
    s_prev: Tensor = torch.zeros_like(x[0])
    prev = u0
    for t in range(x.shape[0]):
        s_cur, cur = syn[t], mem[t]
        torch.addcmul(x[t], s_prev, a, out=s_cur)  # I_t = α I_{t-1} + X_t
        torch.addcmul(s_cur, prev, b, out=cur)  # β U_{t-1} + I_t
        if reset == SUBTRACT:
            cur.sub_((prev > theta).to(x.dtype) * theta)
        elif reset == ZERO:
            cur.mul_((prev <= theta).to(x.dtype))
        s_prev, prev = s_cur, cur
    return syn, mem


class _Cuba(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, alpha: Tensor, beta: Tensor, theta: Tensor, frac: float, reset: int,
                surrogate: Surrogate) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        u0 = (theta * frac).expand(x.shape[1:]).to(x.dtype)
        syn, mem = _cuba_forward(x, alpha.clamp(0.0, 1.0), beta.clamp(0.0, 1.0), theta, u0, reset)
        spk = (mem > theta).to(x.dtype)
        ctx.save_for_backward(alpha, beta, theta, syn, mem)
        ctx.set_materialize_grads(False)
        ctx.frac, ctx.reset, ctx.surrogate = frac, reset, surrogate
        return spk, mem, syn

    @staticmethod
    def backward(ctx: Any, g_spk: Tensor | None, g_mem: Tensor | None, g_syn: Tensor | None) -> tuple[Any, ...]:
        alpha, beta, theta, syn, mem = ctx.saved_tensors
        a_c, b_c = alpha.clamp(0.0, 1.0), beta.clamp(0.0, 1.0)
        frac, reset = ctx.frac, ctx.reset
        u0 = (theta * frac).expand(mem.shape[1:]).to(mem.dtype)
        prev = torch.cat([u0.unsqueeze(0), mem[:-1]])  # U_{t-1}
        s_prev = torch.cat([torch.zeros_like(syn[:1]), syn[:-1]])  # I_{t-1}
        r = (prev > theta).to(mem.dtype)
        c = (1.0 - r) if reset == ZERO else None  # ∂U_t/∂(β U_{t-1} + I_t)
        gs = ctx.surrogate.derivative_(mem - theta).mul_(g_spk) if g_spk is not None else None
        g = gs if g_mem is None else (g_mem.clone() if gs is None else gs + g_mem)
        if g is None:
            g = torch.zeros_like(mem)
        au = torch.empty_like(mem)  # adjoint of U_t
        ai = torch.empty_like(mem)  # adjoint of I_t
        acc_u = torch.zeros_like(mem[0])
        acc_i = torch.zeros_like(mem[0])
        for t in range(mem.shape[0] - 1, -1, -1):
            torch.add(g[t], acc_u, out=au[t])
            cu = au[t] if c is None else au[t] * c[t]  # adjoint of the pre-reset update
            torch.add(cu, acc_i, out=ai[t])
            if g_syn is not None:
                ai[t] += g_syn[t]
            acc_u = cu * b_c
            acc_i = ai[t] * a_c
        grad_x = ai if ctx.needs_input_grad[0] else None
        grad_alpha = grad_beta = grad_theta = None
        if ctx.needs_input_grad[1]:
            grad_alpha = _reduce_to(ai * s_prev, alpha) * _clamp_mask(alpha)
        if ctx.needs_input_grad[2]:
            d = au * prev if c is None else au * c * prev
            grad_beta = _reduce_to(d, beta) * _clamp_mask(beta)
        if ctx.needs_input_grad[3]:
            grad_theta = frac * _reduce_to(acc_u.unsqueeze(0), theta)
            if gs is not None:
                grad_theta = grad_theta - _reduce_to(gs, theta)
            if reset == SUBTRACT:
                grad_theta = grad_theta - _reduce_to(au * r, theta)
        return grad_x, grad_alpha, grad_beta, grad_theta, None, None, None


def cuba_sequence(x: Tensor, alpha: Tensor, beta: Tensor, theta: Tensor, init_frac: float, reset: int,
                  surrogate: Surrogate) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Spikes, membranes and synaptic currents ``(T, B, *F)`` of current-based LIF neurons."""
    params = (x, alpha, beta, theta)
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        return _Cuba.apply(x, alpha, beta, theta, float(init_frac), reset, surrogate)
    with torch.no_grad():
        u0 = (theta * init_frac).expand(x.shape[1:]).to(x.dtype)
        syn, mem = _cuba_forward(x, alpha.clamp(0.0, 1.0), beta.clamp(0.0, 1.0), theta, u0, reset)
        return (mem > theta).to(x.dtype), mem, syn


# ----------------------------------------------------------------------------- reset_delay = False


def immediate_reset(p: Tensor, s: Tensor, r: Tensor, theta: Tensor, reset: int) -> Tensor:
    """The membrane after a same-step reset: ``p`` the update, ``s`` its spikes, ``r`` the previous reset."""
    if reset == SUBTRACT:
        return p - (s - r) * theta
    if reset == ZERO:
        return p * (1.0 - s + r)
    return p


def lif_sequence_immediate(x: Tensor, beta: Tensor, theta: Tensor, init_frac: float, reset: int,
                           surrogate: Surrogate) -> tuple[Tensor, Tensor]:  # fmt: skip
    """LIF with ``reset_delay = False`` (module docstring); membranes after the reset."""
    b = beta.clamp(0.0, 1.0)
    v = (theta * init_frac).expand(x.shape[1:]).to(x.dtype)  # (B, *F)
    spk, mem = [], []
    for t in range(x.shape[0]):
        r = (v > theta).to(x.dtype)
        p = b * (1.0 - r) * v + x[t] if reset == ZERO else b * v + x[t] - (r * theta if reset == SUBTRACT else 0.0)
        s = surrogate(p - theta)
        v = immediate_reset(p, s, r, theta, reset)
        spk.append(s)
        mem.append(v)
    return torch.stack(spk), torch.stack(mem)


def cuba_sequence_immediate(x: Tensor, alpha: Tensor, beta: Tensor, theta: Tensor, init_frac: float, reset: int,
                            surrogate: Surrogate) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Current-based LIF with ``reset_delay = False`` (snnTorch ``Synaptic``): membranes after the reset."""
    a, b = alpha.clamp(0.0, 1.0), beta.clamp(0.0, 1.0)
    v = (theta * init_frac).expand(x.shape[1:]).to(x.dtype)
    i = torch.zeros_like(x[0])
    spk, mem, syn = [], [], []
    for t in range(x.shape[0]):
        r = (v > theta).to(x.dtype)
        i = a * i + x[t]
        p = b * v + i
        if reset == SUBTRACT:
            p = p - r * theta
        elif reset == ZERO:
            p = p * (1.0 - r)
        s = surrogate(p - theta)
        v = immediate_reset(p, s, r, theta, reset)
        spk.append(s)
        mem.append(v)
        syn.append(i)
    return torch.stack(spk), torch.stack(mem), torch.stack(syn)
