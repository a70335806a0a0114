"""ANN→SNN conversion: a digits MLP reaches its ANN accuracy at T = 32, QCFS equivalence, residual
networks converge to the ANN, count-gated max pooling, amplitude folding, errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from cimkit.errors import ConfigError
from cimkit.models import create
from cimkit.snn import IF, QCFS, ConvertConfig, SpikingMaxPool2d, SpikingNet, measure_activity, qcfs_, to_snn
from cimkit.train import TrainConfig, evaluate, fit


@pytest.mark.parametrize("norm", ["percentile", "max"])
def test_digits_mlp_reaches_ann_accuracy_at_t32(digits_mlp, norm: str) -> None:  # type: ignore[no-untyped-def]
    ann, acc, calib, test = digits_mlp
    snn = to_snn(copy.deepcopy(ann), calib, ConvertConfig(num_steps=32, norm=norm))
    assert isinstance(snn, SpikingNet) and sum(isinstance(m, IF) for m in snn.modules()) == 2
    s_acc = float(evaluate(snn, test)["accuracy"])
    assert s_acc >= acc - 0.01, (s_acc, acc)
    # thresholds are the activations' max / 99.9th percentile (max >= percentile)
    th = snn.conversion["thresholds"]
    assert all(v > 0 for v in th.values())
    if norm == "percentile":
        mx = to_snn(copy.deepcopy(ann), calib, ConvertConfig(norm="max")).conversion["thresholds"]
        assert all(th[k] <= mx[k] + 1e-6 for k in th)


def test_spikes_are_binary_after_amplitude_folding(digits_mlp) -> None:  # type: ignore[no-untyped-def]
    ann, _, calib, _test = digits_mlp
    folded = to_snn(copy.deepcopy(ann), calib, ConvertConfig(num_steps=16))
    raw = to_snn(copy.deepcopy(ann), calib, ConvertConfig(num_steps=16, fold_amplitudes=False))
    assert len(folded.conversion["folded"]) == 2
    st = measure_activity(folded, calib[:1])
    hidden = st.synapses[1:]
    assert [s.binary_input for s in st.synapses] == [False, True, True]  # direct input, then spikes
    assert all(s.input_level == 1.0 for s in hidden)
    st_raw = measure_activity(raw, calib[:1])
    assert all(s.input_level != 1.0 for s in st_raw.synapses[1:])  # amplitude λ kept
    x = calib[0]
    with torch.no_grad():
        a, b = folded(x), raw(x)
    assert (a.argmax(1) == b.argmax(1)).float().mean() >= 0.98
    assert torch.allclose(a, b, atol=1e-3 * float(b.abs().max()))


@pytest.mark.parametrize("levels", [2, 4, 8])
def test_qcfs_equals_if_rate_at_t_equal_l(levels: int) -> None:
    """Bu et al. 2022: an IF neuron (threshold λ, U0 = λ/2, reset by subtraction) over T = L steps of a
    constant input x fires exactly clip(floor(x L/λ + 1/2), 0, L) times: the QCFS activation."""
    lam = 1.7
    x = torch.rand(4000, generator=torch.Generator().manual_seed(levels), dtype=torch.float64) * 3 - 0.5
    q = QCFS(levels, lam).double()
    with torch.no_grad():
        y = q(x)
    n = IF(threshold=lam, init_mem_frac=0.5, graded_spikes_factor=lam).double()
    n.num_steps = levels
    rate = n(x.repeat(levels)).view(levels, -1).mean(0)
    assert torch.allclose(rate, y, atol=1e-12)


def test_qcfs_network_converts(digits, digits_mlp) -> None:  # type: ignore[no-untyped-def]
    from cimkit.data import TensorLoader

    ann, _, calib, test = digits_mlp
    q = qcfs_(copy.deepcopy(ann), 4, calib)
    assert sum(isinstance(m, QCFS) for m in q.modules()) == 2
    fit(q, TensorLoader(digits.x_train, digits.y_train, 64, shuffle=True, seed=1), TrainConfig(epochs=4, lr=1e-3),
        progress=False)  # fmt: skip
    q_acc = float(evaluate(q, test)["accuracy"])
    snn = to_snn(copy.deepcopy(q), calib, ConvertConfig(num_steps=8))
    assert snn.conversion["method"] == "qcfs"
    lam = [float(m.threshold.detach()) for m in q.modules() if isinstance(m, QCFS)]
    assert sorted(snn.conversion["thresholds"].values()) == pytest.approx(sorted(lam))
    assert float(evaluate(snn, test)["accuracy"]) >= q_acc - 0.02
    with pytest.raises(ConfigError, match="qcfs"):
        to_snn(copy.deepcopy(ann), calib, ConvertConfig(method="qcfs"))


def test_residual_network_converges_to_the_ann(digits) -> None:  # type: ignore[no-untyped-def]
    """ResNet-20 (functional ReLUs, residual adds, BatchNorm, global average pooling): the SNN's mean
    output approaches the ANN's logits like 1/T."""
    from cimkit.data import TensorLoader

    torch.manual_seed(0)
    ann = create("resnet20", **digits.model_spec(), width=4, blocks_per_stage=1)
    train = TensorLoader(digits.x_train, digits.y_train, 64, shuffle=True, seed=0)
    fit(ann, train, TrainConfig(epochs=1, lr=3e-3), progress=False)
    ann.eval()
    calib = [xb for _, (xb, _) in zip(range(4), train)]
    x = digits.x_test[:128]
    with torch.no_grad():
        ya = ann(x)
    err = {}
    for t in (32, 128):
        snn = to_snn(copy.deepcopy(ann), calib, ConvertConfig(num_steps=t, norm="max"))
        with torch.no_grad():
            err[t] = float((snn(x) - ya).norm() / ya.norm())
    assert sum(isinstance(m, IF) for m in snn.modules()) == 7  # stem + 2 per block x 3 blocks
    assert err[128] < 0.06 and err[128] < 0.5 * err[32], err


