"""Hessian mixed precision vs uniform and random plans; ZeroQ vs data calibration; PyHessian check.

    python benchmarks/mixed_precision.py [--quick] [--out FILE] [--threads N] [--data-dir DIR] [--plot PNG]

For MNIST and Fashion-MNIST with the BatchNorm CNN ``vgg_small`` (all figures from this run):

1. train the fp32 baseline on the training set minus its last 5000 images (held out for validation);
   Hutchinson traces per layer (HAWQ-V2 stopping rule);
2. three budgets, candidates {2, 3, 4, 6, 8} bits, 8-bit activations (protocol 3, written down in
   ``docs/notes.md`` before its first run): the storage of uniform 2-bit and of uniform 3-bit weights
   (``size_bytes`` of the Linear/Conv layers, :func:`cimkit.cost.storage_bytes`), and the energy per
   inference of uniform W4A8 on the ``rram_22nm`` CIM spec (``energy_uj`` of the Linear/Conv layers,
   :mod:`cimkit.cost`). At each budget: the Hessian ILP plan, the uniform plan that defines the budget
   and 5 random plans whose cost lies in [0.95, 1]·budget, each with per-channel MSE-optimal weight
   ranges, calibrated on the same batches and fine-tuned with the same QAT budget (80 Adam steps of 128
   images, cosine). The QAT learning rate is tuned *for the uniform baseline* (grid 1e-5..3e-4, its
   validation accuracy) and then used for every plan at that budget; Hessian and uniform plans are
   fine-tuned with 3 paired seeds (same data order and dropout stream per seed), random plan i with
   seed i mod 3; every difference is reported with its paired standard error (Hessian − uniform over
   the 3 seeds; Hessian − random over the 5 random plans, each against the Hessian plan at its seed).
   A budget that admits only one plan (the storage of uniform 2-bit weights when 2 bits is the smallest
   candidate) is flagged ``degenerate``: every plan there is the uniform plan, and identical plans are
   fine-tuned once per seed (QAT is deterministic on CPU). For the Hessian and uniform plans also a
   diagnostic: PTQ with only the BatchNorm statistics re-estimated on the QAT images
   (``cimkit.quant.reestimate_bn_``), no weight update;
3. W8A8 PTQ calibrated on ZeroQ distilled data vs on the same number of real training images;
4. if PyHessian is importable: per-layer traces at equal probe counts (common random numbers: both
   use the same Rademacher probes) and wall time (PyHessian needs one run per layer).

The plans, their quantization and QAT go through the public API users call
(``cimkit.mixed.analyze`` / ``Analysis.allocate`` / ``BitPlan.apply``, ``cimkit.train.fit``).

Two learning-rate rules (``--lr-rule``); everything else is identical between them:

* ``uniform`` (the default; ``results/mixed_precision.json``): as above, the lr tuned for the
  uniform plan is used by every plan at that budget. This favours the baseline.
* ``own`` (``results/mixed_precision_own_lr.json``): every plan -- Hessian, uniform and each random
  plan -- picks its QAT lr from the same grid by its *own* validation accuracy at seed 0 (ties: the
  lower lr), then is fine-tuned with it on its seeds (equal tuning effort per method).

Earlier protocols (1 and 2: budgets at the sizes of uniform 3- and 4-bit weights) and their results
are described in ``docs/notes.md``.
"""

from __future__ import annotations

import contextlib
import copy
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import _bench
from cimkit.data import TensorLoader, load_dataset
from cimkit.mixed import MixedConfig, ZeroQConfig, analyze, distill_data, hessian_trace
from cimkit.mixed.plan import BitPlan
from cimkit.models import create
from cimkit.quant import QuantConfig, calibrate, quantize_, reestimate_bn_
from cimkit.train import TrainConfig, evaluate, fit

FULL = dict(train_epochs=2, train_n=None, val_n=5000, hessian_samples=384, probes=100, qat_steps=80, n_random=5,
            qat_seeds=3, qat_lrs=(1e-5, 3e-5, 1e-4, 3e-4), test_n=None, zeroq_samples=128, zeroq_iters=200,
            pyh_samples=256, pyh_probes=30)  # fmt: skip
