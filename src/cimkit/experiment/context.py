"""What a variant sees while it runs: data, the task, the trained baseline, and helpers to evaluate
and fine-tune."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cimkit import __version__
from cimkit.data import TensorLoader
from cimkit.tasks import Task
from cimkit.train import FinetuneConfig, TrainConfig, evaluate, fit
from cimkit.train.loop import Callback, StepHook
from cimkit.train.strategy import SingleProcess, Strategy

# calibration batches every step takes unless it says otherwise
DEFAULT_CALIB_BATCHES = 8


def config_hash(*parts: Any) -> str:
    """Short stable hash of JSON-able parts and the cimkit version (keys cached checkpoints: weights
    trained by another release are never reused)."""
    return hashlib.sha256(json.dumps([__version__, *parts], sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class RunContext:
    """Everything a variant needs. Variants must not modify ``baseline``: use :meth:`baseline_copy`."""

    data: Any  # cimkit.data.Dataset
    baseline: nn.Module
    train_cfg: TrainConfig
    seed: int
    device: torch.device
    out_dir: Path
    cache_dir: Path
    baseline_key: str
    task: Task
    eval_batch_size: int = 1000
    progress: bool = True
    strategy: Strategy = field(default_factory=SingleProcess)
    _fp32: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def primary(self) -> str:
        """The task's primary metric (``accuracy``, ``loss``, ``psnr``, ...)."""
        return self.task.primary

    def baseline_copy(self) -> nn.Module:
        """A deep copy of the trained fp32 model, in eval mode, on ``device``."""
        return copy.deepcopy(self.baseline).to(self.device).eval()

    def train_loader(self, batch_size: int | None = None, seed: int | None = None) -> TensorLoader:
        return TensorLoader(self.data.x_train, self.data.y_train, batch_size or self.train_cfg.batch_size,
                            shuffle=True, seed=self.seed if seed is None else seed)  # fmt: skip

    def test_loader(self) -> TensorLoader:
        return TensorLoader(self.data.x_test, self.data.y_test, self.eval_batch_size)

    def example_input(self, n: int = 1) -> torch.Tensor:
        """``n`` test inputs on ``device`` (for shape-capturing passes)."""
        return self.data.x_test[:n].to(self.device)

    def calib_batches(self, n: int = DEFAULT_CALIB_BATCHES, batch_size: int | None = None) -> list[torch.Tensor]:
        """``n`` input batches from the (shuffled, seeded) training set, for calibration."""
        out = []
        for i, (xb, _) in enumerate(self.train_loader(batch_size, seed=self.seed + 7)):
            if i >= n:
                break
            out.append(xb.to(self.device))
        return out

    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        """The task's test-set metrics (e.g. ``accuracy`` as a fraction and ``loss``)."""
        return evaluate(model, self.test_loader(), device=self.device, task=self.task)

    def fp32_metrics(self) -> dict[str, Any]:
        """The trained baseline's test metrics (computed once)."""
        if self._fp32 is None:
            self._fp32 = self.evaluate(self.baseline_copy())
        return self._fp32

    def fit(
        self,
        model: nn.Module,
        train_cfg: TrainConfig,
        *,
        teacher: nn.Module | None = None,
        step_hooks: Sequence[StepHook] = (),
        callbacks: Sequence[Callback] = (),
        tag: str = "finetune",
        key: Any = None,
    ) -> dict[str, Any]:
        """Fine-tune ``model`` in place, resumable: checkpoints live under the run's cache keyed by
        ``tag``, the baseline, ``train_cfg`` and ``key`` (put the variant's config there). Returns a
        summary with ``seconds`` and ``history``."""
        h = config_hash(self.baseline_key, train_cfg.to_dict(), key)
        ckpt = self.cache_dir / f"{tag}-{h}"
        res = fit(model, self.train_loader(train_cfg.batch_size, seed=train_cfg.seed), train_cfg,
                  teacher=teacher, device=self.device, checkpoint_dir=ckpt, progress=self.progress,
                  step_hooks=step_hooks, callbacks=callbacks, task=self.task,
                  strategy=self.strategy if self.strategy.is_distributed else None)  # fmt: skip
        out = {"seconds": res.seconds, "history": res.history, "resumed_from_epoch": res.resumed_from_epoch}
        if res.comm:
            out["comm"] = res.comm
        return out

    def finetune(
        self,
        model: nn.Module,
        cfg: FinetuneConfig,
        *,
        step_hooks: Sequence[StepHook] = (),
        callbacks: Sequence[Callback] = (),
        tag: str = "finetune",
        key: Any = None,
    ) -> dict[str, Any]:
        """:meth:`fit` with a :class:`~cimkit.train.FinetuneConfig` (teacher: the fp32 baseline when
        ``kd_alpha > 0``). Returns the fit summary plus ``train`` (the recipe used)."""
        tcfg = cfg.train_config(self.train_cfg)
        teacher = self.baseline_copy() if cfg.kd_alpha > 0 else None
        out = self.fit(model, tcfg, teacher=teacher, step_hooks=step_hooks, callbacks=callbacks, tag=tag, key=key)
        model.eval()
        out["train"] = tcfg.to_dict()
        return out
