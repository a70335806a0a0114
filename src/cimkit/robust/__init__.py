"""Robustness to weight perturbations: relative weight-noise evaluation and noise-aware training.

>>> from cimkit.robust import perturbed_weights, weight_noise_, NoiseConfig
>>> with perturbed_weights(model, 0.01, seed=0):     # W + 1 % of each channel's abs-max · N(0, 1)
...     metrics = evaluate(model, loader, task="regression")
>>> weight_noise_(model, NoiseConfig(level=0.02))    # train with noise, then cimkit.undo_(model)

Pipelines: step ``robust_train`` (``method`` from :data:`METHODS`, extendable) and protocol
``weight_noise``. See docs/transformers.md (INR robustness).
"""

from cimkit.robust.noise import (
    NoiseConfig,
    NoisyLayer,
    Relative,
    noise_scale,
    noisy_layers,
    perturbed_weights,
    remove_weight_noise_,
    weight_noise_,
)
from cimkit.robust.steps import METHODS, RobustTrainConfig, WeightNoiseConfig

__all__ = [
    "METHODS", "NoiseConfig", "NoisyLayer", "Relative", "RobustTrainConfig", "WeightNoiseConfig", "noise_scale",
    "noisy_layers", "perturbed_weights", "remove_weight_noise_", "weight_noise_",
]  # fmt: skip
