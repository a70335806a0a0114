"""Write the measured tables of the docs from benchmarks/results/*.json (nothing typed by hand).

    python docs/gen_tables.py           # rewrite every generated table in README.md and docs/**/*.md
    python docs/gen_tables.py --check   # exit 1 if a page's tables differ from the JSON (a test runs this)
    python docs/gen_tables.py --snapshot runs/demo/results.json
        # keep a real run of the built-in experiment (`cimkit run --threads 1 --out runs/demo`) as
        # docs/data/demo_results.json and draw its accuracy-vs-energy plot, docs/img/demo_energy.png

A page asks for a table with a pair of marker lines; everything between them is replaced::

    <!-- table: quant -->
    <!-- /table -->
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
SNAPSHOT = DOCS / "data" / "demo_results.json"
DEMO_FIGURE = DOCS / "img" / "demo_energy.png"
MARKER = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
TIMES = ("1s", "1h", "1d", "1y")


def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))


def num(v: float, digits: int = 2, sign: bool = False) -> str:
    """Fixed decimals with a typographic minus (and a plus sign when ``sign``)."""
    s = f"{v:{'+' if sign else ''}.{digits}f}"
    if re.fullmatch(r"[-+]0\.0*", s):
        s = s[1:]
    return s.replace("-", "−")


def num_g(v: float) -> str:
    """Four significant digits with a typographic minus."""
    return f"{v:.4g}".replace("-", "−")


def pct(v: float) -> str:
    return f"{100 * v:.2f}%"


def table(headers: list[str], rows: list[list[str]], align: str = "") -> str:
    sep = [("---:" if a == "r" else "---") for a in (align or "l" * len(headers)).ljust(len(headers), "l")]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def source(*names: str) -> str:
    files = ", ".join(f"`benchmarks/results/{n}.json`" for n in names)
    machine = load(names[0])["machine"]
    return (f"*From {files} ({machine.get('cpu', machine['processor'])}, torch {machine['torch']}, "
            f"{machine['torch_threads']} thread{'s' if machine['torch_threads'] != 1 else ''}).*")  # fmt: skip


# -- tables ------------------------------------------------------------------------------------------


def t_baseline() -> str:
    r = load("baseline_mnist")
    total = next(x for x in r["rows"] if x["epoch"] == "total")
    epochs = sum(1 for x in r["rows"] if x["epoch"] != "total")
    body = table(["model", "dataset", "epochs", "test accuracy", "training time", "s / epoch"],
                 [["LeNet-5", "MNIST", str(epochs), pct(total["test_accuracy"]), f"{total['seconds']:.0f} s",
                   f"{total['seconds_per_epoch']:.1f}"]])  # fmt: skip
    return body + "\n\n" + source("baseline_mnist")


def t_quant() -> str:
    m, f = load("quant_mnist"), load("quant_fashion_mnist")
    frows = {x["variant"]: x for x in f["rows"]}
    rows = []
    for x in m["rows"]:
        y = frows.get(x["variant"])  # a peer's row (Brevitas) is absent where the peer was not importable
        size = "" if x["size_bytes"] is None else f"{x['size_bytes'] / 1024:.1f} KiB"
        if x["compression"] and x["compression"] != 1.0:
            size += f" ({x['compression']:.1f}×)"
        bops = "" if x["bops"] is None else f"{x['bops'] / 1e6:.1f} M"
        fashion = ["", ""] if y is None else [pct(y["accuracy"]), "–" if y["variant"] == "fp32" else num(y["drop_pts"])]
        rows.append([x["variant"], pct(x["accuracy"]), "–" if x["variant"] == "fp32" else num(x["drop_pts"]),
                     *fashion, size, bops])  # fmt: skip
    body = table(["variant", "MNIST acc.", "drop (pts)", "Fashion acc.", "drop (pts)", "size", "BOPs/sample"], rows)
    return body + "\n\n" + source("quant_mnist", "quant_fashion_mnist")


def _analog(name: str) -> str:
    r = load(name)
    by: dict[str, dict[str, dict[str, Any]]] = {}
    fp32 = hwa_s = None
    for x in r["rows"]:
        if x["config"] == "fp32":
            fp32 = x["cimkit"]
        elif x["config"].startswith("(HWA"):
            hwa_s = x["cimkit"]
        else:
            by.setdefault(x["config"], {})[x["time"]] = x
    rows = [["fp32", *[fp32] * len(TIMES)]]
    for cfg, per_t in by.items():
        for tool in ("cimkit", "aihwkit"):
            if any(tool in per_t.get(t, {}) for t in TIMES):
                rows.append([f"{cfg} ({tool})", *[per_t.get(t, {}).get(tool, "") for t in TIMES]])
    body = table(["", *TIMES], rows, "l" + "r" * len(TIMES))
    note = f" HWA fine-tuning took {hwa_s} s." if hwa_s else ""
    return body + "\n\n" + source(name) + note


def t_analog_speed() -> str:
    r = load("analog_speed")
    rows = [[x["model"], x["config"], f"{x['cpu ms']:.1f}", f"{x['x fp32 (cpu)']:.2f}",
             f"{x['aihwkit / cimkit']:.1f}×" if "aihwkit / cimkit" in x else ""] for x in r["rows"]]  # fmt: skip
    return (
        table(["model", "configuration", "ms (CPU)", "× fp32", "aihwkit ÷ cimkit"], rows, "llrrr")
        + "\n\n"
        + source("analog_speed")
    )


def _mixed_parts(r: dict[str, Any]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    parts: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for x in r["rows"]:
        parts.setdefault((x.get("dataset", ""), x["part"]), []).append(x)
    return parts


def _budget_tags(parts: dict[tuple[str, str], list[dict[str, Any]]], ds: str) -> list[str]:
    """The budgets of a dataset in run order: ``W3``, ``W4`` (protocols 1-2) or ``size-W2``,
    ``size-W3``, ``energy-W4`` (protocol 3)."""
    return [part[len("budget "):] for (d, part) in parts if d == ds and part.startswith("budget ")]


def _mixed(name: str, own_lr: bool) -> str:
    r = load(name)
    parts = _mixed_parts(r)
    rows = []
    for ds in dict.fromkeys(x["dataset"] for x in r["rows"] if "dataset" in x):
        fp32 = parts[(ds, "fp32")][0]["accuracy"]
        for tag in _budget_tags(parts, ds):
            plans = {x["method"]: x for x in parts[(ds, f"budget {tag}")]}
            h = plans["hessian"]
            u = next(x for k, x in plans.items() if k.startswith("uniform-"))
            bits = int(u["method"].split("-")[1])
            rand = [x for k, x in plans.items() if k.startswith("random-")]
            racc = [x["qat_accuracy"] for x in rand]
            detail = next(x for x in parts[(ds, "goal-detail")] if x["method"] in (tag, f"W{bits}"))
            if tag.startswith("energy"):
                what = f"W{bits}A8 energy: {u['energy_uj']:.3g} µJ"
            else:
                what = f"W{bits}{' storage' if tag.startswith('size') else ''}: {u['size_bytes'] / 1000:.1f} kB"
            if detail.get("degenerate"):
                what += " (one plan fits)"
            head = [f"{ds} (fp32 {pct(fp32)})", what]
            plan = f"{h['bits']} ({h['size_bytes'] / 1000:.1f} kB)"
            diff = f"{num(detail['hessian_minus_uniform'], sign=True)} ± {detail['paired_se']:.2f}"
            randcol = f"{pct(sum(racc) / len(racc))} ({100 * min(racc):.2f}–{100 * max(racc):.2f})"
            if "random_paired_se" in detail:
                randcol += f"; Hessian − random {num(detail['hessian_minus_random'], sign=True)} ± {detail['random_paired_se']:.2f}"
            if own_lr:
                lrs = f"{h['qat_lr']:.0e} / {u['qat_lr']:.0e} / " + "/".join(f"{x['qat_lr']:.0e}" for x in rand)
                rows.append([*head, plan, lrs, f"**{pct(h['qat_accuracy'])}**", pct(u["qat_accuracy"]), diff, randcol])
            else:
                rows.append([*head, f"{u['qat_lr']:.0e}", plan, pct(h["ptq_accuracy"]), pct(h["bn_only_accuracy"]),
                             f"**{pct(h['qat_accuracy'])}**", pct(u["ptq_accuracy"]), pct(u["bn_only_accuracy"]),
                             pct(u["qat_accuracy"]), diff, randcol])  # fmt: skip
    if own_lr:
        headers = ["dataset", "budget", "Hessian plan (bits per layer)",
                   "QAT lr: Hessian / uniform / random plans", "MP + QAT", "uniform + QAT",
                   "Hessian − uniform, points (± paired s.e.)", "5 random plans + QAT, mean (min–max)"]  # fmt: skip
    else:
        headers = ["dataset", "budget", "QAT lr (tuned for uniform)", "Hessian plan (bits per layer)",
                   "MP PTQ", "MP PTQ + BN re-est.", "MP + QAT", "uniform PTQ", "uniform PTQ + BN re-est.",
                   "uniform + QAT", "Hessian − uniform, points (± paired s.e.)",
                   "5 random plans + QAT, mean (min–max)"]  # fmt: skip
    total = parts[("", "total")][0]["seconds"]
    return table(headers, rows) + "\n\n" + source(name) + f" Whole run: {total:.0f} s."


def t_cost_fidelity() -> str:
    """VGG-8 on the NeuroSim Table VII presets against the table."""
    r = load("cost_model")
    rows = []
    for x in (x for x in r["rows"] if x.get("part") == "fidelity"):
        for key, what, ref in (("tops_w", "TOPS/W", "ref_tops_w"), ("tops", "TOPS", "ref_tops"),
                               ("area_mm2", "area (mm²)", "ref_area_mm2")):  # fmt: skip
            dev = x[key] / x[ref] - 1
            rows.append([f"`{x['spec']}`", what, num_g(x[key]), num_g(x[ref]), num(100 * dev, 1, sign=True) + " %"])
        rows.append([f"`{x['spec']}`", "energy per image (µJ)", num_g(x["energy_uj"]),
                     num_g(2 * x["macs"] / (x["ref_tops_w"] * 1e12) * 1e6), ""])  # fmt: skip
        rows.append([f"`{x['spec']}`", "ADC share of the energy", pct(x["adc_share"]), "not published", ""])
    return table(["preset", "figure", "cimkit", "NeuroSim V1.4 Table VII", "deviation"], rows, "llrrr") + \
        "\n\n" + source("cost_model")


def t_cost_shares() -> str:
    """The energy split of VGG-8 on the Table VII presets."""
    r = load("cost_model")
    comps = ("array", "adc", "dac", "accumulation", "digital", "buffer", "interconnect", "dram")
    rows = [[f"`{x['spec']}`", *(pct(x[f"share_{c}"]) for c in comps)] for x in r["rows"] if x.get("part") == "fidelity"]
    return table(["preset", *comps], rows, "l" + "r" * len(comps)) + "\n\n" + source("cost_model")


def t_cost_speed() -> str:
    r = load("cost_model")
    rows = [[x["model"], str(x["weighted_layers"]), f"{x['layer_evaluations_per_cpu_s']:,.0f}",
             f"{x['layer_evaluations_per_s_wall']:,.0f}", f"{1000 * x['estimate_s']:.1f}", f"{1000 * x['forward_s']:.1f}"]
            for x in r["rows"] if x.get("part") == "speed"]  # fmt: skip
    load_row = next(x for x in r["rows"] if x.get("part") == "total")
    return table(["model", "Linear/Conv layers", "layer evaluations per CPU s", "per wall-clock s",
                  "whole estimate (ms)", "one forward pass (ms)"], rows, "lrrrrr") + "\n\n" + source("cost_model") + \
        f" Load average at the start: {load_row['load_1min']:.1f} (1 min)."  # fmt: skip


def t_cost_adcs() -> str:
    r = load("cost_model")
    rows = [[f"`{x['model']}`", f"{x['energy_8b_pj']:.4g}", f"{x['energy_4b_pj']:.4g}", f"{x['latency_8b_ns']:.3g}",
             f"{x['area_8b_um2']:.4g}"] for x in r["rows"] if x.get("part") == "adc"]  # fmt: skip
    return table(["ADC model", "8 b (pJ)", "4 b (pJ)", "8 b latency (ns)", "8 b area (µm²)"], rows, "lrrrr") + \
        "\n\n" + source("cost_model") + " Without a column resistance (the NeuroSim models' column term off)."


def t_mixed_p1() -> str:
    return _mixed("mixed_precision", own_lr=False)


def t_mixed_p3() -> str:
    if _missing("mixed_precision_protocol3"):
        return "*(no results file yet: `python benchmarks/mixed_precision.py --out benchmarks/results/mixed_precision_protocol3.json`)*"
    return _mixed("mixed_precision_protocol3", own_lr=False)


def t_mixed_p2() -> str:
    return _mixed("mixed_precision_own_lr", own_lr=True)


def t_zeroq() -> str:
    r = load("mixed_precision")
    parts = _mixed_parts(r)
    rows = []
    for ds in ("mnist", "fashion-mnist"):
        w = {x["method"]: x for x in parts[(ds, "w8a8-ptq")]}
        data, zq = w["calibrated on data"], w["calibrated on zeroq"]
        rows.append([ds, pct(data["ptq_accuracy"]), pct(zq["ptq_accuracy"]), f"{zq['seconds']:.0f} s"])
    return table(["dataset", "W8A8 PTQ, calibrated on 128 real images", "on 128 ZeroQ images", "ZeroQ time"],
                 rows) + "\n\n" + source("mixed_precision")  # fmt: skip


def t_pyhessian() -> str:
    r = load("mixed_precision")
    parts = _mixed_parts(r)
    rows = []
    for x in parts[("mnist", "pyhessian")]:
        rows.append([x["method"], f"{x['pyhessian']:.2f} ± {x['pyhessian_stderr']:.2f}",
                     f"{x['cimkit_block']:.2f} (Δ {100 * x['block_rel_diff']:.0f}%)",
                     f"{x['cimkit_joint']:.2f} ± {x['joint_stderr']:.2f}"])  # fmt: skip
    t = parts[("mnist", "pyhessian-time")][0]
    rows.append([f"time, all layers ({t['method']})", f"{t['pyhessian_s']:.1f} s", f"{t['cimkit_block_s']:.1f} s",
                 f"{t['cimkit_joint_s']:.1f} s"])  # fmt: skip
    headers = ["layer", "PyHessian Tr(H) (± s.e.)", "cimkit blockwise", "cimkit one-pass (± s.e.)"]
    return table(headers, rows) + "\n\n" + source("mixed_precision")


def t_goals() -> str:
    rows = []
    for path in sorted(RESULTS.glob("*.json")):
        if path.name.endswith(".quick.json"):
            continue
        r = json.loads(path.read_text(encoding="utf-8"))
        for g in r["goals"]:
            status = "met" if g["met"] else "**not met**"
            rows.append([f"`{path.stem}`", g["what"].replace("|", "\\|"), num_g(g["measured"]), g["goal"], status])
    return table(["results file", "target", "measured", "goal", "status"], rows) + (
        "\n\n*From every `benchmarks/results/*.json` (its `goals` list).*"
    )


def _snapshot() -> dict[str, Any]:
    return json.loads(SNAPSHOT.read_text(encoding="utf-8"))


def t_demo_energy() -> str:
    """Every variant of the snapshot run: its primary metric, energy, latency and the hardware that priced it."""
    r = _snapshot()
    rows = []
    for v in r["variants"]:
        m, c = v["metrics"], v["details"].get("cost", {})
        if "energy_uj" not in m:
            continue
        acc = pct(m["accuracy"]) + (f" ± {100 * m['accuracy_std']:.2f}" if "accuracy_std" in m else "")
        rows.append([v["name"], acc, f"{1e3 * m['energy_uj']:.2f}", f"{m['latency_us']:.3g}",
                     f"`{c.get('spec', '')}`", num_g(m.get("tops_w", 0.0))])  # fmt: skip
    m = r["machine"]
    return table(["variant", "accuracy", "energy (nJ)", "latency (µs)", "priced on", "TOPS/W"], rows, "lrrrlr") + (
        f"\n\n*From `docs/data/demo_results.json`: `cimkit run` on {m.get('cpu', m.get('processor', ''))}, "
        f"{r['threads']} thread; analog accuracies are the mean ± std over programmed chips, 1 day after programming.*"
    )


def t_demo_layers() -> str:
    """The per-layer cost rows of the snapshot run's last analog variant (energy split by component)."""
    r = _snapshot()
    v = [v for v in r["variants"] if v["details"].get("cost", {}).get("hardware") == "cim"][-1]
    comps = ("array", "adc", "dac", "accumulation", "digital", "buffer", "interconnect", "dram")
    rows = []
    for x in v["details"]["cost"]["layers"]:
        if x["energy_uj"] <= 0:
            continue
        rows.append([f"`{x['name']}`", x["type"], x["hardware"], str(x["macs"]), str(x["tiles"]),
                     *[f"{1e6 * x[f'energy_{c}_uj']:.1f}" for c in comps], f"{1e6 * x['energy_uj']:.1f}",
                     f"{x['latency_us']:.3g}"])  # fmt: skip
    c = v["details"]["cost"]
    return table(["layer", "type", "on", "MACs", "tiles", *comps, "total (pJ)", "latency (µs)"], rows,
                 "lllrr" + "r" * (len(comps) + 2)) + (
        f"\n\n*Variant `{v['name']}` of `docs/data/demo_results.json`, priced on `{c['spec']}` "
        f"(ADC `{c['adc']}`, {c['adc_bits']} bits); energies in pJ per inference.*"
    )  # fmt: skip


