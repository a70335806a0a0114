from __future__ import annotations

import pytest
import torch
from torch import nn

from cimkit.errors import ConfigError
from cimkit.models import create, list_models, model_input_kind, model_requirements


def _needs(name: str) -> None:
    """Skip (saying why) a model whose optional extra is not installed."""
    for pkg in model_requirements(name):
        pytest.importorskip(pkg, reason=f"model '{name}' needs the optional package '{pkg}' (pip install 'cimkit[hf]')")

IMAGE_SHAPES = [(1, (28, 28)), (1, (8, 8)), (3, (32, 32))]


@pytest.mark.parametrize("name", [n for n in list_models() if model_input_kind(n) == "image"])
@pytest.mark.parametrize(("cin", "size"), IMAGE_SHAPES)
def test_image_models_forward_backward(name: str, cin: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    m = create(name, in_channels=cin, num_classes=7, input_size=size)
    x = torch.randn(3, cin, *size)
    out = m(x)
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    leaves = {type(mod) for mod in m.modules() if not list(mod.children())}
    assert leaves & {nn.Linear, nn.Conv2d}, "models must use plain Linear/Conv2d leaves"


# what a text / coordinates dataset describes (Dataset.model_spec): 65 characters in windows of 32,
# or 2-D coordinates -> 3 channels
TEXT_SPEC = {"in_channels": 1, "num_classes": 65, "input_size": (32,), "vocab_size": 65, "block_size": 32}
COORDS_SPEC = {"in_channels": 1, "num_classes": 3, "input_size": (8, 8), "in_features": 2, "out_features": 3}


@pytest.mark.parametrize("name", [n for n in list_models() if model_input_kind(n) == "text"])
def test_text_models(name: str) -> None:
    _needs(name)
    m = create(name, **TEXT_SPEC)
    out = m(torch.randint(0, 65, (4, 32)))
    assert out.shape in ((4, 65), (4, 32, 65))  # the next character, or the next one of every position


@pytest.mark.parametrize("name", [n for n in list_models() if model_input_kind(n) == "coords"])
def test_coords_models(name: str) -> None:
    m = create(name, **COORDS_SPEC)
    out = m(torch.rand(5, 2) * 2 - 1)
    assert out.shape == (5, 3) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_every_model_kind_is_tested() -> None:
    assert {model_input_kind(n) for n in list_models()} <= {"image", "text", "coords"}


def test_same_seed_same_init() -> None:
    torch.manual_seed(1)
    a = create("lenet5")
    torch.manual_seed(1)
    b = create("lenet5")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_unknown_model_and_option() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'lenet5'"):
        create("lenet")
    with pytest.raises(ConfigError, match=r"no option 'depth'"):
        create("lenet5", depth=3)


def test_resnet20_parameter_count() -> None:
    # He et al. 2016, Table 6: ResNet-20 has 0.27M parameters (with 1x1 projection shortcuts: ~0.27M)
    n = sum(p.numel() for p in create("resnet20", in_channels=3, input_size=(32, 32)).parameters())
    assert 0.26e6 < n < 0.29e6
