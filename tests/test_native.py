"""The fused CPU kernels (analog periphery, device reads, quantized inference) give the PyTorch route's bits."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from cimkit import analog, native

# skipped only where no kernels can be built (no compiler, another platform, switched off); a build
# that fails where a compiler exists fails these tests
_STATUS = native.status()
_NO_TOOLCHAIN = any(w in _STATUS for w in ("no C compiler", "built only on", "disabled by CIMKIT_NATIVE"))
pytestmark = pytest.mark.skipif(_NO_TOOLCHAIN, reason=f"native kernels cannot be built here: {_STATUS}")


def test_kernels_are_built() -> None:
    assert native.available(), _STATUS


@contextlib.contextmanager
def _kernels(on: bool):
    """The kernels on or off (``native.enable``) inside the block, the previous setting after it."""
    prev = native.enable(on)
    try:
        yield
    finally:
        native.enable(prev)


ISAS = [False, True]  # the baseline x86-64 build, then the AVX2+FMA build (where the CPU has it)


@pytest.fixture(params=ISAS, ids=["baseline", "avx2"])
def isa(request: pytest.FixtureRequest):
    prev = native.force_isa(None)
    runs = native.force_isa(request.param)
    if request.param and not runs:
        pytest.skip("this CPU has no AVX2+FMA")
    yield runs
    native.force_isa(prev)


def _dac_reference(x: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    # the PyTorch route's ops (mvm.input_range + _nograd_route), spelled out
    r = torch.maximum(x.amax(1), x.amin(1).neg_()).clamp_(min=1e-12)
    return r, (x * (levels / r.view(-1, 1))).round_()


@pytest.mark.parametrize("cols", [1, 7, 16, 33, 128, 517])
def test_dac_rows_equals_torch_ops(isa: bool, cols: int) -> None:
    g = torch.Generator().manual_seed(cols)
    x = torch.randn(61, cols, generator=g) * torch.rand(61, 1, generator=g).mul_(30.0)
    x[3] = 0.0  # an all-zero row: range 1e-12, codes 0
    x[5, 0] = float("nan")  # a NaN row: range NaN, as amax/amin propagate it
    x[7, -1] = float("inf")
    x[9] = -x[9].abs()  # only negative values: the range is -amin
    levels = 127
    r_ref, q_ref = _dac_reference(x, levels)
    q = torch.empty_like(x)
    r = native.dac_rows(x, q, levels)
    torch.testing.assert_close(r, r_ref, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(q, q_ref, rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(r[5]) and r[3] == 1e-12


def _adc_reference(z, noise, sigma, levels, k, s, bias):
    zt = z.clone()
    if noise is not None:
        zt.add_(noise, alpha=sigma)
    if levels is not None:
        zt.clamp_(-levels, levels).round_()
    y = zt.mul_(k.unsqueeze(1)).sum(0)  # (R, N): PyTorch sums the tiles in order for up to 4 tiles
    xs = s.view(-1, 1)
    return torch.addcmul(bias.view(1, -1), y, xs) if bias is not None else y.mul_(xs)


@pytest.mark.parametrize("tiles", [1, 2, 3, 4])
@pytest.mark.parametrize("cols", [5, 64, 130])
@pytest.mark.parametrize("noise,bias,adc", [(True, True, True), (False, True, True), (True, False, True),
                                            (True, True, False)])  # fmt: skip
def test_adc_rows_equals_torch_ops(isa: bool, tiles: int, cols: int, noise: bool, bias: bool, adc: bool) -> None:
    g = torch.Generator().manual_seed(tiles * 1000 + cols)
    rows = 77
    z = torch.randn(tiles, rows, cols, generator=g) * 90.0  # some beyond full scale
    nz = torch.randn(tiles, rows, cols, generator=g) if noise else None
    k = torch.randn(tiles, cols, generator=g)
    s = torch.rand(rows, generator=g) * 3.0
    b = torch.randn(cols, generator=g) if bias else None
    levels = 127 if adc else None
    sigma = 0.04 * 127 / 9.5
    ref = _adc_reference(z, nz, sigma, levels, k, s, b)
    if tiles == 1:  # in place on the partial sums, as the layer calls it
        zz = z.clone()
        out = native.adc_rows(zz, nz, sigma, levels, k, s, b, zz[0])
        assert out.data_ptr() == zz.data_ptr()
    else:
        out = native.adc_rows(z, nz, sigma, levels, k, s, b, torch.empty(rows, cols))
    assert torch.equal(out, ref)


def test_adc_rows_sums_many_tiles_in_order() -> None:
    # beyond 4 tiles PyTorch's sum order depends on the CPU's vector width; the kernel's does not
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 40, 21, generator=g) * 50.0
    k = torch.randn(7, 21, generator=g)
    s = torch.rand(40, generator=g)
    c = z.clamp(-127, 127).round() * k.unsqueeze(1)
    acc = c[0].clone()
    for t in range(1, 7):
        acc = acc + c[t]
    out = native.adc_rows(z, None, 0.0, 127, k, s, None, torch.empty(40, 21))
    assert torch.equal(out, acc * s.view(-1, 1))


@pytest.mark.parametrize("devs", [2, 1])  # a differential pair; one device (offset mapping)
def test_read_pairs_equals_torch_ops(isa: bool, devs: int) -> None:
    from cimkit.analog.cells import a_from_g
    from cimkit.analog.devices import DEVICES
    from cimkit.analog.mapping import WeightPair

    g = torch.Generator().manual_seed(devs)
    shape = (2, devs, 3, 50, 37)  # (S, D, T, R, N)
    g_mean = torch.rand(shape, generator=g) * 25.0
    g_sigma = torch.rand(shape, generator=g) * 2.0
    noise = torch.randn(shape, generator=g) * 3.0  # some reads below zero: clamped
    dev = DEVICES.get("pcm")
    pair = WeightPair.DIFFERENTIAL if devs == 2 else WeightPair.OFFSET
    ref = a_from_g(torch.addcmul(g_mean, g_sigma, noise).clamp_(min=0.0), pair, dev)
    assert torch.equal(native.read_pairs(g_mean, g_sigma, noise, 1.0 / dev.g_range), ref)
    post = 0.37 / 127  # the inference route's folded gain: the same as a second multiplication
    assert torch.equal(native.read_pairs(g_mean, g_sigma, noise, 1.0 / dev.g_range, post), ref * post)


def test_row_scale_equals_torch_ops(isa: bool) -> None:
    g = torch.Generator().manual_seed(5)
    gy = torch.randn(33, 130, generator=g)
    r = torch.rand(33, generator=g) * 4.0 + 1e-3
    assert torch.equal(native.row_scale(gy, r, 127), gy * (127 / r).view(-1, 1))


def _count_calls(monkeypatch: pytest.MonkeyPatch, *names: str) -> dict[str, int]:
    """Wrap the named kernels of ``native`` so that each call is counted (the dict updates live)."""
    calls = dict.fromkeys(names, 0)
    for name in names:
        fn = getattr(native, name)

        def counted(*a, _fn=fn, _name=name, **k):
            calls[_name] += 1
            return _fn(*a, **k)

        monkeypatch.setattr(native, name, counted)
    return calls


class _Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(600, 48)  # 3 row tiles of 256
        self.b = nn.Linear(48, 40, bias=False)
        self.c = nn.Linear(40, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


@pytest.mark.parametrize("device", ["pcm", "rram"])
def test_standard_mapping_forward_is_bit_identical_with_and_without_kernels(device: str, monkeypatch) -> None:
    calls = _count_calls(monkeypatch, "dac_rows", "adc_rows", "read_pairs")
    torch.manual_seed(0)
    model = analog.convert(_Mlp().eval(), "standard", device).eval()
    analog.program(model, 3)
    analog.drift(model, 3600.0)
    x = torch.randn(2, 33, 600)  # leading dims fold into the batch
    outs = []
    for on in (True, False):
        with _kernels(on):
            analog.program(model, 3)  # the same chip and the same read-noise stream for both
            analog.drift(model, 3600.0)
            before = dict(calls)
            with torch.no_grad():
                outs.append(model(x))
            if on:
                fwd = {k: calls[k] - before[k] for k in calls}
    assert fwd == {"dac_rows": 3, "adc_rows": 3, "read_pairs": 3}  # every layer took each kernel once
    assert torch.equal(outs[0], outs[1])
    assert outs[0].abs().sum() > 0


class _Cnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)  # 27 rows: one tile
        self.b = nn.Conv2d(8, 6, 3, stride=2, bias=False)
        self.c = nn.Conv2d(6, 5, 5)  # 150 rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


@pytest.mark.parametrize("device", ["pcm", "rram"])
@pytest.mark.parametrize("route", ["grouped", "unfold"])  # the conv as a grouped conv, or unfold + matmul
def test_one_tile_convolutions_are_bit_identical_with_and_without_kernels(isa: bool, device: str, route: str,
                                                                         monkeypatch) -> None:  # fmt: skip
    calls = _count_calls(monkeypatch, "dac_rows", "adc_codes", "col_scale")
    torch.manual_seed(0)
    model = analog.convert(_Cnn().eval(), analog.mapping_preset("standard", conv_route=route), device).eval()
    x = torch.randn(4, 3, 21, 21)
    outs = []
    for on in (True, False):
        with _kernels(on):
            analog.program(model, 3)  # the same chip and the same read- and output-noise streams
            analog.drift(model, 3600.0)
            with torch.no_grad():
                outs.append(model(x))
    assert calls == {"dac_rows": 3, "adc_codes": 3, "col_scale": 3}  # each layer's DAC, ADC and epilogue
    assert torch.equal(outs[0], outs[1]) and outs[0].abs().sum() > 0


def test_training_route_is_bit_identical_with_and_without_kernels(monkeypatch) -> None:
    calls = _count_calls(monkeypatch, "dac_rows", "row_scale")
    torch.manual_seed(0)
    model = analog.convert(_Mlp(), "standard", "pcm").train()
    x0 = torch.randn(9, 600)
    results = []
    for on in (True, False):
        with _kernels(on):
            for _, layer in analog.analog_layers(model):
                layer.hwa_generator = None  # the same output-noise stream for both runs
            model.zero_grad()
            x = x0.clone().requires_grad_(True)
            y = model(x)
            (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
            results.append((y.detach(), x.grad, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    assert calls == {"dac_rows": 3, "row_scale": 3}  # forward and backward of each layer's DAC, once
    (y1, gx1, gp1), (y2, gx2, gp2) = results
    assert torch.equal(y1, y2) and torch.equal(gx1, gx2)
    assert len(gp1) == len(gp2) > 0 and all(torch.equal(a, b) for a, b in zip(gp1, gp2))


def _device_variants() -> list[tuple[str, object]]:
    from cimkit.analog.devices import DEVICES

    pcm = DEVICES.get("pcm")
    return [
        ("pcm", pcm),  # programming noise, power-law drift, 1/f read noise
        ("pcm, one programming coefficient", pcm.replace(prog_coeffs=(0.5,))),
        ("pcm, constant read noise only", pcm.replace(read_noise_scale=0.0, read_noise_std=0.2)),
        ("pcm, no read noise", pcm.replace(read_noise_scale=0.0)),
        ("ideal", DEVICES.get("ideal")),
    ]


@pytest.mark.parametrize("variant", range(5), ids=[n for n, _ in _device_variants()])
@pytest.mark.parametrize("n", [1, 13, 4096, 9000])  # within and across the kernel's 4096-element rows
@pytest.mark.parametrize("fast", [True, False])  # normals from the noise table or fresh
def test_device_read_stages_give_the_tensor_ops_bits(isa: bool, variant: int, n: int, fast: bool,
                                                     monkeypatch) -> None:  # fmt: skip
    from cimkit.analog.devices import sample_read

    calls = _count_calls(monkeypatch, "device_read_a", "device_read_b", "device_read_c")
    dev = _device_variants()[variant][1]
    gt = torch.rand(2, n, generator=torch.Generator().manual_seed(n)) * dev.g_max  # (D, n) µS
    gt[:, :2] = 0.0  # unprogrammed devices sit on the logarithms' floors
    outs = []
    for on in (True, False):
        with _kernels(on):
            for t in (1.0, 86400.0, 3e7):
                outs.append(sample_read(gt, dev, t, torch.Generator().manual_seed(7), fast=fast, workspace={}).clone())
    planes = dev.drift_model.value == "power_law" or dev.read_q_coeff * dev.read_noise_scale > 0
    b = 3 if planes else 0  # stage B (the exponents) only where there is a drift or 1/f plane
    assert calls == {"device_read_a": 3, "device_read_b": b, "device_read_c": 3}  # the kernels ran, once a stage
    for a, b in zip(outs[:3], outs[3:]):
        assert torch.equal(a, b)
        assert bool((a >= 0).all())
    assert not torch.equal(outs[0], outs[2]) or dev.is_ideal  # the read changes with time unless ideal


def test_device_read_in_quadrature_stays_on_the_tensor_route(monkeypatch) -> None:
    # PyTorch's float32 sqrt is not always correctly rounded: a 1/f read noise with a constant one
    # added in quadrature is not fused
    from cimkit.analog.devices import DEVICES, sample_read

    calls = _count_calls(monkeypatch, "device_read_a")
    dev = DEVICES.get("pcm").replace(read_noise_std=0.3)
    g = sample_read(torch.rand(2, 500) * dev.g_max, dev, 3600.0, torch.Generator().manual_seed(0), fast=True)
    assert calls == {"device_read_a": 0} and bool((g >= 0).all())


def test_hwa_device_noise_step_is_bit_identical_with_and_without_kernels(monkeypatch) -> None:
    calls = _count_calls(monkeypatch, "device_read_a")
    torch.manual_seed(0)
    model = analog.convert(_Mlp(), "standard", "pcm").train()
    x = torch.randn(9, 600)
    results = []
    for on in (True, False):
        with _kernels(on):
            analog.set_hwa(model, analog.HWAConfig(noise="device", seed=3))  # the same noise stream for both
            for _, layer in analog.analog_layers(model):
                layer.hwa_generator.manual_seed(11)
            model.zero_grad()
            y = model(x)
            y.square().sum().backward()
            results.append((y.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    assert calls == {"device_read_a": 3}  # one fused read per layer with the kernels on
    (y1, g1), (y2, g2) = results
    assert torch.equal(y1, y2) and len(g1) == len(g2) > 0 and all(torch.equal(a, b) for a, b in zip(g1, g2))


@pytest.mark.parametrize("shape", [(16, 40), (6, 5, 7, 3)])  # a linear layer's (B, N); a conv's (B, N, H, W)
@pytest.mark.parametrize("scale", [6.0, 0.5])  # with and without codes at full scale
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("per_sample", [True, False])  # a per-sample DAC range (B,), or one range
def test_training_adc_matches_the_tensor_ops(isa: bool, shape, scale: float, bias: bool, per_sample: bool) -> None:
    from cimkit.analog.periphery import adc_combine_rk

    g = torch.Generator().manual_seed(len(shape) + int(scale))
    z0 = torch.randn(shape, generator=g) * 127 * scale / 3
    noise = torch.randn(shape, generator=g)
    r = torch.rand(shape[0] if per_sample else (), generator=g) + 0.5
    k = torch.rand(shape[1], generator=g) + 0.1
    b0 = torch.randn(shape[1], generator=g) if bias else None
    gy = torch.randn(shape, generator=g)
    outs = []
    for on in (True, False):
        with _kernels(on):
            w = torch.ones((), requires_grad=True)
            z = z0.clone().requires_grad_(True)
            zz = z * w  # a fresh non-leaf result, as the matmul's output
            bb = b0.clone().requires_grad_(True) if bias else None
            y = adc_combine_rk(zz, noise, 0.3, 127, r, k, 1.0 / 9.5, bb)
            y.backward(gy)
            outs.append((y.detach(), z.grad, bb.grad if bias else None))
    (y1, gz1, gb1), (y2, gz2, gb2) = outs
    assert torch.equal(y1, y2) and torch.equal(gz1, gz2)
    assert (gb1 is None and gb2 is None) or torch.equal(gb1, gb2)
    if scale > 1:
        assert bool((gz1 == 0).any())  # saturated codes pass no gradient


@pytest.mark.parametrize("n", [1, 9, 4096, 4099, 20000])
@pytest.mark.parametrize("scale", [0.0371, 1e-3])
@pytest.mark.parametrize("zp", [0.0, 137.0])  # a symmetric grid, an unsigned grid for signed values
def test_fake_quant_equals_torch_ops(isa: bool, n: int, scale: float, zp: float) -> None:
    from cimkit.quant.functional import fake_quantize

    x = torch.randn(n, generator=torch.Generator().manual_seed(n)) * 7.0
    x[: min(n, 3)] = torch.tensor([float("nan"), float("inf"), 2.5 * scale])[: min(n, 3)]  # NaN, clipped, a tie
    s, z = torch.tensor(scale), torch.tensor(zp)
    lo, hi = (-128, 127) if zp == 0 else (0, 255)
    if zp == 0:
        ref = torch.div(x, s).round_().clamp_(lo, hi).mul_(s)
    else:
        ref = torch.div(x, s).round_().add_(z).clamp_(lo, hi).sub_(z).mul_(s)
    torch.testing.assert_close(native.fake_quant(x, scale, zp, lo, hi), ref, rtol=0, atol=0, equal_nan=True)
    with torch.no_grad():  # quant's inference route takes the kernel for one scale and zero point
        out = fake_quantize(x, s, z if zp else None, lo, hi)
    torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)


def test_quantized_analog_model_is_bit_identical_with_and_without_kernels(monkeypatch) -> None:
    from cimkit.quant import QuantConfig, calibrate, quantize_

    calls = _count_calls(monkeypatch, "fake_quant")
    torch.manual_seed(0)
    quant = quantize_(_Cnn().eval(), QuantConfig(w_bits=4, a_bits=8))
    calibrate(quant, [torch.randn(4, 3, 21, 21) for _ in range(2)])
    model = analog.convert(quant, "standard", "pcm").eval()
    x = torch.randn(4, 3, 21, 21)
    outs = []
    for on in (True, False):
        with _kernels(on):
            analog.program(model, 3)
            with torch.no_grad():
                outs.append(model(x))
    assert calls == {"fake_quant": 3}  # each layer's activation quantizer (the first one asymmetric)
    assert torch.equal(outs[0], outs[1]) and outs[0].abs().sum() > 0


def test_without_a_compiler_the_pytorch_route_runs(tmp_path) -> None:
    code = ("from cimkit import native; import cimkit.analog as a, torch; "
            "print(native.status()); assert not native.available(); "
            "m = a.convert(torch.nn.Sequential(torch.nn.Linear(8, 4)), 'standard', 'pcm').eval(); "
            "print(tuple(m(torch.randn(3, 8)).shape))")  # fmt: skip
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc"), "CIMKIT_NATIVE_DIR": str(tmp_path / "k")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pytorch (no C compiler" in out.stdout and "(3, 4)" in out.stdout
    env = {**os.environ, "CIMKIT_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "disabled by CIMKIT_NATIVE=0" in out.stdout


def test_kernels_build_into_a_fresh_folder(tmp_path) -> None:
    code = "from cimkit import native; print(native.status())"
    env = {**os.environ, "CIMKIT_NATIVE_DIR": str(tmp_path / "k")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("native ("), out.stdout + out.stderr
    assert len(list((tmp_path / "k").glob("kernels-*.so"))) == 1


@pytest.mark.parametrize("cols", [1, 7, 33, 128])
def test_adc_codes_flags_full_scale_like_the_tensor_ops(isa: bool, cols: int) -> None:
    g = torch.Generator().manual_seed(cols)
    levels = 15
    z = torch.randn(9, cols, generator=g) * 6.0
    noise = torch.randn(9, cols, generator=g)
    ref = z.add(noise, alpha=0.7).clamp_(-levels, levels).round_()
    out = z.clone()
    saturated = native.adc_codes(out, noise, 0.7, levels)
    assert torch.equal(out, ref) and saturated == bool(ref.abs().max() >= levels)
    small = torch.full((4, cols), 3.0)
    small[1, 0] = float("nan")  # a NaN is never a full-scale code
    assert not native.adc_codes(small, None, 0.0, levels) and torch.isnan(small[1, 0])
    small[2, 0] = float("nan")
    small[2, -1] = -40.0  # clipped to -levels in a row that also holds a NaN (one column: replaces it)
    assert native.adc_codes(small, None, 0.0, levels)
    assert small[2, -1] == -levels


def _train_weights_reference(w, tiles, c, noise, std):
    # the general route's ops (AnalogLayer._weights_from_parameters, hwa.ChannelNoise, the gain)
    n, cols = w.shape
    wt = w.reshape(n, tiles, cols // tiles).permute(1, 2, 0)  # (T, R, N)
    ws = wt.abs().amax(dim=1).clamp(min=1e-30)
    u = wt / ws.unsqueeze(1)
    a = u.unsqueeze(0)
    if noise is not None:
        sigma = std * wt.abs().amax(dim=(0, 1)) / ws
        a = a + torch.addcmul(a, noise.view(a.shape), sigma.unsqueeze(1)).sub_(a)
    return (a * c)[0], ws


@pytest.mark.parametrize(("n", "cols", "tiles"), [(5, 7, 1), (128, 128, 1), (33, 512, 2), (9, 96, 3)])
@pytest.mark.parametrize("noisy", [False, True])
def test_train_weights_equals_torch_ops(isa: bool, n: int, cols: int, tiles: int, noisy: bool) -> None:
    g = torch.Generator().manual_seed(n * cols)
    w = torch.randn(n, cols, generator=g) * 0.2
    w[1] = 0.0  # an all-zero channel: scale 1e-30, weights 0
    noise = torch.randn(n * cols, generator=g) if noisy else None
    a, ws = native.train_weights(w, tiles, 0.0123, noise, 0.03)
    a_ref, ws_ref = _train_weights_reference(w, tiles, 0.0123, noise, 0.03)
    assert torch.equal(ws, ws_ref)
    assert torch.equal(a.reshape(n, tiles, -1).permute(1, 2, 0), a_ref)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("noisy", [False, True])
def test_tiles_adc_equals_torch_ops(isa: bool, bias: bool, noisy: bool) -> None:
    g = torch.Generator().manual_seed(7)
    bsz, n, levels = 37, 19, 127
    z = torch.randn(2, bsz, n, generator=g) * 2.0
    noise = torch.randn(1, bsz, 2, 1, n, generator=g) if noisy else None
    r_adc = torch.tensor(3.0)
    ws, r = torch.rand(2, n, generator=g), torch.rand(bsz, generator=g) + 0.5
    b = torch.randn(n, generator=g) if bias else None
    # the general route's tensor ops (mvm._grad_route, two tiles, fixed ADC range)
    z5 = z.view(2, 1, bsz, 1, n).permute(1, 2, 0, 3, 4)
    if noisy:
        z5 = torch.add(z5, noise, alpha=0.3)
    q = (z5 * (levels / r_adc)).clamp_(-levels, levels).round_().mul_(r_adc / levels)
    fac = ws.unsqueeze(1).unsqueeze(0).unsqueeze(1) * r.view(1, -1, 1, 1, 1)
    ref = (q * fac).sum(dim=(0, 2, 3))
    ref = ref + b if bias else ref
    zk = z.clone()
    y = native.tiles_adc(zk, noise, 0.3, r_adc, levels, ws, r, b)
    assert torch.equal(y, ref) and torch.equal(zk, z5.permute(2, 0, 1, 3, 4).reshape(2, bsz, n))
    # the gradient: the straight-through mask of hardtanh_backward, times the digital factor
    gy = torch.randn(bsz, n, generator=g)
    g5 = torch.ops.aten.hardtanh_backward(gy.view(1, bsz, 1, 1, n) * fac, z5, -3.0, 3.0)
    gz_ref = g5.permute(2, 0, 1, 3, 4).reshape(2, bsz, n)
    assert torch.equal(native.tiles_adc_grad(gy, zk, 3.0, ws, r), gz_ref)
    assert (gz_ref == 0).any() and (gz_ref != 0).any()  # both sides of the mask are exercised


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("noisy", [False, True])
def test_adc_scale_equals_adc_codes_then_col_scale(isa: bool, bias: bool, noisy: bool) -> None:
    g = torch.Generator().manual_seed(11)
    z = torch.randn(23, 37, generator=g) * 9.0
    noise = torch.randn(23, 37, generator=g) if noisy else None
    r, k = torch.rand(23, generator=g) + 0.5, torch.rand(37, generator=g)
    b = torch.randn(37, generator=g) if bias else None
    ref_codes = z.clone()
    sat_ref = native.adc_codes(ref_codes, noise, 0.4, 15)
    mode = native.COL_MUL_ADD if bias else native.COL_MUL
    ref = native.col_scale(ref_codes, r, k, 0.25, b, mode, out=torch.empty_like(z))
    codes, y = z.clone(), torch.empty_like(z)
    assert native.adc_scale(codes, noise, 0.4, 15, r, k, 0.25, b, y) == sat_ref and sat_ref
    assert torch.equal(codes, ref_codes) and torch.equal(y, ref)


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_weight_grad_equals_torch_ops(isa: bool, layout: str) -> None:
    g = torch.Generator().manual_seed(5)
    t, rows, n = 2, 13, 9
    ga = torch.randn(t, rows, n, generator=g)
    if layout == "transposed":  # (T, R, N) viewing an (T, N, R) buffer, as a one-tile mm backward gives it
        ga = ga.transpose(1, 2).contiguous().transpose(1, 2)
    ws = torch.rand(t, n, generator=g) + 0.1
    ref = ((ga * 0.037) / ws.unsqueeze(1)).permute(2, 0, 1).reshape(n, t * rows)
    assert torch.equal(native.weight_grad(ga, ws, 0.037), ref)
