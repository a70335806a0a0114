"""Pipeline steps of the LM concern: ``bitlinear``, ``lora`` and ``sample`` (a text sample in the report).

::

    steps = [
      { op = "bitlinear" },                                   # ternary BitLinear projections (QAT follows)
      { op = "finetune", epochs = 1, lr = 5e-4 },
      { op = "sample", tokens = 300 },                        # text from the model as it is now
    ]
    steps = [
      { op = "analog", device = "rram", hwa = { noise = "additive_channel", noise_std = 0.03, clip = "none" } },
      { op = "lora", rank = 8, alpha = 16, halora_mu = 0.01 }, # digital adapters, trained under base noise
      { op = "finetune", epochs = 1, lr = 1e-3 },
    ]
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cimkit.analog.convert import drift, program
from cimkit.analog.layers import analog_layers
from cimkit.config import Config, check_range
from cimkit.errors import ConfigError
from cimkit.experiment.context import RunContext
from cimkit.experiment.pipeline import STEPS, PipelineState, Step
from cimkit.lm.bitlinear import BitConfig, bitlinear_, describe
from cimkit.lm.lora import HaLoRARegularizer, LoRAConfig, lora_, lora_layers
from cimkit.models.gpt import generate
from cimkit.report import Section
from cimkit.utils import derive_seed

__all__ = ["BitLinearStep", "LoRAStep", "LoRAStepConfig", "SampleConfig", "SampleStep", "sample_text"]


@STEPS.register("bitlinear", "ternary BitLinear layers (BitNet b1.58; BitConfig fields); fine-tune after it (QAT)")
class BitLinearStep(Step):
    op = "bitlinear"
    config_cls = BitConfig
    tiny = {"skip": []}

    def run(self, state: PipelineState, ctx: RunContext) -> None:
        state.model = bitlinear_(state.model, self.cfg)  # type: ignore[arg-type]
        d = describe(state.model)
        state.add_metric("bit_layers", float(d["bit_layers"]), "count")
        state.add_metric("ternary_weights", float(d["ternary_weights"]), "count")

    def dry_run(self, model: nn.Module, example: Any) -> nn.Module:
        return bitlinear_(model, self.cfg)  # type: ignore[arg-type]


@dataclass
class LoRAStepConfig(LoRAConfig):
    """:class:`~cimkit.lm.LoRAConfig` fields, plus ``halora_mu``: the weight μ of HaLoRA's
    regularizer ``μ (‖AAᵀ‖₂ + ‖BᵀB‖₂)`` added to the loss of the fine-tuning steps after this one
    (0 = vanilla LoRA)."""

    halora_mu: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("halora_mu", self.halora_mu, 0.0)

    def lora_config(self) -> LoRAConfig:
        return LoRAConfig.from_dict({k: v for k, v in self.to_dict().items() if k != "halora_mu"})


@STEPS.register("lora", "low-rank adapters kept digital beside (analog) Linear layers, the rest frozen; optional "
                "HaLoRA regularizer (LoRAConfig fields, halora_mu)")  # fmt: skip
class LoRAStep(Step):
    op = "lora"
    config_cls = LoRAStepConfig
    tiny = {"rank": 2, "alpha": 4.0}

    def run(self, state: PipelineState, ctx: RunContext) -> None:
        cfg: LoRAStepConfig = self.cfg  # type: ignore[assignment]
        state.model = lora_(state.model, cfg.lora_config())
        if cfg.halora_mu > 0:
            state.callbacks.append(HaLoRARegularizer(cfg.halora_mu))
        layers = lora_layers(state.model)
        n_adapter = sum(m.lora_A.numel() + m.lora_B.numel() for _, m in layers)
        state.add_metric("lora_layers", float(len(layers)), "count")
        state.add_metric("lora_params", float(n_adapter), "count")
        state.add_metric("trainable_params", float(sum(p.numel() for p in state.model.parameters()
                                                       if p.requires_grad)), "count")  # fmt: skip

    def dry_run(self, model: nn.Module, example: Any) -> nn.Module:
        return lora_(model, self.cfg.lora_config())  # type: ignore[attr-defined]


@dataclass
class SampleConfig(Config):
    """A text sample from the model as it is at this step: ``tokens`` new characters after
    ``prompt`` (each character must be in the dataset's vocabulary), sampled at ``temperature``
    (0 = greedy) from the ``top_k`` most likely (0 = all), with a generator seeded by ``seed``.
    ``time``: for a model with analog layers, program a chip (from ``seed``) and drift it to
    ``time`` seconds first (None: the layers as they are)."""

    tokens: int = 200
    prompt: str = "\n"
    temperature: float = 0.8
    top_k: int = 10
    seed: int = 0
    time: float | None = None

    def __post_init__(self) -> None:
        check_range("tokens", self.tokens, 1, 100_000)
        check_range("temperature", self.temperature, 0.0)
        check_range("top_k", self.top_k, 0)
        if not self.prompt:
            raise ConfigError("prompt: empty; give at least one character (e.g. a newline)")
        if self.time is not None:
            check_range("time", self.time, 0.0, 1e12)


def sample_text(model: nn.Module, vocab: list[str], cfg: SampleConfig) -> str:
    """``cfg.prompt`` followed by ``cfg.tokens`` sampled characters, without a KV cache
    (:func:`cimkit.models.gpt.generate`)."""
    index = {ch: i for i, ch in enumerate(vocab)}
    missing = sorted({c for c in cfg.prompt if c not in index})
    if missing:
        raise ConfigError(f"prompt: characters {missing!r} are not in the dataset's vocabulary")
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    idx = torch.tensor([[index[c] for c in cfg.prompt]], dtype=torch.long, device=dev)  # (1, T0)
    gen = torch.Generator(device=dev).manual_seed(int(cfg.seed))
    out = generate(model, idx, cfg.tokens, temperature=cfg.temperature, top_k=cfg.top_k or None, generator=gen)
    return "".join(vocab[int(i)] for i in out[0].tolist())


@STEPS.register("sample", "a text sample from the current model (next-token tasks), shown in the report")
class SampleStep(Step):
    op = "sample"
    config_cls = SampleConfig
    tiny = {"tokens": 8}
    tasks = ("next_token",)

    def run(self, state: PipelineState, ctx: RunContext) -> None:
        cfg: SampleConfig = self.cfg  # type: ignore[assignment]
        vocab = getattr(ctx.data, "vocab", None)
        if ctx.task.name != "next_token" or not vocab:
            raise ConfigError(f"steps[{self.index}]: sample needs a next-token task on a text dataset with a "
                              f"vocabulary; this experiment's task is '{ctx.task.name}'")  # fmt: skip
        if cfg.time is not None and list(analog_layers(state.model)):
            program(state.model, derive_seed(ctx.seed, "sample", self.variant))
            drift(state.model, cfg.time)
        state.model.eval()
        text = sample_text(state.model, list(vocab), cfg)
        state.details.setdefault("samples", []).append({"step": self.index, "prompt": cfg.prompt, "text": text,
                                                        "time": cfg.time})  # fmt: skip

    @classmethod
    def report_sections(cls, records: list[dict[str, Any]]) -> list[Section]:
        blocks = []
        for r in records:
            for s in r.get("details", {}).get("samples", []):
                when = "" if s.get("time") is None else f" (chip at t = {s['time']:g} s)"
                blocks.append(f"<h3>{html.escape(r['name'])}{html.escape(when)}</h3>"
                              f"<pre>{html.escape(s['text'])}</pre>")  # fmt: skip
        return [Section("Text samples", "".join(blocks))] if blocks else []
