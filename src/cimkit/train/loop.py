"""``fit`` and ``evaluate``: a plain, seeded, resumable training loop with optional distillation.

Both take a ``task`` (:mod:`cimkit.tasks`; default ``classification``) that owns the loss and the
metrics, so nothing here assumes classes. ``fit`` calls its ``callbacks`` at fixed points
(:class:`Callback`: ``after_backward``, ``after_step``, ``on_epoch_end``); ``step_hooks`` are plain
callables run after every optimizer step (e.g. weight clipping for analog training). A callback's
``loss_term`` adds a regularizer to the training loss (e.g. HaLoRA's spectral penalty on LoRA factors).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cimkit.errors import ConfigError, DataError, TrainingDivergedError
from cimkit.tasks import Classification, MetricSums, Task, get_task
from cimkit.train.checkpoint import load_training_state, save_training_state
from cimkit.train.config import Optim, Schedule, TrainConfig
from cimkit.train.strategy import SingleProcess, Strategy
from cimkit.utils import progress as progress_iter
from cimkit.utils import resolve_device

log = logging.getLogger(__name__)

StepHook = Callable[[nn.Module], None]


class Callback:
    """Hooks into :func:`fit`; override the ones you need (all are no-ops here)."""

    def loss_term(self, model: nn.Module, step: int) -> torch.Tensor | None:
        """An extra term added to the training loss of this step (after the task loss and the
        distillation term, before ``backward``), or None for none. It is part of the ``loss`` the
        history records."""
        return None

    def after_backward(self, model: nn.Module, step: int) -> None:
        """After ``loss.backward()`` and gradient clipping, before the optimizer step."""

    def after_step(self, model: nn.Module, step: int) -> None:
        """After every optimizer step (``step`` counts steps done, from 1)."""

    def on_epoch_end(self, model: nn.Module, epoch: int, record: dict[str, float]) -> None:
        """After every epoch (``epoch`` from 1), with the epoch's history record (may be edited)."""


def _task_for(task: Task | str | None, cfg: TrainConfig) -> Task:
    t = get_task(task)
    if cfg.label_smoothing > 0 and isinstance(t, Classification):
        t = Classification(label_smoothing=cfg.label_smoothing)
    return t


@dataclass
class FitResult:
    """What ``fit`` did: per-epoch history, wall time of this call, and the epoch it resumed from."""

    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from_epoch: int | None = None
    comm: dict[str, Any] = field(default_factory=dict)  # bytes the gradient hook sent (distributed runs)

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


