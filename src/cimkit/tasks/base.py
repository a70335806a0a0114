"""The :class:`Task` protocol and its registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from cimkit.plugins import load_plugins
from cimkit.registry import Registry


@dataclass
class MetricSums:
    """Running sums of a task's per-sample quantities over an evaluation (or a training epoch).

    ``sums[name]`` holds the sum over samples (or tokens: ``counts[name]`` says over how many);
    :meth:`Task.finalize` turns them into metrics.
    """

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    n: int = 0  # samples seen

    def add(self, name: str, total: float, count: int) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(total)
        self.counts[name] = self.counts.get(name, 0) + int(count)

    def mean(self, name: str) -> float:
        c = self.counts.get(name, 0)
        return self.sums.get(name, 0.0) / c if c else float("nan")


class Task:
    """Base of tasks. Subclasses set ``name``, ``primary``, ``higher_is_better`` and ``units`` and
    implement :meth:`loss`, :meth:`accumulate` and :meth:`finalize`.

    ``loss(out, y)`` is the training objective (a scalar, mean over the batch);
    ``accumulate(sums, out, y)`` adds one batch's per-sample sums; ``finalize(sums)`` returns the
    metrics dict (always with ``loss`` and ``n``). ``distill(student, teacher, temperature)`` is
    the knowledge-distillation term added to the loss when training with a teacher.
    """

    name: ClassVar[str] = ""
    primary: ClassVar[str] = "loss"
    higher_is_better: ClassVar[bool] = False
    units: ClassVar[dict[str, str]] = {"loss": "nats", "n": "count"}

    def loss(self, out: Tensor, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def accumulate(self, sums: MetricSums, out: Tensor, y: Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def finalize(self, sums: MetricSums) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def distill(self, student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
        """Distillation term: T²·KL(softmax(teacher/T) ‖ softmax(student/T)) over the last dim,
        mean over all leading positions (Hinton et al. 2015)."""
        t = temperature
        s = torch.log_softmax(student.reshape(-1, student.shape[-1]) / t, -1)  # (M, V)
        q = torch.log_softmax(teacher.reshape(-1, teacher.shape[-1]) / t, -1)  # (M, V)
        return torch.nn.functional.kl_div(s, q, log_target=True, reduction="batchmean") * t * t

    def better(self, a: float, b: float) -> bool:
        """Whether primary-metric value ``a`` is better than ``b``."""
        return a > b if self.higher_is_better else a < b

    def describe(self) -> dict[str, Any]:
        """JSON-able description (results.json ``task`` field)."""
        return {"name": self.name, "primary": self.primary, "higher_is_better": self.higher_is_better,
                "units": dict(self.units)}  # fmt: skip

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


TASKS: Registry[Callable[..., Task]] = Registry("task", loader=load_plugins)


def get_task(task: Task | str | None, **options: Any) -> Task:
    """A task instance from an instance, a registered name (``None`` = ``classification``) and options."""
    if isinstance(task, Task):
        return task
    return TASKS.get(task or "classification")(**options)
