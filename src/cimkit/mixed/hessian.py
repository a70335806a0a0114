"""Per-layer Hessian information from Hessian-vector products (double backward).

* :func:`hessian_trace` — Hutchinson's estimator Tr(H_l) ≈ E[v_lᵀ (H v)_l] with Rademacher probes v
  over the weights of every quantizable layer at once (one Hessian-vector product per probe gives
  all layers' estimates; the cross-layer terms have zero mean; ``blockwise=True`` removes them
  at one block product per layer). Stops when the largest relative
  change of any layer's running mean falls under ``tol`` (HAWQ-V2, Dong et al. NeurIPS 2020, Alg. 1:
  tol = 1e-3) or after ``max_probes`` probes.
* :func:`top_eigenvalues` — the top eigenvalue of each layer's diagonal Hessian block by power
  iteration (HAWQ, Dong et al. ICCV 2019, Sec. 3.1).

The Hessian is that of the data-set mean loss (batches weighted by their size), with the model in
eval mode (BatchNorm uses running statistics), with respect to layer weights only (no biases).
``scaled_dot_product_attention`` runs on its plain-math backend there (the fused kernels have no
double backward), so transformers work too; ``loss_fn`` is the task's loss (default cross-entropy).
First-order gradients are built once with ``create_graph=True`` and their graph is reused by every
probe, so each probe costs one backward pass over the selected samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cimkit.config import check_range
from cimkit.mixed._common import LossFn, as_batches, log, select_layers
from cimkit.utils import progress as progress_bar

try:  # torch >= 2.3
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def _math_attention() -> Any:
        return sdpa_kernel([SDPBackend.MATH])

except ImportError:  # pragma: no cover - older torch

    def _math_attention() -> Any:
        return torch.backends.cuda.sdp_kernel(enable_flash=False, enable_mem_efficient=False, enable_math=True)


@dataclass
class HessianInfo:
    """Per-layer Hessian statistics (all dicts keyed by layer name, in model order)."""

    names: list[str]
    params: dict[str, int]
    trace: dict[str, float] = field(default_factory=dict)
    trace_stderr: dict[str, float] = field(default_factory=dict)
    n_probes: int = 0
    converged: bool = False
    eigenvalue: dict[str, float] = field(default_factory=dict)
    eig_iters: int = 0
    n_samples: int = 0
    history: list[list[float]] = field(default_factory=list)  # running trace means per probe

    def mean_trace(self) -> dict[str, float]:
        """Tr(H_l)/n_l, the average curvature per weight used in Ω (HAWQ-V2 eq. 5).

        A Hutchinson estimate from few probes can come out negative although the curvature of a
        trained model's loss is not (near a minimum the Hessian is positive semi-definite); a negative
        Ω would then make fewer bits look *better*. Such a layer gets the estimate's standard error
        (or, with a single probe, ``1e-12``) as its trace instead, with a warning: its sensitivity is
        small but positive, so Ω still falls with more bits.
        """
        out = {}
        for n in self.names:
            t = self.trace[n]
            if t <= 0:
                floor = max(self.trace_stderr.get(n, 0.0), 1e-12)
                log.warning(
                    "hessian trace of %s is %.4g ± %.2g from %d probes (not positive: too few probes); using %.3g; "
                    "raise probes for a reliable estimate", n, t, self.trace_stderr.get(n, 0.0), self.n_probes, floor
                )  # fmt: skip
                t = floor
            out[n] = t / self.params[n]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "params": dict(self.params),
            "trace": dict(self.trace),
            "trace_stderr": dict(self.trace_stderr),
            "n_probes": self.n_probes,
            "converged": self.converged,
            "eigenvalue": dict(self.eigenvalue),
            "eig_iters": self.eig_iters,
            "n_samples": self.n_samples,
        }


class _HVP:
    """Holds the first-order gradient graph of the mean loss and computes H·v products."""

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        layers: Sequence[str] | None,
        loss_fn: LossFn | None,
        max_samples: int | None,
        batch_size: int,
        device: torch.device | str,
    ) -> None:
        self.model = model
        self.layers = select_layers(model, layers)
        self.names = [n for n, _ in self.layers]
        self.weights = [m.weight for _, m in self.layers]
        loss_fn = loss_fn or F.cross_entropy
        batches = as_batches(model, data, batch_size=batch_size, max_samples=max_samples, device=device)
        self.n_samples = sum(int(x.shape[0]) for x, _ in batches)
        self._was_training = model.training
        self._params = list(model.parameters())
        self._req = [p.requires_grad for p in self._params]
        model.eval()
        # only the selected weights are variables: no graph for biases / BN affine parameters
        chosen = {id(w) for w in self.weights}
        for p in self._params:
            p.requires_grad_(id(p) in chosen)
        for w in self.weights:
            w.requires_grad_(True)
        self.grads: list[torch.Tensor] = []
        try:
            for x, y in batches:
                # the fused attention kernels have no double backward: attention runs as plain ops here
                with _math_attention():
                    loss = loss_fn(model(x), y) * (x.shape[0] / self.n_samples)
                g = torch.autograd.grad(loss, self.weights, create_graph=True)
                self.grads = list(g) if not self.grads else [a + b for a, b in zip(self.grads, g)]
        except BaseException:
            self.close()
            raise

    def full(self, v: list[torch.Tensor]) -> list[torch.Tensor]:
        """H v for a vector over all selected layers' weights."""
        return list(torch.autograd.grad(self.grads, self.weights, grad_outputs=v, retain_graph=True))

    def block(self, i: int, v: torch.Tensor) -> torch.Tensor:
        """H_ii v: the diagonal block of layer ``i`` times ``v``."""
        (hv,) = torch.autograd.grad(self.grads[i], self.weights[i], grad_outputs=v, retain_graph=True)
        return hv

    def close(self) -> None:
        self.grads = []
        for p, r in zip(self._params, self._req):
            p.requires_grad_(r)
        self.model.train(self._was_training)


