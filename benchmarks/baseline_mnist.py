"""Train LeNet-5 on MNIST with the recipe of examples/mnist_lenet5.toml; report accuracy and s/epoch.

    python benchmarks/baseline_mnist.py [--quick] [--out FILE] [--threads N] [--data-dir DIR]

Runs ``examples/mnist_lenet5.toml`` (its one ``fp32`` variant) through the experiment runner, as
``cimkit run`` does; ``--quick`` trains one epoch. Goal: test accuracy >= 0.990. The quantization and
analog benchmarks train their fp32 models with the same recipe.
"""

from __future__ import annotations

import _bench

NAME = "baseline_mnist"


def main(argv: list[str] | None = None) -> int:
    args = _bench.parser(NAME, __doc__).parse_args(argv)
    _bench.setup(args)
    cfg = _bench.recipe(threads=args.threads, train={"epochs": 1} if args.quick else None)
    res = _bench.run_experiment(NAME, cfg, data_dir=_bench.data_dir(args.data_dir), quick=args.quick,
                                reuse=args.reuse)  # fmt: skip
    base = res["baseline"]
    acc = float(_bench.variants(res)["fp32"]["metrics"]["accuracy"])
    rep = _bench.Report(NAME, args.quick)
    rep.config = {"experiment": res["experiment"], "baseline_reused": base["reused"]}
    for h in base["history"]:
        rep.row(epoch=h["epoch"], train_loss=h["loss"], train_accuracy=h["train_accuracy"], seconds=h["seconds"])
    rep.row(
        epoch="total", test_accuracy=acc, seconds=base["train_seconds"], seconds_per_epoch=base["seconds_per_epoch"]
    )
    rep.at_least("LeNet-5 MNIST test accuracy (fraction)", acc, 0.990, ">= 0.990")
    rep.print()
    rep.write(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