QUICK = dict(train_epochs=1, train_n=6000, val_n=1000, hessian_samples=128, probes=15, qat_steps=25, n_random=2,
             qat_seeds=2, qat_lrs=(1e-4, 3e-4), test_n=2000, zeroq_samples=64, zeroq_iters=60, pyh_samples=64,
             pyh_probes=8)  # fmt: skip
DATASETS = ("mnist", "fashion-mnist")
ENERGY_SPEC = "rram_22nm"  # the CIM spec of the energy budget
# (cost, uniform bits that define the budget, what it is): protocol 3
BUDGETS = (
    ("size_bytes", 2, "size of uniform W2A8"),
    ("size_bytes", 3, "size of uniform W3A8"),
    ("energy_uj", 4, f"energy of uniform W4A8 on {ENERGY_SPEC}"),
)
SEED = 0
W_OBSERVER = "mse"  # weight ranges of every plan (MSE-optimal per channel); Ω uses the same quantizer


def _test_loader(data: Any, n: int | None) -> TensorLoader:
    x, y = (data.x_test, data.y_test) if n is None else (data.x_test[:n], data.y_test[:n])
    return TensorLoader(x, y, 1000)


def _qat(model: nn.Module, data: Any, steps: int, lr: float, seed: int) -> float:
    """The same QAT budget for every plan: ``steps`` Adam steps (batch 128, cosine to 0) on the head of the
    training set; ``seed`` fixes the data order and the dropout stream (paired across plans)."""
    n = steps * 128
    loader = TensorLoader(data.x_train[:n], data.y_train[:n], 128, shuffle=True, seed=SEED + 1 + 1000 * seed)
    torch.manual_seed(SEED + seed)
    t0 = time.perf_counter()
    fit(model, loader, TrainConfig(epochs=1, lr=lr, batch_size=128, seed=SEED + seed), progress=False)
    return time.perf_counter() - t0


def _finetuned(
    base: nn.Module, plan: BitPlan, calib: list[torch.Tensor], data: Any, p: dict, lr: float, seed: int
) -> nn.Module:
    model = copy.deepcopy(base)
    plan.apply(model, calib)
    _qat(model, data, p["qat_steps"], lr, seed)
    return model.eval()


def _key(plan: BitPlan) -> tuple:
    return tuple(sorted(plan.layer_bits.items()))


def _tune_lr(base: nn.Module, plan: BitPlan, calib: list[torch.Tensor], data: Any, p: dict, val: TensorLoader,
             rep: _bench.Report, ds: str, tag: str, label: str) -> tuple[float, nn.Module]:  # fmt: skip
    """The QAT learning rate of the grid that maximizes ``plan``'s validation accuracy at seed 0 (ties: the lower
    lr), and the seed-0 model fine-tuned with it (QAT is deterministic on CPU, so the run is not repeated)."""
    best_lr, best, best_model = p["qat_lrs"][0], -1.0, None
    for lr in sorted(p["qat_lrs"]):
        model = _finetuned(base, plan, calib, data, p, lr, 0)
        acc = evaluate(model, val)["accuracy"]
        rep.row(dataset=ds, part=f"qat-lr {tag}", method=label, lr=lr, val_accuracy=acc)
        if acc > best:
            best_lr, best, best_model = lr, acc, model
    assert best_model is not None
    return best_lr, best_model


def _plan_accuracy(
    base: nn.Module, plan: BitPlan, calib: list[torch.Tensor], data: Any, p: dict, lr: float, seeds: list[int],
    ptq: bool = True, seed0_model: nn.Module | None = None, cache: dict | None = None,
) -> dict[str, Any]:  # fmt: skip
    """PTQ and per-seed QAT test accuracy; ``seed0_model`` (already fine-tuned at ``lr``, seed 0) is reused.
    With ``ptq`` also a diagnostic: the PTQ model with only its BatchNorm statistics re-estimated on the QAT
    images (no weight update), which separates what QAT gains from BN statistics and from weight updates."""
    test = _test_loader(data, p["test_n"])
    out: dict[str, Any] = {}
    if ptq:
        model = copy.deepcopy(base)
        plan.apply(model, calib)
        out["ptq_accuracy"] = evaluate(model, test)["accuracy"]
        n = p["qat_steps"] * 128
        reestimate_bn_(model, [data.x_train[i : i + 128] for i in range(0, n, 128)])
        out["bn_only_accuracy"] = evaluate(model, test)["accuracy"]
    cache = {} if cache is None else cache
    per_seed = []
    for s in seeds:  # an identical plan at the same lr and seed is fine-tuned once (QAT is deterministic on CPU)
        key = (_key(plan), lr, s)
        if key not in cache:
            m = seed0_model if s == 0 and seed0_model is not None else _finetuned(base, plan, calib, data, p, lr, s)
            cache[key] = evaluate(m, test)["accuracy"]
        per_seed.append(cache[key])
    out["qat_per_seed"] = per_seed
    out["qat_accuracy"] = float(np.mean(out["qat_per_seed"]))
    return out


