"""Train LeNet-5 on MNIST with the recipe of examples/mnist_lenet5.toml; report accuracy and s/epoch.

    python benchmarks/baseline_mnist.py [--quick] [--out FILE] [--threads N] [--data-dir DIR]

Later benchmarks (quantization, analog) compare against benchmarks/results/baseline_mnist.json.
"""

from __future__ import annotations

import time

import _bench
from cimkit.data import TensorLoader, load_dataset
from cimkit.experiment import load_experiment
from cimkit.models import create
from cimkit.train import evaluate, fit


def main() -> None:
    args = _bench.parser("baseline_mnist", __doc__).parse_args()
    _bench.setup_threads(args.threads)
    cfg = load_experiment(str(_bench.ROOT / "examples" / "mnist_lenet5.toml"))
    train = cfg.train.replace(epochs=1) if args.quick else cfg.train
    data = load_dataset("mnist", data_dir=args.data_dir)
    x, y = (data.x_train[:6000], data.y_train[:6000]) if args.quick else (data.x_train, data.y_train)
    import torch

    torch.manual_seed(cfg.seed)
    model = create("lenet5", in_channels=1, num_classes=10, input_size=(28, 28))
    t0 = time.perf_counter()
    res = fit(model, TensorLoader(x, y, train.batch_size, shuffle=True, seed=train.seed), train, progress=False)
    wall = time.perf_counter() - t0
    acc = evaluate(model, TensorLoader(data.x_test, data.y_test, 1000))["accuracy"]
    rep = _bench.Report("baseline_mnist", args.quick)
    for h in res.history:
        rep.row(epoch=h["epoch"], train_loss=h["loss"], train_accuracy=h["train_accuracy"], seconds=h["seconds"])
    rep.row(epoch="total", test_accuracy=acc, seconds=wall, seconds_per_epoch=res.seconds_per_epoch)
    rep.goal("LeNet-5 MNIST test accuracy (fraction)", acc, ">= 0.990", acc >= 0.990)
    rep.print()
    rep.write(args.out)


if __name__ == "__main__":
    main()
