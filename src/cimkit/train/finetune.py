"""One fine-tuning recipe shared by every step that trains (QAT, hardware-aware training, pruning, ...)."""

from __future__ import annotations

from dataclasses import dataclass

from cimkit.config import Config, check_range
from cimkit.errors import ConfigError
from cimkit.train.config import TrainConfig


@dataclass
class FinetuneConfig(Config):
    """Fine-tuning of an already trained model, relative to the experiment's ``[train]`` recipe.

    ``epochs``; the learning rate is ``lr`` when > 0, else ``lr_scale`` times the recipe's;
    ``batch_size`` 0 keeps the recipe's; ``kd_alpha`` > 0 distils from the fp32 model at
    ``kd_temperature`` (Hinton et al. 2015; for analog training this is noise-aware distillation);
    no warm-up unless ``warmup_epochs`` says so; ``steps_per_epoch`` > 0 caps the optimizer steps of
    each epoch (0: one pass over the training set). Everything else (optimizer, schedule, weight decay,
    seed) is the recipe's.
    """

    epochs: int = 3
    lr: float = 0.0
    lr_scale: float = 0.1
    batch_size: int = 0
    kd_alpha: float = 0.0
    kd_temperature: float = 4.0
    warmup_epochs: float = 0.0
    steps_per_epoch: int = 0

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, 0, 100_000)
        check_range("lr", self.lr, 0.0)
        check_range("lr_scale", self.lr_scale, 0.0, lo_open=True)
        check_range("batch_size", self.batch_size, 0)
        check_range("kd_alpha", self.kd_alpha, 0.0, 1.0)
        check_range("kd_temperature", self.kd_temperature, 0.0, lo_open=True)
        check_range("warmup_epochs", self.warmup_epochs, 0.0)
        check_range("steps_per_epoch", self.steps_per_epoch, 0)
        if self.warmup_epochs > self.epochs > 0:
            raise ConfigError(f"warmup_epochs: {self.warmup_epochs} is more than epochs = {self.epochs}")

    def train_config(self, base: TrainConfig) -> TrainConfig:
        """The training recipe of this fine-tuning, derived from ``base``."""
        return base.replace(
            epochs=self.epochs,
            lr=self.lr if self.lr > 0 else base.lr * self.lr_scale,
            batch_size=self.batch_size or base.batch_size,
            kd_alpha=self.kd_alpha,
            kd_temperature=self.kd_temperature,
            warmup_epochs=self.warmup_epochs,
            steps_per_epoch=self.steps_per_epoch,
        )
