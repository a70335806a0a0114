"""Analog accuracy benchmark: LeNet-5 on MNIST (or Fashion-MNIST) on simulated PCM crossbars.

One experiment through the experiment runner (the code ``cimkit run`` runs): the fp32 baseline is
trained with the recipe of ``examples/mnist_lenet5.toml``, then three ``analog`` variants map it onto
the ``standard`` mapping (8-bit DAC with per-sample range, 8-bit ADC with range 10 per 256-row tile,
output noise 0.04, differential pairs, per-column scaling) with the ``pcm`` device (Nandakumar 2019 /
Joshi 2020) and evaluate it at 1 s, 1 h, 1 day and 1 year after programming, ``--repeats`` chips
each (mean ± std; the ``chips_times`` protocol):

* ``PCM``: the fp32 weights, no drift compensation;
* ``PCM + comp``: the fp32 weights, global drift compensation;
* ``PCM + HWA + comp``: hardware-aware fine-tuning (PCM device-noise injection per batch at a
  drift time drawn log-uniformly in [1 h, 1 y], weight clipping at 2.5 sigma, STE converters,
  distillation from the fp32 model, a quarter of the recipe's learning rate), global drift
  compensation.

Goal: ``PCM + HWA + comp`` at 1 day within 0.5 points of fp32 on MNIST (1.5 on Fashion-MNIST).
If aihwkit is importable (optional, never a dependency), the same weights (the trained baseline and
the HWA-trained weights from the run's checkpoints) are evaluated with its torch tile at matched
settings (``TorchInferenceRPUConfig``: 8-bit in/out resolution, out_bound 10, out_noise 0.04,
256x256 tiles, column-wise weight scaling, ``PCMLikeNoiseModel``, global drift compensation) and
printed side by side. Differences by design: aihwkit scales each input vector (each conv patch) by
its own abs-max and samples the 1/f read noise once per drift call; cimkit scales per sample and
reads with fresh read noise on every forward.

    python benchmarks/analog_mnist.py [--dataset mnist|fashion-mnist] [--quick] [--out FILE] [--threads 1]

``--quick``: 1 fp32 epoch, 1 HWA epoch, 2 chips. Writes ``benchmarks/results/analog_<dataset>.json``
(``--quick``: ``analog_<dataset>.quick.json``).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn

import _bench

TIMES = (1.0, 3600.0, 86400.0, 31536000.0)
GOAL_PTS = {"mnist": 0.5, "fashion-mnist": 1.5}
HWA = "PCM + HWA + comp"


def experiment_variants(repeats: int, hwa_epochs: int) -> list[dict[str, Any]]:
    """The ``[[variants]]`` tables of the benchmark (the same a user would write)."""
    common = {"kind": "analog", "mapping": "standard", "device": "pcm", "times": list(TIMES), "repeats": repeats}
    return [
        {"kind": "fp32"},
        {**common, "name": "PCM", "compensation": "none"},
        {**common, "name": "PCM + comp", "compensation": "global"},
        {**common, "name": HWA, "compensation": "global", "hwa": True, "hwa_epochs": hwa_epochs,
         "kd_alpha": 0.5, "kd_temperature": 4.0, "clip_sigma": 2.5},
    ]  # fmt: skip


# ----------------------------------------------------------------------------- aihwkit (peer)


def aihwkit_importable() -> str | None:
    """None when aihwkit's torch tile can be used, else why not."""
    try:
        from aihwkit.nn.conversion import convert_to_analog  # noqa: F401
        from aihwkit.simulator.configs import TorchInferenceRPUConfig  # noqa: F401
    except Exception as e:  # not installed, or a broken binary wheel
        return f"aihwkit is not importable ({type(e).__name__}: {e}); its side-by-side column is left out"
    return None


def _aihwkit_model(digital: nn.Module, compensation: bool) -> nn.Module:
    from aihwkit.nn.conversion import convert_to_analog

    from analog_speed import aihwkit_rpu_config

    cfg = aihwkit_rpu_config()
    if not compensation:
        cfg.drift_compensation = None
    return convert_to_analog(copy.deepcopy(digital), cfg).eval()


def aihwkit_over_time(digital: nn.Module, compensation: bool, loader: Any, repeats: int) -> torch.Tensor:
    """Accuracy (fraction) of aihwkit chips ``(repeats, len(TIMES))``: program, drift, evaluate."""
    from cimkit.train import evaluate

    model = _aihwkit_model(digital, compensation)
    out = torch.zeros(repeats, len(TIMES), dtype=torch.float64)
    for r in range(repeats):
        torch.manual_seed(1000 + r)  # aihwkit draws from torch's global generator
        model.program_analog_weights()
        for j, t in enumerate(TIMES):
            model.drift_analog_weights(t)
            out[r, j] = float(evaluate(model, loader)["accuracy"])
    return out


