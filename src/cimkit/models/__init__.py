"""Model registry: plain PyTorch models built from (in_channels, num_classes, input_size).

``create("lenet5", in_channels=1, num_classes=10, input_size=(28, 28))``;
``list_models("res*")``. Every model uses plain ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` /
``nn.BatchNorm*`` leaves so that quantization and analog conversion can swap them.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from cimkit.errors import ConfigError
from cimkit.models import cnn, resnet, text  # noqa: F401  (registers the models)
from cimkit.models.registry import MODELS

__all__ = ["MODELS", "create", "describe_models", "list_models", "model_input_kind"]


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard."""
    return MODELS.list(pattern)


def describe_models(pattern: str = "*") -> list[tuple[str, str]]:
    """``(name, one-line description)`` pairs."""
    return MODELS.describe(pattern)


def model_input_kind(name: str) -> str:
    """``"image"`` or ``"text"``: the kind of dataset a model consumes."""
    return MODELS.entry(name).meta.get("inputs", "image")


def create(
    name: str,
    in_channels: int = 1,
    num_classes: int = 10,
    input_size: tuple[int, ...] = (28, 28),
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model. Unknown names or keyword arguments raise ConfigError."""
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters
    bad = [k for k in kwargs if k not in params]
    if bad:
        allowed = [p for p in params if p not in ("in_channels", "num_classes", "input_size")]
        raise ConfigError(
            f"model '{name}' has no option '{bad[0]}'; allowed: {', '.join(allowed) or '(none)'}"
        )
    if num_classes < 1 or in_channels < 1:
        raise ConfigError(f"model '{name}': in_channels and num_classes must be >= 1")
    return factory(in_channels=in_channels, num_classes=num_classes, input_size=tuple(input_size), **kwargs)
