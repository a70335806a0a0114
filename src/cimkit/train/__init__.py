"""Training and evaluation: ``fit`` (seeded, resumable, optional distillation) and ``evaluate``."""

from cimkit.train.checkpoint import load_model, save_model
from cimkit.train.config import Optim, Schedule, TrainConfig
from cimkit.train.finetune import FinetuneConfig
from cimkit.train.loop import Callback, FitResult, distillation_loss, evaluate, fit, lr_at

__all__ = [
    "Callback", "FinetuneConfig", "FitResult", "Optim", "Schedule", "TrainConfig", "distillation_loss", "evaluate", "fit",
    "load_model", "lr_at", "save_model",
]  # fmt: skip
