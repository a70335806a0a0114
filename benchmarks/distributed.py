"""Distributed training with compressed gradients: LeNet-5 / MNIST on 2 local gloo ranks.

    python benchmarks/distributed.py [--quick] [--out FILE] [--threads 1] [--epochs 2] [--seeds 0 1 2]
                                     [--methods none terngrad qsgd topk fp16 powersgd]

Every run is the users' code path: ``cimkit.experiment.run_experiment`` with a ``DDPStrategy`` on
each rank (what ``cimkit run --nproc 2`` does), the experiment's ``[train]`` table naming the
gradient compression (``grad_compression`` and its ``compression`` options). The recipe is that of
examples/mnist_lenet5.toml (Adam, lr 0.002, cosine, global batch 128 split over the ranks) with
``--epochs`` epochs, one torch thread per rank, 3 seeds. Rows: test accuracy (mean and per seed),
the bytes each rank hands to collectives per step (measured by the hooks on the tensors they send),
the ring-algorithm model of bytes on the wire, and the measured training time per step.

On one shared 2-core machine communication is nearly free, so the measured step times say nothing
about a network-bound cluster. The ``speedup@…`` columns are a bytes-based model instead:
``t = t_compute + ring_bytes / bandwidth``, with ``t_compute`` the fp32 all-reduce run's measured
step time. Goals: TernGrad's test accuracy within 0.5 points of fp32 all-reduce (mean over seeds),
TernGrad's bytes per step at most 1/15 of fp32 all-reduce.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import Report, parser, setup

BANDWIDTHS = {"1Gbps": 1e9 / 8, "10Gbps": 10e9 / 8}  # bytes per second
OPTIONS = {"topk": {"topk_ratio": 0.01}, "qsgd": {"qsgd_levels": 7, "qsgd_bucket_size": 512}}


def experiment(method: str, seed: int, epochs: int, steps: int) -> dict[str, Any]:
    opts = dict(OPTIONS.get(method, {}))
    if method == "powersgd":
        opts["powersgd_start_iter"] = max(2, steps // 10)  # PyTorch's advice: about 10 % of the steps
    return {
        "name": f"ddp_{method}_{seed}", "seed": seed, "threads": 1, "dataset": "mnist", "model": "lenet5",
        "train": {"epochs": epochs, "batch_size": 128, "optimizer": "adam", "lr": 0.002, "schedule": "cosine",
                  "seed": seed, "grad_compression": method, "compression": opts},
        "variants": [{"kind": "fp32"}],
    }  # fmt: skip


def rank_run(strategy: Any, cfg: dict[str, Any], out: str, data_dir: str) -> dict[str, Any]:
    from cimkit.experiment import ExperimentConfig, run_experiment

    res = run_experiment(ExperimentConfig.from_dict(cfg), out, data_dir=data_dir, progress=False, strategy=strategy)
    b = res["baseline"]
    steps = b["comm"]["steps"] if b.get("comm") else 1
    return {"accuracy": res["variants"][0]["metrics"]["accuracy"], "comm": b.get("comm", {}),
            "step_seconds": b["train_seconds"] / max(steps, 1)}  # fmt: skip


def main() -> None:
    p = parser("distributed", __doc__)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["none", "terngrad", "qsgd", "topk", "fp16", "powersgd"])
    args = p.parse_args()
    setup(args)
    from cimkit.dist import CompressionConfig, spawn

    epochs = 1 if args.quick else args.epochs
    seeds = args.seeds[:1] if args.quick else args.seeds
    methods = args.methods[:3] if args.quick else args.methods
    steps = epochs * -(-60000 // 128)
    rep = Report("distributed", args.quick)
    results: dict[str, list[dict[str, Any]]] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cimkit-ddp-bench-") as tmp:
        for method in methods:
            for seed in seeds:
                cfg = experiment(method, seed, epochs, steps)
                comp = CompressionConfig(method=method, **cfg["train"]["compression"])  # the experiment's own
                runs = spawn(rank_run, 2, args=(cfg, f"{tmp}/{method}-{seed}", str(args.data_dir)),
                             compression=comp, timeout_s=3600, threads=args.threads)
                results.setdefault(method, []).append(runs[0])
                print(f"{method} seed {seed}: accuracy {runs[0]['accuracy']:.4f}", flush=True)
    base = results.get("none")
    b_fp32 = base[0]["comm"]["ring_bytes_per_step"] if base else None
    t_c = sum(r["step_seconds"] for r in base) / len(base) if base else None
    for method, rs in results.items():
        accs = [r["accuracy"] for r in rs]
        c = rs[0]["comm"]
        row = {"method": method, "epochs": epochs, "test_acc_mean": sum(accs) / len(accs),
               "test_acc_per_seed": ", ".join(f"{a:.4f}" for a in accs),
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
