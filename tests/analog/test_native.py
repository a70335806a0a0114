"""The fused CPU kernels of no-grad analog inference give the PyTorch route's bits."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from cimkit import analog
from cimkit.analog import native

pytestmark = pytest.mark.skipif(not native.available(), reason=f"native kernels not built: {native.status()}")

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
    calls = {"dac_rows": 0, "adc_rows": 0, "read_pairs": 0}
    for name in calls:
        fn = getattr(native, name)

        def counted(*a, _fn=fn, _name=name, **k):
            calls[_name] += 1
            return _fn(*a, **k)

        monkeypatch.setattr(native, name, counted)
    torch.manual_seed(0)
    model = analog.convert(_Mlp().eval(), "standard", device).eval()
    analog.program(model, 3)
    analog.drift(model, 3600.0)
    x = torch.randn(2, 33, 600)  # leading dims fold into the batch
    outs = []
    for on in (True, False):
        prev = native.enable(on)
        try:
            analog.program(model, 3)  # the same chip and the same read-noise stream for both
            analog.drift(model, 3600.0)
            before = dict(calls)
            with torch.no_grad():
                outs.append(model(x))
            if on:
                fwd = {k: calls[k] - before[k] for k in calls}
        finally:
            native.enable(prev)
    assert fwd == {"dac_rows": 3, "adc_rows": 3, "read_pairs": 3}  # every layer took each kernel once
    assert torch.equal(outs[0], outs[1])
    assert outs[0].abs().sum() > 0


def test_without_a_compiler_the_pytorch_route_runs(tmp_path) -> None:
    code = ("from cimkit.analog import native; import cimkit.analog as a, torch; "
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
    code = "from cimkit.analog import native; print(native.status())"
    env = {**os.environ, "CIMKIT_NATIVE_DIR": str(tmp_path / "k")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("native ("), out.stdout + out.stderr
    assert len(list((tmp_path / "k").glob("periphery-*.so"))) == 1
