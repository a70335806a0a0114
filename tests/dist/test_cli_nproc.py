"""``cimkit run --nproc 2`` through torchrun: trains with DDP and TernGrad, rank 0 writes once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

TOML = """name = "cli_ddp"
dataset = "digits"
model = "mlp"
model_args = { hidden = [32] }
threads = 1
[train]
epochs = 2
batch_size = 64
lr = 0.003
grad_compression = "terngrad"
[[variants]]
kind = "fp32"
"""


def test_cimkit_run_nproc_2_with_terngrad(tmp_path: Path) -> None:
    f = tmp_path / "e.toml"
    f.write_text(TOML)
    r = subprocess.run([sys.executable, "-m", "cimkit", "run", str(f), "--nproc", "2", "--out", str(tmp_path / "o"),
                        "--no-progress"], capture_output=True, text=True, timeout=300, env={**os.environ})  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("results:") == 1  # the summary is printed by rank 0 only
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    comm = res["baseline"]["comm"]
    assert res["world_size"] == 2 and comm["world_size"] == 2 and comm["steps"] > 0
    params = (64 * 32 + 32) + (32 * 10 + 10)  # the MLP on 8x8 digits: 64 -> 32 -> 10
    # TernGrad: 2 bits per gradient entry plus one float32 scaler per layer, far below 4 bytes per entry
    assert comm["payload_bytes_per_step"] < params * 4 / 8
    assert res["variants"][0]["metrics"]["accuracy"] > 0.5
