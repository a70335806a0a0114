"""``fit`` and ``evaluate``: a plain, seeded, resumable training loop with optional distillation."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cimkit.errors import ConfigError, DataError, TrainingDivergedError
from cimkit.train.checkpoint import load_training_state, save_training_state
from cimkit.train.config import Optim, Schedule, TrainConfig
from cimkit.utils import progress as progress_iter
from cimkit.utils import resolve_device

log = logging.getLogger(__name__)

StepHook = Callable[[nn.Module], None]


@dataclass
class FitResult:
    """What ``fit`` did: per-epoch history, wall time of this call, and the epoch it resumed from."""

    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_epoch: int | None = None

    @property
    def seconds_per_epoch(self) -> float:
        run = [h["seconds"] for h in self.history if "seconds" in h]
        return sum(run) / len(run) if run else float("nan")


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("fit: the model has no trainable parameters")
    if cfg.optimizer is Optim.SGD:
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    if cfg.optimizer is Optim.ADAMW:
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning rate at global ``step`` (linear warm-up, then cosine / step / constant)."""
    total = max(cfg.epochs * steps_per_epoch, 1)
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule is Schedule.COSINE:
        t = (step - warm) / max(total - warm, 1)
        return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * min(t, 1.0)))
    if cfg.schedule is Schedule.STEP:
        every = cfg.step_epochs or max(cfg.epochs // 3, 1)
        return cfg.lr * cfg.gamma ** ((step // steps_per_epoch) // every)
    return cfg.lr


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. 2015: T²·KL(softmax(teacher/T) ‖ softmax(student/T)), batch mean."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), log_target=True,
                    reduction="batchmean") * t * t  # fmt: skip


def fit(
    model: nn.Module,
    train_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
    *,
    teacher: nn.Module | None = None,
    device: str | torch.device = "cpu",
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    step_hooks: Sequence[StepHook] = (),
    eval_loader: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> FitResult:
    """Train ``model`` in place with ``cfg``; resumable from ``checkpoint_dir``.

    The data order comes from ``train_loader.set_epoch(epoch)`` (e.g. :class:`cimkit.data.TensorLoader`),
    so a run resumed at epoch k sees the same batches as an uninterrupted one. A checkpoint (model,
    optimizer, RNG, counters) is written atomically after every epoch; a completed run leaves
    ``done: true`` in it, so calling ``fit`` again returns at once.
    ``step_hooks`` run after every optimizer step (e.g. weight clipping for analog training).
    """
    dev = resolve_device(device)
    model.to(dev)
    if teacher is not None:
        teacher.to(dev).eval()
    if cfg.kd_alpha > 0 and teacher is None:
        raise ConfigError("train.kd_alpha > 0 needs a teacher model")
    torch.manual_seed(cfg.seed)
    opt = make_optimizer(model, cfg)
    start_epoch, step = 0, 0
    result = FitResult()
    if checkpoint_dir is not None:
        try:
            counters = load_training_state(checkpoint_dir, model, opt)
        except DataError as e:  # nothing was loaded: train from the start, overwriting it next epoch
            log.warning("%s; ignoring this checkpoint and training from scratch", e)
            counters = None
        if counters is not None:
            start_epoch, step = int(counters["epoch"]), int(counters["step"])
            result.history = list(counters.get("history", []))
            result.resumed_from_epoch = start_epoch
            if start_epoch < cfg.epochs:
                log.info("resuming from %s at epoch %d", checkpoint_dir, start_epoch)
    n_batches = len(train_loader)  # type: ignore[arg-type]
    t_call = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        model.train()
        tot_loss, tot_correct, tot_n = 0.0, 0, 0
        bar = progress_iter(train_loader, total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", enabled=progress)
        for xb, yb in bar:
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step, n_batches)
            out = model(xb)  # (B, classes)
            loss = F.cross_entropy(out, yb, label_smoothing=cfg.label_smoothing)
            if teacher is not None and cfg.kd_alpha > 0:
                with torch.no_grad():
                    t_out = teacher(xb)
                loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * distillation_loss(out, t_out, cfg.kd_temperature)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step}; lower train.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            for hook in step_hooks:
                hook(model)
            step += 1
            b = yb.shape[0]
            tot_loss += loss.item() * b
            tot_correct += int((out.argmax(-1) == yb).sum())
            tot_n += b
            bar.set(loss=tot_loss / tot_n)
        rec = {"epoch": epoch + 1, "loss": tot_loss / max(tot_n, 1), "train_accuracy": tot_correct / max(tot_n, 1),
               "lr": lr_at(cfg, step - 1, n_batches), "seconds": time.perf_counter() - t0}  # fmt: skip
        if eval_loader is not None:
            rec["eval_accuracy"] = evaluate(model, eval_loader, device=dev)["accuracy"]
        result.history.append(rec)
        log.info("epoch %d/%d %s", epoch + 1, cfg.epochs, " ".join(f"{k}={v:.4g}" for k, v in rec.items() if k != "epoch"))
        if checkpoint_dir is not None:
            save_training_state(checkpoint_dir, model, opt,
                                {"epoch": epoch + 1, "step": step, "history": result.history,
                                 "done": epoch + 1 == cfg.epochs})  # fmt: skip
    result.seconds = time.perf_counter() - t_call
    model.eval()
    return result


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Top-1 ``accuracy`` (fraction), mean cross-entropy ``loss`` and sample count ``n``."""
    dev = resolve_device(device)
    was_training = model.training
    model.eval()
    tot_loss, correct, n = 0.0, 0, 0
    for xb, yb in progress_iter(loader, desc="eval", enabled=progress):
        xb, yb = xb.to(dev), yb.to(dev)
        out = model(xb)  # (B, classes)
        tot_loss += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(-1) == yb).sum())
        n += yb.shape[0]
    model.train(was_training)
    if n == 0:
        raise ConfigError("evaluate: the data loader yielded no samples")
    return {"accuracy": correct / n, "loss": tot_loss / n, "n": n}