@contextlib.contextmanager
def _probe_feed(probes: list[torch.Tensor]):
    """Make ``torch.randint_like`` (PyHessian's probe source) return the given ±1 probes as 0/1 draws."""
    orig = torch.randint_like
    it = iter(probes)

    def fake(p: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        return ((next(it) + 1) / 2).to(dtype=p.dtype, device=p.device)

    torch.randint_like = fake
    try:
        yield
    finally:
        torch.randint_like = orig


def _pyhessian_compare(model: nn.Module, data: Any, p: dict, rep: _bench.Report, ds: str) -> None:
    try:
        from pyhessian import hessian as pyh_hessian
    except ImportError:
        print("PyHessian not importable: comparison skipped (pip install pyhessian --no-deps)")
        return
    n, probes = p["pyh_samples"], p["pyh_probes"]
    x, y = data.x_train[:n], data.y_train[:n]
    kw = dict(max_probes=probes, min_probes=probes, tol=1e-12, seed=SEED, max_samples=n, batch_size=n, progress=False)
    t0 = time.perf_counter()
    joint = hessian_trace(model, (x, y), **kw)
    t_joint = time.perf_counter() - t0
    t0 = time.perf_counter()
    block = hessian_trace(model, (x, y), blockwise=True, **kw)
    t_block = time.perf_counter() - t0
    # the probes cimkit drew, in its order (probe k: one tensor per layer from one generator)
    gen = torch.Generator().manual_seed(SEED)
    mods = dict(model.named_modules())
    per_layer: dict[str, list[torch.Tensor]] = {name: [] for name in block.names}
    for _ in range(probes):
        for name in block.names:
            w = mods[name].weight
            per_layer[name].append((torch.randint(0, 2, w.shape, generator=gen) * 2 - 1).float())
    t_pyh = 0.0
    worst = 0.0
    for name in block.names:
        m = copy.deepcopy(model).eval()
        for q in m.parameters():
            q.requires_grad_(False)
        dict(m.named_modules())[name].weight.requires_grad_(True)  # PyHessian takes every trainable parameter
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # PyHessian's backward(create_graph=True) warns about a ref cycle
            warnings.simplefilter("ignore", UserWarning)
            h = pyh_hessian(m, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
        with _probe_feed(per_layer[name]):
            vals = h.trace(maxIter=probes, tol=0.0)
        t_pyh += time.perf_counter() - t0
        theirs = float(np.mean(vals))
        rel = abs(block.trace[name] - theirs) / abs(theirs)
        worst = max(worst, rel)
        rep.row(dataset=ds, part="pyhessian", method=name, probes=len(vals), pyhessian=theirs,
                pyhessian_stderr=float(np.std(vals, ddof=1) / np.sqrt(len(vals))), cimkit_block=block.trace[name],
                block_rel_diff=rel, block_stderr=block.trace_stderr[name], cimkit_joint=joint.trace[name],
                joint_rel_diff=abs(joint.trace[name] - theirs) / abs(theirs), joint_stderr=joint.trace_stderr[name])  # fmt: skip
    rep.row(dataset=ds, part="pyhessian-time", method=f"{len(block.names)} layers x {probes} probes, {n} samples",
            pyhessian_s=t_pyh, cimkit_block_s=t_block, cimkit_joint_s=t_joint,
            block_speedup=t_pyh / t_block, joint_speedup=t_pyh / t_joint)  # fmt: skip
    rep.goal(f"{ds}: per-layer trace, max relative difference cimkit (blockwise) vs PyHessian "
             f"({probes} probes each, same probes)", worst, "<= 0.05", worst <= 0.05)  # fmt: skip
    rep.goal(f"{ds}: time for all layers' traces, cimkit (blockwise) / PyHessian (one run per layer)",
             t_block / t_pyh, "<= 1", t_block <= t_pyh)  # fmt: skip


def run_dataset(ds: str, p: dict, rep: _bench.Report, args: Any) -> None:
    data = load_dataset(ds, data_dir=args.data_dir, progress=False)
    torch.manual_seed(SEED)
    model = create("vgg_small", in_channels=data.in_channels, num_classes=data.num_classes,
                   input_size=tuple(data.input_size))  # fmt: skip
    n_fit = len(data.x_train) - p["val_n"] if p["train_n"] is None else p["train_n"]
    xt, yt = data.x_train[:n_fit], data.y_train[:n_fit]
    val = TensorLoader(data.x_train[-p["val_n"] :], data.y_train[-p["val_n"] :], 1000)  # never trained on
    t0 = time.perf_counter()
    fit(model, TensorLoader(xt, yt, 128, shuffle=True, seed=SEED),
        TrainConfig(epochs=p["train_epochs"], lr=2e-3, weight_decay=1e-4, seed=SEED), progress=False)  # fmt: skip
    t_train = time.perf_counter() - t0
    model.eval()
    test = _test_loader(data, p["test_n"])
    fp_acc = evaluate(model, test)["accuracy"]
    rep.row(dataset=ds, part="fp32", method="fp32", accuracy=fp_acc, seconds=t_train)

    # --- Hessian analysis on training samples outside the QAT data (just before the validation split)
    hs = p["hessian_samples"]
    hx, hy = xt[-hs:], yt[-hs:]
    cfg = MixedConfig(probes=p["probes"], hessian_samples=hs, hessian_batch_size=128, a_bits=8, w_observer=W_OBSERVER,
                      seed=SEED, spec=ENERGY_SPEC)  # fmt: skip
    t0 = time.perf_counter()
    analysis = analyze(model, (hx, hy), cfg, progress=False)
    t_h = time.perf_counter() - t0
    hinfo = analysis.hessian
    rep.row(dataset=ds, part="hessian", method=f"{hinfo.n_probes} probes, converged={hinfo.converged}", seconds=t_h,
            **{f"tr/n {n}": v for n, v in hinfo.mean_trace().items()})  # fmt: skip
    calib = [data.x_train[i : i + 128] for i in range(0, 512, 128)]

    for b in analysis.table.bits:  # uniform PTQ points for the Pareto plot
        up = analysis.uniform(b)
        m = copy.deepcopy(model)
        up.apply(m, calib)
        acc = evaluate(m, test)["accuracy"]
        rep.row(dataset=ds, part="uniform-ptq", method=f"W{b}A8", size_bytes=up.size_bytes, ptq_accuracy=acc)

    rule = "lr tuned per plan" if args.lr_rule == "own" else "lr tuned for uniform"
    cache: dict = {}
    for cost, bits, what in BUDGETS:
        tag = f"{'size' if cost == 'size_bytes' else 'energy'}-W{bits}"
        budget = analysis.uniform_cost(cost, bits)
        hess, uni = analysis.allocate({cost: budget}), analysis.uniform(bits)
        randoms = analysis.random(budget, p["n_random"], seed=SEED + bits + (100 if cost != "size_bytes" else 0),
                                  cost=cost)  # fmt: skip
        degenerate = all(_key(x) == _key(uni) for x in (hess, *randoms))
        plans = [("hessian", hess), (f"uniform-{bits}", uni)] + [(f"random-{i}", rp) for i, rp in enumerate(randoms)]
        # protocol "uniform": every plan uses the lr tuned for uniform; "own": each plan tunes its own
        tuned = {label: _tune_lr(model, plan, calib, data, p, val, rep, ds, tag, label)
                 for label, plan in (plans if args.lr_rule == "own" else plans[1:2])}  # fmt: skip
        seeds = list(range(p["qat_seeds"]))
        res = {}
        for label, plan in plans:
            lr, seed0 = tuned[label] if label in tuned else (tuned[plans[1][0]][0], None)
            rnd_i = int(label.split("-")[1]) if label.startswith("random") else None
            run_seeds = seeds if rnd_i is None else [rnd_i % len(seeds)]
            r = _plan_accuracy(model, plan, calib, data, p, lr, run_seeds, ptq=rnd_i is None, seed0_model=seed0,
                               cache=cache)  # fmt: skip
            res[label] = {**r, "seeds": run_seeds}
            rep.row(dataset=ds, part=f"budget {tag}", method=label, budget=what, size_bytes=plan.size_bytes,
                    energy_uj=plan.costs.get("energy_uj", ""), bits="/".join(str(v) for v in plan.layer_bits.values()),
                    omega=plan.omega, ptq_accuracy=r.get("ptq_accuracy", ""),
                    bn_only_accuracy=r.get("bn_only_accuracy", ""), qat_lr=lr, qat_seeds=run_seeds,
                    qat_per_seed=r["qat_per_seed"], qat_accuracy=r["qat_accuracy"], degenerate=degenerate)  # fmt: skip
        mp = np.array(res["hessian"]["qat_per_seed"])
        uni_acc = np.array(res[f"uniform-{bits}"]["qat_per_seed"])
        d = 100 * (mp - uni_acc)  # paired by seed
        se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
        # Hessian vs each random plan, paired by the random plan's seed
        dr = np.array([100 * (mp[res[k]["seeds"][0]] - res[k]["qat_per_seed"][0]) for k in res if k.startswith("random")])
        se_r = float(np.std(dr, ddof=1) / np.sqrt(len(dr))) if len(dr) > 1 else float("nan")
        rep.row(dataset=ds, part="goal-detail", method=tag, budget=what, hessian_minus_uniform=float(d.mean()),
                paired_se=se, hessian_minus_random=float(dr.mean()), random_paired_se=se_r, seeds=len(d),
                degenerate=degenerate)  # fmt: skip
        flag = "; degenerate: no other plan fits this budget" if degenerate else ""
        rep.goal(f"{ds} @ {what} ({rule}{flag}): Hessian MP − uniform, mean QAT accuracy over {len(d)} seeds "
                 f"(points; paired s.e. {se:.3f})", float(d.mean()), "> 0", d.mean() > 0)  # fmt: skip
        rep.goal(f"{ds} @ {what} ({rule}{flag}): Hessian MP − {len(dr)} random plans, each paired with the Hessian "
                 f"plan at its seed (points; paired s.e. {se_r:.3f})", float(dr.mean()), "> 0", dr.mean() > 0)  # fmt: skip

    # --- ZeroQ: W8A8 PTQ calibrated on distilled data vs on real data (same count)
    t0 = time.perf_counter()
    zq = distill_data(model, tuple(data.x_train.shape[1:]),
                      ZeroQConfig(n_samples=p["zeroq_samples"], iters=p["zeroq_iters"], seed=SEED), progress=False)  # fmt: skip
    t_zq = time.perf_counter() - t0
    accs = {}
    for label, batches in (("data", [data.x_train[: p["zeroq_samples"]]]), ("zeroq", [zq])):
        m = copy.deepcopy(model)
        quantize_(m, QuantConfig(w_bits=8, a_bits=8))
        calibrate(m, batches)
        accs[label] = evaluate(m, test)["accuracy"]
        rep.row(dataset=ds, part="w8a8-ptq", method=f"calibrated on {label}", ptq_accuracy=accs[label],
                seconds=t_zq if label == "zeroq" else 0.0)  # fmt: skip
    gap = 100 * abs(accs["zeroq"] - accs["data"])
    rep.goal(f"{ds}: |ZeroQ-calibrated − data-calibrated| W8A8 PTQ accuracy (points)", gap, "<= 0.5", gap <= 0.5)
    if ds == "mnist":
        _pyhessian_compare(model, data, p, rep, ds)


def _panels(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-dataset plot data rebuilt from the result rows (so ``--replot`` needs only the JSON)."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        ds, part = r.get("dataset"), r.get("part", "")
        if ds is None:
            continue
        pnl = out.setdefault(ds, {"dataset": ds, "fp32": None, "uniform_ptq": [], "points": []})
        if part == "fp32":
            pnl["fp32"] = r["accuracy"]
        elif part == "uniform-ptq":
            pnl["uniform_ptq"].append((r["size_bytes"], r["ptq_accuracy"], int(r["method"][1:].split("A")[0])))
        elif part.startswith("budget "):
            ptq = r.get("ptq_accuracy")
            pnl["points"].append({"budget": part[len("budget "):], "method": r["method"].split("-")[0],
                                  "size": r["size_bytes"], "acc": r["qat_accuracy"],
                                  "ptq": ptq if isinstance(ptq, float) else None})  # fmt: skip
    return list(out.values())


def _plot(panels: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.2), squeeze=False)
    for ax, pnl in zip(axes[0], panels):
        u = sorted(pnl["uniform_ptq"])
        ax.plot([s / 1e3 for s, _, _ in u], [100 * a for _, a, _ in u], "s--", color="tab:gray", label="uniform, PTQ")
        for s, a, b in u:
            ax.annotate(f"W{b}", (s / 1e3, 100 * a), textcoords="offset points", xytext=(4, -10), fontsize=8)
        style = {"uniform": ("s", "black", "uniform + QAT (seed mean)"),
                 "hessian": ("o", "tab:red", "Hessian MP + QAT (seed mean)"),
                 "random": ("x", "tab:blue", "random plans + QAT")}  # fmt: skip
        for method, (mk, col, lab) in style.items():
            pts = [q for q in pnl["points"] if q["method"] == method]
            ax.plot([q["size"] / 1e3 for q in pts], [100 * q["acc"] for q in pts], mk, color=col, label=lab,
                    ms=7 if method != "random" else 6, ls="-" if method == "hessian" else "none")  # fmt: skip
        mp = [q for q in pnl["points"] if q["method"] == "hessian"]
        ax.plot([q["size"] / 1e3 for q in mp], [100 * q["ptq"] for q in mp], "o", mfc="none", color="tab:red",
                ms=7, label="Hessian MP, PTQ")  # fmt: skip
        ax.axhline(100 * pnl["fp32"], color="tab:green", lw=1, ls=":", label="fp32")
        lo = min(100 * v for q in pnl["points"] for v in (q["acc"], q["ptq"]) if v is not None)
        ax.set_ylim(max(lo - 1, 100 * min(a for _, a, _ in u) - 1), 100 * pnl["fp32"] + 0.6)
        ax.set_title(f"{pnl['dataset']}, vgg_small, A8")
        ax.set_xlabel("storage of the Linear/Conv layers (kB)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    print(f"wrote {path}")


def _print(rep: _bench.Report) -> None:
    """One table per part (rows of a part share their columns), then the goals."""
    from cimkit.report.summary import format_table

    parts: dict[str, list[dict[str, Any]]] = {}
    for r in rep.rows:
        parts.setdefault(r.get("part", ""), []).append(r)
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    for part, rows in parts.items():
        keys: list[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys and k != "part"]
        print(f"== {part}")
        print(format_table(keys, [[fmt(r.get(k, "")) for k in keys] for r in rows]) + "\n")
    for g in rep.goals:
        print(f"[{'met' if g['met'] else 'NOT MET'}] {g['what']}: {fmt(g['measured'])} (goal {g['goal']})")


def main() -> None:
    ap = _bench.parser("mixed_precision", __doc__)
    ap.add_argument("--plot", type=Path, default=None,
                    help="Pareto plot PNG (default docs/img/mixed_precision.png on a full run, none with --quick)")  # fmt: skip
    ap.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated (default mnist,fashion-mnist)")
    ap.add_argument("--replot", type=Path, default=None, help="only redraw --plot from a results JSON")
    ap.add_argument("--lr-rule", choices=("uniform", "own"), default="uniform",
                    help="QAT lr per budget: tuned for the uniform plan and shared (protocol 1, default) or tuned "
                         "by each plan for itself (protocol 2); see the module docstring")  # fmt: skip
    args = ap.parse_args()
    if args.replot is not None:
        import json

        rows = json.loads(args.replot.read_text())["rows"]
        _plot(_panels(rows), args.plot or _bench.ROOT / "docs" / "img" / "mixed_precision.png")
        return
    _bench.setup(args)
    p = QUICK if args.quick else FULL
    name = "mixed_precision" if args.lr_rule == "uniform" else "mixed_precision_own_lr"
    rep = _bench.Report(name, args.quick)
    t0 = time.perf_counter()
    for ds in args.datasets.split(","):
        run_dataset(ds, p, rep, args)
    rep.row(part="total", seconds=time.perf_counter() - t0)
    _print(rep)
    rep.write(args.out)
    plot = args.plot or (None if args.quick else _bench.ROOT / "docs" / "img" / f"{name}.png")
    if plot is not None:
        _plot(_panels(rep.rows), plot)


if __name__ == "__main__":
    main()
