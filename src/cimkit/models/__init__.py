"""Model registry: plain PyTorch models built from what a dataset describes.

``create("lenet5", in_channels=1, num_classes=10, input_size=(28, 28))`` or
``create("char_gpt", **dataset.model_spec())``; ``list_models("res*")``. A factory takes the
dataset-description keys its signature names (``in_channels``, ``num_classes``, ``input_size``,
``vocab_size``, ``block_size``, ``in_features``, ``out_features``; the others are ignored) plus its
own options. Every model uses plain ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.BatchNorm*``
leaves so that every transform can reach them.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from cimkit.errors import ConfigError
from cimkit.models import cnn, gpt, resnet, siren, text, vit  # noqa: F401  (registers the models)
from cimkit.models.registry import MODELS
from cimkit.plugins import load_plugins

__all__ = ["MODELS", "SPEC_KEYS", "create", "describe_models", "list_models", "model_input_kind", "model_requirements"]

# what a dataset may describe (cimkit.data.Dataset.model_spec); a factory takes the ones it names
SPEC_KEYS = ("in_channels", "num_classes", "input_size", "vocab_size", "block_size", "in_features", "out_features")


def _known(name: str) -> None:
    """Models registered by a concern's plugin (e.g. ``bitnet_lm`` by :mod:`cimkit.lm`) are found too."""
    if name not in MODELS:
        load_plugins()


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard (plugins' models included)."""
    load_plugins()
    return MODELS.list(pattern)


def describe_models(pattern: str = "*") -> list[tuple[str, str]]:
    """``(name, one-line description)`` pairs."""
    load_plugins()
    return MODELS.describe(pattern)


def model_input_kind(name: str) -> str:
    """``"image"``, ``"text"`` or ``"coords"``: the kind of dataset a model consumes."""
    _known(name)
    return MODELS.entry(name).meta.get("inputs", "image")


def model_requirements(name: str) -> list[str]:
    """Optional packages model ``name`` needs (its ``requires`` metadata, e.g. ``["transformers"]``)."""
    _known(name)
    req = MODELS.entry(name).meta.get("requires", ())
    return [req] if isinstance(req, str) else list(req)


def model_options(name: str) -> list[str]:
    """The options of model ``name`` (its factory's parameters that are not dataset-description keys)."""
    _known(name)
    params = inspect.signature(MODELS.get(name)).parameters
    return [p for p, v in params.items() if p not in SPEC_KEYS and v.kind is not inspect.Parameter.VAR_KEYWORD]


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model from dataset-description keys (see the module docstring) and options.

    Unknown names or options raise :class:`~cimkit.errors.ConfigError`; so do sizes a model cannot
    be built with (non-positive widths, a window longer than the model's context, ...).
    """
    _known(name)
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters
    options = model_options(name)
    bad = [k for k in kwargs if k not in SPEC_KEYS and k not in params]
    if bad:
        raise ConfigError(f"model '{name}' has no option '{bad[0]}'; allowed: {', '.join(options) or '(none)'}")
    for k in ("in_channels", "num_classes", "vocab_size", "block_size", "in_features", "out_features"):
        v = kwargs.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"model '{name}': {k} = {v!r} is out of range; allowed: integers >= 1")
    if "input_size" in kwargs:
        kwargs["input_size"] = tuple(kwargs["input_size"])
    use = {k: v for k, v in kwargs.items() if k in params}
    try:
        return factory(**use)
    except ConfigError:
        raise
    except (RuntimeError, ValueError, TypeError, ZeroDivisionError) as e:  # e.g. a negative width
        opts = {k: v for k, v in kwargs.items() if k not in SPEC_KEYS}
        raise ConfigError(f"model '{name}' cannot be built with {opts or 'its defaults'} "
                          f"for input {kwargs.get('input_size', '')}: {e}") from None