def snapshot(results_path: Path) -> None:
    """Keep a real run's results (without per-variant file paths) and draw its accuracy-vs-energy plot."""
    import os
    import tempfile

    from cimkit.cost.report import metric_energy_figure

    r = json.loads(results_path.read_text(encoding="utf-8"))
    SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=SNAPSHOT.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(r, f, indent=1, sort_keys=False)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, SNAPSHOT)
    fig = metric_energy_figure(r)
    if fig is None:
        raise SystemExit(f"{results_path}: no variant has an energy figure (is the cost concern disabled?)")
    fig.savefig(DEMO_FIGURE, dpi=110, bbox_inches="tight")


def _mean_by(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per distinct ``keys`` (first-seen order): numeric fields averaged, ``n`` the row count."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for x in rows:
        groups.setdefault(tuple(x.get(k) for k in keys), []).append(x)
    out = []
    for g in groups.values():
        m: dict[str, Any] = dict(g[0])
        for k, v in g[0].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in keys:
                vals = [x[k] for x in g if isinstance(x.get(k), (int, float))]
                m[k] = sum(vals) / len(vals)
        m["n"] = len(g)
        out.append(m)
    return out


def t_sparsity() -> str:
    r = load("sparsity")
    rows = []
    for x in _mean_by([x for x in r["rows"] if x["part"] == "ssl"], ("model",)):
        rows.append([f"SSL group lasso + channel removal, `{x['model']}`", pct(x["acc"]), num(x["drop_pt"]),
                     f"conv MACs ×{x['conv_macs_ratio']:.2f}, CPU {x['speedup']:.2f}× faster", str(x["n"])])  # fmt: skip
    for x in _mean_by([x for x in r["rows"] if x["part"] == "crossbar"], ("model", "tile", "arm")):
        kind = "gradual block pruning" if x["arm"].startswith("block gradual") else "block pruning"
        blk = f"{kind}, {100 * float(x['arm'].split()[-1][:-1]):.0f}% target"
        what = blk if x["arm"].startswith("block") else "unstructured, same per-layer sparsity"
        rows.append([f"{what}, `{x['model']}`, {x['tile']}×{x['tile']} tiles", pct(x["acc"]), num(x["drop_pt"]),
                     f"occupied arrays {x['arrays_before']:.0f} → {x['arrays_after']:.1f} (≥ {x['min_arrays']:.0f})"
                     + (f"; RRAM energy {1e3 * x['energy_uj_dense']:.1f} → {1e3 * x['energy_uj']:.1f} nJ"
                        if "energy_uj" in x else ""),
                     str(x["n"])])  # fmt: skip
    for x in _mean_by([x for x in r["rows"] if x["part"] == "adc"], ("model", "tile", "arm")):
        rows.append([f"tile-column pruning ({x['arm'].split()[1]} of rows kept), `{x['model']}`", pct(x["acc"]),
                     num(x["drop_pt"]), f"ADC bits {x['adc_bits_dense']:.0f} → {x['adc_bits']:.1f}", str(x["n"])])  # fmt: skip
    for x in _mean_by([x for x in r["rows"] if x["part"] == "torch_pruning"], ("model", "arm")):
        rows.append([f"{x['arm']} at ½ MACs, `{x['model']}`", pct(x["acc"]), num(100 * (x["fp32_acc"] - x["acc"])),
                     f"MACs ×{x['macs_ratio']:.3f}", str(x["n"])])  # fmt: skip
    return table(["what", "accuracy (mean)", "drop (points)", "hardware effect", "seeds"], rows, "lrrlr") + (
        "\n\nLeNet-5 on MNIST, `vgg_small` on Fashion-MNIST, `resnet20` (width 8) on Fashion-MNIST; drops against "
        "each seed's own fp32 model. " + source("sparsity"))  # fmt: skip


def _missing(name: str) -> str | None:
    if (RESULTS / f"{name}.json").exists():
        return None
    return f"*(no results file yet: run `python benchmarks/{name}.py`)*"


def t_snn() -> str:
    if _missing("snn"):
        return str(_missing("snn"))
    r = load("snn")
    conv = [x for x in r["rows"] if x["part"] == "conversion" and x["T"] != "-"]
    steps = sorted({int(x["T"]) for x in conv})
    rows = []
    for ds in dict.fromkeys(x["dataset"] for x in conv):
        ann = next((x["accuracy"] for x in r["rows"] if x["part"] == "conversion" and x["dataset"] == ds
                    and x["T"] == "-"), None)  # fmt: skip
        for v in dict.fromkeys(x["variant"] for x in conv if x["dataset"] == ds):
            acc = {int(x["T"]): x["accuracy"] for x in conv if x["dataset"] == ds and x["variant"] == v}
            own = next(x.get("ann_accuracy") for x in conv if x["dataset"] == ds and x["variant"] == v)
            rows.append([ds, v, f"{own:.2f}%" if isinstance(own, float) else f"{ann:.2f}%",
                         *[f"{acc[t]:.2f}" if t in acc else "" for t in steps]])  # fmt: skip
    out = table(["dataset", "conversion", "its ANN", *[f"T={t}" for t in steps]], rows, "llr" + "r" * len(steps))
    cim = [x for x in r["rows"] if x["part"] == "cim"]
    if cim:
        crow = [[x["dataset"], x["variant"], str(int(x["T"])) if isinstance(x["T"], (int, float)) else x["T"],
                 f"{x['accuracy']:.2f} ± {x['accuracy_std']:.2f}",
                 f"{1e3 * x['energy_uj']:.1f} (`{x['spec']}`)" if "energy_uj" in x else "not recorded"]
                for x in cim]  # fmt: skip
        out += "\n\n" + table(["dataset", "on PCM crossbars, 1 day after programming", "T", "accuracy (%)",
                                "energy (nJ)"], crow, "llrrr")  # fmt: skip
    sp = {x["framework"]: x for x in r["rows"] if x["part"] == "speed"}
    if sp:
        srow = [[k, f"{1e3 * x['step_seconds']:.0f}", str(x["steps"]), f"{x['test_accuracy']:.2f}%",
                 f"{x['ratio_vs_snntorch']:.2f}" if "ratio_vs_snntorch" in x else "1"] for k, x in sp.items()]  # fmt: skip
        out += "\n\n" + table(["direct training (tutorial-6 CNN, T=25, batch 128)", "step (ms)", "steps",
                                "test accuracy", "time vs snnTorch"], srow, "lrrrr")  # fmt: skip
    return out + "\n\nConversion accuracies in %; the CIM rows are mean ± std over programmed chips. " + source("snn")


def t_lm() -> str:
    if _missing("lm"):
        return str(_missing("lm"))
    r = load("lm")
    rows, notes = [], []
    for x in r["rows"]:
        v = x["variant"]
        if v.startswith("text sample"):
            notes.append(f"{v.split(': ', 1)[1]}: `{x['note']}`")
        elif v.startswith("energy per character"):
            rows.append([v, "", f"{x['energy_nj']:.2f} nJ (`{x['spec']}`)", ""])
        elif v.startswith("speed"):
            rows.append([v, "", f"fp32 {x['fp32']:.1f} ms, analog {x['analog']:.1f} ms: {x['ratio']:.2f}×", ""])
        else:
            std = f" ± {x['std']:.3f}" if "std" in x else ""
            rows.append([v, f"{x['loss']:.3f}{std}", num(x["delta"], 3, sign=True), str(x["chips"] or "")])
    out = table(["char GPT on tinyshakespeare", "validation loss (nats/char)", "vs fp32", "chips"], rows, "lrrr")
    if notes:
        out += "\n\nText samples (first 80 characters, newlines as ` / `): " + "; ".join(notes) + "."
    return out + "\n\n" + source("lm")


def t_vit_inr() -> str:
    parts = []
    if (RESULTS / "vit.json").exists():
        r = load("vit")
        rows = [[x["variant"], f"{x['acc_1s']:.2f}" + (f" ± {x['acc_1s_std']:.2f}" if "acc_1s_std" in x else ""),
                 f"{x['acc_1d']:.2f}" + (f" ± {x['acc_1d_std']:.2f}" if "acc_1d_std" in x else ""),
                 num(x["drop_1d"])] for x in r["rows"] if "acc_1s" in x]  # fmt: skip
        parts.append(table(["ViT-tiny on MNIST", "accuracy 1 s (%)", "accuracy 1 day (%)", "drop at 1 day (points)"],
                           rows, "lrrr") + "\n\n" + source("vit"))  # fmt: skip
    if (RESULTS / "inr.json").exists():
        r = load("inr")
        rows = []
        for x in r["rows"]:
            if x["training"].startswith("("):
                continue
            rows.append([x["training"], f"{x['clean']:.2f}", f"{x['noise_1pct']:.2f} ± {x['noise_1pct_std']:.2f}",
                         f"{x['noise_2pct']:.2f} ± {x['noise_2pct_std']:.2f}", f"{x['W8']:.2f}", f"{x['W6']:.2f}",
                         f"{x['W4']:.2f}", f"{x['pcm_1h']:.2f} ± {x['pcm_1h_std']:.2f}",
                         f"{x['pcm_1d']:.2f} ± {x['pcm_1d_std']:.2f}" if "pcm_1d" in x else ""])  # fmt: skip
        parts.append(table(["SIREN image fit (PSNR, dB)", "clean", "1 % weight noise", "2 % weight noise", "W8", "W6",
                            "W4", "PCM, 1 h", "PCM, 1 day"], rows, "lrrrrrrrr") + "\n\n" + source("inr"))  # fmt: skip
    return "\n\n".join(parts) if parts else "*(no results file yet: run benchmarks/vit.py and benchmarks/inr.py)*"


def t_distributed() -> str:
    if _missing("distributed"):
        return str(_missing("distributed"))
    r = load("distributed")
    rows = []
    for x in r["rows"]:
        if "payload_B_per_step" not in x:
            continue
        rows.append([f"`{x['method']}`", str(x["epochs"]), pct(x["test_acc_mean"]), x["test_acc_per_seed"],
                     f"{x['payload_B_per_step'] / 1e3:.1f}", f"{x['bytes_vs_fp32']:.4f}", f"{x['step_ms']:.0f}",
                     f"{x['speedup@1Gbps']:.2f}×", f"{x['speedup@10Gbps']:.2f}×"])  # fmt: skip
    return table(["method", "epochs", "test accuracy (mean)", "per seed", "kB sent / step / rank", "bytes vs fp32",
                  "step (ms)", "model speed-up @ 1 Gb/s", "@ 10 Gb/s"], rows, "lrrlrrrrr") + (
        "\n\nSpeed-up model: the step time measured here plus the bytes sent over a link of the stated bandwidth, "
        "fp32 all-reduce over each method.\n\n" + source("distributed"))  # fmt: skip


def _goal(r: dict[str, Any], prefix: str) -> float:
    return next(g["measured"] for g in r["goals"] if g["what"].startswith(prefix))


def _headline_extra() -> list[list[str]]:
    """Headline rows of the later concerns, each from its results file (left out while it is missing)."""
    rows = []
    if (RESULTS / "cost_model.json").exists():
        r = load("cost_model")
        fid = next(x for x in r["rows"] if x["part"] == "fidelity" and x["spec"].endswith("pr32"))
        rows.append(["energy efficiency of VGG-8 on NeuroSim's 22 nm RRAM configuration (Table VII)",
                     f"{fid['tops_w']:.2f} TOPS/W vs NeuroSim's {fid['ref_tops_w']:.2f}", "[cost model](docs/cost.md)"])  # fmt: skip
    if (RESULTS / "sparsity.json").exists():
        r = load("sparsity")
        tp = _mean_by([x for x in r["rows"] if x["part"] == "torch_pruning"], ("arm",))
        best = max((x for x in tp if x["arm"].startswith("cimkit")), key=lambda x: x["acc"])
        ref = next(x for x in tp if x["arm"].startswith("Torch-Pruning"))
        rows.append(["`resnet20` pruned to half the MACs, Fashion-MNIST",
                     f"{pct(best['acc'])} ({best['arm']}) vs Torch-Pruning's L1 pruner {pct(ref['acc'])}",
                     "[sparsity](docs/sparsity.md)"])  # fmt: skip
    if (RESULTS / "snn.json").exists():
        r = load("snn")
        c = {(x["variant"], x["T"]): x["accuracy"] for x in r["rows"] if x["part"] == "conversion" and x["dataset"] == "mnist"}
        sp = next((x for x in r["rows"] if x["part"] == "speed" and "ratio_vs_snntorch" in x), None)
        speed = f"; direct training steps take {sp['ratio_vs_snntorch']:.2f}× snnTorch's time" if sp else ""
        rows.append(["ANN-to-SNN conversion (QCFS, LeNet-5, MNIST)",
                     f"{c[('QCFS L=4', 4)]:.2f}% at 4 time steps{speed}", "[spiking networks](docs/snn.md)"])  # fmt: skip
    if (RESULTS / "distributed.json").exists():
        r = load("distributed")
        d = {x["method"]: x for x in r["rows"] if "payload_B_per_step" in x}
        if "terngrad" in d and "none" in d:
            rows.append(["TernGrad on 2 ranks (LeNet-5, MNIST)",
                         f"{pct(d['terngrad']['test_acc_mean'])} vs fp32 all-reduce {pct(d['none']['test_acc_mean'])}, "
                         f"{1 / d['terngrad']['bytes_vs_fp32']:.1f}× fewer bytes sent", "[distributed](docs/distributed.md)"])  # fmt: skip
    if (RESULTS / "lm.json").exists():
        r = load("lm")
        lm = {x["variant"]: x for x in r["rows"]}
        if "fp32" in lm and "ternary QAT" in lm:
            rows.append(["char GPT on tinyshakespeare: fp32 / ternary BitLinear QAT (validation loss)",
                         f"{lm['fp32']['loss']:.3f} / {lm['ternary QAT']['loss']:.3f} nats per character",
                         "[transformers](docs/transformers.md)"])  # fmt: skip
    if (RESULTS / "vit.json").exists():
        v = {x["variant"]: x for x in load("vit")["rows"]}
        if "RRAM + HWA + KD" in v:
            rows.append(["ViT on RRAM crossbars + HWA + distillation, 1 day (MNIST)",
                         f"{v['RRAM + HWA + KD']['acc_1d']:.2f}% (fp32 {v['fp32']['acc_1d']:.2f}%)",
                         "[transformers](docs/transformers.md)"])  # fmt: skip
    return rows


def t_headline() -> str:
    """The README's one table: a row per verb, each figure looked up in its results file."""
    qm, qf = load("quant_mnist"), load("quant_fashion_mnist")
    qrow = {d: {x["variant"]: x for x in r["rows"]} for d, r in (("m", qm), ("f", qf))}

    def quant(v: str) -> str:
        m, f = qrow["m"][v], qrow["f"][v]
        return f"{pct(m['accuracy'])} / {pct(f['accuracy'])}, {m['compression']:.1f}× smaller weights"

    fp = f"(fp32 {pct(qrow['m']['fp32']['accuracy'])} / {pct(qrow['f']['fp32']['accuracy'])})"
    # the peers' figures (Brevitas, aihwkit) are left out where a results file has none (peer not importable)
    step = ""
    if all(any(g["what"].startswith("W4A4 QAT training step") for g in r["goals"]) for r in (qm, qf)):
        step = (f"; training steps take {_goal(qm, 'W4A4 QAT training step'):.2f}× / "
                f"{_goal(qf, 'W4A4 QAT training step'):.2f}× the time of Brevitas's")  # fmt: skip
    mp = load("mixed_precision")
    d = {(x["dataset"], x["method"]): x for x in mp["rows"] if x["part"] == "goal-detail"}
    def mp_delta(*tags: str) -> str:  # protocol 3 tags first (size-W3, energy-W4), then protocols 1-2 (W3, W4)
        return " / ".join(num(next(d[(ds, t)] for t in tags if (ds, t) in d)["hessian_minus_uniform"], sign=True)
                          for ds in ("mnist", "fashion-mnist"))  # fmt: skip

    w3 = mp_delta("size-W3", "W3")
    w4 = mp_delta("energy-W4", "W4")
    second = ("at the energy of uniform W4A8 on RRAM crossbars" if any(k[1] == "energy-W4" for k in d)
              else "at the size of 4-bit weights")  # fmt: skip
    am, af = load("analog_mnist"), load("analog_fashion_mnist")

    def at_1d(r: dict[str, Any], tool: str) -> str:
        x = next(x for x in r["rows"] if x["config"] == "PCM + HWA + comp" and x["time"] == "1d")
        return f"{100 * x[tool + '_mean']:.2f}%" if tool + "_mean" in x else ""

    peer_1d = ""
    if at_1d(am, "aihwkit") and at_1d(af, "aihwkit"):
        peer_1d = f" (aihwkit 1.1.0 at matched settings: {at_1d(am, 'aihwkit')} / {at_1d(af, 'aihwkit')})"

    sp = {(x["model"], x["config"]): x for x in load("analog_speed")["rows"]}
    ratios = [x["aihwkit / cimkit"] for x in sp.values() if "aihwkit / cimkit" in x]
    peer_speed = f"; aihwkit's torch tile {min(ratios):.1f}–{max(ratios):.1f}× slower" if ratios else ""
    rows = [
        ["W8A8 post-training quantization, LeNet-5", f"{quant('W8A8 PTQ')} {fp}",
         "[quantization](docs/quantization.md)"],
        ["W4A4 quantization-aware training (LSQ)", f"{quant('W4A4 QAT')}{step}",
         "[benchmarks](docs/benchmarks.md#quantization)"],
        ["ternary weights, 8-bit activations (QAT)", quant("ternary-W A8 QAT"),
         "[benchmarks](docs/benchmarks.md#quantization)"],
        ["Hessian mixed precision vs uniform bits, same QAT (`vgg_small`)",
         f"{w3} points at the size of 3-bit weights; {w4} {second}",
         "[mixed precision](docs/benchmarks.md#mixed-precision)"],
        ["PCM crossbars + HWA training + drift compensation, 1 day after programming",
         f"{at_1d(am, 'cimkit')} / {at_1d(af, 'cimkit')}{peer_1d}", "[analog CIM](docs/benchmarks.md#analog-cim)"],
        ["analog simulation cost (standard PCM model, inference)",
         f"{sp[('lenet5', 'standard')]['x fp32 (cpu)']:.2f}× / {sp[('vgg_small', 'standard')]['x fp32 (cpu)']:.2f}× "
         f"the fp32 time (LeNet-5 / `vgg_small`){peer_speed}",
         "[speed](docs/benchmarks.md#analog-simulation-speed)"],
    ]  # fmt: skip
    rows += _headline_extra()
    m = qm["machine"]
    note = (f"Accuracies are on the MNIST / Fashion-MNIST test sets; {_machines(m)}, "
            f"{m['torch_threads']} torch thread, torch {m['torch']}.")  # fmt: skip
    return table(["what", "measured", "more"], rows) + "\n\n" + note


def _machines(first: dict[str, Any]) -> str:
    """Which CPU measured which results files: one phrase when they all name the same one."""
    by_cpu: dict[str, list[str]] = {}
    for f in sorted(RESULTS.glob("*.json")):
        m = load(f.stem).get("machine", {})
        by_cpu.setdefault(f"{m.get('cpu_count', '?')}-core {m.get('cpu', 'unknown CPU')}", []).append(f.stem)
    main = f"{first['cpu_count']}-core {first['cpu']}"
    if len(by_cpu) <= 1:
        return f"machine of the results files: a {main}"
    others = "; ".join(f"a {cpu} for {', '.join(f'`{n}`' for n in names)}"
                       for cpu, names in by_cpu.items() if cpu != main)  # fmt: skip
    return f"machines of the results files: {others}; a {main} for the rest"


TABLES: dict[str, Callable[[], str]] = {
    "headline": t_headline,
    "baseline": t_baseline,
    "quant": t_quant,
    "analog-mnist": lambda: _analog("analog_mnist"),
    "analog-fashion-mnist": lambda: _analog("analog_fashion_mnist"),
    "analog-speed": t_analog_speed,
    "mixed-p1": t_mixed_p1,
    "mixed-p2": t_mixed_p2,
    "mixed-p3": t_mixed_p3,
    "zeroq": t_zeroq,
    "pyhessian": t_pyhessian,
    "goals": t_goals,
    "cost-fidelity": t_cost_fidelity,
    "cost-shares": t_cost_shares,
    "cost-speed": t_cost_speed,
    "cost-adcs": t_cost_adcs,
    "distributed": t_distributed,
    "sparsity": t_sparsity,
    "snn": t_snn,
    "lm": t_lm,
    "vit-inr": t_vit_inr,
    "demo-energy": t_demo_energy,
    "demo-layers": t_demo_layers,
}


def render(text: str, where: str = "") -> str:
    """``text`` with every marked table regenerated; unknown names raise KeyError naming the page."""

    def sub(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in TABLES:
            raise KeyError(f"{where}: unknown table {name!r}; known: {', '.join(TABLES)}")
        return f"{m[1]}{TABLES[name]()}\n{m[4]}"

    return MARKER.sub(sub, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="report stale pages instead of rewriting them")
    p.add_argument("--snapshot", type=Path, default=None, metavar="RESULTS_JSON",
                   help="keep this results.json as docs/data/demo_results.json and redraw docs/img/demo_energy.png")  # fmt: skip
    args = p.parse_args(argv)
    if args.snapshot is not None:
        snapshot(args.snapshot)
    stale = []
    for page in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        new = render(text, str(page.relative_to(ROOT)))
        if new != text:
            stale.append(str(page.relative_to(ROOT)))
            if not args.check:
                page.write_text(new, encoding="utf-8")
    if args.check and stale:
        sys.stdout.write(f"stale tables in {', '.join(stale)}; run python docs/gen_tables.py\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
