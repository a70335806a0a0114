"""Rank functions of the integration tests: cimkit's own ``fit`` and ``run_experiment`` under DDP."""

from __future__ import annotations

from pathlib import Path

import torch
from dist_workers import make_loader, make_problem

from cimkit.dist import Strategy
from cimkit.experiment import ExperimentConfig, run_experiment
from cimkit.train import TrainConfig, fit

SGD = TrainConfig(epochs=2, batch_size=16, optimizer="sgd", lr=0.2, momentum=0.9, schedule="constant", seed=5)

EXPERIMENT = {
    "name": "ddp_run", "dataset": "digits", "model": "small_cnn", "model_args": {"width": 4}, "threads": 1,
    "train": {"epochs": 2, "batch_size": 64, "lr": 3e-3},
    "variants": [{"kind": "fp32"}, {"kind": "analog", "repeats": 3, "times": [1.0, 86400.0], "calib_batches": 1}],
}  # fmt: skip


def fit_weights(strategy: Strategy | None, ckpt: Path | None, epochs: int = 2) -> list[torch.Tensor]:
    model, x, y = make_problem()
    fit(model, make_loader(x, y, 16), SGD.replace(epochs=epochs), checkpoint_dir=ckpt, progress=False,
        strategy=strategy)  # fmt: skip
    return [p.detach().clone() for p in model.parameters()]


def fit_and_experiment(strategy: Strategy, tmp: str) -> dict:
    out: dict = {"rank": strategy.rank}
    out["fit"] = fit_weights(strategy, None)
    ckpt = Path(tmp) / "ckpt"
    fit_weights(strategy, ckpt, epochs=1)  # "interrupted" after one epoch (rank 0 wrote the checkpoint)
    out["resumed"] = fit_weights(strategy, ckpt, epochs=2)
    res = run_experiment(ExperimentConfig.from_dict(EXPERIMENT), Path(tmp) / "run", progress=False, strategy=strategy)
    out["sweep"] = next(v for v in res["variants"] if v["kind"] == "analog")["details"]["per_repeat"]
    out["world_size"] = res["world_size"]
    return out
