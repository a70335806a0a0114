"""Experiment variant kinds: the runner knows none of them by name, each registers here.

A kind subclasses :class:`Variant`, names its config class and implements ``run(ctx)``::

    @VARIANTS.register("ptq", "post-training quantization")
    class PTQVariant(Variant):
        config_cls = PTQConfig
        def run(self, ctx: RunContext) -> VariantResult: ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from cimkit.config import Config
from cimkit.errors import CimkitError
from cimkit.plugins import load_plugins
from cimkit.registry import Registry

if TYPE_CHECKING:
    from cimkit.experiment.context import RunContext
    from cimkit.report import Section


@dataclass
class VariantResult:
    """Metrics of one variant: the task's primary metric (checked by the runner) and any others;
    ``units`` names each metric's unit; ``details`` holds JSON-able extras (per-layer tables, series
    over time). ``model``: the variant's final model, for the runner's result hooks
    (:mod:`cimkit.experiment.hooks`, e.g. the cost model); not written to results.json."""

    metrics: dict[str, float]
    units: dict[str, str]
    details: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def add_metric(self, name: str, value: float, unit: str) -> None:
        self.metrics[name] = value
        self.units[name] = unit

    def __post_init__(self) -> None:
        missing = [k for k in self.metrics if k not in self.units]
        if missing:
            raise CimkitError(f"VariantResult: no unit given for {missing}")


class Variant:
    """Base class of variant kinds. ``self.name`` is the variant's name, ``self.cfg`` its config."""

    config_cls: ClassVar[type[Config]] = Config
    # settings of a seconds-long smoke run of this kind (the registry contract test runs every kind with them)
    tiny: ClassVar[dict[str, Any]] = {}

    def __init__(self, name: str, cfg: Config) -> None:
        self.name = name
        self.cfg = cfg

    def run(self, ctx: RunContext) -> VariantResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, model: nn.Module, example: Any) -> None:
        """Validate this variant against the (untrained) model before any training: raise
        :class:`~cimkit.errors.ConfigError` for settings the model cannot take (e.g. crossbar tiles
        smaller than a kernel). ``example`` is one input batch. The default checks nothing."""

    @classmethod
    def report_sections(cls, records: list[dict[str, Any]]) -> list[Section]:
        """Report sections for all results of this kind (results.json records); none by default."""
        return []


VARIANTS: Registry[type[Variant]] = Registry("variant kind", loader=load_plugins)
