"""Low-rank adapters (LoRA) kept digital beside a (possibly analog) base layer, and HaLoRA's regularizer.

LoRA (Hu et al., ICLR 2022): a frozen base ``y = W x + b`` gets a trainable low-rank update,

    y = base(x) + (α / r) · B A x,    A ∈ R^{r x in},  B ∈ R^{out x r},

with ``A`` initialized like a Linear's weight (Kaiming-uniform) and ``B = 0``, so the adapted
model starts exactly at the base model.

Hardware-aware LoRA (HaLoRA; Wu, Ding, Zhou et al., arXiv 2502.19747, 2025): the pretrained base
weights sit on noisy RRAM crossbars, the adapters on noise-free SRAM (digital); the adapters are
trained under base-weight noise and with

    L_total = L + μ · L_reg,    L_reg = Σ_layers ( ‖A Aᵀ‖₂ + ‖Bᵀ B‖₂ )

(spectral norms, i.e. the largest singular values), which bounds the gap between the noisy and
the noise-free training trajectories.

Composition with the analog transform: :class:`LoRALinear` is a container holding ``base`` (a
submodule: a plain, quantized or analog ``nn.Linear``) and the adapter factors as bare
``Parameter`` s, never as ``nn.Linear`` modules, so :func:`cimkit.analog.convert_` maps the base
(whether it runs before or after :func:`lora_`) and never the adapters. In training mode an
analog base computes with its hardware-aware noise (``cimkit.analog.set_hwa``), so the adapters
learn under base-weight noise; in evaluation the base reads its programmed chip. ``unwrap()`` (and
``cimkit.undo_``) drops the adapters; :func:`merge_lora_` folds them into the base weights instead.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cimkit.config import Config, check_choice, check_range
from cimkit.errors import ConfigError
from cimkit.nn.adapters import standardize_
from cimkit.nn.transform import register_transform
from cimkit.nn.walk import FilterFn, select, set_module
from cimkit.train.loop import Callback

__all__ = [
    "HaLoRARegularizer", "LoRAConfig", "LoRALinear", "halora_penalty", "lora_", "lora_layers", "merge_lora_",
    "spectral_penalty",
]  # fmt: skip


@dataclass
class LoRAConfig(Config):
    """Where and how to add LoRA adapters (module docstring).

    ``rank`` r and ``alpha`` α (the update is scaled by α / r); ``dropout`` on the adapter's input
    while training. ``include`` / ``skip``: layer-name patterns of the ``nn.Linear`` layers to adapt
    (exact, glob, ``@first``, ``@last``; default: every Linear). ``freeze``: make every parameter of
    the model that is not an adapter factor non-trainable (the base, embeddings, norms), except the
    parameters whose names match a pattern of ``trainable`` (e.g. ``["*.input_range"]`` to keep
    learning analog DAC ranges). ``init_b``: ``zeros`` (LoRA's; the model starts at the base) or
    ``normal`` (N(0, ``init_std``²), for tests and diagnostics). ``seed`` seeds the initialization.
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    include: list[str] = field(default_factory=lambda: ["*"])
    skip: list[str] = field(default_factory=list)
    freeze: bool = True
    trainable: list[str] = field(default_factory=list)
    init_b: str = "zeros"
    init_std: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("rank", self.rank, 1, 1 << 16)
        check_range("alpha", self.alpha, 0.0, lo_open=True)
        check_range("dropout", self.dropout, 0.0, 1.0, hi_open=True)
        check_choice("init_b", self.init_b, ("zeros", "normal"))
        check_range("init_std", self.init_std, 0.0)
        for name in ("include", "skip", "trainable"):
            v = getattr(self, name)
            if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
                raise ConfigError(f"{name}: expected a list of name patterns, got {v!r}")


class LoRALinear(nn.Module):
    """``base(x) + (α / r) · B A dropout(x)`` (module docstring). ``base`` is any ``nn.Linear``
    (plain, quantized, analog); ``lora_A`` (r, in) and ``lora_B`` (out, r) are digital parameters."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0,
                 init_b: str = "zeros", init_std: float = 0.02, generator: torch.Generator | None = None) -> None:  # fmt: skip
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ConfigError(f"LoRA: the base must be an nn.Linear, got {type(base).__name__}")
        self.base = base
        w = base.weight
        self.rank, self.alpha = int(rank), float(alpha)
        self.scaling = self.alpha / self.rank
        kw = {"device": w.device, "dtype": w.dtype}
        a = torch.empty(self.rank, base.in_features, **kw)
        bound = 1.0 / math.sqrt(base.in_features)  # kaiming_uniform(a=sqrt(5)), nn.Linear's default
        a.uniform_(-bound, bound, generator=generator) if generator is not None else a.uniform_(-bound, bound)
        b = torch.zeros(base.out_features, self.rank, **kw)
        if init_b == "normal":
            b.normal_(0.0, init_std, generator=generator)
        self.lora_A = nn.Parameter(a)  # (r, in)
        self.lora_B = nn.Parameter(b)  # (out, r)
        self.dropout = nn.Dropout(dropout)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> Tensor:
        """The update ``(α / r) · B A`` (out, in) the adapters add to the base weight."""
        return self.scaling * (self.lora_B @ self.lora_A)  # (out, in)

    def adapter(self, x: Tensor) -> Tensor:
        """The adapter branch alone: ``(α / r) · B A dropout(x)`` (..., out)."""
        return F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scaling  # (..., out)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.adapter(x)  # (..., out)

    def unwrap(self) -> nn.Module:
        """The transform protocol: the base layer (the adapters are dropped)."""
        return self.base

    def adapter_macs(self) -> int:
        """Multiply-accumulates of the adapter branch per input vector: ``r · (in + out)`` (digital)."""
        return self.rank * (self.in_features + self.out_features)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


def lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    """``(name, layer)`` of every LoRA wrapper in ``model``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


@register_transform(LoRAConfig, "lora", "low-rank adapters (LoRA) beside nn.Linear layers, kept digital (LoRAConfig)")
def lora_(model: nn.Module, config: LoRAConfig | None = None, filter_fn: FilterFn | None = None) -> nn.Module:
    """Wrap the selected ``nn.Linear`` layers of ``model`` in :class:`LoRALinear`, in place; returns
    ``model``. With ``freeze`` every other parameter stops being trainable (``trainable`` patterns
    excepted). Layers already wrapped are left alone."""
    cfg = config or LoRAConfig()
    model = standardize_(model)
    if isinstance(model, nn.Linear) and not list(model.children()):
        raise ConfigError("lora_: pass a model that contains Linear layers, not a bare nn.Linear (wrap it)")
    inside = {n for n, _ in lora_layers(model)}

    def wrapped(name: str) -> bool:  # the base of an existing wrapper
        parent, _, leaf = name.rpartition(".")
        return leaf == "base" and parent in inside

    refs = [r for r in select(model, nn.Linear, include=cfg.include, skip=cfg.skip, filter_fn=filter_fn)
            if not wrapped(r.name)]  # fmt: skip
    if not refs:
        raise ConfigError(f"lora_: no nn.Linear layer matches include={cfg.include} skip={cfg.skip}")
    gen = torch.Generator().manual_seed(int(cfg.seed))
    for ref in refs:
        wrapped = LoRALinear(ref.module, cfg.rank, cfg.alpha, cfg.dropout, cfg.init_b, cfg.init_std, gen)  # type: ignore[arg-type]
        wrapped.train(ref.module.training)
        set_module(model, ref.name, wrapped)
    if cfg.freeze:
        adapters = {id(p) for _, m in lora_layers(model) for p in (m.lora_A, m.lora_B)}
        for name, p in model.named_parameters():
            keep = id(p) in adapters or any(fnmatch.fnmatchcase(name, pat) for pat in cfg.trainable)
            p.requires_grad_(keep)
    return model


@torch.no_grad()
def merge_lora_(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (``W += (α / r) B A``) and remove the wrappers, in
    place; returns ``model``. A programmed analog base forgets its chip (the merged weights have to
    be programmed again with ``cimkit.analog.program``)."""
    for name, m in lora_layers(model):
        base = m.base
        base.weight.add_(m.delta_weight().to(base.weight.dtype))
        chip = getattr(base, "chip", None)
        if chip is not None and hasattr(chip, "clear"):
            chip.clear()
        if not name:
            return base
        set_module(model, name, base)
    return model


def spectral_penalty(a: Tensor, b: Tensor) -> Tensor:
    """``‖A Aᵀ‖₂ + ‖Bᵀ B‖₂`` for ``A`` (r, in) and ``B`` (out, r): the spectral norms (largest
    singular values) of the two r x r Gram matrices (HaLoRA, Wu et al. 2025)."""
    return torch.linalg.matrix_norm(a @ a.T, ord=2) + torch.linalg.matrix_norm(b.T @ b, ord=2)


def halora_penalty(model: nn.Module) -> Tensor:
    """HaLoRA's ``L_reg``: :func:`spectral_penalty` summed over every LoRA layer of ``model``."""
    layers = lora_layers(model)
    if not layers:
        raise ConfigError("halora_penalty: the model has no LoRA adapters (call lora_ first)")
    return torch.stack([spectral_penalty(m.lora_A, m.lora_B) for _, m in layers]).sum()


class HaLoRARegularizer(Callback):
    """A :class:`cimkit.train.Callback` adding ``μ · L_reg`` (:func:`halora_penalty`) to the loss."""

    def __init__(self, mu: float) -> None:
        check_range("halora_mu", mu, 0.0)
        self.mu = float(mu)

    def loss_term(self, model: nn.Module, step: int) -> Tensor | None:
        return self.mu * halora_penalty(model) if self.mu > 0 else None
