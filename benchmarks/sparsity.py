"""Sparsity benchmark: SSL with physical removal, Torch-Pruning comparison, crossbar-aware pruning.

Everything runs through the pipeline API users run (``cimkit.experiment.pipeline.run_pipeline`` on a
:class:`~cimkit.experiment.RunContext`: the steps ``regularize``, ``prune``, ``finetune``, ``remove``),
with the fp32 baseline of the same seed measured in the same run. Three parts:

1. **SSL on LeNet-5 / MNIST** (3 seeds): group Lasso over the coupled filter and channel groups
   (Wen et al. 2016), groups below 5 % of their structure's largest norm masked, fine-tuned, removed.
   Goals: accuracy within 0.2 points of fp32; conv MACs <= 25 % of the original; measured CPU
   speed-up of the shrunken model's forward (batch 256) >= 0.7x the MAC reduction.
2. **Against Torch-Pruning** (``resnet20`` / Fashion-MNIST, 3 seeds; skipped with a reason when
   ``torch_pruning`` is not importable; it is never a dependency): 2x fewer MACs by Torch-Pruning's
   L1 group-magnitude ``MetaPruner`` (uniform ratio found by bisection: the largest MAC count <= 50 %)
   and by cimkit at the MAC count Torch-Pruning reached (``prune`` with ``target_macs``, global L1
   magnitude; and SSL group Lasso first, then global L2 magnitude), each fine-tuned with the same
   budget (epochs). Goals: cimkit's best accuracy >= Torch-Pruning's; cimkit's removal (prune +
   remove) not slower than Torch-Pruning's (graph + step); MACs within 2 %.
3. **Crossbar-aware** (LeNet-5 / MNIST, ``vgg_small`` / Fashion-MNIST, 128x128 arrays, 3 seeds):
   ``block`` pruning (whole arrays; one-shot, and gradual with Zhu & Gupta's cubic schedule within the
   same fine-tuning budget) vs ``unstructured`` pruning with the same per-layer sparsity:
   occupied arrays and accuracy after fine-tuning (goal: >= 4x fewer arrays at <= 0.3 points loss);
   ``tile_column`` (TinyADC) pruning: required ADC bits (``cimkit.sparse.report``) vs dense at the
   measured accuracy. A 64x64-array row is added for reference. Energy per inference before and
   after comes from the cost model (``cimkit.cost.estimate`` on ``rram_22nm`` with the same array
   size; empty arrays cost nothing).

Scaled to about 20 minutes on two quiet CPU cores with one torch thread (stated in the JSON):
training subsets of 30 000 (MNIST / Fashion-MNIST for LeNet-5 and vgg_small) and 3 000 images
(resnet20, width 8 instead of 16), the full 10 000-image test sets (2 000 for resnet20), 2-3 epochs
of baseline training and 1-2 epochs of every fine-tuning. ``--quick`` shrinks all of it to a smoke run
(figures not comparable).

    python benchmarks/sparsity.py [--quick] [--out FILE] [--threads 1] [--data-dir DIR]

Writes ``benchmarks/results/sparsity.json`` (``--quick``: ``sparsity.quick.json``).
"""

from __future__ import annotations

import copy
import gc
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cimkit.cost import estimate, get_spec
from cimkit.data import TensorLoader, load_dataset
from cimkit.experiment import RunContext
from cimkit.experiment.pipeline import parse_steps, run_pipeline
from cimkit.models import create
from cimkit.quant import account
from cimkit.sparse import SparsityConfig, analyze, sparsify_
from cimkit.sparse.budget import sparsity_for_macs
from cimkit.sparse.removal import remove_, shrink_
from cimkit.sparse.report import forward_latency_ms
from cimkit.tasks import get_task
from cimkit.train import FinetuneConfig, TrainConfig, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import Report, parser, setup

NAME = "sparsity"
REMOVAL_ROUNDS = 9  # timed removals per tool and seed (interleaved; the median is reported)


