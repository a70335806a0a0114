"""Analog simulation speed: time ratio vs plain fp32 PyTorch, batch 256, LeNet-5 and VGG-small (BN CNN),
and the character GPT at batch 64, sequence 128.

Measured in the same run, interleaved (``_bench.time_interleaved``: every round times each
configuration once, in shuffled order; medians of CPU time per call, which on a shared machine is
steadier than wall time; both are reported; inference forwards run under ``torch.no_grad``):

* inference forward of (a) the ideal mapping (ideal device and converters; goal <= 1.2x fp32),
  (b) the standard model: 8-bit DAC and ADC per 256-row tile, output noise, PCM programmed and
  drifted to 1 h, global drift compensation (goal <= 1.5x), (c) 4 weight slices x 2-bit cells with
  8-bit bit-serial inputs on the standard model (goal <= 1.3 x 32 = 41.6x), (d) the W4A8-quantized
  model (``cimkit.quant.quantize_`` + ``calibrate``) on the standard mapping, programmed and drifted
  the same way (goal <= 1.1x the unquantized standard model);
* the standard model's tiled convolutions by grouped convolution vs unfold + matmul (reported);
* a hardware-aware training step (PCM device-noise injection, STE converters, weight clipping)
  vs a plain fp32 training step, both SGD (goal <= 1.5x);
* ``char_gpt`` (the default: vocabulary 65, block 128, size ``small``) on the standard mapping, PCM
  at 1 h, vs its fp32 forward, batch 64 x 128 tokens (goal <= 1.5x).

If aihwkit is importable (optional, never a dependency) its torch-only ``TorchInferenceRPUConfig``
tile is timed at matched settings (8-bit DAC/ADC, out_bound 10, out_noise 0.04, 256x256 tiles,
PCMLikeNoiseModel drifted to 1 h, global compensation; aihwkit's own per-vector abs-max input
scaling) for inference and for an HWA training step (additive weight noise: the torch tile has no
PCM-noise modifier), and the ratio aihwkit / cimkit printed.

    python benchmarks/analog_speed.py [--quick] [--out FILE] [--threads 1] [--batch 256] [--rounds 21]

Writes ``benchmarks/results/analog_speed.json`` (``--quick``: ``analog_speed.quick.json``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import _bench
from _bench import Report, Timing

GOAL_IDEAL, GOAL_STANDARD, GOAL_BITSERIAL, GOAL_HWA = 1.2, 1.5, 1.3 * 32, 1.5
GOAL_QUANT, GOAL_GPT = 1.1, 1.5
W4A8 = "W4A8 standard"


def aihwkit_unavailable() -> str | None:
    """None when aihwkit's torch tile can be used, else why not."""
    try:
        import aihwkit  # noqa: F401
        from aihwkit.simulator.configs import TorchInferenceRPUConfig  # noqa: F401
    except Exception as e:  # ImportError or a broken binary wheel
        return f"aihwkit is not importable ({type(e).__name__}: {e}); its timings are left out"
    return None


