"""The LM concern through pipelines on a next-token task: BitLinear QAT, noise-aware distillation on
analog tiles, hardware-aware LoRA, a text sample in the report, Hessian mixed precision."""

from __future__ import annotations

import copy

import pytest
import torch

from cimkit.experiment import RunContext, run_pipeline
from cimkit.experiment.pipeline import PipelineConfig, PipelineVariant, parse_steps
from cimkit.mixed.variants import MixedVariant, MixedVariantConfig
from cimkit.tasks import get_task


def _run(ctx: RunContext, steps: list[dict], eval_: dict | str = "auto", name: str = "v") -> tuple:
    cfg = PipelineConfig(steps=steps, eval=eval_)
    res = PipelineVariant(name, cfg).run(ctx)
    return res, {"name": name, "kind": "pipeline", "metrics": res.metrics, "units": res.units, "details": res.details}


def test_next_token_distillation_is_the_per_token_kl() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 5, 7, generator=g), torch.randn(3, 5, 7, generator=g)
    kl = (t.softmax(-1) * (t.log_softmax(-1) - s.log_softmax(-1))).sum(-1)  # (3, 5) per token
    assert float(get_task("next_token").distill(s, t, 1.0)) == pytest.approx(float(kl.mean()), rel=1e-5)


def test_bitlinear_qat_and_a_text_sample_in_the_report(text_ctx: RunContext) -> None:
    res, rec = _run(text_ctx, [{"op": "bitlinear"}, {"op": "finetune", "epochs": 1, "lr": 1e-3},
                               {"op": "sample", "tokens": 20, "prompt": "a"}])  # fmt: skip
    assert res.metrics["bit_layers"] == 6 and res.metrics["loss"] > 0
    (sample,) = res.details["samples"]
    assert sample["text"].startswith("a") and len(sample["text"]) == 21
    assert set(sample["text"]) <= set(text_ctx.data.vocab)
    sections = PipelineVariant.report_sections([rec])
    assert any(s.title == "Text samples" and "<pre>" in s.html for s in sections)


def test_sample_is_reproducible_and_refuses_unknown_characters(text_ctx: RunContext) -> None:
    _, a = _run(text_ctx, [{"op": "sample", "tokens": 12, "seed": 3}])
    _, b = _run(text_ctx, [{"op": "sample", "tokens": 12, "seed": 3}])
    assert a["details"]["samples"][0]["text"] == b["details"]["samples"][0]["text"]
    with pytest.raises(Exception, match="vocabulary"):
        _run(text_ctx, [{"op": "sample", "prompt": "xyz"}])


def test_noise_aware_distillation_on_analog_tiles(text_ctx: RunContext) -> None:
    hwa = {"noise": "additive_channel", "noise_std": 0.03, "clip": "gaussian_channel", "clip_sigma": 2.5}
    steps = [{"op": "analog", "device": "pcm", "mapping": "afm", "hwa": hwa, "calib_batches": 2},
             {"op": "finetune", "epochs": 1, "lr": 1e-3, "kd_alpha": 1.0, "kd_temperature": 1.0}]  # fmt: skip
    res, _ = _run(text_ctx, steps, {"protocol": "chips_times", "repeats": 2, "times": [1.0, 86400.0]})
    fit = res.details["finetune"][0]
    assert fit["train"]["kd_alpha"] == 1.0 and fit["history"][0]["loss"] > 0  # KL to the fp32 teacher
    assert res.metrics["loss_std"] >= 0 and "loss_1d" in res.metrics and res.metrics["analog_layers"] == 7


def test_hardware_aware_lora_trains_only_the_adapters(text_ctx: RunContext) -> None:
    steps = [{"op": "analog", "device": "rram", "hwa": {"noise": "additive_channel", "noise_std": 0.05, "clip": "none"}},
             {"op": "lora", "rank": 2, "alpha": 4.0, "halora_mu": 0.01},
             {"op": "finetune", "epochs": 1, "lr": 1e-2}]  # fmt: skip
    state, metrics, _, _ = run_pipeline(text_ctx, parse_steps(steps), None, "lora")
    base = text_ctx.baseline.state_dict()
    sd = state.model.state_dict()
    for k, v in base.items():  # every base weight kept its trained value (frozen), under its new name
        kk = k if k in sd else k.replace(".weight", ".base.weight").replace(".bias", ".base.bias")
        assert torch.equal(sd[kk], v), k
    assert metrics["loss"] > 0 and state.metrics["lora_params"] == 2 * sum(
        m.in_features + m.out_features for m in copy.deepcopy(text_ctx.baseline).modules()
        if isinstance(m, torch.nn.Linear))  # fmt: skip


def test_mixed_precision_on_a_language_model(text_ctx: RunContext) -> None:
    cfg = MixedVariantConfig.from_dict({**MixedVariant.tiny, "bits": [2, 4, 8], "uniform_points": [4, 8],
                                        "hessian_samples": 16, "hessian_batch_size": 8, "calib_batches": 1})  # fmt: skip
    res = MixedVariant("mp", cfg).run(text_ctx)
    assert {"loss", "ptq_loss", "size_bytes", "avg_w_bits"} <= set(res.metrics)
    assert res.units["loss"] == "nats/token" and res.details["metric"] == "loss"
    u = {r["bits"]: r for r in res.details["uniform"]}
    assert u[8]["loss"] <= u[4]["loss"] + 0.05  # more bits, no worse (tiny model, small tolerance)
    assert res.metrics["avg_w_bits"] <= 4.0 + 1e-9  # the default budget: the size of uniform 4-bit weights