def _scale(quick: bool) -> dict[str, Any]:
    if quick:
        return {"seeds": [0], "n_train": 1500, "n_test": 1000, "res_train": 400, "res_test": 300, "res_width": 4,
                "base_epochs": 1, "res_base_epochs": 1, "ft_epochs": 1, "xbar_ft_epochs": 1, "reg_epochs": 1,
                "ssl_strength": 0.1, "latency_rounds": 5}  # fmt: skip
    # the SSL strength is per optimizer step: scaled with the number of steps (30 000 images, 2 epochs)
    return {"seeds": [0, 1, 2], "n_train": 30000, "n_test": None, "res_train": 3000, "res_test": 2000, "res_width": 8,
            "base_epochs": 3, "res_base_epochs": 3, "ft_epochs": 2, "xbar_ft_epochs": 1, "reg_epochs": 2,
            "ssl_strength": 0.025, "latency_rounds": 30}  # fmt: skip


def make_ctx(dataset: str, model: str, model_args: dict, n_train: int, n_test: int | None, epochs: int, seed: int,
             data_dir: Path, work: Path, optimizer: str = "sgd") -> Any:  # fmt: skip
    """A RunContext with an fp32 baseline trained by cimkit.train.fit (what the runner does): SGD with
    momentum 0.9, lr 0.05, cosine schedule (Wen et al.'s SSL runs use SGD with momentum), batch 128."""
    data = load_dataset(dataset, data_dir=data_dir, progress=False).take(n_train, n_test, seed=seed)
    task = get_task(data.task)
    cfg = TrainConfig(epochs=epochs, batch_size=128, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 2e-3,
                      momentum=0.9, seed=seed)  # fmt: skip
    torch.manual_seed(seed)
    net = create(model, **data.model_spec(), **model_args)
    fit(net, TensorLoader(data.x_train, data.y_train, 128, shuffle=True, seed=seed), cfg, progress=False, task=task)
    net.eval()
    out = work / f"{dataset}-{model}-{seed}"
    out.mkdir(parents=True, exist_ok=True)
    return RunContext(data=data, baseline=net, train_cfg=cfg, seed=seed, device=torch.device("cpu"), out_dir=out,
                      cache_dir=out / "cache", baseline_key=f"{dataset}-{model}-{seed}-{n_train}", task=task,
                      eval_batch_size=1000, progress=False)  # fmt: skip


def pipeline(ctx: Any, name: str, steps: list[dict], model: Any = None) -> tuple[Any, dict]:
    """Run pipeline ``steps`` (the users' API) on the baseline (or ``model``); ``(state, metrics)``."""
    state, metrics, _, _ = run_pipeline(ctx, parse_steps(steps, variant=name), None, name, model=model)
    return state, metrics


def conv_macs(model: Any, x: Any) -> int:
    rep = account(model, x)
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    return sum(r["macs"] for r in rep.layers if r["name"] in convs)


def op_shares(model: Any, x: Any, rounds: int = 5) -> dict[str, float]:
    """Share of the forward's CPU time per kind of operator (torch.profiler self times): where the
    time goes that a MAC count does not see (pooling, activations)."""
    from torch.profiler import profile

    kinds = {"pool": ("pool",), "conv": ("conv",), "linear": ("addmm", "aten::mm", "linear"),
             "activation": ("clamp", "relu")}  # fmt: skip
    with torch.no_grad():
        for _ in range(2):
            model(x)
        with profile() as prof:
            for _ in range(rounds):
                model(x)
    times = {k: 0.0 for k in (*kinds, "other")}
    for ev in prof.key_averages():
        kind = next((k for k, keys in kinds.items() if any(key in ev.key for key in keys)), "other")
        times[kind] += ev.self_cpu_time_total
    total = sum(times.values()) or 1.0
    return {k: v / total for k, v in times.items()}


# ----------------------------------------------------------------------------- 1. SSL on LeNet-5