def inference(m: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    def f() -> Any:
        with torch.no_grad():
            return m(x)

    return f


def programmed(model: nn.Module, mapping: Any, device: str) -> nn.Module:
    """``model`` on crossbars (a copy), programmed and drifted to 1 h."""
    from cimkit import analog

    m = analog.convert(model, mapping, device).eval()
    analog.program(m, 0)
    analog.drift(m, 3600.0)
    return m


def add_rows(report: Report, name: str, both: dict[str, Timing], refs: dict[str, str]) -> None:
    """One row per configuration: CPU and wall ms, ratio to its reference (``refs``, default fp32)."""
    for k, tm in both.items():
        ref = both[refs.get(k, "fp32")]
        report.row(model=name, config=k, **{"cpu ms": 1e3 * tm.cpu, "x fp32 (cpu)": tm.cpu / ref.cpu,
                                            "wall ms": 1e3 * tm.wall, "x fp32 (wall)": tm.wall / ref.wall})  # fmt: skip


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
    from cimkit.quant import QuantConfig, calibrate, quantize_

    torch.manual_seed(0)
    model = create(name, in_channels=1, num_classes=10, input_size=(28, 28)).eval()
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))

    fns: dict[str, Callable[[], Any]] = {"fp32": inference(model, x)}
    fns["ideal"] = inference(programmed(model, "ideal", "ideal"), x)
    fns["standard"] = inference(programmed(model, "standard", "pcm"), x)
    fns["standard (unfold convs)"] = inference(programmed(model, mapping_preset("standard", conv_route="unfold"),
                                                          "pcm"), x)  # fmt: skip
    quant = quantize_(copy.deepcopy(model), QuantConfig(w_bits=4, a_bits=8))
    calibrate(quant, [torch.randn(batch, 1, 28, 28) for _ in range(4)])
    fns[W4A8] = inference(programmed(quant, "standard", "pcm"), x)
    fns["4 slices x 8-bit bit-serial"] = inference(programmed(model, "sliced_bitserial", "pcm"), x)
    if have_aihwkit:
        from aihwkit.nn.conversion import convert_to_analog

        am = convert_to_analog(copy.deepcopy(model), aihwkit_rpu_config()).eval()
        am.program_analog_weights()
        am.drift_analog_weights(3600.0)
        fns["aihwkit standard"] = inference(am, x)
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
    both = _bench.time_interleaved({k: v for k, v in fns.items() if k not in slow}, rounds)
    both.update(_bench.time_interleaved({k: fns[k] for k in slow}, max(3, rounds // 2)))
    train_ref = {k: "train step fp32" for k in both if k.startswith(("train", "aihwkit train"))}
    add_rows(report, name, both, train_ref)
    t = {k: v.cpu for k, v in both.items()}  # CPU time: the ratios
    for row in report.rows[-len(both) :]:
        if row["config"] == "aihwkit standard":
            row["aihwkit / cimkit"] = t["aihwkit standard"] / t["standard"]
        if row["config"] == "aihwkit train step HWA":
            row["aihwkit / cimkit"] = t["aihwkit train step HWA"] / t["train step HWA"]
        if row["config"] == W4A8:
            row["x standard (cpu)"] = t[W4A8] / t["standard"]
    base, base_train = t["fp32"], t["train step fp32"]
    report.at_most(f"{name}: ideal mapping inference / fp32", t["ideal"] / base, GOAL_IDEAL)
    report.at_most(f"{name}: standard model (8b DAC/ADC, 256-row tiles, out noise, PCM @1h) / fp32",
                   t["standard"] / base, GOAL_STANDARD)  # fmt: skip
    report.at_most(f"{name}: 4 slices x 8-bit bit-serial / fp32", t["4 slices x 8-bit bit-serial"] / base,
                   GOAL_BITSERIAL, f"<= {GOAL_BITSERIAL:g} (1.3 x 32)")  # fmt: skip
    report.at_most(f"{name}: HWA train step / fp32 train step", t["train step HWA"] / base_train, GOAL_HWA)
    report.at_most(f"{name} W4A8 standard mapping / unquantized standard mapping", t[W4A8] / t["standard"],
                   GOAL_QUANT)  # fmt: skip


def bench_gpt(batch: int, seq: int, rounds: int, report: Report) -> None:
    """``char_gpt`` inference on the standard mapping (PCM, 1 h) vs its fp32 forward."""
    from cimkit.models import create

    torch.manual_seed(0)
    model = create("char_gpt", vocab_size=65, block_size=seq).eval()
    x = torch.randint(0, 65, (batch, seq))  # (B, T) token ids
    fns = {"fp32": inference(model, x), "standard": inference(programmed(model, "standard", "pcm"), x)}
    both = _bench.time_interleaved(fns, rounds)
    add_rows(report, "char_gpt", both, {})
    report.at_most(f"char_gpt standard mapping / fp32 forward (batch {batch}, sequence {seq})",
                   both["standard"].cpu / both["fp32"].cpu, GOAL_GPT)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = _bench.parser("analog_speed", __doc__)
    p.add_argument("--batch", type=int, default=256, help="batch of the image models")
    p.add_argument("--rounds", type=int, default=21, help="timing rounds (median)")
    p.add_argument("--models", default="lenet5,vgg_small,char_gpt", help="comma-separated (char_gpt: batch 64 x 128)")
    args = p.parse_args(argv)
    _bench.setup(args)
    logging.basicConfig(level=logging.WARNING)
    rounds = 3 if args.quick else args.rounds
    report = Report("analog_speed", args.quick)
    why = aihwkit_unavailable()
    if why is not None:
        report.skip(why)
    for name in args.models.split(","):
        if name == "char_gpt":
            bench_gpt(64, 128, rounds, report)
        else:
            bench_model(name, args.batch, rounds, report, why is None)
    report.print()
    report.write(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