# ----------------------------------------------------------------------------- the benchmark


def run(args: Any) -> _bench.Report:
    from cimkit.data import TensorLoader, load_dataset

    name = f"analog_{args.dataset.replace('-', '_')}"
    ddir = _bench.data_dir(args.data_dir)
    repeats = args.repeats or (2 if args.quick else 10)
    hwa_epochs = args.hwa_epochs or (1 if args.quick else 5)
    train = {"seed": args.seed, **({"epochs": args.epochs} if args.epochs else {"epochs": 1} if args.quick else {})}
    cfg = _bench.recipe(name=name, dataset=args.dataset, seed=args.seed, threads=args.threads, train=train,
                        variants=experiment_variants(repeats, hwa_epochs))  # fmt: skip
    res = _bench.run_experiment(name, cfg, data_dir=ddir, quick=args.quick, reuse=args.reuse)
    by = _bench.variants(res)
    fp32_acc = float(by["fp32"]["metrics"]["accuracy"])

    rep = _bench.Report(name, args.quick)
    rep.config = {
        "dataset": args.dataset,
        "repeats": repeats,
        "hwa_epochs": hwa_epochs,
        "experiment": res["experiment"],
    }
    rep.row(config="fp32", time="-", cimkit=f"{100 * fp32_acc:.2f}", cimkit_mean=fp32_acc, cimkit_std=0.0)
    why = aihwkit_importable()
    peer: dict[str, torch.Tensor] = {}
    if why is not None:
        rep.skip(why)
    else:
        fp32 = _bench.trained_baseline(res, name, args.quick, ddir)
        hwa = copy.deepcopy(fp32)
        state = _bench.finetuned_state(name, args.quick, f"analog-{HWA}")
        hwa.load_state_dict({k: v for k, v in state.items() if k in hwa.state_dict()})  # the digital weights
        ds = load_dataset(args.dataset, data_dir=ddir, progress=False)
        test = TensorLoader(ds.x_test, ds.y_test, 1000)
        a_rep = args.aihwkit_repeats or repeats
        for label, weights in (("PCM", fp32), ("PCM + comp", fp32), (HWA, hwa)):
            peer[label] = aihwkit_over_time(weights, by[label]["config"]["compensation"] != "none", test, a_rep)
    for label in ("PCM", "PCM + comp", HWA):
        d = by[label]["details"]
        for j in range(len(d["times"])):
            mu, sd = d["mean"][j], d["std"][j]
            row: dict[str, Any] = {"config": label, "time": d["labels"][j], "cimkit": f"{100 * mu:.2f} ± {100 * sd:.2f}",
                                   "cimkit_mean": mu, "cimkit_std": sd}  # fmt: skip
            if label in peer:
                a = peer[label][:, j]
                amu, asd = float(a.mean()), float(a.std()) if a.numel() > 1 else 0.0
                row.update(aihwkit=f"{100 * amu:.2f} ± {100 * asd:.2f}", aihwkit_mean=amu, aihwkit_std=asd)
            rep.row(**row)
    d = by[HWA]["details"]
    day = d["times"].index(86400.0)
    goal = GOAL_PTS[args.dataset]
    drop = 100 * (fp32_acc - d["mean"][day])
    rep.at_most(f"{args.dataset}: fp32 - (PCM + HWA + global comp) at 1 day, points", drop, goal, f"<= {goal}")
    rep.row(config="(HWA fine-tuning seconds)", time="-", cimkit=f"{d['hwa_fit']['seconds']:.0f}")
    return rep


def main(argv: list[str] | None = None) -> int:
    p = _bench.parser("analog_mnist", __doc__)
    p.add_argument("--dataset", choices=sorted(GOAL_PTS), default="mnist")
    p.add_argument("--repeats", type=int, default=0, help="chips per time (default 10; --quick 2)")
    p.add_argument("--aihwkit-repeats", type=int, default=0, help="aihwkit chips per time (default: --repeats)")
    p.add_argument("--epochs", type=int, default=0, help="fp32 epochs (default: the recipe's; --quick 1)")
    p.add_argument("--hwa-epochs", type=int, default=0, help="HWA fine-tuning epochs (default 5; --quick 1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    _bench.setup(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rep = run(args)
    rep.print()
    rep.write(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