def part_ssl(rep: Report, sc: dict, data_dir: Path, work: Path, ctxs: dict) -> None:
    rows = []
    for seed in sc["seeds"]:
        ctx = ctxs.setdefault(("mnist", "lenet5", seed), make_ctx("mnist", "lenet5", {}, sc["n_train"], sc["n_test"],
                                                                  sc["base_epochs"], seed, data_dir, work))  # fmt: skip
        fp32 = ctx.fp32_metrics()["accuracy"]
        steps = [
            {"op": "regularize", "kind": "group_lasso", "patterns": ["filter", "channel"], "strength": sc["ssl_strength"],
             "finetune": {"epochs": sc["reg_epochs"], "lr_scale": 1.0}, "threshold": 0.05, "skip": ["classifier.*"]},
            {"op": "finetune", "epochs": sc["ft_epochs"], "lr_scale": 0.3},
            {"op": "remove", "latency_rounds": 0},
        ]  # fmt: skip
        state, m = pipeline(ctx, f"ssl-{seed}", steps)
        x1 = ctx.example_input(2)
        base = ctx.baseline_copy()
        cm0, cm1 = conv_macs(base, x1), conv_macs(state.model, x1)
        xb = ctx.data.x_test[:256]
        lat = forward_latency_ms({"fp32": base, "ssl": state.model}, xb, rounds=sc["latency_rounds"])
        shares = {f"{k}_share_{tag}": v for tag, mod in (("fp32", base), ("ssl", state.model))
                  for k, v in op_shares(mod, xb).items()}  # fmt: skip
        sp = state.details["sparse"]
        mac_red = sp["before"]["total"]["macs"] / sp["after"]["total"]["macs"]
        widths = [int(state.model.features[0].out_channels), int(state.model.features[3].out_channels)]
        row = {"part": "ssl", "model": "lenet5", "dataset": "mnist", "seed": seed, "fp32_acc": fp32,
               "acc": m["accuracy"], "drop_pt": 100 * (fp32 - m["accuracy"]), "conv_macs_ratio": cm1 / cm0,
               "macs_ratio": 1 / mac_red, "filters": widths, "params": sp["after"]["total"]["params"],
               "params_before": sp["before"]["total"]["params"], "ms_fp32": lat["fp32"], "ms_ssl": lat["ssl"],
               "speedup": lat["fp32"] / lat["ssl"], "mac_reduction": mac_red, **shares}  # fmt: skip
        rep.row(**row)
        rows.append(row)
    drop = statistics.mean(r["drop_pt"] for r in rows)
    cmr = statistics.mean(r["conv_macs_ratio"] for r in rows)
    eff = statistics.mean(r["speedup"] / r["mac_reduction"] for r in rows)
    rep.goal("SSL LeNet-5/MNIST: accuracy drop vs fp32 (points, mean of seeds)", drop, "<= 0.2", drop <= 0.2)
    rep.goal("SSL LeNet-5/MNIST: conv MACs after removal / original (mean)", cmr, "<= 0.25", cmr <= 0.25)
    pool = [statistics.mean(r[f"pool_share_{t}"] for r in rows) for t in ("fp32", "ssl")]
    rep.goal(f"SSL LeNet-5/MNIST: CPU speed-up (batch 256) / MAC reduction (mean; max-pooling's share of the "
             f"forward time: {100 * pool[0]:.0f} % fp32, {100 * pool[1]:.0f} % shrunken)", eff, ">= 0.7",
             eff >= 0.7)  # fmt: skip


# ----------------------------------------------------------------------------- 2. Torch-Pruning


def _tp_prune(model: Any, x: Any, ratio: float) -> Any:
    import torch_pruning as tp

    imp = tp.importance.GroupMagnitudeImportance(p=1)  # L1 group magnitude
    pruner = tp.pruner.MetaPruner(model, x, importance=imp, pruning_ratio=ratio, ignored_layers=[model.fc])
    pruner.step()
    return model


def _tp_ratio_for(base: Any, x: Any, keep: float) -> tuple[float, float]:
    macs0 = account(base, x).total["macs"]
    lo, hi, best = 0.0, 0.95, (0.95, 1.0)
    for _ in range(14):
        mid = 0.5 * (lo + hi)
        r = account(_tp_prune(copy.deepcopy(base), x, mid), x).total["macs"] / macs0
        if r <= keep:
            hi, best = mid, (mid, r)
        else:
            lo = mid
    return best


