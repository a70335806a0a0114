"""Quantization benchmark: LeNet-5 on MNIST (or Fashion-MNIST with ``--dataset fashion-mnist``).

One experiment through the experiment runner (the code ``cimkit run`` runs): the fp32 baseline is
trained with the recipe of ``examples/mnist_lenet5.toml``, then these variants are evaluated against
it in the same run (accuracy drop in points; goals in brackets):

* ``W8A8 PTQ``: ``ptq``, min/max ranges (drop <= 0.3);
* ``W4A4 PTQ``: ``ptq``, MSE ranges (reported);
* ``W4A4 QAT``: ``qat``, learned step sizes (LSQ), MSE-initialized, lr 2e-4 (drop <= 1.0);
* ``ternary-W A8 QAT``: ``qat``, TWN weights, 8-bit activations, lr 5e-4 (drop <= 2.0);
* ``binary-W A4 QAT``: ``qat``, XNOR-Net weights, 4-bit MSE activations, lr 1e-3 (reported; the
  1-cell-per-weight CIM recipe);

QAT runs 3 epochs with the recipe's optimizer and schedule. Each variant reports its size and BOPs
(the runner's accounting). Timing, code of its own: one training step (forward, backward, Adam) of
the fp32 model and of each QAT model (quantized and calibrated as the variants start), interleaved
(median CPU time per step; every round times each model once, in shuffled order). If Brevitas is
importable (optional, never a dependency) it runs the same W4A4 QAT recipe from the same trained
fp32 weights with Brevitas's quantizers (4-bit per-channel weights, learned 4-bit activation
scales; same data, epochs and optimizer), and its step is timed with the others (goal: the cimkit
W4A4 QAT step takes no longer than Brevitas's).

    python benchmarks/quant_mnist.py [--dataset mnist|fashion-mnist] [--quick] [--out FILE] [--threads 1]

``--quick``: 1 fp32 epoch, 1 QAT epoch. Writes ``benchmarks/results/quant_<dataset>.json``
(``--quick``: ``quant_<dataset>.quick.json``).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import _bench

GOALS = {"W8A8 PTQ": 0.3, "W4A4 QAT": 1.0, "ternary-W A8 QAT": 2.0}
BREVITAS = "W4A4 QAT (Brevitas)"
MSE = {"observer": "mse", "w_observer": "mse"}


def experiment_variants(qat_epochs: int) -> list[dict[str, Any]]:
    """The ``[[variants]]`` tables of the benchmark (the same a user would write)."""
    return [
        {"kind": "fp32"},
        {"kind": "ptq", "name": "W8A8 PTQ", "w_bits": 8, "a_bits": 8},
        {"kind": "ptq", "name": "W4A4 PTQ", "w_bits": 4, "a_bits": 4, **MSE},
        {"kind": "qat", "name": "W4A4 QAT", "w_bits": 4, "a_bits": 4, "lsq": True, **MSE, "epochs": qat_epochs,
         "lr": 2e-4},
        {"kind": "qat", "name": "ternary-W A8 QAT", "w_mode": "ternary_twn", "a_bits": 8, "epochs": qat_epochs,
         "lr": 5e-4},
        {"kind": "qat", "name": "binary-W A4 QAT", "w_mode": "binary", "a_bits": 4, "observer": "mse",
         "epochs": qat_epochs, "lr": 1e-3},
    ]  # fmt: skip


def brevitas_lenet(fp32: nn.Module, bits: int) -> nn.Module | None:
    """LeNet-5 with Brevitas W{bits}A{bits} layers (per-channel weights), fp32 weights copied in;
    None when Brevitas is not importable."""
    try:
        import brevitas.nn as qnn
    except ImportError:
        return None
    f, c = fp32.features, fp32.classifier
    w = {"weight_bit_width": bits, "weight_scaling_per_output_channel": True}
    model = nn.Sequential(
        qnn.QuantIdentity(bit_width=bits),
        qnn.QuantConv2d(f[0].in_channels, 6, 5, padding=f[0].padding, **w), qnn.QuantReLU(bit_width=bits),
        nn.MaxPool2d(2),
        qnn.QuantConv2d(6, 16, 5, padding=f[3].padding, **w), qnn.QuantReLU(bit_width=bits), nn.MaxPool2d(2),
        nn.Flatten(),
        qnn.QuantLinear(c[1].in_features, 120, bias=True, **w), qnn.QuantReLU(bit_width=bits),
        qnn.QuantLinear(120, 84, bias=True, **w), qnn.QuantReLU(bit_width=bits),
        qnn.QuantLinear(84, c[5].out_features, bias=True, **w),
    )  # fmt: skip
    src = [f[0], f[3], c[1], c[3], c[5]]
    dst = [m for m in model if isinstance(m, (qnn.QuantConv2d, qnn.QuantLinear))]
    with torch.no_grad():
        for s, d in zip(src, dst):
            d.weight.copy_(s.weight)
            d.bias.copy_(s.bias)
    return model


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One training step (forward, cross-entropy, backward, Adam) of a copy of ``model``."""
    import torch.nn.functional as F

    m = copy.deepcopy(model).train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-9)

    def step() -> None:
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def run(args: Any) -> _bench.Report:
    from cimkit.data import TensorLoader, load_dataset
    from cimkit.experiment import ExperimentConfig, load_experiment
    from cimkit.quant import account, calibrate, quantize_
    from cimkit.quant.steps import quantize_fields
    from cimkit.train import TrainConfig, evaluate, fit

    name = f"quant_{args.dataset.replace('-', '_')}"
    ddir = _bench.data_dir(args.data_dir)
    recipe = load_experiment(str(_bench.EXAMPLES / "mnist_lenet5.toml")).train
    epochs = args.epochs or (1 if args.quick else recipe.epochs)
    q_epochs = args.qat_epochs or (1 if args.quick else 3)
    cfg = _bench.recipe(name=name, dataset=args.dataset, seed=args.seed, threads=args.threads,
                        train={"epochs": epochs, "seed": args.seed}, variants=experiment_variants(q_epochs))  # fmt: skip
    res = _bench.run_experiment(name, cfg, data_dir=ddir, quick=args.quick, reuse=args.reuse)
    by = _bench.variants(res)
    specs = {s.name: s for s in ExperimentConfig.from_dict(res["experiment"]).variant_specs()}
    fp32 = _bench.trained_baseline(res, name, args.quick, ddir)
    ds = load_dataset(args.dataset, data_dir=ddir, progress=False)
    base_cost = account(fp32, ds.x_test[:1]).total
    fp32_acc = float(by["fp32"]["metrics"]["accuracy"])

    rep = _bench.Report(name, args.quick)
    rep.config = {"dataset": args.dataset, "model": "lenet5", "quick": args.quick, "train": res["experiment"]["train"],
                  "qat_epochs": q_epochs, "n_train": res["dataset"]["n_train"], "seed": args.seed,
                  "experiment": res["experiment"]}  # fmt: skip
    rows: dict[str, dict[str, Any]] = {}
    rows["fp32"] = {"variant": "fp32", "w_bits": 32, "a_bits": 32, "accuracy": fp32_acc, "drop_pts": 0.0,
                    "size_bytes": base_cost["size_bytes"], "compression": 1.0, "bops": base_cost["bops"],
                    "epochs": epochs, "seconds": res["baseline"]["train_seconds"]}  # fmt: skip
    for v in res["variants"]:
        if v["kind"] == "fp32":
            continue
        m, c = v["metrics"], v["config"]
        rows[v["name"]] = {"variant": v["name"], "w_bits": c["w_bits"], "a_bits": c["a_bits"],
                           "accuracy": m["accuracy"], "drop_pts": m["accuracy_drop"], "size_bytes": m["size_bytes"],
                           "compression": m["compression"], "bops": m["bops"],
                           "epochs": c["epochs"] if v["kind"] == "qat" else 0, "seconds": v["seconds"]}  # fmt: skip
    for vname, limit in GOALS.items():
        rep.at_most(f"{vname} accuracy drop vs fp32 (points)", round(rows[vname]["drop_pts"], 3), limit,
                    f"<= {limit}")  # fmt: skip

    # timing: one training step of each QAT model, quantized and calibrated as the variant starts
    calib = [ds.x_train[i : i + 128] for i in range(0, 8 * 128, 128)]
    loader = TensorLoader(ds.x_train, ds.y_train, recipe.batch_size, shuffle=True, seed=args.seed)
    xb, yb = next(iter(loader))
    timed: dict[str, nn.Module] = {"fp32": fp32}
    for vname, spec in specs.items():
        if spec.kind == "qat":
            q = quantize_(copy.deepcopy(fp32), quantize_fields(spec.cfg))
            timed[vname] = calibrate(q, calib, seed=args.seed)
    brev = brevitas_lenet(fp32, 4)
    if brev is None:
        rep.skip("Brevitas is not importable: its W4A4 QAT row and the step-time comparison are left out")
    else:
        w4 = specs["W4A4 QAT"].cfg
        tcfg = TrainConfig.from_dict({**res["experiment"]["train"], "epochs": w4.epochs, "lr": w4.lr})  # type: ignore[attr-defined]
        fit(brev, TensorLoader(ds.x_train, ds.y_train, tcfg.batch_size, shuffle=True, seed=tcfg.seed), tcfg,
            progress=False)  # fmt: skip
        acc = float(evaluate(brev, TensorLoader(ds.x_test, ds.y_test, 1000))["accuracy"])
        rows[BREVITAS] = {"variant": BREVITAS, "w_bits": 4, "a_bits": 4, "accuracy": acc,
                          "drop_pts": 100 * (fp32_acc - acc), "size_bytes": None, "compression": None, "bops": None,
                          "epochs": tcfg.epochs, "seconds": None}  # fmt: skip
        timed[BREVITAS] = brev
    steps = _bench.time_interleaved({k: train_step(m, xb, yb) for k, m in timed.items()},
                                    rounds=10 if args.quick else 40, warmup=5)  # fmt: skip
    for r in rows.values():
        t = steps.get(r["variant"])
        r["step_ms"] = None if t is None else 1e3 * t.cpu
        r["step_wall_ms"] = None if t is None else 1e3 * t.wall
        r["step_ratio_vs_fp32"] = None if t is None else t.cpu / steps["fp32"].cpu
        rep.row(**r)
    if BREVITAS in steps:
        ratio = steps["W4A4 QAT"].cpu / steps[BREVITAS].cpu
        rep.at_most("W4A4 QAT training step time, cimkit / Brevitas (interleaved median)", round(ratio, 3), 1.0,
                    "<= 1.0")  # fmt: skip
    return rep


def main(argv: list[str] | None = None, default_dataset: str = "mnist") -> int:
    p = _bench.parser("quant_mnist", __doc__)
    p.add_argument("--dataset", default=default_dataset, choices=["mnist", "fashion-mnist"])
    p.add_argument("--epochs", type=int, default=0, help="fp32 epochs (default: the recipe's; --quick 1)")
    p.add_argument("--qat-epochs", type=int, default=0, help="QAT epochs per variant (default 3; --quick 1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    _bench.setup(args)
    rep = run(args)
    rep.print()
    rep.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
