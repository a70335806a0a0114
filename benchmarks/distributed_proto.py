"""PROTOTYPE (provisional numbers): LeNet-5 / MNIST on 2 local gloo ranks with each gradient compression.

    python benchmarks/distributed_proto.py [--quick] [--epochs 3] [--seeds 0 1 2] [--methods none terngrad ...]

Each rank runs one torch thread; the global batch (128) is split over the ranks by
``DDPStrategy.shard``; the recipe is that of examples/mnist_lenet5.toml (Adam, lr 0.002, cosine)
with fewer epochs. Rows: test accuracy, bytes each rank hands to collectives per step (measured by
the hooks on the tensors they send), ring-model wire bytes, and step time. This script drives its
own small loop over cimkit's DDPStrategy; the final benchmark (benchmarks/distributed.py) is to
run through ``fit(..., strategy=...)`` once the training loop takes a strategy.

On one shared 2-core machine communication is nearly free, so the measured step times say nothing
about a network-bound cluster; the ``speedup@…`` columns are a bytes-based model instead:
``t = t_compute + ring_bytes / bandwidth`` with ``t_compute`` the fp32 run's measured step time.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

import _bench
from cimkit.data import TensorLoader, load_dataset
from cimkit.dist import CompressionConfig, Strategy, spawn
from cimkit.models import create
from cimkit.train import evaluate
from cimkit.train.config import TrainConfig
from cimkit.train.loop import lr_at, make_optimizer

BANDWIDTHS = {"1Gbps": 1e9 / 8, "10Gbps": 10e9 / 8}  # bytes per second


def train_rank(strategy: Strategy, seed: int, epochs: int, data_dir: str, n_train: int) -> dict:
    """One rank's training run; rank 0 also evaluates on the test set."""
    data = load_dataset("mnist", data_dir=data_dir)
    x, y = data.x_train[:n_train], data.y_train[:n_train]
    cfg = TrainConfig(epochs=epochs, batch_size=128, optimizer="adam", lr=0.002, schedule="cosine", seed=seed)
    torch.manual_seed(seed)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
    model = strategy.wrap(create("lenet5", in_channels=1, num_classes=10, input_size=(28, 28)))
    opt = make_optimizer(model, cfg)
    loader = strategy.shard(TensorLoader(x, y, cfg.batch_size, shuffle=True, seed=seed))
    torch.manual_seed(strategy.seed(seed))
    n_batches, step, t_steps = len(loader), 0, 0.0
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        model.train()
        for xb, yb in loader:
            t0 = time.perf_counter()
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step, n_batches)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t_steps += time.perf_counter() - t0
            step += 1
    acc = float("nan")
    if strategy.is_main:
        acc = evaluate(strategy.unwrap(model), TensorLoader(data.x_test, data.y_test, 1000))["accuracy"]
    return {"accuracy": acc, "step_seconds": t_steps / max(step, 1), "steps": step, "comm": strategy.comm_stats()}


def main() -> None:
    p = _bench.parser("distributed_proto", __doc__)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["none", "terngrad", "qsgd", "topk", "fp16", "powersgd"])
    args = p.parse_args()
    _bench.setup_threads(args.threads)
    epochs = 1 if args.quick else args.epochs
    n_train = 6000 if args.quick else 60000
    seeds = args.seeds[:1] if args.quick else args.seeds
    steps_total = epochs * (n_train // 128 + (n_train % 128 > 0))
    extra = {
        "powersgd": {"powersgd_start_iter": max(2, steps_total // 10)},  # PyTorch's advice: ~10% of the steps
        "topk": {"topk_ratio": 0.01},
        "qsgd": {"qsgd_levels": 7, "qsgd_bucket_size": 512},
    }
    rep = _bench.Report("distributed_proto", args.quick)
    results: dict[str, list[dict]] = {}
    t_all = time.perf_counter()
    for method in args.methods:
        cfg = CompressionConfig(method=method, **extra.get(method, {}))
        for seed in seeds:
            runs = spawn(train_rank, 2, args=(seed, epochs, str(Path(args.data_dir)), n_train), compression=cfg,
                         timeout_s=1800, threads=args.threads)  # fmt: skip
            results.setdefault(method, []).append(runs[0])
    base = results.get("none")
    b_fp32 = base[0]["comm"]["ring_bytes_per_step"] if base else None
    t_c = sum(r["step_seconds"] for r in base) / len(base) if base else None
    for method, rs in results.items():
        accs = [r["accuracy"] for r in rs]
        mean = sum(accs) / len(accs)
        c = rs[0]["comm"]
        row = {"method": method, "test_acc_mean": mean, "test_acc_per_seed": ", ".join(f"{a:.4f}" for a in accs),
               "payload_B_per_step": c["payload_bytes_per_step"], "ring_B_per_step": c["ring_bytes_per_step"],
               "step_ms": 1e3 * sum(r["step_seconds"] for r in rs) / len(rs)}  # fmt: skip
        if b_fp32:
            row["bytes_vs_fp32"] = c["ring_bytes_per_step"] / b_fp32
            for name, bw in BANDWIDTHS.items():
                row[f"speedup@{name}"] = (t_c + b_fp32 / bw) / (t_c + c["ring_bytes_per_step"] / bw)
        rep.row(**row)
    if base and "terngrad" in results:
        fp32 = sum(r["accuracy"] for r in base) / len(base)
        tg = sum(r["accuracy"] for r in results["terngrad"]) / len(results["terngrad"])
        rep.goal("TernGrad test accuracy minus fp32 all-reduce (points, mean over seeds)", 100 * (tg - fp32),
                 ">= -0.5", 100 * (tg - fp32) >= -0.5)  # fmt: skip
        ratio = results["terngrad"][0]["comm"]["ring_bytes_per_step"] / b_fp32
        rep.goal("TernGrad bytes per step / fp32 all-reduce", ratio, "<= 1/15", ratio <= 1 / 15)
    rep.row(method="(wall seconds, all runs)", step_ms=time.perf_counter() - t_all)
    rep.print()
    rep.write(args.out)


if __name__ == "__main__":
    main()
