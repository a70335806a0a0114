"""The ``fp32`` variant: the trained float baseline as it is (its size and cost are added by the
concerns' result hooks, e.g. the cost model, from the model it returns)."""

from __future__ import annotations

from dataclasses import dataclass

from cimkit.config import Config
from cimkit.experiment.context import RunContext
from cimkit.experiment.variant import VARIANTS, Variant, VariantResult


@dataclass
class FP32Config(Config):
    """No options: the baseline is evaluated as trained."""


@VARIANTS.register("fp32", "the trained float32 baseline, evaluated on the test set")
class FP32Variant(Variant):
    config_cls = FP32Config

    def run(self, ctx: RunContext) -> VariantResult:
        model = ctx.baseline_copy()
        ev = {k: v for k, v in ctx.evaluate(model).items() if k != "n"}
        params = sum(p.numel() for p in model.parameters())
        metrics = {**ev, "params": params}
        units = {**{k: ctx.task.units.get(k, "") for k in ev}, "params": "count"}
        return VariantResult(metrics=metrics, units=units, model=model)
