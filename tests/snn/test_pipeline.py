"""The spiking steps inside ``run_experiment`` on digits, the spiking_classification task, and
direct training by backpropagation through time with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cimkit.data import TensorLoader
from cimkit.experiment import ExperimentConfig, run_experiment
from cimkit.snn import LIF, SpikingClassification
from cimkit.tasks import TASKS, MetricSums, get_task
from cimkit.train import TrainConfig, evaluate, fit


def test_pipeline_steps_in_run_experiment(tmp_path: Path) -> None:
    variants = [
        {"kind": "pipeline", "name": "tb", "steps": [{"op": "to_snn", "num_steps": 32}],
         "eval": {"protocol": "time_steps", "steps": [1, 4, 32]}},
        {"kind": "pipeline", "name": "qcfs", "steps": [{"op": "qcfs", "levels": 4}, {"op": "finetune", "epochs": 2},
                                                       {"op": "to_snn", "num_steps": 4}]},
        {"kind": "pipeline", "name": "snn-pcm-hwa", "steps": [
            {"op": "to_snn", "num_steps": 8}, {"op": "snn_analog", "mapping": "calibrated", "hwa": {}},
            {"op": "finetune", "epochs": 1}], "eval": {"protocol": "chips_times", "repeats": 2, "times": [86400.0]}},
    ]  # fmt: skip
    cfg = ExperimentConfig.from_dict({"name": "snn", "dataset": "digits", "model": "mlp", "model_args": {"hidden": [128]},
                                      "threads": 1, "train": {"epochs": 12, "batch_size": 64, "lr": 2e-3},
                                      "variants": variants})  # fmt: skip
    res = run_experiment(cfg, tmp_path / "run", progress=False)
    v = {r["name"]: r for r in res["variants"]}
    tb = v["tb"]
    fp32 = tb["metrics"]["fp32_accuracy"]
    assert tb["metrics"]["accuracy"] == tb["metrics"]["accuracy_T32"] >= fp32 - 0.015
    assert tb["metrics"]["accuracy_T1"] < tb["metrics"]["accuracy_T32"]
    d = tb["details"]
    assert d["eval_protocol"] == "time_steps" and d["time_steps"] == [1, 4, 32] and len(d["spikes_vs_T"]) == 3
    assert d["spikes_vs_T"][0] < d["spikes_vs_T"][2]  # more steps, more spikes
    act = d["activity"]
    assert act["time_steps"] == 32 and act["samples"] == res["dataset"]["n_test"]
    assert {"spikes", "synops", "neuron_updates", "crossbar_reads", "ann_macs", "macs"} <= set(act["totals"])
    assert tb["units"]["spikes"] == "count" and d["snn"]["method"] == "threshold_balance"
    q = v["qcfs"]
    assert q["details"]["snn"]["method"] == "qcfs" and q["metrics"]["accuracy"] >= fp32 - 0.05
    c = v["snn-pcm-hwa"]
    assert c["details"]["eval_protocol"] == "chips_times" and c["metrics"]["spike_driven_layers"] == 1.0
    assert c["metrics"]["accuracy"] >= 0.85 and "finetune" in c["details"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Spiking networks: accuracy vs time steps" in html


def test_spiking_classification_task_formulas() -> None:
    assert "spiking_classification" in TASKS
    task = get_task("spiking_classification", num_steps=3, loss="rate")
    g = torch.Generator().manual_seed(0)
    out = (torch.rand(3, 5, 4, generator=g) > 0.5).float()
    y = torch.randint(0, 4, (5,), generator=g)
    rate = sum(F.cross_entropy(out[t], y) for t in range(3)) / 3
    assert float(task.loss(out, y)) == pytest.approx(float(rate))
    count = SpikingClassification(3, loss="count")
    assert float(count.loss(out, y)) == pytest.approx(float(F.cross_entropy(out.sum(0), y)))
    sums = MetricSums()
    task.accumulate(sums, out, y)
    m = task.finalize(sums)
    assert m["accuracy"] == pytest.approx(float((out.sum(0).argmax(1) == y).float().mean()))
    assert m["output_spikes"] == pytest.approx(float(out.sum()) / 5) and m["n"] == 5


def test_direct_training_with_the_task(digits) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    task = SpikingClassification(num_steps=8, loss="rate")
    net = task.wrap(nn.Sequential(nn.Flatten(), nn.Linear(64, 128), LIF(0.9), nn.Linear(128, 10), LIF(0.9)))
    train = TensorLoader(digits.x_train, digits.y_train, 64, shuffle=True, seed=0)
    res = fit(net, train, TrainConfig(epochs=3, lr=2e-3), task=task, progress=False)
    losses = [h["loss"] for h in res.history]
    assert losses[0] > losses[1] > losses[2]
    acc = evaluate(net, TensorLoader(digits.x_test, digits.y_test, 1000), task=task)["accuracy"]
    assert acc > 0.7  # chance is 0.1


def test_example_file_validates_on_lenet5() -> None:
    """examples/snn_mnist.toml: every variant's check (structural dry run) on an untrained LeNet-5."""
    from cimkit.experiment import VARIANTS, load_experiment
    from cimkit.models import create

    root = Path(__file__).resolve().parents[2]
    cfg = load_experiment(str(root / "examples" / "snn_mnist.toml"))
    model = create("lenet5", in_channels=1, num_classes=10, input_size=(28, 28)).eval()
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    kinds = []
    for spec in cfg.variant_specs():
        VARIANTS.get(spec.kind)(spec.name, spec.cfg).check(model, x)
        kinds.append(spec.kind)
    assert kinds.count("pipeline") == 4
