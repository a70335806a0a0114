from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cimkit.data import TensorLoader
from cimkit.errors import ConfigError
from cimkit.models import create
from cimkit.train import TrainConfig, distillation_loss, evaluate, fit, load_model, lr_at, save_model


def _toy(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0).long()  # 4 learnable classes
    return x, y


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create("small_cnn", in_channels=1, num_classes=4, input_size=(8, 8), width=4)


CFG = TrainConfig(epochs=3, batch_size=32, lr=3e-3, seed=5)


def _weights(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_fit_learns_and_evaluate_reports_fraction() -> None:
    x, y = _toy()
    m = _model()
    res = fit(m, TensorLoader(x, y, 32, shuffle=True, seed=1), CFG.replace(epochs=8), progress=False)
    ev = evaluate(m, TensorLoader(x, y, 64))
    assert 0.0 <= ev["accuracy"] <= 1.0 and ev["n"] == 256
    assert ev["accuracy"] > 0.6  # chance is 0.25
    assert res.history[-1]["loss"] < res.history[0]["loss"]


def test_same_seed_identical_weights() -> None:
    x, y = _toy()
    a, b = _model(), _model()
    fit(a, TensorLoader(x, y, 32, shuffle=True, seed=1), CFG, progress=False)
    fit(b, TensorLoader(x, y, 32, shuffle=True, seed=1), CFG, progress=False)
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


class _Interrupt:
    def __init__(self, at_step: int) -> None:
        self.at, self.n = at_step, 0

    def __call__(self, model: nn.Module) -> None:
        self.n += 1
        if self.n == self.at:
            raise KeyboardInterrupt


def test_resume_after_interruption_equals_uninterrupted(tmp_path: Path) -> None:
    x, y = _toy()
    cfg = CFG.replace(epochs=4)
    ref = _model()
    fit(ref, TensorLoader(x, y, 32, shuffle=True, seed=1), cfg, progress=False)

    m = _model()
    with pytest.raises(KeyboardInterrupt):  # dies in the middle of epoch 3 (8 steps per epoch)
        fit(m, TensorLoader(x, y, 32, shuffle=True, seed=1), cfg, checkpoint_dir=tmp_path, progress=False,
            step_hooks=[_Interrupt(8 * 2 + 3)])  # fmt: skip
    resumed = _model(seed=123)  # a fresh process would start from different random weights
    res = fit(resumed, TensorLoader(x, y, 32, shuffle=True, seed=1), cfg, checkpoint_dir=tmp_path, progress=False)
    assert res.resumed_from_epoch == 2
    wr, wm = _weights(ref), _weights(resumed)
    assert all(torch.equal(wr[k], wm[k]) for k in wr)
    # a finished checkpoint makes fit a no-op
    again = fit(resumed, TensorLoader(x, y, 32, shuffle=True, seed=1), cfg, checkpoint_dir=tmp_path, progress=False)
    assert again.resumed_from_epoch == 4 and len(again.history) == 4


def test_resume_with_sgd_momentum_and_dropout(tmp_path: Path) -> None:
    x, y = _toy()
    cfg = TrainConfig(epochs=3, batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9, seed=2)
    mk = lambda: create("mlp", in_channels=1, num_classes=4, input_size=(8, 8), hidden=(16,), dropout=0.3)  # noqa: E731
    torch.manual_seed(0)
    ref = mk()
    fit(ref, TensorLoader(x, y, 64, shuffle=True), cfg, progress=False)
    torch.manual_seed(0)
    m = mk()
    with pytest.raises(KeyboardInterrupt):
        fit(m, TensorLoader(x, y, 64, shuffle=True), cfg, checkpoint_dir=tmp_path, progress=False,
            step_hooks=[_Interrupt(6)])  # fmt: skip
    m2 = mk()
    fit(m2, TensorLoader(x, y, 64, shuffle=True), cfg, checkpoint_dir=tmp_path, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), m2.state_dict().values()))


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    m = create("vgg_small", input_size=(8, 8))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p))
    m.features[1].running_mean.add_(1.0)
    save_model(tmp_path / "m.safetensors", m, {"accuracy": 0.5})
    m2 = create("vgg_small", input_size=(8, 8))
    meta = load_model(tmp_path / "m.safetensors", m2)
    assert meta == {"accuracy": 0.5}
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))


