"""Analog simulation speed: time ratio vs plain fp32 PyTorch, batch 256, LeNet-5 and VGG-small (BN CNN).

Measured in the same run, interleaved (every round times each configuration once; medians of CPU
time per call, which on a shared machine is steadier than wall time; both are reported):

* inference forward of (a) the ideal mapping (ideal device and converters; goal <= 1.2x fp32),
  (b) the standard model: 8-bit DAC and ADC per 256-row tile, output noise, PCM programmed and
  drifted to 1 h, global drift compensation (goal <= 1.5x), (c) 4 weight slices x 2-bit cells with
  8-bit bit-serial inputs on the standard model (goal <= 1.3 x 32 = 41.6x);
* the standard model's tiled convolutions by grouped convolution vs unfold + matmul (reported);
* a hardware-aware training step (PCM device-noise injection, STE converters, weight clipping)
  vs a plain fp32 training step, both SGD (goal <= 1.5x).

If aihwkit is importable (optional, never a dependency) its torch-only ``TorchInferenceRPUConfig``
tile is timed at matched settings (8-bit DAC/ADC, out_bound 10, out_noise 0.04, 256x256 tiles,
PCMLikeNoiseModel drifted to 1 h, global compensation; aihwkit's own per-vector abs-max input
scaling) for inference and for an HWA training step (additive weight noise: the torch tile has no
PCM-noise modifier), and the ratio aihwkit / cimkit printed.

    python benchmarks/analog_speed.py [--quick] [--out FILE] [--threads 1] [--batch 256] [--rounds 7]

Writes ``benchmarks/results/analog_speed.json`` (``--quick``: ``analog_speed.quick.json``).
"""

from __future__ import annotations

import copy
import logging
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import Report, parser, setup_threads

GOAL_IDEAL, GOAL_STANDARD, GOAL_BITSERIAL, GOAL_HWA = 1.2, 1.5, 1.3 * 32, 1.5


def _median_interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1
) -> dict[str, tuple[float, float]]:
    """Median (CPU seconds, wall seconds) per call; each round calls every function once, so a
    shared machine's load drifts over all of them alike. CPU time (``time.process_time``) is the
    compute a call costs; wall time also counts waiting for a core on a loaded machine. The order
    is shuffled every round."""
    for f in fns.values():
        for _ in range(warmup):
            f()
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    wall: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)  # no configuration always runs first (cold caches) or last
        for k in order:
            f = fns[k]
            c0, w0 = time.process_time(), time.perf_counter()
            f()
            cpu[k].append(time.process_time() - c0)
            wall[k].append(time.perf_counter() - w0)
    return {k: (statistics.median(cpu[k]), statistics.median(wall[k])) for k in fns}


def _aihwkit_available() -> bool:
    try:
        import aihwkit  # noqa: F401
        from aihwkit.simulator.configs import TorchInferenceRPUConfig  # noqa: F401
    except Exception as e:  # ImportError or a broken binary wheel
        logging.getLogger(__name__).info("aihwkit not importable (%s): skipped", e)
        return False
    return True


def aihwkit_rpu_config(hwa: bool = False) -> Any:
    """aihwkit's torch tile at the settings of cimkit's ``standard`` mapping + ``pcm`` device."""
    from aihwkit.inference.compensation.drift import GlobalDriftCompensation
    from aihwkit.inference.noise.pcm import PCMLikeNoiseModel
    from aihwkit.simulator.configs import TorchInferenceRPUConfig
    from aihwkit.simulator.parameters.enums import BoundManagementType, NoiseManagementType, WeightModifierType

    c = TorchInferenceRPUConfig()
    c.forward.inp_res = 1 / (2**8 - 2)
    c.forward.out_res = 1 / (2**8 - 2)
    c.forward.out_bound = 10.0
    c.forward.out_noise = 0.04
    c.forward.bound_management = BoundManagementType.NONE
    c.forward.noise_management = NoiseManagementType.ABS_MAX
    c.mapping.max_input_size = 256
    c.mapping.max_output_size = 256
    c.mapping.digital_bias = True
    c.mapping.weight_scaling_omega = 1.0
    c.mapping.weight_scaling_columnwise = True
    c.noise_model = PCMLikeNoiseModel(g_max=25.0)
    c.drift_compensation = GlobalDriftCompensation()
    if hwa:  # the torch tile has no PCM_NOISE modifier: additive Gaussian, aihwkit's usual HWA choice
        c.modifier.type = WeightModifierType.ADD_NORMAL
        c.modifier.std_dev = 0.06
    return c


