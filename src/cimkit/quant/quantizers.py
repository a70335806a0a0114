"""Quantizer modules: they hold the state (scales, zero points, calibration flags); the math is in
:mod:`cimkit.quant.functional`.

* :class:`WeightQuantizer` — affine (dynamic ranges from the current weights, or LSQ-learned, or
  frozen), binary or ternary weights.
* :class:`ActQuantizer` — per-tensor activation quantizer for a layer's input, calibrated by an
  observer (unsigned grid when the calibration data is non-negative), optionally LSQ-learned.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from cimkit.errors import ConfigError
from cimkit.quant import functional as QF
from cimkit.quant.config import AGranularity, QuantConfig, WMode
from cimkit.quant.observers import Observer, ObserverKind, observe_weight

log = logging.getLogger("cimkit.quant")


def _exact_grad_scale(x: Tensor, g: float) -> Tensor:
    """Value exactly ``x``; gradient scaled by ``g`` (see :func:`functional.grad_scale`)."""
    xg = x * g
    return x.detach() + (xg - xg.detach())


class WeightQuantizer(nn.Module):
    """Fake-quantizes a weight tensor; ``qparams(w)`` gives its integer codes and grid.

    Affine weights use ranges recomputed from the current weight on every call (``w_observer``,
    cached while the weight is unchanged), or LSQ-learned scales (``lsq``), or frozen ones
    (:meth:`freeze`, after QAT or when loaded from an export). Binary/ternary weights compute their
    scale from the weight (XNOR-Net / TWN / BitNet), or use the frozen one.

    With ``group_size`` the weight is seen as ``(C_out · G, group_size)`` (:func:`functional.group_rows`)
    and every row of that view, i.e. every (output row, input group), gets its own grid; scales and
    zero points then have ``C_out · G`` entries, output row by output row.
    """

    def __init__(self, cfg: QuantConfig, weight: Tensor) -> None:
        super().__init__()
        self.mode = WMode(cfg.w_mode)
        self.bits = int(cfg.w_bits)
        self.per_channel = bool(cfg.per_channel)
        self.group_size = int(cfg.group_size)
        self.symmetric = bool(cfg.w_symmetric) or self.mode is not WMode.AFFINE
        self.observer = ObserverKind(cfg.w_observer or ObserverKind.MINMAX)
        self.percentile = float(cfg.percentile)
        self.lsq = bool(cfg.lsq) and self.mode is WMode.AFFINE
        self.axis: int | None = 0 if (self.per_channel and weight.dim() > 1) or self.group_size else None
        if self.mode is WMode.AFFINE:
            signed = self.symmetric
            self.qmin, self.qmax = QF.qrange(self.bits, signed=signed, narrow=True)
        else:
            self.qmin, self.qmax = -1, 1
        wv = self._view(weight)
        n = wv.shape[0] if self.axis == 0 else 1
        kw = {"device": weight.device, "dtype": torch.float32}
        self.register_buffer("zero_point", torch.zeros(n, **kw))
        self.register_buffer("frozen", torch.tensor(False, device=weight.device))
        if self.lsq:
            s, z = self._observe(wv)
            self.scale = nn.Parameter(s.clone())
            self.zero_point.copy_(z)
            self.grad_g = QF.lsq_grad_scale(weight.numel(), self.qmax)
        else:
            self.register_buffer("scale", torch.ones(n, **kw))
        if self.mode is WMode.TERNARY_TWN:  # frozen TWN codes need the threshold Δ as well as α
            self.register_buffer("threshold", torch.zeros(n, **kw))
        self._cache: tuple[tuple, Tensor, Tensor] | None = None
        self._frozen = False  # mirrors the ``frozen`` buffer without a device sync per call

    # --------------------------------------------------------------- grid

    @property
    def grouped(self) -> bool:
        """Whether the grid is per (output row, input group) rather than per channel / tensor."""
        return self.group_size > 0

    def _view(self, w: Tensor) -> Tensor:
        """The matrix whose rows get one grid each: ``w`` itself, or its ``(C_out · G, g)`` group view."""
        return QF.group_rows(w, self.group_size) if self.group_size else w

    def _observe(self, w: Tensor) -> tuple[Tensor, Tensor]:
        s, z, _, _ = observe_weight(w.detach(), self.observer, self.bits, per_channel=self.axis is not None,
                                    symmetric=self.symmetric, percentile=self.percentile)  # fmt: skip
        return s.to(w.device), z.to(w.device)

    def _affine_params(self, w: Tensor, src: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Scale and zero point for ``w`` (already the group view); ``src`` is the weight it was made
        from (the cache key: a view is a new object on every call)."""
        if self.lsq:
            return _exact_grad_scale(self.scale, self.grad_g).clamp_min(QF.EPS), self.zero_point
        if self._frozen:
            return self.scale, self.zero_point
        if self.observer is ObserverKind.MINMAX:
            return self._observe(w)
        k = w if src is None else src
        key = (id(k), k._version, k.data_ptr(), tuple(k.shape), k.device)
        if self._cache is None or self._cache[0] != key:
            s, z = self._observe(w)
            self._cache = (key, s, z)
        return self._cache[1], self._cache[2]

    def _ternary_binary(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """Codes and scale of a binary/ternary weight (detached)."""
        if self._frozen:
            s = QF.broadcast_param(self.scale, w, self.axis)
            if self.mode is WMode.BINARY:
                return QF.sign_nonzero(w.detach()), self.scale
            if self.mode is WMode.TERNARY_TWN:
                t = QF.broadcast_param(self.threshold, w, self.axis)
                return torch.sign(w.detach()) * (w.detach().abs() > t), self.scale
            return torch.clamp(torch.round(w.detach() / s), -1, 1), self.scale
        pc = self.axis is not None
        if self.mode is WMode.BINARY:
            return QF.binarize(w, pc)
        if self.mode is WMode.TERNARY_TWN:
            return QF.twn_ternarize(w, pc)
        return QF.absmean_ternarize(w, pc)

    def forward(self, w: Tensor) -> Tensor:
        wv = self._view(w)  # (C, K) or (C·G, g)
        if self.mode is WMode.AFFINE:
            s, z = self._affine_params(wv, w)
            out = QF.fake_quantize(wv, s.to(w.dtype), z.to(w.dtype), self.qmin, self.qmax, self.axis)
            return out.reshape(w.shape)
        q, s = self._ternary_binary(wv)
        value = q * QF.broadcast_param(s.to(w.dtype), wv, self.axis)
        wc = torch.clamp(wv, -1.0, 1.0)  # clipped straight-through estimator
        return (value + (wc - wc.detach())).reshape(w.shape)

    @torch.no_grad()
    def qparams(self, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(codes, scale, zero_point)``: codes (float tensor of integers, shape of ``w``),
        scale and zero point of shape ``(C,)`` or ``(1,)`` (``(C·G,)`` with groups: apply them to
        the group view); ``dequantize(codes, scale, zp)`` equals this quantizer's output exactly."""
        wv = self._view(w)
        if self.mode is WMode.AFFINE:
            s, z = self._affine_params(wv, w)
            s, z = s.detach().float(), z.detach().float()
            return QF.quantize(wv.float(), s, z, self.qmin, self.qmax, self.axis).reshape(w.shape), s, z
        q, s = self._ternary_binary(wv)
        return q.float().reshape(w.shape), s.detach().float(), torch.zeros_like(s, dtype=torch.float32)

    @torch.no_grad()
    def freeze(self, w: Tensor) -> None:
        """Store the current grid; later calls use it instead of recomputing from the weight."""
        _, s, z = self.qparams(w)
        threshold = None
        if self.mode is WMode.TERNARY_TWN and not self._frozen:
            threshold = QF.twn_threshold(self._view(w), self.axis is not None)
        if self._frozen and self.mode is WMode.TERNARY_TWN:
            threshold = self.threshold
        self.set_frozen(s, z, threshold)

    @torch.no_grad()
    def set_frozen(self, scale: Tensor, zero_point: Tensor, threshold: Tensor | None = None) -> None:
        """Use this grid from now on (``threshold``: TWN's Δ; default ``scale / 2``, which gives
        the same codes as TWN for weights already on the ternary grid)."""
        dev = self.zero_point.device
        if self.lsq:
            self.scale.data.copy_(scale.reshape(self.scale.shape))
        else:
            self.scale = scale.detach().clone().reshape(-1).float().to(dev)
        self.zero_point = zero_point.detach().clone().reshape(-1).float().to(dev)
        if self.mode is WMode.TERNARY_TWN:
            t = scale / 2 if threshold is None else threshold
            self.threshold = t.detach().clone().reshape(-1).float().to(dev)
        self.frozen.fill_(True)
        self._frozen = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._frozen = bool(self.frozen)

    def extra_repr(self) -> str:
        extra = " lsq" if self.lsq else ""
        group = f", group_size={self.group_size}" if self.group_size else ""
        return f"{self.mode.value}, bits={self.bits}, per_channel={self.axis is not None}{group}{extra}"


class ActQuantizer(nn.Module):
    """Fake quantizer of a layer's input: per tensor (static, calibrated) or per token (dynamic).

    Calibration: :meth:`start_observing` makes it record ranges and pass values through;
    :meth:`stop_observing` fixes the grid (unsigned ``[0, 2^b-1]`` when everything seen was >= 0).
    Used before calibration, it initializes its grid from the first batch it sees (and logs that).
    With ``lsq`` the step size is a parameter with LSQ's gradient scaling.

    ``a_granularity = "token"``: every vector along ``feature_dim`` (-1 for a Linear's
    ``(..., in_features)`` input, 1 for a convolution's channels) gets its own grid at run time
    (:func:`functional.fake_quantize_per_token`); there is nothing to calibrate.
    """

    def __init__(self, cfg: QuantConfig, device: torch.device | None = None, feature_dim: int = -1) -> None:
        super().__init__()
        if cfg.a_bits is None:
            raise ValueError("ActQuantizer needs a_bits")
        self.bits = int(cfg.a_bits)
        self.symmetric = bool(cfg.a_symmetric)
        self.per_token = AGranularity(cfg.a_granularity) is AGranularity.TOKEN
        self.feature_dim = int(feature_dim)
        self.observer_kind = ObserverKind(cfg.observer)
        self.percentile = float(cfg.percentile)
        self.lsq = bool(cfg.lsq)
        self.register_buffer("zero_point", torch.zeros(1, device=device))
        self.register_buffer("unsigned", torch.tensor(True, device=device))
        self.register_buffer("calibrated", torch.tensor(False, device=device))
        if self.lsq:
            self.scale = nn.Parameter(torch.ones(1, device=device))
        else:
            self.register_buffer("scale", torch.ones(1, device=device))
        self._observer: Observer | None = None
        self._calibrated = False  # mirrors the ``calibrated`` buffer without a device sync per call
        self.bypass = False  # pass values through unchanged (used by accounting)
        self._set_range(True)

    def _set_range(self, unsigned: bool) -> None:
        if unsigned or not self.symmetric:
            self.qmin, self.qmax = QF.qrange(self.bits, signed=False)
        else:
            self.qmin, self.qmax = QF.qrange(self.bits, signed=True, narrow=True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._set_range(bool(self.unsigned))
        self._calibrated = bool(self.calibrated)

    # --------------------------------------------------------------- calibration

    def start_observing(self, seed: int = 0) -> None:
        if self.per_token:  # dynamic grids: nothing to observe
            return
        self._observer = Observer(self.observer_kind, axis=None, percentile=self.percentile, seed=seed)

    def stop_observing(self) -> bool:
        """Fix the grid from what was observed; False if nothing was seen (grid unchanged)."""
        if self.per_token:
            return True
        obs, self._observer = self._observer, None
        if obs is None or not obs.seen:
            return False
        self._set_from_observer(obs)
        return True

    @torch.no_grad()
    def _set_from_observer(self, obs: Observer) -> None:
        assert obs.lo is not None
        unsigned = bool((obs.lo >= 0).all())
        s, z, _, _ = obs.qparams(self.bits, symmetric=self.symmetric, unsigned=unsigned)
        self.set_grid(float(s.reshape(-1)[0]), float(z.reshape(-1)[0]), unsigned)

    @torch.no_grad()
    def set_grid(self, scale: float, zero_point: float, unsigned: bool) -> None:
        """Fix the grid: ``scale``, integer ``zero_point`` and whether it is the unsigned grid."""
        self.scale.data.fill_(scale)
        self.zero_point.fill_(zero_point)
        self.unsigned.fill_(unsigned)
        self.calibrated.fill_(True)
        self._calibrated = True
        self._set_range(unsigned)

    @property
    def observing(self) -> bool:
        return self._observer is not None

    # --------------------------------------------------------------- forward

    def forward(self, x: Tensor) -> Tensor:
        if self.bypass:
            return x
        if self.per_token:
            return QF.fake_quantize_per_token(x, self.bits, self.symmetric, self.feature_dim)
        if self._observer is not None:
            self._observer.update(x)
            return x
        if not self._calibrated:
            log.info("activation quantizer used before calibrate(); taking its range from this batch")
            obs = Observer(self.observer_kind, percentile=self.percentile)
            obs.update(x)
            self._set_from_observer(obs)
        s: Tensor = self.scale
        if self.lsq:
            n = x[0].numel() if x.dim() > 1 else x.numel()
            s = _exact_grad_scale(s, QF.lsq_grad_scale(n, self.qmax)).clamp_min(QF.EPS)
        return QF.fake_quantize(x, s.to(x.dtype), self.zero_point.to(x.dtype), self.qmin, self.qmax)

    def qparams(self) -> dict[str, float | int | bool]:
        """The grid as plain numbers (for manifests and exports; a per-token grid has none)."""
        if self.per_token:
            raise ConfigError("per-token activation grids are computed at run time and have no fixed scale to export; "
                              "allowed for export: a_granularity = 'tensor'")  # fmt: skip
        return {"bits": self.bits, "scale": float(self.scale.detach()), "zero_point": int(self.zero_point),
                "qmin": self.qmin, "qmax": self.qmax, "unsigned": bool(self.unsigned)}  # fmt: skip

    def extra_repr(self) -> str:
        if self.per_token:
            return f"bits={self.bits}, per token, {'symmetric' if self.symmetric else 'asymmetric'}"
        kind = "unsigned" if bool(self.unsigned) else ("symmetric" if self.symmetric else "asymmetric")
        return f"bits={self.bits}, {kind}, observer={self.observer_kind.value}{', lsq' if self.lsq else ''}"