def _rademacher(shape: torch.Size, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.randint(0, 2, shape, generator=gen) * 2 - 1).to(device=device, dtype=torch.float32)


def hessian_trace(
    model: nn.Module,
    data: Any,
    *,
    layers: Sequence[str] | None = None,
    loss_fn: LossFn | None = None,
    max_probes: int = 100,
    min_probes: int = 10,
    tol: float = 1e-3,
    seed: int = 0,
    max_samples: int | None = 1024,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = True,
    eigenvalues: bool = False,
    eig_iters: int = 100,
    eig_tol: float = 1e-3,
    blockwise: bool = False,
) -> HessianInfo:
    """Hutchinson trace of each quantizable layer's Hessian block (and optionally top eigenvalues).

    Args:
        model: any module; its Linear/Conv weights (or ``layers``) are the variables.
        data: a loader of ``(x, y)`` batches, an ``(x, y)`` tensor pair, or an input tensor such as
            ZeroQ distilled data (labels are then the model's own predictions).
        loss_fn: ``loss(output, target)`` averaged over the batch; default cross-entropy.
        max_probes: stop after this many probes at the latest.
        min_probes: stop no earlier than after this many probes.
        tol: stop (after ``min_probes``) once no layer's running mean moved by more than ``tol``
            (relative) with the last probe.
        seed: seeds the probe generator (results are reproducible).
        max_samples: samples taken from ``data`` (None: all).
        eigenvalues: also run :func:`top_eigenvalues`-style power iteration on the same graph.
        blockwise: one block product H_ll v_l per layer and probe (L backward passes per probe)
            instead of one full H v: no cross-layer terms, so a lower variance for small layers at
            L times the cost. The default (one pass per probe) is unbiased all the same; its
            per-probe variance is 2·Σ_{i≠j}(H_ll)_ij² + ||H_l,rest||_F² (Rademacher probes), the
            blockwise one only the first term. Both draw the same probes for the same seed.

    Returns:
        :class:`HessianInfo` with ``trace`` (Tr(H_l), units of loss per weight²), its standard error,
        the probe count and whether the tolerance was met.
    """
    check_range("max_probes", max_probes, 1)
    check_range("min_probes", min_probes, 1)
    check_range("tol", tol, 0.0, lo_open=True)
    hvp = _HVP(model, data, layers, loss_fn, max_samples, batch_size, device)
    try:
        info = HessianInfo(
            names=hvp.names,
            params={n: int(w.numel()) for n, w in zip(hvp.names, hvp.weights)},
            n_samples=hvp.n_samples,
        )
        gen = torch.Generator().manual_seed(seed)
        n_layers = len(hvp.names)
        total = torch.zeros(n_layers, dtype=torch.float64)  # (L,) running sums
        total_sq = torch.zeros(n_layers, dtype=torch.float64)
        prev: torch.Tensor | None = None
        bar = progress_bar(range(max_probes), desc="hessian trace", enabled=progress, unit="probe")
        for k in bar:
            v = [_rademacher(w.shape, gen, w.device) for w in hvp.weights]
            hv = [hvp.block(i, vi) for i, vi in enumerate(v)] if blockwise else hvp.full(v)
            est = torch.stack([(a * b).sum().double() for a, b in zip(v, hv)]).cpu()  # (L,)
            total += est
            total_sq += est * est
            n = k + 1
            mean = total / n  # (L,)
            info.history.append(mean.tolist())
            if prev is not None:
                rel = ((mean - prev).abs() / (prev.abs() + 1e-12)).max().item()
                bar.set(rel=rel)
                if n >= min_probes and rel < tol:
                    info.converged = True
                    break
            prev = mean
        bar.close()
        n = len(info.history)
        info.n_probes = n
        mean = total / n
        var = (total_sq / n - mean * mean).clamp_min(0) * (n / max(n - 1, 1))  # (L,) sample variance
        for i, name in enumerate(hvp.names):
            info.trace[name] = float(mean[i])
            info.trace_stderr[name] = float(math.sqrt(var[i] / n))
        log.info(
            "hessian trace: %d probes on %d samples (%s)",
            n,
            hvp.n_samples,
            "converged" if info.converged else "max_probes reached",
        )
        if eigenvalues:
            eig, iters = _power_iteration(hvp, eig_iters, eig_tol, seed, progress)
            info.eigenvalue, info.eig_iters = eig, iters
        return info
    finally:
        hvp.close()


