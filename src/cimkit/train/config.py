"""Training recipe: a flat, validated config."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from cimkit.config import Config, as_enum, check_range
from cimkit.errors import ConfigError
from cimkit.train.compression import CompressionConfig, GradCompression


class Optim(str, Enum):
    SGD = "sgd"
    ADAM = "adam"
    ADAMW = "adamw"


class Schedule(str, Enum):
    COSINE = "cosine"
    STEP = "step"
    CONSTANT = "constant"


@dataclass
class TrainConfig(Config):
    """How to train: optimizer, learning-rate schedule, epochs, batch size, distillation, seed, and
    the gradient compression of distributed training (``grad_compression``: none, fp16, bf16,
    powersgd, terngrad, qsgd, topk; options in the ``compression`` table).

    ``kd_alpha`` > 0 with a teacher adds Hinton et al. (2015) distillation:
    loss = (1-α)·CE(student, y) + α·T²·KL(softmax(teacher/T) ‖ softmax(student/T)).
    ``steps_per_epoch`` > 0 ends every epoch after that many optimizer steps (a different random
    subset of batches each epoch, as the data is reshuffled): short fine-tuning budgets.
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: Optim = Optim.ADAM
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Schedule = Schedule.COSINE
    step_epochs: int = 0  # step schedule: decay every this many epochs (0 -> epochs // 3)
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    kd_alpha: float = 0.0
    kd_temperature: float = 4.0
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    steps_per_epoch: int = 0  # optimizer steps per epoch (the first batches of each shuffled epoch); 0 = all
    seed: int = 0
    grad_compression: GradCompression = GradCompression.NONE
    compression: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_range("train.epochs", self.epochs, 0)
        check_range("train.batch_size", self.batch_size, 1)
        check_range("train.lr", self.lr, 0.0, lo_open=True)
        check_range("train.momentum", self.momentum, 0.0, 1.0, hi_open=True)
        check_range("train.weight_decay", self.weight_decay, 0.0)
        check_range("train.step_epochs", self.step_epochs, 0)
        check_range("train.gamma", self.gamma, 0.0, 1.0, lo_open=True)
        check_range("train.warmup_epochs", self.warmup_epochs, 0.0)
        check_range("train.label_smoothing", self.label_smoothing, 0.0, 1.0, hi_open=True)
        check_range("train.kd_alpha", self.kd_alpha, 0.0, 1.0)
        check_range("train.kd_temperature", self.kd_temperature, 0.0, lo_open=True)
        check_range("train.grad_clip", self.grad_clip, 0.0)
        check_range("train.steps_per_epoch", self.steps_per_epoch, 0)
        self.optimizer = as_enum("train.optimizer", self.optimizer, Optim)
        self.schedule = as_enum("train.schedule", self.schedule, Schedule)
        self.grad_compression = as_enum("train.grad_compression", self.grad_compression, GradCompression)
        self.compression_config()  # validate the compression options now

    def compression_config(self) -> CompressionConfig:
        """The gradient compression of distributed (DDP) training: ``grad_compression`` and the
        options in the ``compression`` table (:class:`~cimkit.train.compression.CompressionConfig`
        fields). One process ignores it."""
        if "method" in self.compression:
            raise ConfigError("train.compression.method: set train.grad_compression instead")
        return CompressionConfig.from_dict({"method": self.grad_compression.value, **self.compression},
                                           where="train.compression.")  # fmt: skip
