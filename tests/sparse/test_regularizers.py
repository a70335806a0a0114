"""SSL group Lasso, Group-HS and Hoyer-Square: values against their formulas, gradients against finite
differences (float64); the callback's gradient; thresholds to masks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cimkit.sparse import Pattern, get_mask, group_view
from cimkit.sparse.regularizers import (
    Regularizer,
    RegularizerCallback,
    RegularizerConfig,
    group_hs,
    group_lasso,
    hoyer_square,
)
from cimkit.sparse.removal import remove

from ._models import build


def _rows(seed: int = 0) -> torch.Tensor:
    return torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_values_match_their_formulas() -> None:
    w = _rows()
    norms = [float(torch.sqrt((r * r).sum())) for r in w]
    assert float(group_lasso(w)) == pytest.approx(sum(norms), rel=1e-12)
    assert float(group_hs(w)) == pytest.approx(sum(norms) ** 2 / sum(n * n for n in norms), rel=1e-12)
    flat = w.reshape(-1)
    assert float(hoyer_square(flat)) == pytest.approx(float(flat.abs().sum()) ** 2 / float((flat**2).sum()), rel=1e-12)
    one_hot = torch.zeros(9, 4, dtype=torch.float64)
    one_hot[3, 1] = 2.5
    assert float(group_hs(one_hot)) == pytest.approx(1.0) and float(hoyer_square(one_hot)) == pytest.approx(1.0)
    assert float(group_hs(torch.ones(9, 4, dtype=torch.float64))) == pytest.approx(9.0)  # = number of groups
    assert float(group_hs(3.0 * w)) == pytest.approx(float(group_hs(w)), rel=1e-12)  # scale invariant


@pytest.mark.parametrize("fn", [group_lasso, group_hs, hoyer_square], ids=lambda f: f.__name__)
def test_gradients_match_finite_differences(fn) -> None:
    w = _rows(1).requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (w,), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_analytic_gradients() -> None:
    w = _rows(2).requires_grad_(True)
    n = w.detach().norm(dim=1, keepdim=True)
    (g,) = torch.autograd.grad(group_lasso(w), w)
    assert torch.allclose(g, w.detach() / n)  # d/dw_g ||w_g|| = w_g / ||w_g||
    s1, s2 = float(n.sum()), float((n**2).sum())
    (g,) = torch.autograd.grad(group_hs(w), w)
    assert torch.allclose(g, 2 * s1 / s2 * w.detach() / n - 2 * s1**2 / s2**2 * w.detach())
    x = w.detach().reshape(-1).clone().requires_grad_(True)
    (g,) = torch.autograd.grad(hoyer_square(x), x)
    a, q = float(x.detach().abs().sum()), float((x.detach() ** 2).sum())
    assert torch.allclose(g, 2 * a / q * x.detach().sign() - 2 * a * a / q**2 * x.detach())


def test_a_zero_group_has_zero_subgradient() -> None:
    w = _rows(3)
    w[2] = 0
    w.requires_grad_(True)
    for fn in (group_lasso, group_hs):
        (g,) = torch.autograd.grad(fn(w), w)
        assert torch.isfinite(g).all() and bool((g[2] == 0).all())


class _SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c2(torch.relu(self.bn(self.c1(x)))))  # (B, 6, 4, 4)
        return self.fc(h.flatten(1))


@pytest.mark.parametrize("kind", ["group_lasso", "group_hs"])
def test_regularizer_on_a_model_matches_finite_differences(kind: str) -> None:
    torch.manual_seed(0)
    model = _SmallCNN().double().eval()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    reg = Regularizer(model, RegularizerConfig(kind=kind, patterns=["filter", "channel"]), x)
    assert len(reg.structures) == 4  # c1's and c2's units, each as filter rows and as consumer columns
    conv = model.c2
    w0 = conv.weight.detach().clone()
    del conv.weight  # a plain tensor attribute from now on, so the regularizer is a function of it

    def r_of(w: torch.Tensor) -> torch.Tensor:
        conv.weight = w
        return reg(model)

    assert torch.autograd.gradcheck(r_of, (w0.clone().requires_grad_(True),), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_callback_adds_strength_times_the_gradient() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    reg = Regularizer(net, RegularizerConfig(kind="group_lasso", patterns=["filter"], coupled=False, strength=0.3))
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    RegularizerCallback(reg).after_backward(net, 0)
    w = net[0].weight.detach()
    expect = 1 + 0.3 * w / w.norm(dim=1, keepdim=True)
    assert torch.allclose(net[0].weight.grad, expect, atol=1e-6)
    assert torch.equal(net[0].bias.grad, torch.ones(5))  # biases are not in filter groups


def test_threshold_turns_small_groups_into_removable_masks() -> None:
    model, x = build("lenet5")
    with torch.no_grad():  # as if group Lasso had driven three conv2 filters and one fc1 column near zero
        model.features[3].weight[[1, 5, 9]] *= 1e-4
    reg = Regularizer(model, RegularizerConfig(patterns=["filter", "channel"]), x)
    pruned = reg.to_masks_(model, threshold=0.01)
    assert pruned["features.3:filter"] == 3
    assert get_mask(model.features[3], "bias") is not None  # the coupled unit is masked whole
    with torch.no_grad():
        ref = model(x)
    small = remove(model, x)
    assert small.features[3].out_channels == 13 and small.classifier[1].in_features == 13 * 25
    with torch.no_grad():
        assert torch.allclose(small(x), ref, atol=1e-5)


def test_per_layer_and_elementwise_structures() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    reg = Regularizer(net, RegularizerConfig(kind="group_lasso", patterns=["block"], coupled=False, tile_rows=16,
                                             tile_cols=8))  # fmt: skip
    expect = sum(group_view(m.weight, Pattern.BLOCK, 16, 8).norm(dim=1).sum() for m in (net[0], net[2]))
    assert float(reg(net).detach()) == pytest.approx(float(expect.detach()), rel=1e-6)
    hs = Regularizer(net, RegularizerConfig(kind="hoyer_square", patterns=["unstructured"]))
    with torch.no_grad():
        assert float(hs(net)) == pytest.approx(float(sum(hoyer_square(m.weight.reshape(-1)) for m in (net[0], net[2]))))
    with pytest.raises(ValueError, match="group_hs"):
        RegularizerConfig(kind="hoyer_square", patterns=["filter"])