def _power_iteration(hvp: _HVP, max_iters: int, tol: float, seed: int, progress: bool) -> tuple[dict[str, float], int]:
    gen = torch.Generator().manual_seed(seed + 1)
    vs = []
    for w in hvp.weights:
        v = torch.randn(w.shape, generator=gen).to(w.device)
        vs.append(v / v.norm())
    lam = [float("nan")] * len(vs)
    active = list(range(len(vs)))
    it = 0
    bar = progress_bar(range(max_iters), desc="hessian eig", enabled=progress, unit="it")
    for it in bar:  # noqa: B007 - the count is reported
        still = []
        for i in active:  # one block product per unconverged layer (blocks need separate passes)
            hv = hvp.block(i, vs[i])
            new = float((vs[i] * hv).sum())
            norm = hv.norm()
            if norm > 0:
                vs[i] = hv / norm
            old = lam[i]
            lam[i] = new
            if math.isnan(old) or abs(new - old) > tol * (abs(old) + 1e-12):
                still.append(i)
        active = still
        bar.set(active=len(active))
        if not active:
            break
    bar.close()
    return {n: lam[i] for i, n in enumerate(hvp.names)}, it + 1


def top_eigenvalues(
    model: nn.Module,
    data: Any,
    *,
    layers: Sequence[str] | None = None,
    loss_fn: LossFn | None = None,
    max_iters: int = 100,
    tol: float = 1e-3,
    seed: int = 0,
    max_samples: int | None = 1024,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, float]:
    """Top eigenvalue (largest magnitude) of each layer's diagonal Hessian block, by power iteration.

    HAWQ (Dong et al. ICCV 2019, Alg. 1): v ← H_ll v / ||H_ll v||, λ = vᵀ H_ll v, until the relative
    change of λ is below ``tol`` for every layer or ``max_iters`` iterations. Same data conventions as
    :func:`hessian_trace`.
    """
    check_range("max_iters", max_iters, 1)
    check_range("tol", tol, 0.0, lo_open=True)
    hvp = _HVP(model, data, layers, loss_fn, max_samples, batch_size, device)
    try:
        eig, _ = _power_iteration(hvp, max_iters, tol, seed, progress)
        return eig
    finally:
        hvp.close()
