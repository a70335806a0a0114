"""BatchNorm re-estimation: recompute every BatchNorm layer's running statistics on a few batches.

Quantizing the weights (or the activations) in front of a BatchNorm layer shifts the mean and variance
of its input, but its running statistics still describe the float model. Re-estimating them on a
handful of training batches, with the weights unchanged, removes that mismatch. This is AIMET's "BN
re-estimation", and Nagel et al., "Overcoming Oscillations in Quantization-Aware Training", ICML 2022,
use it after QAT. It only applies while BatchNorm is not folded (``PTQConfig.fold_bn = False``).

The new statistics are the exact average over the given batches: PyTorch's cumulative mode
(``momentum=None``), i.e. the mean of the batch means and the mean of the unbiased batch variances.
Only the BatchNorm layers run in training mode. Everything else stays in eval mode: dropout is off,
and activation quantizers keep their grids.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cimkit.errors import ConfigError, DataError
from cimkit.quant.api import _device_of, _inputs

log = logging.getLogger("cimkit.quant")


def batchnorm_layers(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """``(name, module)`` of every BatchNorm layer of ``model`` that tracks running statistics."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@torch.no_grad()
def reestimate_bn_(model: nn.Module, batches: Iterable[Any], *, max_batches: int | None = None) -> nn.Module:
    """Replace every BatchNorm layer's running mean/variance by their average over ``batches``, in place.

    Args:
        model: any module with BatchNorm layers (quantized or not); its weights are not changed.
        batches: input tensors or ``(x, y)`` pairs, e.g. a few training batches.
        max_batches: use at most this many batches (None: all).

    Returns:
        ``model``, with its training/eval mode and each BatchNorm layer's momentum unchanged.

    Raises:
        ConfigError: the model has no BatchNorm layer with running statistics (e.g. it was folded).
        DataError: ``batches`` is empty or a batch is not a tensor or pair; the old statistics are kept.
    """
    if max_batches is not None and max_batches < 1:
        raise ConfigError(f"max_batches must be >= 1 or None, got {max_batches}")
    bns = [m for _, m in batchnorm_layers(model)]
    if not bns:
        raise ConfigError(
            "reestimate_bn_: the model has no BatchNorm layer with running statistics "
            "(was BatchNorm folded? use fold_bn=False to keep it)"
        )
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in bns]
    was_training = model.training
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
        m.train()
    dev = _device_of(model)
    n = 0
    ok = False
    try:
        for b in batches:
            if max_batches is not None and n >= max_batches:
                break
            model(_inputs(b, "reestimate_bn_").to(dev))
            n += 1
        if n == 0:
            raise DataError("reestimate_bn_: no batches were given")
        ok = True
    finally:
        for m, (momentum, mean, var, count) in zip(bns, saved):
            m.momentum = momentum
            if not ok:  # keep the old statistics on any failure
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        model.train(was_training)
    log.info("reestimate_bn_: %d BatchNorm layer(s) re-estimated on %d batch(es)", len(bns), n)
    return model
