"""The model registry (kept apart so model files can register without import cycles)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from cimkit.plugins import load_plugins
from cimkit.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", loader=load_plugins)
