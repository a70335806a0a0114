"""Mixed precision from Hessian sensitivity (HAWQ-V2/V3) and data-free calibration (ZeroQ).

``plan = mixed_precision(model, loader, budget={"size_uniform_bits": 4})`` computes per-layer
Hessian traces (Hutchinson), the sensitivity Ω[layer, bits], and solves an ILP for one weight bit
width per layer under size / BOPs / crossbar-tile budgets; ``plan.apply(model, calib)`` quantizes
through :func:`cimkit.quant.quantize_`. Building blocks: :func:`hessian_trace`,
:func:`top_eigenvalues`, :func:`sensitivity`, :func:`solve_ilp`, :func:`pareto_frontier`,
:func:`distill_data`.
"""

from cimkit.mixed.allocate import ParetoPoint, pareto_frontier, random_plans, solve_ilp
from cimkit.mixed.api import BUDGET_FIELDS, Analysis, MixedConfig, analyze, mixed_precision
from cimkit.mixed.hessian import HessianInfo, hessian_trace, top_eigenvalues
from cimkit.mixed.plan import BitPlan, plan_from_choice, uniform_choice
from cimkit.mixed.sensitivity import (
    LayerInfo,
    SensitivityTable,
    layer_infos,
    quantization_errors,
    sensitivity,
    tiles_formula,
)
from cimkit.mixed.zeroq import ZeroQConfig, bn_statistics_loss, distill_data

__all__ = [
    "BUDGET_FIELDS",
    "Analysis",
    "BitPlan",
    "HessianInfo",
    "LayerInfo",
    "MixedConfig",
    "ParetoPoint",
    "SensitivityTable",
    "ZeroQConfig",
    "analyze",
    "bn_statistics_loss",
    "distill_data",
    "hessian_trace",
    "layer_infos",
    "mixed_precision",
    "pareto_frontier",
    "plan_from_choice",
    "quantization_errors",
    "random_plans",
    "sensitivity",
    "solve_ilp",
    "tiles_formula",
    "top_eigenvalues",
    "uniform_choice",
]
