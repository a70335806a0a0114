"""Tasks: what a model is trained and scored for.

A task owns the loss, the metrics (each with a unit) and the primary metric, so training,
evaluation, the experiment runner, ``results.json``, the summary table and the report never assume
classes. Registered tasks (``cimkit list tasks``):

* ``classification``: cross-entropy, top-1 ``accuracy`` (fraction, primary);
* ``next_token``: per-token cross-entropy ``loss`` in nats (primary, lower is better),
  ``perplexity`` and ``bpc`` (bits per character/token);
* ``regression``: ``mse`` and ``psnr`` in dB (primary) for a signal of peak-to-peak range ``peak``.

>>> from cimkit.tasks import get_task
>>> task = get_task("classification")
>>> task.primary, task.units["accuracy"]
('accuracy', 'fraction')
"""

from cimkit.tasks.base import TASKS, MetricSums, Task, get_task
from cimkit.tasks.classification import Classification
from cimkit.tasks.next_token import NextToken
from cimkit.tasks.regression import Regression

__all__ = ["TASKS", "Classification", "MetricSums", "NextToken", "Regression", "Task", "get_task"]
