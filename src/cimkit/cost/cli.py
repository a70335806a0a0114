"""``cimkit cost MODEL_OR_EXPERIMENT``: the per-layer cost table of a model on a hardware spec.

``MODEL`` is a registered model name, built for CIFAR-10-sized images (3x32x32, 10 classes),
128-token text (vocabulary 65) or 2-d coordinates unless ``--dataset`` names the data to build it
for; an experiment file (``.toml``/``.json``) gives its dataset, model and ``[cost]`` settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from cimkit.cost.estimate import MAP_MODES, estimate
from cimkit.cost.settings import CostSettings
from cimkit.cost.table import CostTable
from cimkit.errors import ConfigError
from cimkit.io import atomic_write_json

__all__ = ["add_cost_command", "default_example"]

DEFAULT_SPEC = "rram_22nm"
_DEFAULTS = {
    "image": {"in_channels": 3, "num_classes": 10, "input_size": (32, 32)},
    "text": {"in_channels": 1, "num_classes": 65, "input_size": (128,), "vocab_size": 65, "block_size": 128},
    "coords": {"in_channels": 1, "num_classes": 3, "input_size": (2,), "in_features": 2, "out_features": 3},
}


def default_example(kind: str, spec: dict[str, Any]) -> torch.Tensor:
    """One example input for a model of input ``kind`` built from ``spec`` (values do not matter)."""
    if kind == "text":
        return torch.zeros(1, int(spec["block_size"]), dtype=torch.long)
    if kind == "coords":
        return torch.zeros(1, int(spec["in_features"]))
    return torch.zeros(1, int(spec["in_channels"]), *spec["input_size"])


def _model_and_example(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.Tensor, CostSettings]:
    from cimkit.data import load_dataset
    from cimkit.experiment import load_experiment
    from cimkit.experiment.runner import build_model
    from cimkit.models import create, model_input_kind

    target = str(args.target)
    opts = json.loads(args.model_args) if args.model_args else {}
    if not isinstance(opts, dict):
        raise ConfigError(f"--model-args: expected a JSON table, got {args.model_args!r}")
    if target.endswith((".toml", ".json")) or Path(target).is_file():
        cfg = load_experiment(target)
        if opts:
            cfg = cfg.replace(model_args={**cfg.model_args, **opts})
        data = load_dataset(cfg.dataset, data_dir=args.data_dir, progress=False, **cfg.dataset_args)
        return build_model(cfg, data).eval(), data.x_test[:1], cfg.settings("cost")  # type: ignore[return-value]
    kind = model_input_kind(target)
    if args.dataset:
        data = load_dataset(args.dataset, data_dir=args.data_dir, progress=False)
        return create(target, **data.model_spec(), **opts).eval(), data.x_test[:1], CostSettings()
    spec = _DEFAULTS[kind]
    return create(target, **spec, **opts).eval(), default_example(kind, spec), CostSettings()


def _cmd_cost(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    model, x, settings = _model_and_example(args)
    spec = args.spec or settings.spec or DEFAULT_SPEC
    table = estimate(model, x, spec, adc=args.adc or settings.adc, map_layers=args.map)
    shown = table if args.all_rows else CostTable(
        [r for r in table.layers if r.energy_uj > 0 or r.size_bytes > 0 or r.area_mm2 > 0],
        table.spec, table.spec_name, table.interconnect_mm, table.batch,
    )  # fmt: skip
    sys.stdout.write(shown.format() + "\n")
    if args.json:
        atomic_write_json(args.json, table.to_dict())
        sys.stdout.write(f"\nwrote {args.json}\n")
    return 0


def add_cost_command(sub: Any) -> None:
    """Register ``cimkit cost`` (called by :func:`cimkit.cli.build_parser`)."""
    c = sub.add_parser("cost", help="per-layer energy, latency and area of a model on a hardware spec",
                       description=__doc__)  # fmt: skip
    c.add_argument("target", help="a model name (`cimkit list models`) or an experiment file")
    c.add_argument("--spec", help=f"hardware spec (`cimkit list specs`); default: [cost] spec, else {DEFAULT_SPEC}")
    c.add_argument("--adc", help="ADC model replacing the spec's (`cimkit list adcs`)")
    c.add_argument("--map", choices=MAP_MODES, default="auto",
                   help="which Linear/Conv layers run on crossbars (default auto: all unless some are analog)")  # fmt: skip
    c.add_argument("--dataset", help="build the model for this dataset's shapes (needs its files)")
    c.add_argument("--data-dir", help="dataset folder (default $CIMKIT_DATA, else ~/.cache/cimkit)")
    c.add_argument("--model-args", help='model options as a JSON table, e.g. \'{"width": 8}\'')
    c.add_argument("--json", type=Path, help="also write the full table (every field) as JSON")
    c.add_argument("--all-rows", action="store_true", help="also show modules that cost nothing (Identity, Dropout)")
    c.set_defaults(func=_cmd_cost)