def bench_model(name: str, batch: int, rounds: int, report: Report, have_aihwkit: bool) -> None:
    from cimkit import analog
    from cimkit.analog import HWAConfig, mapping_preset
    from cimkit.models import create

    torch.manual_seed(0)
    model = create(name, in_channels=1, num_classes=10, input_size=(28, 28)).eval()
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))

    def inference(m: nn.Module) -> Callable[[], Any]:
        def f() -> Any:
            with torch.no_grad():
                return m(x)

        return f

    def programmed(mapping: Any, device: str) -> nn.Module:
        m = analog.convert(model, mapping, device).eval()
        analog.program(m, 0)
        analog.drift(m, 3600.0)
        return m

    fns: dict[str, Callable[[], Any]] = {"fp32": inference(model)}
    fns["ideal"] = inference(programmed("ideal", "ideal"))
    fns["standard"] = inference(programmed("standard", "pcm"))
    fns["standard (unfold convs)"] = inference(programmed(mapping_preset("standard", conv_route="unfold"), "pcm"))
    fns["4 slices x 8-bit bit-serial"] = inference(programmed("sliced_bitserial", "pcm"))
    if have_aihwkit:
        from aihwkit.nn.conversion import convert_to_analog

        am = convert_to_analog(copy.deepcopy(model), aihwkit_rpu_config()).eval()
        am.program_analog_weights()
        am.drift_analog_weights(3600.0)
        fns["aihwkit standard"] = inference(am)
    # training steps (SGD): plain fp32 vs cimkit HWA (and aihwkit HWA)
    plain = copy.deepcopy(model).train()
    opt_plain = torch.optim.SGD(plain.parameters(), lr=1e-3, momentum=0.9)
    hwa_m = analog.convert(model, "standard", "pcm").train()
    hwa_cfg = HWAConfig()
    analog.set_hwa(hwa_m, hwa_cfg)
    opt_hwa = torch.optim.SGD([p for p in hwa_m.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    clip = analog.clip_hook(hwa_cfg)

    def step(m: nn.Module, opt: torch.optim.Optimizer, hook: Callable[[nn.Module], None] | None = None) -> Any:
        def f() -> Any:
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
            if hook is not None:
                hook(m)

        return f

    fns["train step fp32"] = step(plain, opt_plain)
    fns["train step HWA"] = step(hwa_m, opt_hwa, clip)
    if have_aihwkit:
        from aihwkit.nn.conversion import convert_to_analog
        from aihwkit.optim import AnalogSGD

        ah = convert_to_analog(copy.deepcopy(model), aihwkit_rpu_config(hwa=True)).train()
        opt_ah = AnalogSGD(ah.parameters(), lr=1e-3, momentum=0.9)
        opt_ah.regroup_param_groups(ah)
        fns["aihwkit train step HWA"] = step(ah, opt_ah)
    slow = {"4 slices x 8-bit bit-serial"}
    fast_fns = {k: v for k, v in fns.items() if k not in slow}
    both = _median_interleaved(fast_fns, rounds)
    both.update(_median_interleaved({k: fns[k] for k in slow}, max(3, rounds // 2)))
    t = {k: v[0] for k, v in both.items()}  # CPU time: the ratios
    base, base_train = t["fp32"], t["train step fp32"]
    for k, (sec, wall) in both.items():
        ref_k = "train step fp32" if k.startswith(("train", "aihwkit train")) else "fp32"
        row: dict[str, Any] = {"model": name, "config": k, "cpu ms": 1e3 * sec, "x fp32 (cpu)": sec / t[ref_k],
                               "wall ms": 1e3 * wall, "x fp32 (wall)": wall / both[ref_k][1]}  # fmt: skip
        if k == "aihwkit standard":
            row["aihwkit / cimkit"] = sec / t["standard"]
        if k == "aihwkit train step HWA":
            row["aihwkit / cimkit"] = sec / t["train step HWA"]
        report.row(**row)
    report.goal(
        f"{name}: ideal mapping inference / fp32",
        t["ideal"] / base,
        f"<= {GOAL_IDEAL}",
        t["ideal"] / base <= GOAL_IDEAL,
    )
    r = t["standard"] / base
    report.goal(f"{name}: standard model (8b DAC/ADC, 256-row tiles, out noise, PCM @1h) / fp32", r,
                f"<= {GOAL_STANDARD}", r <= GOAL_STANDARD)  # fmt: skip
    r = t["4 slices x 8-bit bit-serial"] / base
    report.goal(
        f"{name}: 4 slices x 8-bit bit-serial / fp32", r, f"<= {GOAL_BITSERIAL:g} (1.3 x 32)", r <= GOAL_BITSERIAL
    )
    r = t["train step HWA"] / base_train
    report.goal(f"{name}: HWA train step / fp32 train step", r, f"<= {GOAL_HWA}", r <= GOAL_HWA)


def main(argv: list[str] | None = None) -> int:
    p = parser("analog_speed", __doc__)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=9, help="timing rounds (median)")
    p.add_argument("--models", default="lenet5,vgg_small")
    args = p.parse_args(argv)
    setup_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    rounds = 3 if args.quick else args.rounds
    report = Report("analog_speed", args.quick)
    have = _aihwkit_available()
    if not have:
        sys.stdout.write("aihwkit is not importable: its timings are skipped\n")
    for name in args.models.split(","):
        bench_model(name, args.batch, rounds, report, have)
    report.print()
    out = args.out or (Path(__file__).resolve().parent / "results" / "analog_speed.quick.json" if args.quick else None)
    report.write(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
