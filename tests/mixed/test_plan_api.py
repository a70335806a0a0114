"""BitPlan round trips and application, the one-call API, costs vs cimkit.quant.account."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cimkit.errors import ConfigError, DataError
from cimkit.mixed import (
    BitPlan,
    MixedConfig,
    analyze,
    layer_infos,
    mixed_precision,
    quantization_errors,
    tiles_formula,
)
from cimkit.quant import account, layer_bits, quantized_layers
from cimkit.quant.accounting import planned_size_bytes

torch.set_num_threads(1)


class TinyBN(nn.Module):
    """Conv-BN-ReLU ×2 + two Linear layers on 1×8×8 inputs (4 layers with different sizes)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.features(x).flatten(1))))


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """TinyBN fitted for a few steps on a synthetic 4-class task (class = quadrant of a bright blob)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    n = 256
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.3 * torch.randn(n, 1, 8, 8, generator=g)
    r, c = (y // 2) * 4, (y % 2) * 4
    for i in range(n):  # build the synthetic images once (fixture setup, not library code)
        x[i, 0, r[i] : r[i] + 4, c[i] : c[i] + 4] += 1.5
    model = TinyBN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x, y


FAST = dict(probes=12, min_probes=12, hessian_samples=128, zeroq_samples=32, zeroq_iters=30)


def test_plan_json_round_trip_and_validation(tmp_path):
    plan = BitPlan(
        layer_bits={"features.0": 8, "fc1": 2, "fc2": 4},
        a_bits=8,
        size_bytes=123.5,
        budget={"size_bytes": 130.0},
        mean_trace={"fc1": 0.25},
    )
    path = plan.save(tmp_path / "plans" / "plan.json")
    back = BitPlan.load(path)
    assert back == plan
    assert BitPlan.from_json(plan.to_json()) == plan
    assert BitPlan.from_toml(plan.to_toml()) == plan
    with pytest.raises(ConfigError, match="layer_bits.fc1"):
        BitPlan(layer_bits={"fc1": 0})
    with pytest.raises(ConfigError, match="not found"):
        BitPlan.load(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        BitPlan.from_json("{")


def test_plan_to_quant_config_resolves_each_layer():
    plan = BitPlan(layer_bits={"features.0": 6, "features.4": 3, "fc1": 2}, a_bits=8, default_bits=8)
    qc = plan.to_quant_config(lsq=True)
    assert qc.for_layer("features.0").w_bits == 6
    assert qc.for_layer("features.4").w_bits == 3
    assert qc.for_layer("fc1").w_bits == 2
    assert qc.for_layer("fc2").w_bits == 8  # not planned: default bits
    assert qc.for_layer("fc1").lsq and qc.a_bits == 8
    # exact-name patterns: "features.4" must not catch "features.40"
    assert qc.for_layer("features.40").w_bits == 8


def test_layer_infos_and_tiles_formula(trained):
    model, x, _ = trained
    infos = {i.name: i for i in layer_infos(model, x[:2])}
    assert infos["features.0"].macs == 8 * 8 * 8 * 9  # 8 channels × 8×8 outputs × 9 taps
    assert infos["features.4"].macs == 16 * 4 * 4 * 72
    assert infos["fc1"].macs == 64 * 32 and infos["fc1"].rows == 64 and infos["fc1"].cols == 32
    rep = {r["name"]: r for r in account(model, x[:1]).layers}
    for name, info in infos.items():
        assert info.macs == rep[name]["macs"]
    big = infos["fc1"].__class__(
        name="big", kind="linear", weight_shape=(300, 600), params=180000, macs=180000, rows=600, cols=300
    )
    assert tiles_formula(big, 8) == 3 * 2 * 8
    assert tiles_formula(big, 8, bits_per_cell=4) == 3 * 2 * 2
    assert tiles_formula(big, 3, tile_rows=1024, tile_cols=512, bits_per_cell=2) == 1 * 1 * 2


def test_quantization_error_falls_with_bits(trained):
    model, _, _ = trained
    err = quantization_errors(model, ["features.0", "fc1"], [2, 3, 4, 6, 8])
    assert np.all(np.diff(err, axis=1) < 0)
    # fine-grid regime: per-channel rounding noise Δ²/12 per weight, Δ = max|w_c| / (2^(b-1) − 1)
    w = model.fc1.weight.detach()
    delta = w.abs().amax(dim=1) / (2 ** (8 - 1) - 1)  # (C,)
    predicted = float((delta**2 / 12).sum() * w.shape[1])
    assert err[1, 4] == pytest.approx(predicted, rel=0.2)
    assert 10 < err[1, 3] / err[1, 4] < 25  # two more bits: ~16x less


def test_omega_uses_the_quantizer_that_will_be_applied(trained):
    model, x, y = trained
    names = ["features.4", "fc1"]
    mm = quantization_errors(model, names, [2, 4])
    mse = quantization_errors(model, names, [2, 4], observer="mse")
    assert np.all(mse <= mm * (1 + 1e-6)) and np.all(mse[:, 0] < 0.95 * mm[:, 0])  # MSE ranges: less error
    analysis = analyze(model, (x, y), MixedConfig(w_observer="mse", **FAST), progress=False)
    plan = analysis.allocate({"size_uniform_bits": 3})
    assert plan.w_observer == "mse"
    qmodel = TinyBN()
    qmodel.load_state_dict(model.state_dict())
    plan.apply(qmodel.eval(), [x[:64]])
    for name, layer in quantized_layers(qmodel):
        b = plan.layer_bits[name]
        with torch.no_grad():
            err = float(((layer.w_quant(layer.weight) - layer.weight) ** 2).sum())
        j = analysis.table.bits.index(b)
        i = analysis.names.index(name)
        assert err == pytest.approx(analysis.table.quant_error[i, j], rel=1e-5)  # Ω's ||Q(W) − W||²
    with pytest.raises(ConfigError, match="w_observer"):
        MixedConfig(w_observer="mes")


def test_mixed_precision_respects_budget_and_matches_quant_accounting(trained):
    model, x, y = trained
    cfg = MixedConfig(**FAST)
    analysis = analyze(model, (x, y), cfg, progress=False)
    assert analysis.hessian.n_probes == 12 and analysis.names == ["features.0", "features.4", "fc1", "fc2"]
    assert all(v > 0 for v in analysis.hessian.trace.values())
    for bits in (3, 4):
        budget = analysis.uniform_cost("size_bytes", bits)
        plan = analysis.allocate({"size_uniform_bits": bits})
        assert plan.size_bytes <= budget + 1e-9
        assert plan.omega <= analysis.uniform(bits).omega + 1e-12  # the uniform plan is feasible
        qmodel = TinyBN()
        qmodel.load_state_dict(model.state_dict())
        plan.apply(qmodel.eval(), [x[:64]])
        assert {n: wb for n, (wb, _) in layer_bits(qmodel).items()} == plan.layer_bits
        rep = account(qmodel, x[:1])
        tot = rep.total
        # one definition of size_bytes: the plan's figure is the quantized layers' storage in account()
        assert sum(r["size_bytes"] for r in rep.layers) == pytest.approx(plan.size_bytes)
        assert tot["weight_bits"] / 8 < plan.size_bytes  # weights plus scales, biases and activation grids
        assert tot["bops"] == pytest.approx(plan.bops)
        assert len(quantized_layers(qmodel)) == 4
    # budgets combine: BOPs and tiles too
    plan = analysis.allocate({"size_uniform_bits": 6, "bops_uniform_bits": 3, "tiles": 10})
    assert plan.bops <= analysis.uniform_cost("bops", 3) + 1e-6
    assert plan.tiles <= 10
    # ties and fixed layers
    plan = analysis.allocate({"size_uniform_bits": 4}, ties=[["features.0", "fc2"]], fixed={"fc1": 2})
    assert plan.layer_bits["features.0"] == plan.layer_bits["fc2"] and plan.layer_bits["fc1"] == 2
    with pytest.raises(ConfigError, match="infeasible"):
        analysis.allocate({"size_uniform_bits": 1.5})
    with pytest.raises(ConfigError, match="unknown budget"):
        analysis.allocate({"size": 3})
    with pytest.raises(ConfigError, match="unknown layer in ties"):
        analysis.allocate(100.0, ties=[["fc9", "fc1"]])


def test_pareto_and_random_plans_from_analysis(trained):
    model, x, y = trained
    analysis = analyze(model, (x, y), MixedConfig(**FAST), progress=False)
    front = analysis.pareto(max_points=None)
    for p in front[:: max(1, len(front) // 5)]:
        ilp = analysis.allocate(p.cost)
        assert ilp.omega == pytest.approx(p.omega, rel=1e-9)
    budget = analysis.uniform_cost("size_bytes", 4)
    rnd = analysis.random(budget, 3, seed=1, min_fraction=0.8)
    assert all(0.8 * budget <= r.size_bytes <= budget for r in rnd)
    best = analysis.allocate(budget)
    assert all(best.omega <= r.omega + 1e-12 for r in rnd)


def test_one_call_with_apply_qat_and_data_free(trained):
    from cimkit.train import TrainConfig

    model, x, y = trained
    qmodel = TinyBN()
    qmodel.load_state_dict(model.state_dict())
    qmodel.eval()
    loader = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 256, 64)]
    before = qmodel.fc1.weight.detach().clone()
    plan = mixed_precision(
        qmodel, loader, {"size_uniform_bits": 4}, apply=True, qat=TrainConfig(epochs=1, lr=1e-3), progress=False, **FAST
    )
    assert set(layer_bits(qmodel)) == set(plan.layer_bits)
    assert not torch.equal(qmodel.fc1.weight.detach(), before)  # QAT moved the weights
    # data-free: ZeroQ distilled inputs drive the Hessian; same layer set, a valid plan
    fresh = TinyBN()
    fresh.load_state_dict(model.state_dict())
    plan_free = mixed_precision(
        fresh.eval(), None, {"size_uniform_bits": 4}, input_shape=(1, 8, 8), progress=False, **FAST
    )
    assert set(plan_free.layer_bits) == set(plan.layer_bits)
    uniform4 = sum(planned_size_bytes(i.params, i.cols, i.bias, 4) for i in layer_infos(model, x[:1]))
    assert plan_free.size_bytes <= uniform4 and plan.size_bytes <= uniform4
    assert not quantized_layers(fresh)  # apply=False leaves the model alone
    with pytest.raises(DataError, match="input_shape"):
        mixed_precision(fresh, None, 100.0, progress=False, **FAST)


def test_mixed_config_validation_and_round_trip():
    cfg = MixedConfig(bits=[8, 2, 4], size_uniform_bits=3.5, ties=[["a", "b"]], fixed={"a": 8})
    assert cfg.bits == [2, 4, 8]
    assert MixedConfig.from_toml(cfg.to_toml()) == cfg
    with pytest.raises(ConfigError, match="bits"):
        MixedConfig(bits=[2, 2])
    with pytest.raises(ConfigError, match="fixed.a"):
        MixedConfig(fixed={"a": 5})
    with pytest.raises(ConfigError, match="tol"):
        MixedConfig(tol=0)
    with pytest.raises(ConfigError, match="size_bytes"):
        MixedConfig(size_bytes=-1)
