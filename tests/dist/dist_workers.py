"""Functions run on each rank by the multi-process tests (``spawn`` imports them by name), plus the
problem definitions the single-process references share with them."""

from __future__ import annotations

import os
import signal
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from cimkit.analog import convert, drift, program
from cimkit.data import TensorLoader
from cimkit.dist import CompressionConfig, Strategy, register_compression
from cimkit.utils import derive_seed

# ----------------------------------------------------------------------------- DDP == one process


def make_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small MLP and 64 labelled samples, identical in every process."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)  # (N, 8)
    y = torch.randint(0, 4, (64,), generator=g)  # (N,)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    return model, x, y


def make_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int = 16) -> TensorLoader:
    return TensorLoader(x, y, batch_size, shuffle=True, seed=3)


def train_sgd(model: nn.Module, loader, epochs: int = 2) -> list[torch.Tensor]:
    """SGD with momentum over ``epochs`` passes; the final parameters."""
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return [p.detach().clone() for p in model.parameters()]


def ddp_equivalence(strategy: Strategy) -> dict:
    out: dict = {}
    model, x, y = make_problem()
    out["no_hook"] = train_sgd(nn.parallel.DistributedDataParallel(model), strategy.shard(make_loader(x, y)))
    model, x, y = make_problem()
    loader = strategy.shard(make_loader(x, y))
    out["allreduce_hook"] = train_sgd(strategy.wrap(model), loader)
    out["stats"] = strategy.comm_stats()
    out["numel"] = sum(p.numel() for p in model.parameters())
    out["batch_sizes"] = sorted({len(yb) for _, yb in loader})
    out["samples_per_pass"] = strategy.all_reduce_sum([loader.num_samples])[0]
    out["rank_seed"] = strategy.seed(0)
    out["gathered"] = strategy.all_gather_object({"rank": strategy.rank})
    strategy.barrier()
    return out


# ----------------------------------------------------------------------------- hooks


class _Vec(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n))


class Probe(nn.Module):
    """``loss = <params, c>``: the gradient of each parameter is the matching slice of the input ``c``."""

    SIZES = {"big": 300, "tiny": 3, "head": 50}

    def __init__(self) -> None:
        super().__init__()
        self.big, self.tiny, self.head = _Vec(300), _Vec(3), _Vec(50)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return (self.big.w * c[:300]).sum() + (self.tiny.w * c[300:303]).sum() + (self.head.w * c[303:]).sum()


def probe_grad(rank: int, outliers: bool = False) -> torch.Tensor:
    """Rank ``rank``'s constant gradient: magnitudes in [0.2, 1] with random signs; with ``outliers``
    ten entries are ±5 and rank r's gradient is scaled by r + 1 (so the ranks' TernGrad scalers differ)."""
    g = torch.Generator().manual_seed(100 + rank)
    c = (0.2 + 0.8 * torch.rand(353, generator=g)) * (torch.randint(0, 2, (353,), generator=g) * 2 - 1)  # (353,)
    if outliers:
        c[torch.arange(10) * 29] = 5.0 * torch.sign(c[torch.arange(10) * 29])
        c = c * (rank + 1)
    return c


def _run_probe(strategy: Strategy, cfg: CompressionConfig, steps: int, outliers: bool = False) -> dict:
    model = Probe()
    ddp = nn.parallel.DistributedDataParallel(model)
    state = register_compression(ddp, cfg)
    c = probe_grad(strategy.rank, outliers)
    grads = []
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        ddp(c).backward()
        grads.append(torch.cat([model.big.w.grad, model.tiny.w.grad, model.head.w.grad]))  # (353,)
    g = torch.stack(grads)  # (steps, 353)
    out = {"grads": g, "stats": state.stats.summary()}
    if hasattr(state, "residuals"):
        out["residual_big"] = state.residuals["big.w"].clone()
    return out


