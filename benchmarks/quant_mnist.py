"""Quantization benchmark: LeNet-5 on MNIST (or Fashion-MNIST with ``--dataset fashion-mnist``).

Trains the fp32 baseline with the recipe of ``examples/mnist_lenet5.toml`` and, in the same run,
measures the accuracy drop (points) of

* W8A8 post-training quantization (goal <= 0.3),
* W4A4 quantization-aware training with learned step sizes (goal <= 1.0),
* ternary (TWN) weights / 8-bit activations QAT (goal <= 2.0),
* binary weights / 4-bit activations QAT (reported; the 1-cell-per-weight CIM recipe),

plus W4A4 PTQ for reference, each layer's size and BOPs, and the QAT step time relative to fp32
training. If Brevitas is importable (optional, never a dependency) it runs the same W4A4 QAT recipe
with Brevitas's quantizers (4-bit per-channel weights, learned 4-bit activation scales; same data,
epochs and optimizer) and the script prints both accuracies and the step-time ratio (goal: cimkit
not slower; steps of all models are timed interleaved, so machine load affects them alike).

    python benchmarks/quant_mnist.py [--dataset mnist|fashion-mnist] [--quick] [--out FILE] [--threads 1]

Writes ``benchmarks/results/quant_<dataset>.json`` (``--quick``: ``quant_<dataset>.quick.json``).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "mnist_lenet5.toml"
GOALS = {"W8A8 PTQ": 0.3, "W4A4 QAT": 1.0, "ternary-W A8 QAT": 2.0}
BREVITAS = "W4A4 QAT (Brevitas)"


def _variants(qat_epochs: int) -> list[dict[str, Any]]:
    from cimkit.quant import QuantConfig

    mse = {"observer": "mse", "w_observer": "mse"}
    return [
        {"name": "W8A8 PTQ", "cfg": QuantConfig(), "qat": None},
        {"name": "W4A4 PTQ", "cfg": QuantConfig(w_bits=4, a_bits=4, **mse), "qat": None},
        {"name": "W4A4 QAT", "cfg": QuantConfig(w_bits=4, a_bits=4, lsq=True, **mse), "qat": (qat_epochs, 2e-4)},
        {"name": "ternary-W A8 QAT", "cfg": QuantConfig(w_mode="ternary_twn", a_bits=8), "qat": (qat_epochs, 5e-4)},
        {"name": "binary-W A4 QAT", "cfg": QuantConfig(w_mode="binary", a_bits=4, observer="mse"),
         "qat": (qat_epochs, 1e-3)},
    ]  # fmt: skip


def _data_dir(arg: str | None) -> str | None:
    if arg:
        return arg
    if os.environ.get("CIMKIT_DATA"):
        return os.environ["CIMKIT_DATA"]
    shared = ROOT.parent / "shared" / "datasets"
    return str(shared) if shared.is_dir() else None


def interleaved_step_ms(
    models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, rounds: int = 30, warmup: int = 5
) -> dict[str, float]:
    """Median wall time (ms) of one training step (forward, backward, Adam step) per model.

    The models take turns step by step, so a change of machine load (the benchmark machine is
    shared) affects all of them alike; copies are timed, the models themselves are untouched.
    """
    import statistics

    import torch.nn.functional as F

    work = {k: copy.deepcopy(m).train() for k, m in models.items()}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-9) for k, m in work.items()}
    times: dict[str, list[float]] = {k: [] for k in work}
    for _ in range(rounds + warmup):
        for k, m in work.items():
            t0 = time.perf_counter()
            loss = F.cross_entropy(m(x), y)
            opts[k].zero_grad(set_to_none=True)
            loss.backward()
            opts[k].step()
            times[k].append(time.perf_counter() - t0)
    return {k: 1000.0 * statistics.median(v[warmup:]) for k, v in times.items()}


def _brevitas_lenet(fp32: nn.Module, bits: int) -> nn.Module | None:
    """LeNet-5 with Brevitas W{bits}A{bits} layers (per-channel weights), fp32 weights copied in."""
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


def run(
    dataset: str = "mnist",
    *,
    quick: bool = False,
    threads: int = 1,
    data_dir: str | None = None,
    epochs: int | None = None,
    qat_epochs: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the benchmark and return the JSON-able result (see module docstring)."""
    from cimkit.data import TensorLoader, load_dataset
    from cimkit.experiment import load_experiment
    from cimkit.models import create
    from cimkit.quant import account, calibrate, convert_, quantize_
    from cimkit.train import evaluate, fit
    from cimkit.utils import machine_info

    torch.set_num_threads(threads)
    recipe = load_experiment(str(RECIPE)).train
    n_epochs = epochs or (2 if quick else recipe.epochs)
    q_epochs = qat_epochs or (1 if quick else 3)
    recipe = recipe.replace(epochs=n_epochs, seed=seed)
    ds = load_dataset(dataset, data_dir=_data_dir(data_dir))
    x_train, y_train = ds.x_train, ds.y_train
    if quick:
        x_train, y_train = x_train[:12000], y_train[:12000]
    test = TensorLoader(ds.x_test, ds.y_test, 1000)
    loader = TensorLoader(x_train, y_train, recipe.batch_size, shuffle=True, seed=seed)

    torch.manual_seed(seed)
    fp32 = create("lenet5", in_channels=ds.in_channels, num_classes=ds.num_classes, input_size=tuple(ds.input_size))
    t0 = time.perf_counter()
    fit(fp32, loader, recipe, progress=False)
    fp32_acc = evaluate(fp32, test)["accuracy"]
    x1 = ds.x_test[:1]
    base_cost = account(fp32, x1).total
    rows: list[dict[str, Any]] = [{
        "variant": "fp32", "w_bits": 32, "a_bits": 32, "accuracy": fp32_acc, "drop_pts": 0.0,
        "size_bytes": base_cost["size_bytes"], "compression": 1.0, "bops": base_cost["bops"],
        "epochs": n_epochs, "seconds": time.perf_counter() - t0,
    }]  # fmt: skip
    calib = [x_train[i : i + 128] for i in range(0, 8 * 128, 128)]
    timed: dict[str, nn.Module] = {"fp32": fp32}
    for v in _variants(q_epochs):
        t0 = time.perf_counter()
        model = quantize_(copy.deepcopy(fp32), v["cfg"])
        calibrate(model, calib, seed=seed)
        epochs_v = 0
        if v["qat"] is not None:
            epochs_v, lr = v["qat"]
            tcfg = recipe.replace(epochs=epochs_v, lr=lr, seed=seed + 1)
            qloader = TensorLoader(x_train, y_train, tcfg.batch_size, shuffle=True, seed=seed + 1)
            fit(model, qloader, tcfg, progress=False)
            timed[v["name"]] = copy.deepcopy(model)
            convert_(model)
        acc = evaluate(model, test)["accuracy"]
        cost = account(model, x1).total
        rows.append({
            "variant": v["name"], "w_bits": v["cfg"].w_bits, "a_bits": v["cfg"].a_bits, "accuracy": acc,
            "drop_pts": 100 * (fp32_acc - acc), "size_bytes": cost["size_bytes"],
            "compression": cost["compression"], "bops": cost["bops"], "epochs": epochs_v,
            "seconds": time.perf_counter() - t0,
        })  # fmt: skip
    goals = []
    by = {r["variant"]: r for r in rows}
    for name, limit in GOALS.items():
        d = by[name]["drop_pts"]
        goals.append({"what": f"{name} accuracy drop vs fp32 (points)", "measured": round(d, 3),
                      "goal": f"<= {limit}", "met": bool(d <= limit)})  # fmt: skip
    brev = _brevitas_lenet(fp32, 4)
    if brev is not None:
        t0 = time.perf_counter()
        tcfg = recipe.replace(epochs=q_epochs, lr=2e-4, seed=seed + 1)
        qloader = TensorLoader(x_train, y_train, tcfg.batch_size, shuffle=True, seed=seed + 1)
        fit(brev, qloader, tcfg, progress=False)
        acc = evaluate(brev, test)["accuracy"]
        rows.append({
            "variant": BREVITAS, "w_bits": 4, "a_bits": 4, "accuracy": acc,
            "drop_pts": 100 * (fp32_acc - acc), "size_bytes": None, "compression": None, "bops": None,
            "epochs": q_epochs, "seconds": time.perf_counter() - t0,
        })  # fmt: skip
        timed[BREVITAS] = brev
    xb, yb = next(iter(loader))
    steps = interleaved_step_ms(timed, xb, yb, rounds=10 if quick else 40)
    for r in rows:
        r["step_ms"] = steps.get(r["variant"], float("nan"))
        r["step_ratio_vs_fp32"] = r["step_ms"] / steps["fp32"]
    if BREVITAS in steps:
        ratio = steps["W4A4 QAT"] / steps[BREVITAS]
        goals.append({"what": "W4A4 QAT training step time, cimkit / Brevitas (interleaved median)",
                      "measured": round(ratio, 3), "goal": "<= 1.0", "met": bool(ratio <= 1.0)})  # fmt: skip
    return {
        "benchmark": f"quant_{dataset.replace('-', '_')}",
        "machine": machine_info(),
        "config": {
            "dataset": dataset,
            "model": "lenet5",
            "quick": quick,
            "train": recipe.to_dict(),
            "qat_epochs": q_epochs,
            "n_train": int(x_train.shape[0]),
            "seed": seed,
        },
        "rows": rows,
        "goals": goals,
    }


