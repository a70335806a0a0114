"""Registry contracts: every registered variant kind, pipeline step, evaluation protocol, task, model,
device and mapping preset builds, round-trips its config and runs (tiny settings)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import cimkit.experiment  # noqa: F401  (loads every plugin)
from cimkit import analog
from cimkit.analog import DEVICES, MAPPINGS
from cimkit.config import Config
from cimkit.data import Dataset, load_dataset
from cimkit.data.core import DataKind
from cimkit.experiment import EVALS, STEPS, VARIANTS, ExperimentConfig, RunContext, run_experiment, run_pipeline
from cimkit.experiment.pipeline import parse_steps
from cimkit.models import MODELS, create, model_input_kind, model_requirements
from cimkit.tasks import TASKS, MetricSums, get_task
from cimkit.train import TrainConfig


def _round_trip(cfg: Config) -> None:
    cls = type(cfg)
    assert cls.from_dict(cfg.to_dict()) == cfg
    assert cls.from_json(cfg.to_json()) == cfg
    assert cls.from_toml(cfg.to_toml()) == cfg


@pytest.mark.parametrize("kind", VARIANTS.list())
def test_variant_kind_configs_round_trip(kind: str) -> None:
    cls = VARIANTS.get(kind)
    _round_trip(cls.config_cls.from_dict(cls.tiny))
    _round_trip(cls.config_cls())


@pytest.mark.parametrize("op", STEPS.list())
def test_step_configs_round_trip(op: str) -> None:
    cls = STEPS.get(op)
    _round_trip(cls.config_cls.from_dict(cls.tiny))


@pytest.mark.parametrize("name", EVALS.list())
def test_eval_protocol_configs_round_trip(name: str) -> None:
    cls = EVALS.get(name)
    _round_trip(cls.config_cls.from_dict(cls.tiny))


def test_every_kind_step_and_protocol_runs(tmp_path: Path) -> None:
    """One tiny experiment holding every variant kind and every step/protocol in pipelines."""
    variants = [{"kind": k, "name": f"k-{k}", **VARIANTS.get(k).tiny} for k in VARIANTS.list()]
    for op in _steps_for("classification"):
        steps = [{"op": op, **STEPS.get(op).tiny}]
        if op == "freeze":
            steps.insert(0, {"op": "quantize", **STEPS.get("quantize").tiny})
        variants.append({"kind": "pipeline", "name": f"s-{op}", "steps": steps})
    for name in EVALS.list():
        # what the model needs before the protocol: chips_times an analog step, others their own `tiny_steps`
        steps = ([{"op": "analog", **STEPS.get("analog").tiny}] if name == "chips_times"
                 else [dict(s) for s in getattr(EVALS.get(name), "tiny_steps", [])])  # fmt: skip
        variants.append({"kind": "pipeline", "name": f"e-{name}", "steps": steps,
                         "eval": {"protocol": name, **EVALS.get(name).tiny}})  # fmt: skip
    cfg = ExperimentConfig.from_dict({"name": "contract", "dataset": "digits", "model": "small_cnn",
                                      "model_args": {"width": 4}, "threads": 1, "eval_batch_size": 512,
                                      "train": {"epochs": 1, "batch_size": 64, "lr": 3e-3},
                                      "variants": variants})  # fmt: skip
    res = run_experiment(cfg, tmp_path / "run", progress=False)
    assert res["complete"] and len(res["variants"]) == len(variants)
    for v in res["variants"]:
        assert 0.0 <= v["metrics"]["accuracy"] <= 1.0, v["name"]
        assert set(v["metrics"]) <= set(v["units"]), v["name"]
    assert (tmp_path / "run" / "report.html").stat().st_size > 1000


def _steps_for(task: str) -> list[str]:
    """The registered steps that work for ``task`` (a step's ``tasks``; empty means every task)."""
    return [op for op in STEPS.list() if not STEPS.get(op).tasks or task in STEPS.get(op).tasks]


def test_steps_for_other_tasks_run(tmp_path: Path) -> None:
    """Every step that does not run on classification runs (tiny settings) on a tiny next-token task."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 11, (40, 9), generator=g)
    vocab = list("\nabcdefghij")
    data = Dataset(name="tiny-text", kind=DataKind.TEXT, x_train=ids[:32, :8], y_train=ids[:32, 1:],
                   x_test=ids[32:, :8], y_test=ids[32:, 1:], num_classes=11, in_channels=1, input_size=(8,),
                   vocab=vocab)  # fmt: skip
    model = create("char_gpt", **data.model_spec(), size="tiny").eval()
    ctx = RunContext(data=data, baseline=model, train_cfg=TrainConfig(epochs=1, batch_size=8), seed=0,
                     device=torch.device("cpu"), out_dir=tmp_path, cache_dir=tmp_path / "cache", baseline_key="t",
                     task=get_task("next_token"), eval_batch_size=64, progress=False)  # fmt: skip
    others = [op for op in STEPS.list() if op not in _steps_for("classification")]
    assert others, "no step is task-specific: this test checks nothing"
    for op in others:
        assert "next_token" in STEPS.get(op).tasks, f"add a tiny task for step '{op}' here"
        steps = parse_steps([{"op": op, **STEPS.get(op).tiny}], variant=f"s-{op}")
        _, metrics, _, _ = run_pipeline(ctx, steps, None, f"s-{op}")
        assert metrics["loss"] > 0, op


@pytest.mark.parametrize("name", TASKS.list())
def test_tasks_metrics_have_units_and_primary(name: str) -> None:
    task = get_task(name)
    g = torch.Generator().manual_seed(0)
    if name == "regression":
        out, y = torch.rand(8, 1, generator=g), torch.rand(8, 1, generator=g)
    elif name == "next_token":
        out, y = torch.randn(8, 5, 11, generator=g), torch.randint(0, 11, (8, 5), generator=g)
    else:
        out, y = torch.randn(8, 4, generator=g), torch.randint(0, 4, (8,), generator=g)
    sums = MetricSums()
    task.accumulate(sums, out, y)
    m = task.finalize(sums)
    assert task.primary in m and "loss" in m and m["n"] == 8
    assert set(m) <= set(task.units)
    assert float(task.loss(out, y)) == pytest.approx(m["loss"], rel=1e-5)
    assert task.better(m[task.primary] + (1 if task.higher_is_better else -1), m[task.primary])


_SPEC = {
    "image": {"in_channels": 1, "num_classes": 10, "input_size": (28, 28)},
    "text": {"in_channels": 1, "num_classes": 65, "input_size": (32,), "vocab_size": 65, "block_size": 32},
    "coords": {"in_channels": 1, "num_classes": 1, "input_size": (2,), "in_features": 2, "out_features": 1},
}


def _example(kind: str, spec: dict) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if kind == "text":
        return torch.randint(0, spec["vocab_size"], (2, spec["block_size"]), generator=g)
    if kind == "coords":
        return torch.rand(16, spec["in_features"], generator=g) * 2 - 1
    return torch.randn(2, spec["in_channels"], *spec["input_size"], generator=g)


@pytest.mark.parametrize("name", MODELS.list())
def test_every_model_builds_runs_and_maps(name: str) -> None:
    for pkg in model_requirements(name):
        pytest.importorskip(pkg, reason=f"model '{name}' needs the optional package '{pkg}'")
    kind = model_input_kind(name)
    spec = _SPEC[kind]
    model = create(name, **spec).eval()
    x = _example(kind, spec)
    with torch.no_grad():
        y = model(x)
    assert torch.isfinite(y).all()
    # every model's weighted leaves reach every transform: an ideal crossbar gives the same outputs
    a = analog.convert(model, "ideal", "ideal")
    assert len(list(analog.analog_layers(a))) >= 1
    with torch.no_grad():
        assert torch.allclose(a(x), y, atol=1e-4 * max(1.0, float(y.abs().max())), rtol=1e-4)


@pytest.mark.parametrize("name", DEVICES.list())
def test_every_device_preset_programs_and_drifts(name: str) -> None:
    dev = DEVICES.get(name)
    _round_trip(dev)
    g_t = torch.linspace(dev.g_min, dev.g_max, 1000)
    state = analog.program_devices(g_t, dev, torch.Generator().manual_seed(0))
    g, sigma = analog.devices_at(state, dev, 86400.0)
    assert g.shape == g_t.shape and bool((g >= 0).all()) and bool((sigma >= 0).all())


@pytest.mark.parametrize("name", MAPPINGS.list())
def test_every_mapping_preset_maps_a_layer(name: str) -> None:
    m = MAPPINGS.get(name)
    _round_trip(m)
    net = torch.nn.Sequential(torch.nn.Linear(20, 6))
    a = analog.convert(net, m, "pcm")
    x = torch.randn(4, 20, generator=torch.Generator().manual_seed(1))
    analog.calibrate(a, [x])
    analog.program(a, 0)
    analog.drift(a, 3600.0)
    with torch.no_grad():
        y = a(x)
    assert y.shape == (4, 6) and torch.isfinite(y).all()


def test_datasets_describe_their_task() -> None:
    ds = load_dataset("digits")
    assert ds.task == "classification" and ds.model_spec()["num_classes"] == 10


def test_every_top_level_name_resolves_and_messages_name_real_functions() -> None:
    """``cimkit.<name>`` for every name in ``cimkit.__all__``, and every ``cimkit.<verb>_`` that an error
    message or a docstring tells users to call exists."""
    import re

    import cimkit

    for name in cimkit.__all__:
        assert getattr(cimkit, name) is not None, name
    src = Path(cimkit.__file__).parent
    told = {m for p in src.rglob("*.py") for m in re.findall(r"\bcimkit\.([a-z]\w*_)\b", p.read_text())}
    assert told, "no cimkit.<verb>_ reference found"
    for name in sorted(told):
        assert callable(getattr(cimkit, name, None)), f"cimkit.{name} is referenced but does not exist"