def _train_metrics(task: Task, sums: MetricSums) -> dict[str, float]:
    """Training-set metrics of an epoch as history fields ``train_<metric>`` (the loss is ``loss``)."""
    return {f"train_{k}": v for k, v in task.finalize(sums).items() if k not in ("loss", "n", "mse")}


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
    task: Task | str | None = None,
    callbacks: Sequence[Callback] = (),
    strategy: Strategy | None = None,
) -> FitResult:
    """Train ``model`` in place with ``cfg`` for ``task``; resumable from ``checkpoint_dir``.

    The data order comes from ``train_loader.set_epoch(epoch)`` (e.g. :class:`cimkit.data.TensorLoader`),
    so a run resumed at epoch k sees the same batches as an uninterrupted one. A checkpoint (model,
    optimizer, RNG, counters) is written atomically after every epoch; a completed run leaves
    ``done: true`` in it, so calling ``fit`` again returns at once.
    ``step_hooks`` run after every optimizer step (e.g. weight clipping for analog training);
    ``callbacks`` (:class:`Callback`) at the points they name. The history records per epoch the
    training ``loss`` and the task's other metrics as ``train_<metric>`` (``train_accuracy`` for
    classification), plus ``eval_<metric>`` when ``eval_loader`` is given.

    ``strategy`` (:class:`~cimkit.train.strategy.Strategy`; default one process) spreads training
    over processes: ``cimkit.dist.DDPStrategy`` wraps the model in DDP (with its gradient-compression
    hook), gives each rank its slice of every global batch, sums the history's metrics over ranks,
    and only rank 0 writes the checkpoint (every rank reads it on resume).
    """
    tk = _task_for(task, cfg)
    st = strategy or SingleProcess(resolve_device(device))
    dev = st.device
    model.to(dev)
    if teacher is not None:
        teacher.to(dev).eval()
    if cfg.kd_alpha > 0 and teacher is None:
        raise ConfigError("train.kd_alpha > 0 needs a teacher model")
    torch.manual_seed(st.seed(cfg.seed))
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
    net = st.wrap(model)  # the module the forward runs through (DDP in several processes)
    if st.comm_state is not None:
        st.comm_state.step = step  # a resumed run continues the hook's random stream
    train_loader = st.shard(train_loader)  # type: ignore[arg-type]
    n_batches = len(train_loader)  # type: ignore[arg-type]
    if cfg.steps_per_epoch:
        n_batches = min(n_batches, cfg.steps_per_epoch)
    t_call = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        model.train()
        tot_loss, tot_n = 0.0, 0
        sums = MetricSums()
        batches = islice(train_loader, n_batches) if n_batches < len(train_loader) else train_loader  # type: ignore[arg-type]
        bar = progress_iter(batches, total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", enabled=progress)
        for xb, yb in bar:
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step, n_batches)
            out = net(xb)  # (B, ...) the task's outputs
            loss = tk.loss(out, yb)
            if teacher is not None and cfg.kd_alpha > 0:
                with torch.no_grad():
                    t_out = teacher(xb)
                loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * tk.distill(out, t_out, cfg.kd_temperature)
            for cb in callbacks:
                term = cb.loss_term(model, step)
                if term is not None:
                    loss = loss + term
            if not torch.isfinite(loss):
                raise TrainingDivergedError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step}; lower train.lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            for cb in callbacks:
                cb.after_backward(model, step)
            opt.step()
            step += 1
            for hook in step_hooks:
                hook(model)
            for cb in callbacks:
                cb.after_step(model, step)
            b = yb.shape[0]
            tot_loss += loss.item() * b
            tot_n += b
            with torch.no_grad():
                tk.accumulate(sums, out.detach(), yb)
            bar.set(loss=tot_loss / tot_n)
        if st.is_distributed:  # the epoch's sums over every rank's share of the batches
            names = list(sums.sums)
            red = st.all_reduce_sum([tot_loss, tot_n, sums.n, *(sums.sums[k] for k in names),
                                     *(sums.counts[k] for k in names)])  # fmt: skip
            tot_loss, tot_n, sums.n = red[0], int(red[1]), int(red[2])
            for i, k in enumerate(names):
                sums.sums[k], sums.counts[k] = red[3 + i], int(red[3 + len(names) + i])
        rec = {"epoch": epoch + 1, "loss": tot_loss / max(tot_n, 1), **_train_metrics(tk, sums),
               "lr": lr_at(cfg, step - 1, n_batches), "seconds": time.perf_counter() - t0}  # fmt: skip
        if eval_loader is not None:
            ev = evaluate(model, eval_loader, device=dev, task=tk)
            rec.update({f"eval_{k}": v for k, v in ev.items() if k != "n"})
        for cb in callbacks:
            cb.on_epoch_end(model, epoch + 1, rec)
        result.history.append(rec)
        log.info("epoch %d/%d %s", epoch + 1, cfg.epochs, " ".join(f"{k}={v:.4g}" for k, v in rec.items() if k != "epoch"))
        if checkpoint_dir is not None and st.is_main:
            save_training_state(checkpoint_dir, model, opt,
                                {"epoch": epoch + 1, "step": step, "history": result.history,
                                 "done": epoch + 1 == cfg.epochs})  # fmt: skip
        if checkpoint_dir is not None:
            st.barrier()  # no rank runs ahead of the checkpoint it may have to resume from
    result.seconds = time.perf_counter() - t_call
    result.comm = st.comm_stats()
    if result.comm:
        log.info("gradient communication: %s", result.comm)
    st.sync_module(model)  # every rank leaves with rank 0's weights and BatchNorm statistics
    model.eval()
    return result


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: str | torch.device = "cpu",
    progress: bool = False,
    task: Task | str | None = None,
) -> dict[str, Any]:
    """The task's metrics over ``loader`` (classification: top-1 ``accuracy`` (fraction), mean
    cross-entropy ``loss``), plus the sample count ``n``."""
    tk = get_task(task)
    dev = resolve_device(device)
    was_training = model.training
    model.eval()
    sums = MetricSums()
    for xb, yb in progress_iter(loader, desc="eval", enabled=progress):
        xb, yb = xb.to(dev), yb.to(dev)
        tk.accumulate(sums, model(xb), yb)
    model.train(was_training)
    if sums.n == 0:
        raise ConfigError("evaluate: the data loader yielded no samples")
    return tk.finalize(sums)
