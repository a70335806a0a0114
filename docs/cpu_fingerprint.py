"""Fingerprint of a short seeded training run, to compare CPUs bit for bit.

    python docs/cpu_fingerprint.py            # on each machine (or under qemu-x86_64 -cpu MODEL)

Trains ``small_cnn`` (width 4) on scikit-learn's digits for 6 Adam steps on one torch thread, then
prints one JSON line: the ATen CPU capability, a hash of the trained ``state_dict``, a hash of the
eval-mode outputs of 64 test images, and one hash per basic op (matmul through MKL,
convolution through oneDNN, unary functions, reductions), so a difference can be traced to a library.
Equal hashes mean bit-identical results. See docs/reproducibility.md for what was measured.
"""

from __future__ import annotations

import hashlib
import json

import torch
import torch.nn.functional as F

from cimkit.data import load_dataset
from cimkit.models import create
from cimkit.train import TrainConfig, fit


def _h(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:8]


def ops() -> dict[str, str]:
    """One hash per op on fixed random inputs."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 300, generator=g), torch.randn(300, 200, generator=g)
    x, w = torch.randn(16, 8, 20, 20, generator=g), torch.randn(12, 8, 3, 3, generator=g)
    p = a.abs()
    return {"mm": _h(a @ b), "conv2d": _h(F.conv2d(x, w, padding=1)), "exp": _h(a.exp()), "log": _h(p.log()),
            "sqrt": _h(p.sqrt()), "rsqrt": _h(p.rsqrt()), "erf": _h(a.erf()), "tanh": _h(a.tanh()),
            "softmax": _h(a.softmax(-1)), "sum": _h(a.sum(1)), "batch_norm": _h(F.batch_norm(x, None, None, training=True))}  # fmt: skip


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load_dataset("digits")
    model = create("small_cnn", **data.model_spec(), width=4)
    fit(model, data.train_loader(64, seed=0), TrainConfig(epochs=1, batch_size=64, lr=0.01, steps_per_epoch=6),
        progress=False)  # fmt: skip
    state = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        state.update(k.encode())
        state.update(v.detach().contiguous().numpy().tobytes())
    with torch.no_grad():
        out = model.eval()(data.x_test[:64])  # (64, 10)
    print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "state": state.hexdigest()[:8],
                      "outputs": _h(out), "ops": ops()}))  # fmt: skip


if __name__ == "__main__":
    main()
