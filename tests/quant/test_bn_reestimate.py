"""BatchNorm re-estimation: exact batch averages, eval-mode everything else, state restored, clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cimkit.data import TensorLoader, load_dataset
from cimkit.errors import ConfigError, DataError
from cimkit.models import create
from cimkit.quant import QuantConfig, batchnorm_layers, calibrate, quantize_, reestimate_bn_
from cimkit.quant.variants import PTQConfig
from cimkit.train import TrainConfig, fit

torch.set_num_threads(1)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Dropout(0.5), nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU(), nn.Conv2d(4, 4, 3),
        nn.BatchNorm2d(4),
    )  # fmt: skip


def test_statistics_are_exact_batch_averages_with_dropout_off() -> None:
    net = _net().train()
    gen = torch.Generator().manual_seed(1)
    batches = [2.0 * torch.randn(32, 1, 8, 8, generator=gen) + 1.0 for _ in range(3)]
    bn = net[2]
    bn.running_mean.fill_(7.0)
    bn.running_var.fill_(0.01)
    with torch.no_grad():  # what the first BN sees with dropout off: the conv of the raw input
        feats = [net[1](x) for x in batches]  # 3 x (32, 4, 6, 6)
    want_mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)  # (4,)
    want_var = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in feats]).mean(0)  # (4,)
    reestimate_bn_(net, batches)
    torch.testing.assert_close(bn.running_mean, want_mean, rtol=1e-5, atol=1e-6)
    # with dropout on, the variance of the conv output would be about twice as large
    torch.testing.assert_close(bn.running_var, want_var, rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == 3
    assert bn.momentum == 0.3 and net[5].momentum == 0.1  # momenta and mode restored
    assert net.training and all(m.training for m in net.modules())


@pytest.fixture(scope="module")
def digits_cnn() -> tuple:
    ds = load_dataset("digits")
    torch.manual_seed(0)
    model = create("small_cnn", input_size=(8, 8))
    fit(model, TensorLoader(ds.x_train, ds.y_train, 64, shuffle=True, seed=0),
        TrainConfig(epochs=3, lr=3e-3, batch_size=64, seed=0), progress=False)  # fmt: skip
    return ds, model.eval()


def _bn_output_error(model: nn.Module, x: torch.Tensor) -> float:
    """Largest deviation, over BatchNorm channels, of the eval-mode output's mean from beta and std from |gamma|
    (in units of |gamma|): zero when the running statistics describe the data exactly."""
    outs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: outs.append(o)) for _, m in batchnorm_layers(model)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    err = 0.0
    for (_, bn), o in zip(batchnorm_layers(model), outs):
        g = bn.weight.detach().abs()
        err = max(err, float(((o.mean(dim=(0, 2, 3)) - bn.bias.detach()).abs() / g).max()))
        err = max(err, float(((o.std(dim=(0, 2, 3)) - g).abs() / g).max()))
    return err


def test_quantized_model_statistics_match_its_own_activations(digits_cnn) -> None:
    ds, model = digits_cnn
    x = ds.x_train[:512]
    q = quantize_(copy.deepcopy(model), QuantConfig(w_bits=2, a_bits=8))
    calibrate(q, [x[:256], x[256:]])
    q.eval()
    before = _bn_output_error(q, x)
    reestimate_bn_(q, [x[i : i + 128] for i in range(0, 512, 128)])
    after = _bn_output_error(q, x)
    assert not q.training
    # 2-bit weights shift the BN inputs: the float statistics are off by > 10 % of |gamma|; afterwards
    # the only mismatch left is the second BN seeing batch-normalized (train-mode) inputs during
    # re-estimation, a few percent at batch size 128.
    assert before > 0.1, before
    assert after < 0.05 and after < before / 3, (before, after)


def test_errors_keep_the_old_statistics() -> None:
    net = _net()
    old = net[2].running_mean.clone()
    with pytest.raises(DataError, match="no batches"):
        reestimate_bn_(net, [])
    with pytest.raises(DataError, match="reestimate_bn_: a batch must be a tensor or an"):
        reestimate_bn_(net, ["not a tensor"])
    torch.testing.assert_close(net[2].running_mean, old)
    assert net[2].momentum == 0.3
    with pytest.raises(ConfigError, match="no BatchNorm"):
        reestimate_bn_(nn.Sequential(nn.Linear(3, 2)), [torch.zeros(1, 3)])
    with pytest.raises(ConfigError, match="max_batches"):
        reestimate_bn_(net, [torch.zeros(1, 1, 8, 8)], max_batches=0)
    with pytest.raises(ConfigError, match="fold_bn = false"):
        PTQConfig(bn_reestimate=True)


def test_ptq_variant_with_bn_reestimation(tmp_path, monkeypatch) -> None:
    from cimkit.experiment import ExperimentConfig, run_experiment
    from cimkit.quant import steps as variants  # the quantize step runs the re-estimation

    calls: list[int] = []

    def counting(model: nn.Module, batches, **kw):  # the real re-estimation, counted
        calls.append(len(batches))
        return reestimate_bn_(model, batches, **kw)

    monkeypatch.setattr(variants, "reestimate_bn_", counting)

    cfg = ExperimentConfig.from_dict({
        "name": "bn", "dataset": "digits", "model": "small_cnn", "threads": 1,
        "train": {"epochs": 3, "batch_size": 64, "lr": 3e-3},
        "variants": [
            {"kind": "ptq", "name": "plain", "w_bits": 3, "a_bits": 8, "fold_bn": False},
            {"kind": "ptq", "name": "bn", "w_bits": 3, "a_bits": 8, "fold_bn": False, "bn_reestimate": True},
        ],
    })  # fmt: skip
    res = run_experiment(cfg, tmp_path, progress=False)
    by = {v["name"]: v["metrics"] for v in res["variants"]}
    assert set(by) == {"plain", "bn"}
    assert by["bn"]["size_bytes"] == by["plain"]["size_bytes"]  # same quantized weights, other statistics
    assert 0.0 <= by["bn"]["accuracy"] <= 1.0
    assert calls == [8]  # only the bn_reestimate variant ran it, on its 8 calibration batches
