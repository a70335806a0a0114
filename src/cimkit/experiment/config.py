"""The experiment file: dataset, model, training recipe and the variants to evaluate."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cimkit.config import Config, check_range
from cimkit.errors import ConfigError, did_you_mean, unknown
from cimkit.experiment.hooks import CONCERN_SETTINGS
from cimkit.plugins import load_plugins
from cimkit.train import TrainConfig
from cimkit.utils import MAX_THREADS

# The built-in experiment's variants: one of each verb, small enough to finish in seconds on digits.
DEFAULT_VARIANTS: tuple[dict[str, Any], ...] = (
    {"kind": "fp32"},
    {"kind": "ptq", "name": "W8A8 PTQ", "w_bits": 8, "a_bits": 8},
    {"kind": "qat", "name": "W4A4 QAT", "w_bits": 4, "a_bits": 4, "lsq": True, "epochs": 3},
    {"kind": "qat", "name": "ternary-W A8 QAT", "w_mode": "ternary_twn", "a_bits": 8, "epochs": 3},
    {"kind": "mixed", "name": "Hessian MP @ W3 size", "size_uniform_bits": 3, "a_bits": 8, "qat_epochs": 3},
    {"kind": "analog", "name": "PCM", "compensation": "none", "repeats": 5},
    {"kind": "analog", "name": "PCM + HWA + comp", "hwa": True, "hwa_epochs": 5, "repeats": 5},
)


@dataclass
class VariantSpec:
    """A parsed ``[[variants]]`` entry."""

    name: str
    kind: str
    cfg: Config


@dataclass
class ExperimentConfig(Config):
    """One experiment: train ``model`` on ``dataset`` with ``train``, then evaluate every variant.

    TOML layout: top-level keys below, a ``[train]`` table (:class:`cimkit.train.TrainConfig`),
    ``[[variants]]`` tables, each with ``kind`` (see ``cimkit list variants``), an optional ``name``,
    and that kind's own fields, and one table per concern that registered settings
    (:data:`cimkit.experiment.hooks.CONCERN_SETTINGS`, e.g. ``[cost]``), kept in ``concerns``.
    """

    name: str = "digits_small_cnn"
    description: str = (
        "built-in default: a small BatchNorm CNN on scikit-learn's 8x8 digits, quantized and on PCM crossbars"
    )
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default
    dataset: str = "digits"
    dataset_args: dict[str, Any] = field(default_factory=dict)
    model: str = "small_cnn"
    model_args: dict[str, Any] = field(default_factory=dict)
    eval_batch_size: int = 1000
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=15, batch_size=64, lr=3e-3))
    variants: list[dict[str, Any]] = field(default_factory=lambda: [dict(v) for v in DEFAULT_VARIANTS])
    concerns: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "") -> ExperimentConfig:
        """As :meth:`Config.from_dict`, with every concern's top-level table (``[cost]``) collected
        into ``concerns``."""
        load_plugins()  # the concerns register their tables (``[cost]``) when their plugins load
        if isinstance(data, Mapping):
            own = list(cls.__dataclass_fields__)
            data = dict(data)
            concerns = dict(data.pop("concerns", None) or {})
            for k in list(data):
                if k not in own and k in CONCERN_SETTINGS:
                    concerns[k] = data.pop(k)
            for k in data:
                if k not in own:
                    allowed = [f for f in own if f != "concerns"] + list(CONCERN_SETTINGS)
                    raise ConfigError(f"{where}{k}: unknown key for ExperimentConfig{did_you_mean(k, allowed)}; "
                                      f"allowed: {', '.join(allowed)}")  # fmt: skip
            data["concerns"] = concerns
        return super().from_dict(data, where=where)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with every concern's table at the top level (as in the TOML file)."""
        d = super().to_dict()
        d.update(d.pop("concerns", {}))
        return d

    def settings(self, concern: str) -> Config:
        """The validated settings of ``concern`` (its defaults when the file has no table for it)."""
        return CONCERN_SETTINGS.get(concern).from_dict(self.concerns.get(concern, {}), where=f"{concern}.")

    def __post_init__(self) -> None:
        from cimkit.data import DATASETS
        from cimkit.models import MODELS, model_input_kind

        if isinstance(self.train, dict):  # a plain table given to the constructor (the API, not TOML)
            self.train = TrainConfig.from_dict(self.train, where="train.")
        elif not isinstance(self.train, TrainConfig):
            raise ConfigError(f"train: expected a TrainConfig or a table, got {type(self.train).__name__}")
        if not self.name or any(c in self.name for c in "/\\"):
            raise ConfigError(f"name: {self.name!r} must be a non-empty name without slashes")
        check_range("threads", self.threads, 0, MAX_THREADS)
        check_range("eval_batch_size", self.eval_batch_size, 1)
        if self.device not in ("cpu", "cuda", "auto") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device: {self.device!r} is not allowed; allowed: cpu, cuda, cuda:N, auto")
        DATASETS.get(self.dataset)  # did-you-mean errors for unknown names
        MODELS.get(self.model)
        data_kind = DATASETS.entry(self.dataset).meta.get("kind", "image")
        if model_input_kind(self.model) != data_kind:
            raise ConfigError(
                f"model: '{self.model}' takes {model_input_kind(self.model)} inputs but dataset "
                f"'{self.dataset}' is {data_kind}; pick a model from `cimkit list models`"
            )
        if self.concerns:
            load_plugins()
        for name, table in list(self.concerns.items()):
            if name not in CONCERN_SETTINGS:
                raise unknown("settings table", name, CONCERN_SETTINGS)
            if not isinstance(table, Mapping):
                raise ConfigError(f"{name}: expected a table ([{name}] ...), got {table!r}")
            self.concerns[name] = self.settings(name).to_dict()  # validated, defaults filled in
        if not self.variants:
            raise ConfigError("variants: at least one [[variants]] entry is needed (e.g. kind = \"fp32\")")
        self.variant_specs()  # validate every variant now, before any training

    def variant_specs(self) -> list[VariantSpec]:
        """Parse ``variants`` into validated per-kind configs; names must be unique."""
        from cimkit.experiment.variant import VARIANTS

        specs: list[VariantSpec] = []
        for i, raw in enumerate(self.variants):
            where = f"variants[{i}]."
            if not isinstance(raw, dict) or "kind" not in raw:
                raise ConfigError(f"{where}kind: missing; each [[variants]] table needs kind = \"...\"")
            rest = dict(raw)
            kind = rest.pop("kind")
            name = rest.pop("name", kind)
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{where}name: expected a non-empty string, got {name!r}")
            try:
                cls = VARIANTS.get(kind)
            except ConfigError as e:
                raise ConfigError(f"{where}kind: {e}") from None
            specs.append(VariantSpec(name, kind, cls.config_cls.from_dict(rest, where=where)))
        names = [s.name for s in specs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"variants: duplicate name(s) {', '.join(dup)}; give each a distinct name = \"...\"")
        return specs


def load_experiment(path: str | None) -> ExperimentConfig:
    """Read an experiment TOML file (or JSON); ``None`` gives the built-in default."""
    if path is None:
        return ExperimentConfig()
    from pathlib import Path

    from cimkit.config import loads_toml, read_config_text

    p = Path(path)
    text = read_config_text(p)
    if not text.strip() or (p.suffix != ".json" and not loads_toml(text)):
        raise ConfigError(
            f"config file {p} is empty; write an experiment (see `cimkit config` for the built-in one), or run "
            f"`cimkit run` without a file for the built-in default"
        )
    if p.suffix == ".json":
        return ExperimentConfig.from_json(text)
    return ExperimentConfig.from_dict(loads_toml(text))