def part_torch_pruning(rep: Report, sc: dict, data_dir: Path, work: Path) -> None:
    try:
        import torch_pruning  # noqa: F401
    except ImportError:
        rep.goal("Torch-Pruning comparison", float("nan"), "needs torch_pruning (pip install --no-deps torch-pruning)",
                 False)  # fmt: skip
        rep.row(part="torch_pruning", skipped="torch_pruning is not installed")
        return
    ft = {"epochs": sc["ft_epochs"], "lr_scale": 0.3}
    per_seed = []
    for seed in sc["seeds"]:
        ctx = make_ctx("fashion-mnist", "resnet20", {"width": sc["res_width"]}, sc["res_train"], sc["res_test"],
                       sc["res_base_epochs"], seed, data_dir, work)  # fmt: skip
        fp32 = ctx.fp32_metrics()["accuracy"]
        x = ctx.example_input(2)
        base = ctx.baseline_copy()
        macs0 = account(base, x).total["macs"]
        # Torch-Pruning: ratio for 2x fewer MACs, then the same fine-tuning; cimkit then aims at the same MACs
        ratio, tp_ratio = _tp_ratio_for(base, x, 0.5)
        target = min(1.0, tp_ratio * (1 + 1e-6))
        tp_model = _tp_prune(copy.deepcopy(base), x, ratio)
        ctx.finetune(tp_model, FinetuneConfig(**ft), tag="tp", key={"ratio": ratio})
        tp_acc = ctx.evaluate(tp_model)["accuracy"]
        tp_macs = account(tp_model, x).total["macs"]
        # removal time: Torch-Pruning's graph + step vs cimkit's prune (masks) + remove, same ratio targets
        ck_cfg = SparsityConfig(pattern="filter", criterion="l1", scope="global")  # global: fine MAC steps
        s_c, _ = sparsity_for_macs(base, ck_cfg, x, target)
        t_tp, t_ck, t_mask = [], [], []
        # each timed call starts after a full garbage collection, so that neither tool pays for
        # collecting the other's garbage (Torch-Pruning's graph leaves many reference cycles)
        for _ in range(REMOVAL_ROUNDS):
            m = copy.deepcopy(base)
            gc.collect()
            t0 = time.perf_counter()
            _tp_prune(m, x, ratio)
            t_tp.append(time.perf_counter() - t0)
            m = copy.deepcopy(base)
            gc.collect()
            t0 = time.perf_counter()  # straight to the smaller model: one graph, as Torch-Pruning
            shrink_(m, ck_cfg.replace(sparsity=s_c), x)
            t_ck.append(time.perf_counter() - t0)
            m = copy.deepcopy(base)
            gc.collect()
            t0 = time.perf_counter()  # the two-stage path: masks (for fine-tuning), then removal
            g = analyze(m, x)
            sparsify_(m, ck_cfg.replace(sparsity=s_c), graph=g)
            remove_(m, x, graph=g)
            t_mask.append(time.perf_counter() - t0)
        # cimkit: magnitude (L1), and SSL group Lasso first (half the fine-tuning budget regularized)
        half = max(1, sc["ft_epochs"] // 2)
        arms = {
            "cimkit L1": [{"op": "prune", "pattern": "filter", "criterion": "l1", "scope": "global", "target_macs": target,
                           "finetune": ft}, {"op": "remove", "latency_rounds": 0}],
            "cimkit SSL": [{"op": "regularize", "patterns": ["filter"], "strength": 2e-3,
                            "finetune": {"epochs": half, "lr_scale": 0.3}, "threshold": 0.0},
                           {"op": "prune", "pattern": "filter", "criterion": "l2", "scope": "global",
                            "target_macs": target,
                            "finetune": {"epochs": max(1, sc["ft_epochs"] - half), "lr_scale": 0.3}},
                           {"op": "remove", "latency_rounds": 0}],
        }  # fmt: skip
        accs = {"Torch-Pruning L1": tp_acc}
        macs = {"Torch-Pruning L1": tp_macs}
        for name, steps in arms.items():
            state, m = pipeline(ctx, f"{name}-{seed}", steps)
            accs[name] = m["accuracy"]
            macs[name] = account(state.model, x).total["macs"]
        for name in accs:
            rep.row(part="torch_pruning", model=f"resnet20 (width {sc['res_width']})", dataset="fashion-mnist",
                    seed=seed, arm=name, fp32_acc=fp32, acc=accs[name], macs_ratio=macs[name] / macs0,
                    removal_s=statistics.median(t_tp if name.startswith("Torch") else t_ck),
                    masks_then_removal_s=None if name.startswith("Torch") else statistics.median(t_mask))  # fmt: skip
        per_seed.append({"accs": accs, "macs": macs, "t_tp": statistics.median(t_tp), "t_ck": statistics.median(t_ck),
                         "t_mask": statistics.median(t_mask)})  # fmt: skip
    mean = {k: statistics.mean(p["accs"][k] for p in per_seed) for k in per_seed[0]["accs"]}
    best = max(mean["cimkit L1"], mean["cimkit SSL"])
    rep.goal("resnet20/F-MNIST 2x MACs: cimkit best accuracy - Torch-Pruning L1 (points, mean)",
             100 * (best - mean["Torch-Pruning L1"]), ">= 0", best >= mean["Torch-Pruning L1"])  # fmt: skip
    t_ratio = statistics.mean(p["t_ck"] / p["t_tp"] for p in per_seed)
    t_mask = statistics.mean(p["t_mask"] / p["t_tp"] for p in per_seed)
    rep.goal(f"resnet20 removal time: cimkit shrink_ / Torch-Pruning (graph + step), median of {REMOVAL_ROUNDS}",
             t_ratio, "<= 1", t_ratio <= 1.0)  # fmt: skip
    rep.machine["resnet20_masks_then_remove_over_torch_pruning"] = t_mask  # the two-stage path, for reference
    dev = max(abs(p["macs"][k] / p["macs"]["Torch-Pruning L1"] - 1) for p in per_seed for k in ("cimkit L1", "cimkit SSL"))
    rep.goal("resnet20: MAC count of cimkit vs Torch-Pruning (max relative difference)", dev, "<= 0.02", dev <= 0.02)


# ----------------------------------------------------------------------------- 3. crossbar-aware


def part_crossbar(rep: Report, sc: dict, data_dir: Path, work: Path, ctxs: dict) -> None:
    ft = {"epochs": sc["xbar_ft_epochs"], "lr_scale": 0.3}
    results: dict[tuple[str, Any], list[dict]] = {}
    for dataset, model in (("mnist", "lenet5"), ("fashion-mnist", "vgg_small")):
        for seed in sc["seeds"]:
            key = (dataset, model, seed)
            ctx = ctxs.setdefault(key, make_ctx(dataset, model, {}, sc["n_train"], sc["n_test"], sc["base_epochs"],
                                                seed, data_dir, work))  # fmt: skip
            fp32 = ctx.fp32_metrics()["accuracy"]
            for tile, s_blk in ((128, 0.5), (64, 0.75)):
                geo = {"tile_rows": tile, "tile_cols": tile}
                blk, mb = pipeline(ctx, f"block-{tile}", [{"op": "prune", "pattern": "block", "sparsity": s_blk,
                                                           "finetune": ft, **geo}])  # fmt: skip
                # the same target and fine-tuning budget, pruned gradually (Zhu & Gupta's cubic schedule:
                # 10 pruning events over the first half of the fine-tuning steps)
                grd, mg = pipeline(ctx, f"block-gradual-{tile}", [{"op": "prune", "pattern": "block",
                                                                    "sparsity": s_blk, "schedule": "gradual",
                                                                    "events": 10, "end_fraction": 0.5,
                                                                    "finetune": ft, **geo}])  # fmt: skip
                rec = blk.details["sparse"]
                # unstructured pruning at the block model's per-layer sparsity
                ov = {r["name"]: {"sparsity": min(r["sparsity"], 0.999)} for r in rec["after"]["layers"]}
                uns, mu = pipeline(ctx, f"unstructured-{tile}", [{"op": "prune", "pattern": "unstructured",
                                                                  "sparsity": 0.5, "overrides": ov, "finetune": ft,
                                                                  **geo}])  # fmt: skip
                # energy per inference on RRAM crossbars of this tile size (the cost model skips empty arrays)
                hw = get_spec("rram_22nm", tile_rows=tile, tile_cols=tile)
                x1 = ctx.example_input(1)
                e_dense = float(estimate(ctx.baseline_copy(), x1, hw).total()["energy_uj"])
                for arm, st, m in (("block", blk, mb), ("block gradual", grd, mg), ("unstructured", uns, mu)):
                    d = st.details["sparse"]
                    e_sparse = float(estimate(st.model, x1, hw).total()["energy_uj"])
                    row = {"part": "crossbar", "model": model, "dataset": dataset, "seed": seed, "tile": tile,
                           "arm": f"{arm} (block sparsity {s_blk})", "fp32_acc": fp32, "acc": m["accuracy"], "drop_pt": 100 * (fp32 - m["accuracy"]),
                           "sparsity": d["after"]["total"]["sparsity"],
                           "arrays_before": d["before"]["total"]["occupied_arrays"],
                           "arrays_after": d["after"]["total"]["occupied_arrays"],
                           "min_arrays": len(d["after"]["layers"]),
                           "energy_uj_dense": e_dense, "energy_uj": e_sparse}  # fmt: skip
                    rep.row(**row)
                    results.setdefault((model, tile), []).append(row)
            # TinyADC: required ADC bits at 128x128, 8-bit weights, bit-serial inputs
            tc, mt = pipeline(ctx, "tile_column", [{"op": "prune", "pattern": "tile_column", "sparsity": 0.75,
                                                    "finetune": ft}])  # fmt: skip
            d = tc.details["sparse"]
            rep.row(part="adc", model=model, dataset=dataset, seed=seed, tile=128, arm="tile_column 25% rows kept",
                    fp32_acc=fp32, acc=mt["accuracy"], drop_pt=100 * (fp32 - mt["accuracy"]),
                    adc_bits_dense=d["before"]["total"]["adc_bits"], adc_bits=d["after"]["total"]["adc_bits"])  # fmt: skip
            results.setdefault((model, "adc"), []).append(
                {"drop_pt": 100 * (fp32 - mt["accuracy"]), "bits": d["after"]["total"]["adc_bits"],
                 "dense": d["before"]["total"]["adc_bits"]})  # fmt: skip
    for model in ("lenet5", "vgg_small"):
        for tile in (128, 64):
            arms = {a: [r for r in results[(model, tile)] if r["arm"].startswith(a + " (")]
                    for a in ("block", "block gradual")}  # fmt: skip
            u = [r for r in results[(model, tile)] if r["arm"].startswith("unstructured")]
            drops = {a: statistics.mean(r["drop_pt"] for r in b) for a, b in arms.items()}
            best = min(drops, key=drops.__getitem__)  # the one-shot and gradual arms reach the same arrays
            b = arms[best]
            red = statistics.mean(r["arrays_before"] / r["arrays_after"] for r in b)
            bound = b[0]["arrays_before"] / b[0]["min_arrays"]
            red_u = statistics.mean(r["arrays_before"] / r["arrays_after"] for r in u)
            rep.goal(f"{model} {tile}x{tile}: occupied arrays reduction by block pruning (mean; at most {bound:.2f}x "
                     f"with one array per layer; unstructured at the same sparsity: {red_u:.2f}x)", red, ">= 4",
                     red >= 4)  # fmt: skip
            rep.goal(f"{model} {tile}x{tile}: block pruning accuracy drop (points, mean; best of one-shot "
                     f"{drops['block']:.2f} and gradual {drops['block gradual']:.2f}, same fine-tuning budget)",
                     drops[best], "<= 0.3", drops[best] <= 0.3)  # fmt: skip
        a = results[(model, "adc")]
        rep.goal(f"{model}: required ADC bits with tile_column (dense {a[0]['dense']}), accuracy drop "
                 f"{statistics.mean(r['drop_pt'] for r in a):.2f} pt", float(statistics.mean(r["bits"] for r in a)),
                 "< dense", all(r["bits"] < r["dense"] for r in a))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = parser(NAME, __doc__)
    args = p.parse_args(argv)
    setup(args)
    logging.basicConfig(level=logging.WARNING)
    sc = _scale(args.quick)
    rep = Report(NAME, args.quick)
    rep.machine["scale"] = sc
    t0 = time.perf_counter()
    ctxs: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        part_ssl(rep, sc, args.data_dir, work, ctxs)
        part_crossbar(rep, sc, args.data_dir, work, ctxs)
        ctxs.clear()
        part_torch_pruning(rep, sc, args.data_dir, work)
    rep.machine["seconds"] = time.perf_counter() - t0
    rep.print()
    rep.write(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
