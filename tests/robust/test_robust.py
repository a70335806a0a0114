"""Relative weight noise: statistics and exact restore, the weight_noise protocol, noise-aware
training (noisy only while training, gradients to the clean weights, undone exactly), user methods."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import cimkit.experiment  # noqa: F401  (loads the plugins)
from cimkit.data import Dataset
from cimkit.data.core import DataKind
from cimkit.errors import ConfigError
from cimkit.experiment import RunContext
from cimkit.experiment.pipeline import PipelineConfig, PipelineVariant
from cimkit.models import create
from cimkit.nn import undo_
from cimkit.quant import QuantConfig, quantize_
from cimkit.robust import METHODS, NoiseConfig, NoisyLayer, noise_scale, perturbed_weights, weight_noise_
from cimkit.tasks import get_task
from cimkit.train import TrainConfig


def _siren() -> nn.Module:
    torch.manual_seed(0)
    return create("siren", in_features=2, out_features=1, hidden=32, layers=2)


def test_perturbed_weights_statistics_and_exact_restore() -> None:
    m = _siren()
    clean = {k: v.clone() for k, v in m.state_dict().items()}
    w = m.net[2].weight
    with perturbed_weights(m, 0.02, seed=1):
        delta = w.detach() - clean["net.2.weight"]
        ref = 0.02 * clean["net.2.weight"].abs().amax(dim=1, keepdim=True)  # each channel's abs-max
        z = delta / ref  # ~ N(0, 1): 32 x 32 samples
        assert abs(float(z.mean())) < 0.15 and abs(float(z.std()) - 1.0) < 0.1
        assert torch.equal(m.net[0].bias, clean["net.0.bias"])  # biases untouched
    assert all(torch.equal(v, clean[k]) for k, v in m.state_dict().items())
    with perturbed_weights(m, 0.02, seed=1):
        again = w.detach().clone()
    with perturbed_weights(m, 0.02, seed=1):
        assert torch.equal(w.detach(), again)  # same seed, same draw
    assert noise_scale(torch.tensor([[1.0, -3.0], [2.0, 0.5]]), "layer").item() == 3.0


def test_noise_aware_layers_train_noisy_and_evaluate_clean(gen: torch.Generator) -> None:
    m = _siren()
    x = torch.rand(64, 2, generator=gen) * 2 - 1
    ref = m(x).detach()
    n = weight_noise_(copy.deepcopy(m), NoiseConfig(level=0.05, seed=2))
    assert all(isinstance(mod, NoisyLayer) for mod in n.net if isinstance(mod, nn.Linear))
    n.eval()
    assert torch.equal(n(x), ref)  # evaluation is clean
    n.train()
    y1, y2 = n(x), n(x)
    assert not torch.equal(y1, y2) and not torch.equal(y1.detach(), ref)
    y1.square().sum().backward()
    assert all(p.grad is not None for p in n.parameters())  # the gradient reaches the clean weights
    with pytest.raises(ConfigError, match="already transformed"):
        weight_noise_(quantize_(copy.deepcopy(m), QuantConfig(a_bits=None)))
    plain = undo_(n).eval()
    assert not any(isinstance(mod, NoisyLayer) for mod in plain.modules())
    assert torch.equal(plain(x), ref)


@pytest.fixture
def coords_ctx(tmp_path: Path) -> RunContext:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 2, generator=g) * 2 - 1
    y = torch.sin(3 * x[:, :1]) * torch.cos(2 * x[:, 1:]) * 0.5 + 0.5
    data = Dataset(name="tiny-fit", kind=DataKind.COORDS, x_train=x, y_train=y, x_test=x, y_test=y, num_classes=1,
                   in_channels=1, input_size=(2,))  # fmt: skip
    return RunContext(data=data, baseline=_siren().eval(), train_cfg=TrainConfig(epochs=2, batch_size=64, lr=1e-4),
                      seed=0, device=torch.device("cpu"), out_dir=tmp_path, cache_dir=tmp_path / "cache",
                      baseline_key="s", task=get_task("regression"), eval_batch_size=256, progress=False)  # fmt: skip


def test_weight_noise_protocol_and_noise_aware_step(coords_ctx: RunContext) -> None:
    cfg = PipelineConfig(steps=[{"op": "robust_train", "epochs": 1, "level": 0.02, "lr": 1e-4}],
                         eval={"protocol": "weight_noise", "levels": [0.0, 0.01, 0.05], "repeats": 3})  # fmt: skip
    res = PipelineVariant("na", cfg).run(coords_ctx)
    m = res.metrics
    assert res.units["psnr"] == "dB" and m["psnr"] == m["psnr_w1pct"] and m["psnr_w0pct_std"] == 0.0
    assert m["psnr_w0pct"] > m["psnr_w1pct"] > m["psnr_w5pct"]  # more noise, lower PSNR
    assert res.details["finetune"][0]["train"]["epochs"] == 1 and m["noise_aware_layers"] == 3
    rec = {"name": "na", "kind": "pipeline", "metrics": m, "units": res.units, "details": res.details}
    assert any("weight noise" in s.title for s in PipelineVariant.report_sections([rec]))


def test_user_methods_plug_in(coords_ctx: RunContext) -> None:
    seen: list[float] = []

    def halve(state, ctx, cfg, step) -> None:  # a user method: shrink every weight (for the test)
        with torch.no_grad():
            for p in state.model.parameters():
                p.mul_(cfg.options["factor"])
        seen.append(cfg.options["factor"])

    METHODS.add("test_scale", halve, "scale the weights (test)")
    try:
        cfg = PipelineConfig(steps=[{"op": "robust_train", "method": "test_scale", "options": {"factor": 0.0}}])
        res = PipelineVariant("u", cfg).run(coords_ctx)
        assert seen == [0.0]
        # every weight and bias is 0, so the model outputs 0 and the MSE is the mean of y²
        assert res.metrics["mse"] == pytest.approx(float((coords_ctx.data.y_test**2).mean()), rel=1e-5)
        with pytest.raises(ConfigError, match="robustness method"):
            PipelineConfig(steps=[{"op": "robust_train", "method": "nope"}])
    finally:
        METHODS._entries.pop("test_scale")
