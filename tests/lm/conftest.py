"""A tiny next-token run context (no files): 48 windows of 8 characters over an 11-symbol vocabulary,
and a tiny char_gpt baseline briefly trained on them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cimkit.data import Dataset, TensorLoader
from cimkit.data.core import DataKind
from cimkit.experiment import RunContext
from cimkit.models import create
from cimkit.tasks import get_task
from cimkit.train import TrainConfig, fit


def text_data(n: int = 48, t: int = 8, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, 11, (n, 1), generator=g)
    ids = (start + torch.arange(t + 1)) % 11  # a learnable sequence: each id is the previous + 1
    flip = torch.rand(n, t + 1, generator=g) < 0.1
    ids = torch.where(flip, torch.randint(0, 11, (n, t + 1), generator=g), ids)
    k = 3 * n // 4
    return Dataset(name="tiny-text", kind=DataKind.TEXT, x_train=ids[:k, :t], y_train=ids[:k, 1:],
                   x_test=ids[k:, :t], y_test=ids[k:, 1:], num_classes=11, in_channels=1, input_size=(t,),
                   vocab=list("\nabcdefghij"))  # fmt: skip


@pytest.fixture
def text_ctx(tmp_path: Path) -> RunContext:
    data = text_data()
    torch.manual_seed(0)
    model = create("char_gpt", **data.model_spec(), size="tiny")
    cfg = TrainConfig(epochs=3, batch_size=8, lr=3e-3, optimizer="adamw")
    fit(model, TensorLoader(data.x_train, data.y_train, 8, shuffle=True, seed=0), cfg, task="next_token",
        progress=False)  # fmt: skip
    return RunContext(data=data, baseline=model.eval(), train_cfg=cfg, seed=0, device=torch.device("cpu"),
                      out_dir=tmp_path, cache_dir=tmp_path / "cache", baseline_key="tiny", task=get_task("next_token"),
                      eval_batch_size=64, progress=False)  # fmt: skip