def hook_checks(strategy: Strategy) -> dict:
    common = {"min_numel": 10, "float_last_layer": True}  # tiny (3 entries) and head (last layer) stay float
    out = {
        "terngrad_max": _run_probe(strategy, CompressionConfig(method="terngrad", terngrad_scaler="max", **common), 200),
        "terngrad_std": _run_probe(strategy, CompressionConfig(method="terngrad", **common), 200, outliers=True),
        "qsgd": _run_probe(strategy, CompressionConfig(method="qsgd", qsgd_levels=3, qsgd_bucket_size=64, **common), 200),
        "topk": _run_probe(strategy, CompressionConfig(method="topk", topk_ratio=0.05, **common), 30),
    }
    for name, cfg in {
        "fp16": CompressionConfig(method="fp16"),
        "powersgd": CompressionConfig(method="powersgd", powersgd_start_iter=2),
    }.items():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(40, 32))
        ddp = nn.parallel.DistributedDataParallel(model)
        state = register_compression(ddp, cfg)
        x = torch.randn(8, 40, generator=torch.Generator().manual_seed(strategy.rank))
        for _ in range(4):
            model.zero_grad()
            ddp(x).square().mean().backward()
        out[name] = {"stats": state.stats.summary(), "grad": model[0].weight.grad.clone()}
    return out


# ----------------------------------------------------------------------------- failures


def raise_on_rank1(strategy: Strategy) -> str:
    if strategy.rank == 1:
        raise ValueError("boom from rank 1")
    time.sleep(600)  # would hang the run without the launcher's failure policy
    return "unreachable"


def raise_after_collective(strategy: Strategy) -> str:
    t = torch.ones(1)
    dist.all_reduce(t)
    if strategy.rank == 1:
        raise ValueError("boom after one all_reduce")
    for _ in range(10**7):  # the peer is gone: the process group must raise, not block
        dist.all_reduce(t)
    return "unreachable"


def sigkill_rank1(strategy: Strategy) -> str:
    t = torch.ones(1)
    dist.all_reduce(t)
    if strategy.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    for _ in range(10**7):
        dist.all_reduce(t)
    return "unreachable"


# ----------------------------------------------------------------------------- distributed chip sweep


def sweep_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 16, generator=g)  # (N, 16)
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        y = model(x).argmax(-1)  # labels the digital model gets right
    return convert(model, "standard", "pcm").eval(), x, y


def chip_sweep(strategy: Strategy, chips: int = 5, times: tuple[float, ...] = (1.0, 3600.0, 86400.0)) -> list:
    """Accuracy of every chip (programming seed) at every time, split over ranks by ``strategy.map``."""
    amodel, x, y = sweep_problem()

    @torch.no_grad()
    def one_chip(chip: int) -> list[float]:
        program(amodel, derive_seed(0, "analog", "sweep-test", chip))
        accs = []
        for t in times:
            drift(amodel, t)
            accs.append(float((amodel(x).argmax(-1) == y).float().mean()))
        return accs

    return strategy.map(one_chip, list(range(chips)))


def ddp_and_hook_checks(strategy: Strategy) -> dict:
    """Both DDP suites in one launch (DDP's first construction imports torch._dynamo: seconds per process)."""
    return {"equivalence": ddp_equivalence(strategy), "hooks": hook_checks(strategy)}


def one_rank_all_methods(strategy: Strategy) -> dict:
    """World size 1: every hook must run, and fp32/fp16 must return the local gradient."""
    out = {}
    for method in ("none", "fp16", "bf16", "powersgd", "terngrad", "qsgd", "topk"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 4))
        ref = [p.detach().clone() for p in model.parameters()]
        ddp = nn.parallel.DistributedDataParallel(model)
        register_compression(ddp, CompressionConfig(method=method, powersgd_start_iter=2))
        x = torch.randn(16, 20, generator=torch.Generator().manual_seed(1))
        for _ in range(3):
            model.zero_grad()
            ddp(x).square().mean().backward()
        plain = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 4))
        with torch.no_grad():
            for p, r in zip(plain.parameters(), ref):
                p.copy_(r)
        plain(x).square().mean().backward()
        out[method] = ([p.grad.clone() for p in model.parameters()], [p.grad.clone() for p in plain.parameters()])
    return out