def test_distillation() -> None:
    s = torch.randn(5, 10)
    assert distillation_loss(s, s.clone(), 4.0).abs() < 1e-6
    assert distillation_loss(s, torch.randn(5, 10), 4.0) > 0
    x, y = _toy()
    teacher = _model(1)
    with pytest.raises(ConfigError, match="teacher"):
        fit(_model(), TensorLoader(x, y, 32), CFG.replace(kd_alpha=0.5), progress=False)
    m = _model()
    fit(m, TensorLoader(x, y, 32), CFG.replace(kd_alpha=1.0, epochs=2), teacher=teacher, progress=False)
    # pure distillation pulls the student's outputs towards the teacher's
    with torch.no_grad():
        kl_after = distillation_loss(m.eval()(x), teacher.eval()(x), 4.0)
        kl_before = distillation_loss(_model().eval()(x), teacher(x), 4.0)
    assert kl_after < kl_before


def test_lr_schedules() -> None:
    c = TrainConfig(epochs=10, lr=1.0)
    assert lr_at(c, 0, 10) == pytest.approx(1.0)
    assert lr_at(c, 99, 10) < 1e-3
    s = TrainConfig(epochs=9, lr=1.0, schedule="step", gamma=0.1)
    assert [round(lr_at(s, e * 10, 10), 6) for e in (0, 3, 6)] == [1.0, 0.1, 0.01]
    w = TrainConfig(epochs=10, lr=1.0, schedule="constant", warmup_epochs=1)
    assert lr_at(w, 4, 10) == pytest.approx(0.5) and lr_at(w, 50, 10) == 1.0


def test_callback_loss_term_enters_the_loss_and_its_gradient() -> None:
    """A callback's loss_term is added to the training loss: the recorded loss grows by it, and one
    SGD step equals one on the task loss plus the term (here λ‖w‖² on the linear layer)."""
    from cimkit.train import Callback

    x, y = _toy(64)
    lam = 0.3

    class L2(Callback):
        def loss_term(self, model: nn.Module, step: int) -> torch.Tensor:
            return lam * model.classifier[1].weight.pow(2).sum()

    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.1, optimizer="sgd", momentum=0.0, schedule="constant")
    plain, reg = _model(), _model()
    w0 = reg.classifier[1].weight.detach().clone()
    r_plain = fit(plain, TensorLoader(x, y, 64), cfg, progress=False)
    r_reg = fit(reg, TensorLoader(x, y, 64), cfg, progress=False, callbacks=[L2()])
    term = lam * float(w0.pow(2).sum())
    assert r_reg.history[0]["loss"] == pytest.approx(r_plain.history[0]["loss"] + term, rel=1e-5)
    # the regularizer's gradient 2λw moved the weight by an extra -lr·2λ·w0
    extra = reg.classifier[1].weight.detach() - plain.classifier[1].weight.detach()
    assert torch.allclose(extra, -0.1 * 2 * lam * w0, atol=1e-6)


def test_steps_per_epoch_caps_each_epoch() -> None:
    x, y = _toy(256)
    seen: list[int] = []

    from cimkit.train import Callback

    class Count(Callback):
        def after_step(self, model: nn.Module, step: int) -> None:
            seen.append(step)

    cfg = TrainConfig(epochs=2, batch_size=32, lr=1e-3, steps_per_epoch=3)
    res = fit(_model(), TensorLoader(x, y, 32, shuffle=True, seed=0), cfg, progress=False, callbacks=[Count()])
    assert seen == [1, 2, 3, 4, 5, 6] and len(res.history) == 2  # 3 of the 8 batches per epoch
