"""The ``mixed`` experiment variant: Hessian mixed precision under a budget, PTQ then optional QAT.

::

    [[variants]]
    kind = "mixed"
    name = "mp_w3"
    size_uniform_bits = 3      # weight budget: the size of uniform 3-bit weights
    a_bits = 8
    qat_epochs = 1
    uniform_points = [2, 3, 4, 6, 8]

The report shows accuracy vs weight size for every ``mixed`` variant with the uniform-precision
points (and random plans of the same size, if asked), the Ω-vs-size Pareto frontier, and the chosen
plan per layer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from cimkit.config import check_range
from cimkit.cost import field_unit
from cimkit.errors import ConfigError
from cimkit.experiment.context import DEFAULT_CALIB_BATCHES, RunContext
from cimkit.experiment.variant import VARIANTS, Variant, VariantResult
from cimkit.mixed.api import Analysis, MixedConfig, analyze
from cimkit.mixed.plan import BitPlan
from cimkit.mixed.report import mixed_sections
from cimkit.mixed.zeroq import ZeroQConfig, distill_data
from cimkit.nn.adapters import standardize_
from cimkit.quant.accounting import account
from cimkit.train import FinetuneConfig

log = logging.getLogger("cimkit.mixed")


@dataclass
class MixedVariantConfig(MixedConfig):
    """:class:`MixedConfig` fields plus how to evaluate the plan.

    Without any budget field the budget is ``size_uniform_bits = 4``. ``qat_epochs`` of fine-tuning (0: PTQ only) at ``qat_lr`` with the experiment's optimizer;
    ``calib_batches`` training batches calibrate activations (ZeroQ data when ``data_free``);
    ``uniform_points``: uniform bit widths evaluated for comparison (PTQ, plus the same QAT when
    ``uniform_qat``); ``random_plans``: that many random plans of the same size get the same QAT.
    """

    qat_epochs: int = 1
    qat_lr: float = 1e-4
    qat_kd_alpha: float = 0.0
    calib_batches: int = DEFAULT_CALIB_BATCHES
    uniform_points: list[int] = field(default_factory=lambda: [2, 3, 4, 6, 8])
    uniform_qat: bool = False
    random_plans: int = 0
    save_plan: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.budgets():  # no budget given: the size of uniform 4-bit weights
            self.size_uniform_bits = 4.0
        check_range("qat_epochs", self.qat_epochs, 0)
        check_range("qat_lr", self.qat_lr, 0.0, lo_open=True)
        check_range("qat_kd_alpha", self.qat_kd_alpha, 0.0, 1.0)
        check_range("calib_batches", self.calib_batches, 1)
        check_range("random_plans", self.random_plans, 0)
        for b in self.uniform_points:
            if b not in self.bits:
                raise ConfigError(f"uniform_points: {b} is not a candidate bit width; allowed: {self.bits}")

    def finetune(self, kd_temperature: float) -> FinetuneConfig:
        """The QAT recipe: ``qat_epochs`` at the absolute learning rate ``qat_lr``."""
        return FinetuneConfig(epochs=self.qat_epochs, lr=self.qat_lr, kd_alpha=self.qat_kd_alpha,
                              kd_temperature=kd_temperature)  # fmt: skip

    def mixed_config(self) -> MixedConfig:
        names = set(MixedConfig.__dataclass_fields__)
        return MixedConfig.from_dict({k: v for k, v in self.to_dict().items() if k in names})


@VARIANTS.register("mixed", "Hessian-aware mixed precision (HAWQ-V2/V3 ILP) under size/BOPs/tiles/energy/latency "
                   "budgets, then QAT")
class MixedVariant(Variant):
    config_cls = MixedVariantConfig
    cfg: MixedVariantConfig
    tiny = {"probes": 4, "min_probes": 2, "hessian_samples": 64, "qat_epochs": 1, "uniform_points": [4],
            "calib_batches": 1}  # fmt: skip

    # ------------------------------------------------------------------ run

    def _calib(self, ctx: RunContext, model: nn.Module) -> list[Any]:
        cfg = self.cfg
        if not cfg.data_free:
            return ctx.calib_batches(cfg.calib_batches)
        zq = ZeroQConfig(n_samples=cfg.zeroq_samples, iters=cfg.zeroq_iters, seed=cfg.seed)
        x = distill_data(model, tuple(ctx.data.x_train.shape[1:]), zq, device=ctx.device, progress=ctx.progress)
        return [x]

    def _evaluate_plan(self, ctx: RunContext, plan: BitPlan, calib: list[Any], tag: str,
                       qat: bool) -> tuple[dict[str, float], nn.Module]:  # fmt: skip
        """``{ptq_<primary>, <primary>}`` of ``plan`` (``accuracy`` for classification, ``loss`` for
        next-token prediction, ``psnr`` for regression), and the final model."""
        cfg = self.cfg
        p = ctx.primary
        model = standardize_(ctx.baseline_copy())  # e.g. GPT-2's Conv1D layers as Linears, as quantize_ sees them
        plan.apply(model, calib)
        out = {f"ptq_{p}": float(ctx.evaluate(model)[p])}
        if qat and cfg.qat_epochs > 0:
            ctx.finetune(model, cfg.finetune(ctx.train_cfg.kd_temperature), tag=f"mixed-{tag}", key=plan.to_dict())
            out[p] = float(ctx.evaluate(model)[p])
        else:
            out[p] = out[f"ptq_{p}"]
        return out, model

    def run(self, ctx: RunContext) -> VariantResult:
        cfg = self.cfg
        if cfg.data_free and ctx.task.name != "classification":
            raise ConfigError(f"variants.{self.name}: data_free (ZeroQ distilled inputs) needs a classification task "
                              f"with BatchNorm; this experiment's task is '{ctx.task.name}'")  # fmt: skip
        p = ctx.primary
        model = standardize_(ctx.baseline_copy())  # e.g. GPT-2's Conv1D layers as Linears, as quantize_ sees them
        t0 = time.perf_counter()
        if cfg.data_free:
            data = None
        else:
            data = []
            for xb, yb in ctx.train_loader(cfg.hessian_batch_size, seed=ctx.seed + 11):
                data.append((xb, yb))
                if sum(len(b[0]) for b in data) >= cfg.hessian_samples:
                    break
        analysis = analyze(
            model,
            data,
            cfg.mixed_config(),
            input_shape=tuple(ctx.data.x_train.shape[1:]),
            loss_fn=ctx.task.loss,  # the Hessian of the task's own loss (cross-entropy, per-token CE, MSE)
            device=ctx.device,
            progress=ctx.progress,
        )
        plan = analysis.allocate()
        t_plan = time.perf_counter() - t0
        if cfg.save_plan:
            plan.save(ctx.out_dir / f"{self.name}.plan.json")
        calib = self._calib(ctx, model)
        res, final = self._evaluate_plan(ctx, plan, calib, self.name, qat=True)

        uniform = []
        for b in cfg.uniform_points:
            up = analysis.uniform(b)
            r, _ = self._evaluate_plan(ctx, up, calib, f"{self.name}-u{b}", qat=cfg.uniform_qat)
            uniform.append({"bits": b, "size_bytes": up.size_bytes, "omega": up.omega, **r})
        randoms = []
        if cfg.random_plans:
            for i, rp in enumerate(analysis.random(plan.size_bytes, cfg.random_plans, seed=cfg.seed)):
                r, _ = self._evaluate_plan(ctx, rp, calib, f"{self.name}-r{i}", qat=True)
                randoms.append({"size_bytes": rp.size_bytes, "omega": rp.omega, "layer_bits": rp.layer_bits, **r})

        params = {layer.name: layer.params for layer in analysis.table.layers}
        unit = ctx.task.units.get(p, "")
        metrics: dict[str, float] = {
            p: res[p],
            f"ptq_{p}": res[f"ptq_{p}"],
            "size_bytes": account(final, ctx.example_input()).total["size_bytes"],  # the whole model
            "plan_size_bytes": plan.size_bytes,  # the planned Linear/Conv layers (the ILP's size)
            "avg_w_bits": plan.average_bits(params),
            "bops": plan.bops,
            "tiles": plan.tiles,
            "omega": plan.omega,
            "hessian_probes": float(analysis.hessian.n_probes),
            "plan_seconds": t_plan,
        }
        units = {
            p: unit,
            f"ptq_{p}": unit,
            "size_bytes": "bytes",
            "plan_size_bytes": "bytes",
            "avg_w_bits": "bits",
            "bops": "bit-op/sample",
            "tiles": "count",
            "omega": "nats",
            "hessian_probes": "count",
            "plan_seconds": "s",
        }
        for k, v in plan.costs.items():  # every other budgeted cost of the plan (e.g. energy_uj)
            metrics[f"plan_{k}"] = v
            units[f"plan_{k}"] = field_unit(k)
        if randoms:
            metrics[f"random_{p}_mean"] = float(np.mean([r[p] for r in randoms]))
            units[f"random_{p}_mean"] = unit
        details = {
            "metric": p,
            "plan": plan.to_dict(),
            "layers": _layer_rows(analysis, plan),
            "pareto": [{"size_bytes": p.cost, "omega": p.omega} for p in analysis.pareto(max_points=300)],
            "uniform": uniform,
            "random": randoms,
            "hessian": analysis.hessian.to_dict(),
        }
        return VariantResult(metrics=metrics, units=units, details=details, model=final)

    @classmethod
    def report_sections(cls, records: list[dict[str, Any]]) -> list[Any]:
        return mixed_sections(records)


def _layer_rows(analysis: Analysis, plan: BitPlan) -> list[dict[str, Any]]:
    out = []
    for i, layer in enumerate(analysis.table.layers):
        b = plan.layer_bits[layer.name]
        j = analysis.table.bits.index(b)
        out.append({
            "layer": layer.name, "params": layer.params, "macs": layer.macs, "w_bits": b,
            "mean_trace": float(analysis.table.mean_trace[i]), "omega": float(analysis.table.omega[i, j]),
            "trace_stderr": analysis.hessian.trace_stderr.get(layer.name, 0.0) / layer.params,
        })  # fmt: skip
    return out