def print_table(result: dict[str, Any]) -> None:
    rows = result["rows"]
    fp32 = rows[0]
    print(f"\n{result['benchmark']}: LeNet-5, fp32 accuracy {100 * fp32['accuracy']:.2f}%, "
          f"fp32 training step {fp32['step_ms']:.1f} ms (batch {result['config']['train']['batch_size']})")  # fmt: skip
    head = f"{'variant':<22}{'acc %':>8}{'drop pts':>10}{'size KiB':>10}{'x smaller':>10}{'GBOPs':>9}" \
           f"{'QAT ep':>8}{'step ms':>9}{'vs fp32':>9}"  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in rows:
        size = "-" if r["size_bytes"] is None else f"{r['size_bytes'] / 1024:.1f}"
        comp = "-" if r["compression"] is None else f"{r['compression']:.1f}"
        bops = "-" if r["bops"] is None else f"{r['bops'] / 1e9:.4f}"
        step = "-" if r["step_ms"] != r["step_ms"] else f"{r['step_ms']:.1f}"
        ratio = "-" if r["step_ratio_vs_fp32"] != r["step_ratio_vs_fp32"] else f"{r['step_ratio_vs_fp32']:.2f}x"
        print(f"{r['variant']:<22}{100 * r['accuracy']:>8.2f}{r['drop_pts']:>10.2f}{size:>10}{comp:>10}{bops:>9}"
              f"{r['epochs']:>8}{step:>9}{ratio:>9}")  # fmt: skip
    print("\ngoals:")
    for g in result["goals"]:
        print(f"  [{'met' if g['met'] else 'MISSED'}] {g['what']}: {g['measured']} (goal {g['goal']})")


def main(argv: list[str] | None = None, default_dataset: str = "mnist") -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default=default_dataset, choices=["mnist", "fashion-mnist"])
    p.add_argument("--quick", action="store_true", help="12k training images, 2 epochs, 1 QAT epoch (smoke test)")
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/results/quant_<dataset>.json)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=None, help="fp32 epochs (default: the recipe's)")
    p.add_argument("--qat-epochs", type=int, default=None, help="QAT epochs per variant (default 3)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from cimkit.io import atomic_write_json

    result = run(args.dataset, quick=args.quick, threads=args.threads, data_dir=args.data_dir, epochs=args.epochs,
                 qat_epochs=args.qat_epochs, seed=args.seed)  # fmt: skip
    print_table(result)
    suffix = ".quick.json" if args.quick else ".json"
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"{result['benchmark']}{suffix}"
    atomic_write_json(out, result)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