def test_count_gated_max_pooling_tracks_the_max_rate() -> None:
    t = 64
    rates = torch.tensor([0.1, 0.55, 0.3, 0.8])  # one 2x2 window, per-input firing probabilities per step
    ifn = IF(threshold=1.0)
    ifn.num_steps = t
    s = ifn(rates.view(1, 1, 2, 2).repeat(t, 1, 1, 1))  # regular spike trains, rate = rates
    pool = SpikingMaxPool2d(2)
    pool.num_steps = t
    out = pool(s)
    counts = s.view(t, 4).sum(0)
    assert int(out.sum()) in range(int(counts.max()) - 1, int(counts.max()) + 1)
    assert float(nn.MaxPool2d(2)(s).sum()) > float(counts.max()) + 5  # plain max pooling overcounts


def test_lenet_pools_become_gated() -> None:
    ann = create("lenet5", in_channels=1, num_classes=10, input_size=(8, 8)).eval()
    snn = to_snn(ann, [torch.randn(4, 1, 8, 8)], ConvertConfig(num_steps=4))
    assert sorted(snn.conversion["spiking_pools"]) == ["features.2", "features.5"]
    assert sum(isinstance(m, SpikingMaxPool2d) for m in snn.modules()) == 2


def test_conversion_errors() -> None:
    gelu = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2))
    with pytest.raises(ConfigError, match="GELU"):
        to_snn(gelu, [torch.zeros(2, 4)])
    with pytest.raises(ConfigError, match="no ReLU"):
        to_snn(nn.Sequential(nn.Linear(4, 2)), [torch.zeros(2, 4)])
    snn = to_snn(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), [torch.randn(2, 4)])
    with pytest.raises(ConfigError, match="already"):
        to_snn(snn, [torch.zeros(2, 4)])
    with pytest.raises(ConfigError, match="encoder"):
        ConvertConfig(encoder="latency")
    assert math.isfinite(float(snn(torch.randn(3, 4)).sum().detach()))


@pytest.mark.parametrize("name", ["mlp", "lenet5", "small_cnn", "vgg_small", "resnet20"])
def test_every_registered_image_model_converts(name: str) -> None:
    m = create(name, in_channels=1, num_classes=10, input_size=(16, 16)).eval()
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    snn = to_snn(m, [x], ConvertConfig(num_steps=4))
    with torch.no_grad():
        y = snn(x)
    assert y.shape == (4, 10) and bool(torch.isfinite(y).all())
    assert sum(isinstance(n, IF) for n in snn.modules()) == len(snn.conversion["thresholds"])


def test_rate_coded_conversion(digits, digits_mlp) -> None:  # type: ignore[no-untyped-def]
    """Bernoulli input spikes rescaled to the network's normalised units (E[input] = x)."""
    from cimkit.snn import RateEncoder

    ann, acc, calib, test = digits_mlp
    enc = RateEncoder(gain=tuple(digits.std), offset=tuple(digits.mean), rescale=True, seed=0)
    snn = to_snn(copy.deepcopy(ann), calib, ConvertConfig(num_steps=64, encoder="rate"), encoder=enc)
    assert float(evaluate(snn, test)["accuracy"]) >= acc - 0.05
