"""Language model on CIM: char_gpt (~0.82 M parameters) on tinyshakespeare, validation loss in nats/char.

    python benchmarks/lm.py [--quick] [--out FILE] [--threads N] [--data-dir DIR] [--work DIR]

Everything below runs through the users' code: two experiments (``cimkit.experiment.run_experiment``)
with the recipe of ``examples/shakespeare_gpt.toml`` (4 layers, 4 heads, width 128, windows of 64
characters, 2 epochs, batch 12, AdamW 1e-3, cosine); the second reuses the first's trained baseline
(its cached weights are copied). One run, one seed; 3 chips (programming seeds) wherever noise is
involved (mean ± std over chips).

Stage 1 (one experiment):

* ``fp32`` (with a text sample); ``W8A8 PTQ`` (per-channel weights, per-tensor calibrated symmetric
  activations) and ``W8A8/token``; ``W4g32A8/token`` (4-bit weights in groups of 32 inputs, MSE
  ranges, per-token activations);
* ``ternary QAT``: BitLinear (BitNet b1.58: absmean ternary weights, per-token 8-bit activations,
  RMSNorm before quantization) on every projection/MLP layer (the head stays float), fine-tuned
  from the fp32 model for 600 steps at lr 1e-3 (with a text sample);
* ``PCM``: every Linear on PCM tiles (standard mapping: 8-bit DAC/ADC, output noise 0.04, global
  drift compensation), 1 s and 1 day; ``PCM + HWA + KD``: the same mapping, hardware-aware
  fine-tuning as Analog Foundation Models train (per-channel additive weight noise 0.03 of each
  channel's abs-max, per-channel clipping at 2.5 sigma) with distillation from the fp32 model
  (kd_alpha 1, T = 1) for 400 steps at lr 2e-4;
* three rows that say where the PCM gap comes from: ``PCM, ideal ADC`` (the same chips with exact
  conversions: no ADC clipping, quantization or output noise; at 1 s the standard mapping's fixed
  ADC range of 10 clips char_gpt's outputs, and drift shrinks them below it by 1 day),
  ``PCM, calibrated ADC`` (the ``calibrated`` mapping: DAC and ADC ranges set per layer from
  training batches, and again on every chip) and ``PCM + HWA (device noise) + KD`` (HWA with the PCM model's own noise at a time drawn in
  [1 h, 1 y] in every training forward, the rest as ``PCM + HWA + KD``);
* ``RRAM x k``: the RRAM device (Wan et al. 2022) with its programming/relaxation noise scaled by
  k in ``LEVELS``, 1 chip at 1 day: picks the smallest k whose loss is >= 0.2 nats above fp32.

Stage 2 (second experiment, RRAM x k at 1 day, 3 chips): ``RRAM`` (no adapter); ``vanilla LoRA``
(rank 8, alpha 16, trained on the clean digital base, then the base mapped onto RRAM);
``noise-aware LoRA`` (trained with the base on RRAM, the device's own noise in every training
forward) and ``HaLoRA`` (the same plus the regularizer mu (‖AAᵀ‖₂ + ‖BᵀB‖₂), mu = 0.01); every LoRA
variant gets 250 steps at lr 1e-3.

Speed (same model, batch 12 x 64): the forward of the model on programmed PCM tiles and one HWA
training step, against the fp32 forward and training step (medians of interleaved repetitions).

Energy per character (fp32 and W8A8 on the digital systolic spec, ternary BitLinear at 2-bit weights,
PCM on the PCM crossbar spec): the experiment's cost hook prices one 64-character window per variant;
the row divides it by 64 (a teacher-forced window; generation without a KV cache re-reads the window
for every new character).

Budget (full run, 2 cores shared with other jobs): fp32 training ~11 min, QAT (600 steps) ~4 min,
HWA (400 steps) ~3.5 + 8 min, LoRA (250 steps each; the device-noise forward costs ~3x a digital one)
~1 + 2 x 3.5 min, evaluations ~10 min: about 45 min. ``--quick``: a 1-block width-32 model on
1/16 of the windows, a few steps each (figures not comparable), about 2-3 minutes.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import ROOT, Report, parser
from _bench import main as bench_main

LEVELS = (1.0, 2.0, 4.0, 8.0)
GAP_NATS = 0.2  # the LoRA noise level: the untrained (adapter-free) model loses at least this much
HALORA_MU = 0.01
FULL = {"qat_steps": 600, "hwa_steps": 400, "lora_steps": 250, "chips": 3, "size": "small", "stride": 0,
        "epochs": 2, "speed_reps": 30}  # fmt: skip
QUICK = {"qat_steps": 20, "hwa_steps": 10, "lora_steps": 10, "chips": 2, "size": "tiny", "stride": 1024,
         "epochs": 1, "speed_reps": 5}  # fmt: skip
DAY = 86400.0
SEQ_LEN = 64  # characters per window (training, evaluation and the cost model's example input)


def _base(quick: bool, name: str) -> dict[str, Any]:
    from cimkit.experiment import load_experiment

    recipe = load_experiment(str(ROOT / "examples" / "shakespeare_gpt.toml"))
    b = QUICK if quick else FULL
    data_args = {"seq_len": SEQ_LEN, "targets": "sequence"}
    if b["stride"]:
        data_args["stride"] = b["stride"]
    return {"name": name, "seed": 0, "threads": 0, "dataset": "tinyshakespeare", "dataset_args": data_args,
            "model": "char_gpt", "model_args": {"size": b["size"]}, "eval_batch_size": 256,
            "train": recipe.train.replace(epochs=b["epochs"]).to_dict()}  # fmt: skip


def _chips(b: dict[str, Any], times: list[float]) -> dict[str, Any]:
    return {"protocol": "chips_times", "repeats": b["chips"], "times": times, "report_time": DAY}


def stage1(quick: bool) -> dict[str, Any]:
    b = QUICK if quick else FULL
    sample = {"op": "sample", "tokens": 300, "prompt": "\n", "temperature": 0.8, "top_k": 10}
    hwa = {"noise": "additive_channel", "noise_std": 0.03, "clip": "gaussian_channel", "clip_sigma": 2.5}
    hwa_dev = {"noise": "device", "t_min": 3600.0, "t_max": 31536000.0, "clip": "gaussian_channel", "clip_sigma": 2.5}
    pcm = {"op": "analog", "device": "pcm", "mapping": "standard"}
    kd_ft = {"op": "finetune", "epochs": 1, "steps_per_epoch": b["hwa_steps"], "lr": 2e-4, "kd_alpha": 1.0,
             "kd_temperature": 1.0}  # fmt: skip
    sweep = _chips(b, [1.0, DAY])
    v: list[dict[str, Any]] = [
        {"kind": "pipeline", "name": "fp32", "steps": [sample]},
        {"kind": "pipeline", "name": "W8A8 PTQ", "steps": [{"op": "quantize", "a_symmetric": True}]},
        {"kind": "pipeline", "name": "W8A8/token", "steps": [{"op": "quantize", "a_symmetric": True,
                                                            "a_granularity": "token"}]},
        {"kind": "pipeline", "name": "W4g32A8/token", "steps": [{"op": "quantize", "w_bits": 4, "group_size": 32,
                                                               "w_observer": "mse", "a_symmetric": True,
                                                               "a_granularity": "token"}]},
        {"kind": "pipeline", "name": "ternary QAT", "steps": [
            {"op": "bitlinear"}, {"op": "finetune", "epochs": 1, "steps_per_epoch": b["qat_steps"], "lr": 1e-3,
                                  "warmup_epochs": 0.05}, sample]},
        {"kind": "pipeline", "name": "PCM", "steps": [pcm], "eval": sweep},
        {"kind": "pipeline", "name": "PCM + HWA + KD", "steps": [{**pcm, "hwa": hwa}, kd_ft], "eval": sweep},
        # where the PCM gap comes from: the same chips with exact conversions (no ADC clipping,
        # quantization or output noise), with data-calibrated converter ranges, and HWA with the PCM
        # device's own noise instead of AFM's
        {"kind": "pipeline", "name": "PCM, ideal ADC", "eval": sweep,
         "steps": [{**pcm, "mapping_overrides": {"adc_bits": 0, "out_noise": 0.0}}]},
        {"kind": "pipeline", "name": "PCM, calibrated ADC", "steps": [{**pcm, "mapping": "calibrated"}], "eval": sweep},
        {"kind": "pipeline", "name": "PCM + HWA (device noise) + KD", "steps": [{**pcm, "hwa": hwa_dev}, kd_ft],
         "eval": sweep},
    ]
    for k in LEVELS:
        v.append({"kind": "pipeline", "name": f"RRAM x{k:g}", "steps": [
            {"op": "analog", "device": "rram", "mapping": "standard", "device_overrides": {"prog_noise_scale": k}}],
            "eval": {"protocol": "chips_times", "repeats": 1, "times": [DAY], "report_time": DAY}})  # fmt: skip
    return {**_base(quick, "bench_lm_stage1"), "variants": v}


def stage2(quick: bool, k: float) -> dict[str, Any]:
    b = QUICK if quick else FULL
    rram = {"op": "analog", "device": "rram", "mapping": "standard", "device_overrides": {"prog_noise_scale": k}}
    hwa = {"noise": "device", "t_min": DAY, "t_max": DAY, "clip": "none"}  # the device's own noise, at 1 day
    ft = {"op": "finetune", "epochs": 1, "steps_per_epoch": b["lora_steps"], "lr": 1e-3}
    lora = {"op": "lora", "rank": 8, "alpha": 16.0}
    ev = _chips(b, [DAY])
    v = [
        {"kind": "pipeline", "name": f"RRAM x{k:g}", "steps": [rram], "eval": ev},
        {"kind": "pipeline", "name": "vanilla LoRA", "steps": [lora, ft, rram], "eval": ev},
        {"kind": "pipeline", "name": "noise-aware LoRA", "steps": [{**rram, "hwa": hwa}, lora, ft], "eval": ev},
        {"kind": "pipeline", "name": "HaLoRA", "steps": [{**rram, "hwa": hwa}, {**lora, "halora_mu": HALORA_MU}, ft],
         "eval": ev},
    ]
    return {**_base(quick, "bench_lm_stage2"), "variants": v}


def _speed(size: str, reps: int) -> dict[str, float]:
    """Median seconds of the fp32 / analog forward and training step of char_gpt (batch 12 x 64)."""
    from cimkit import analog
    from cimkit.analog import HWAConfig
    from cimkit.models import create

    torch.manual_seed(0)
    fp = create("char_gpt", vocab_size=65, block_size=64, size=size)
    an = analog.convert(fp, "standard", "pcm", hwa=HWAConfig(noise="additive_channel", noise_std=0.03))
    analog.program(an, 0)
    x = torch.randint(0, 65, (12, 64))
    y = torch.randint(0, 65, (12, 64))
    opt_f = torch.optim.AdamW(fp.parameters(), lr=1e-4)
    opt_a = torch.optim.AdamW(an.parameters(), lr=1e-4)
    clip = HWAConfig(clip="gaussian_channel", clip_sigma=2.5)

    def fwd(m: torch.nn.Module) -> float:
        m.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            m(x)
        return time.perf_counter() - t0

    def step(m: torch.nn.Module, opt: torch.optim.Optimizer) -> float:
        m.train()
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(m(x).reshape(-1, 65), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if m is an:
            analog.clip_weights(m, clip)
        return time.perf_counter() - t0

    t: dict[str, list[float]] = {"fp32_fwd": [], "analog_fwd": [], "fp32_step": [], "hwa_step": []}
    for i in range(reps + 2):  # interleaved, so machine load affects both alike; 2 warm-up rounds
        r = {"fp32_fwd": fwd(fp), "analog_fwd": fwd(an), "fp32_step": step(fp, opt_f), "hwa_step": step(an, opt_a)}
        if i >= 2:
            for key, val in r.items():
                t[key].append(val)
    return {k: statistics.median(v) for k, v in t.items()}


def _variant(res: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in res["variants"] if v["name"] == name)


def run(args: Any) -> Report:
    from cimkit.experiment import ExperimentConfig, run_experiment

    log = logging.getLogger("bench_lm")
    quick = args.quick
    b = QUICK if quick else FULL
    report = Report("lm", quick)
    work = Path(args.work or ROOT / "runs" / ("bench_lm_quick" if quick else "bench_lm"))
    data_dir = str(args.data_dir) if args.data_dir and Path(args.data_dir).is_dir() else None

    for stage in ("stage1", "stage2"):  # the benchmark's own scratch folders: rerun, keep the caches
        (work / stage / "results.json").unlink(missing_ok=True)
    t0 = time.perf_counter()
    r1 = run_experiment(ExperimentConfig.from_dict(stage1(quick)), work / "stage1", data_dir=data_dir,
                        progress=False)  # fmt: skip
    log.info("stage 1: %.0f s", time.perf_counter() - t0)
    fp32 = _variant(r1, "fp32")["metrics"]["loss"]
    params = r1["model"]["params"]
    report.row(variant="fp32", loss=fp32, delta=0.0, chips=0, note=f"{params} parameters; "
               f"{r1['baseline'].get('train_seconds', 0.0):.0f} s training")  # fmt: skip
    for name in ("W8A8 PTQ", "W8A8/token", "W4g32A8/token", "ternary QAT"):
        m = _variant(r1, name)["metrics"]
        report.row(variant=name, loss=m["loss"], delta=m["loss"] - fp32, chips=0)
    for name in ("PCM", "PCM + HWA + KD", "PCM, ideal ADC", "PCM, calibrated ADC", "PCM + HWA (device noise) + KD"):
        m = _variant(r1, name)["metrics"]
        report.row(variant=f"{name} @ 1s", loss=m["loss_1s"], delta=m["loss_1s"] - fp32, chips=b["chips"],
                   std=m["loss_1s_std"])  # fmt: skip
        report.row(variant=f"{name} @ 1d", loss=m["loss_1d"], delta=m["loss_1d"] - fp32, chips=b["chips"],
                   std=m["loss_1d_std"])  # fmt: skip
    sweep = {k: _variant(r1, f"RRAM x{k:g}")["metrics"]["loss"] for k in LEVELS}
    for k, v in sweep.items():
        report.row(variant=f"RRAM x{k:g} @ 1d (level sweep)", loss=v, delta=v - fp32, chips=1)
    k_pick = next((k for k in LEVELS if sweep[k] - fp32 >= GAP_NATS), LEVELS[-1])

    # stage 2 reuses stage 1's trained baseline (the cache is keyed by dataset, model and recipe)
    cache2 = work / "stage2" / "cache"
    cache2.mkdir(parents=True, exist_ok=True)
    for f in (work / "stage1" / "cache").glob("baseline-*.safetensors"):
        shutil.copy2(f, cache2 / f.name)
    t0 = time.perf_counter()
    r2 = run_experiment(ExperimentConfig.from_dict(stage2(quick, k_pick)), work / "stage2", data_dir=data_dir,
                        progress=False)  # fmt: skip
    log.info("stage 2: %.0f s", time.perf_counter() - t0)
    lora = {v["name"]: v["metrics"] for v in r2["variants"]}
    for name, m in lora.items():
        report.row(variant=f"{name} @ 1d (k = {k_pick:g})", loss=m["loss"], delta=m["loss"] - fp32,
                   chips=b["chips"], std=m["loss_std"])  # fmt: skip

    sp = _speed(b["size"], b["speed_reps"])
    fwd_ratio, step_ratio = sp["analog_fwd"] / sp["fp32_fwd"], sp["hwa_step"] / sp["fp32_step"]
    report.row(variant="speed: forward (ms)", fp32=1e3 * sp["fp32_fwd"], analog=1e3 * sp["analog_fwd"], ratio=fwd_ratio)
    report.row(variant="speed: training step (ms)", fp32=1e3 * sp["fp32_step"], analog=1e3 * sp["hwa_step"],
               ratio=step_ratio)  # fmt: skip
    for name in ("fp32", "ternary QAT"):
        for s in _variant(r1, name)["details"].get("samples", []):
            sys.stdout.write(f"--- text sample, {name} ---\n{s['text']}\n")
            report.row(variant=f"text sample: {name}", note=s["text"][:80].replace("\n", " / "))

    def d(name: str, key: str = "loss") -> float:
        return _variant(r1, name)["metrics"][key] - fp32

    report.goal("fp32 validation loss (nats/char)", fp32, "<= 1.88", fp32 <= 1.88)
    report.goal("W8A8 PTQ - fp32 (nats)", d("W8A8 PTQ"), "<= 0.02", d("W8A8 PTQ") <= 0.02)
    report.goal("W4 g32 A8 - fp32 (nats)", d("W4g32A8/token"), "<= 0.05", d("W4g32A8/token") <= 0.05)
    report.goal("ternary BitLinear QAT - fp32 (nats)", d("ternary QAT"), "<= 0.10", d("ternary QAT") <= 0.10)
    gap, gap_hwa = d("PCM", "loss_1d"), d("PCM + HWA + KD", "loss_1d")
    rec = (gap - gap_hwa) / gap if gap > 0 else float("nan")
    report.goal("PCM @ 1 day: share of the no-HWA loss gap recovered by HWA + KD", rec, ">= 0.5", rec >= 0.5)
    van, hal = lora["vanilla LoRA"]["loss"], lora["HaLoRA"]["loss"]
    report.goal(f"RRAM x{k_pick:g} @ 1 day: vanilla LoRA - HaLoRA loss (nats)", van - hal, "> 0", van - hal > 0)
    report.goal("analog forward / fp32 forward", fwd_ratio, "<= 1.5", fwd_ratio <= 1.5)
    report.goal("HWA training step / fp32 step", step_ratio, "<= 1.6", step_ratio <= 1.6)
    # energy per character from the cost model (the experiment prices each variant on one test window)
    for name in ("fp32", "W8A8 PTQ", "ternary QAT", "PCM"):
        v = _variant(r1, name)
        m, c = v["metrics"], v["details"].get("cost", {})
        report.row(variant=f"energy per character: {name}", energy_nj=1e3 * m["energy_uj"] / SEQ_LEN,
                   spec=c.get("spec", ""), note=f"one {SEQ_LEN}-character window priced, divided by {SEQ_LEN}")  # fmt: skip
    return report


def main(argv: list[str] | None = None) -> int:
    p = parser("lm", __doc__)
    p.add_argument("--work", type=Path, default=None, help="experiment folders (default runs/bench_lm[_quick])")
    return bench_main(p, run, argv)


if __name__ == "__main__":
    sys.exit(main())
