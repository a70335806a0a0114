"""Scratch memory of no-grad analog inference: reused, never aliased to a result."""

from __future__ import annotations

import threading

import torch
from torch import nn

from cimkit import analog
from cimkit.analog import mapping_preset
from cimkit.analog.workspace import clear_scratch, scratch, scratch_bytes


def test_scratch_reuses_one_buffer_per_slot_and_grows() -> None:
    clear_scratch()
    cpu = torch.device("cpu")
    with torch.no_grad():
        a = scratch("t", (4, 5), torch.float32, cpu)
        b = scratch("t", (2, 3), torch.float32, cpu)  # smaller: the same memory
        assert a is not None and b is not None
        assert a.shape == (4, 5) and b.shape == (2, 3) and a.is_contiguous()
        assert b.data_ptr() == a.data_ptr()
        c = scratch("other", (2, 3), torch.float32, cpu)  # another slot: other memory
        assert c is not None and c.data_ptr() != a.data_ptr()
        d = scratch("t", (10, 10), torch.float32, cpu)  # larger: grown
        assert d is not None and d.numel() == 100
        assert scratch_bytes() == (100 + 6) * 4
    clear_scratch()
    assert scratch_bytes() == 0


def test_no_scratch_while_autograd_records_and_per_thread() -> None:
    cpu = torch.device("cpu")
    assert scratch("t", (3,), torch.float32, cpu) is None  # grad mode: the caller allocates
    with torch.no_grad():
        mine = scratch("t", (8,), torch.float32, cpu)
    seen: list[int] = []

    def other() -> None:
        with torch.no_grad():
            t = scratch("t", (8,), torch.float32, cpu)
            assert t is not None
            seen.append(t.data_ptr())

    th = threading.Thread(target=other)
    th.start()
    th.join()
    assert mine is not None and seen and seen[0] != mine.data_ptr()


def test_inference_results_never_alias_scratch() -> None:
    # two multi-tile linear layers and a conv on the tiled (ADC) route: every output must survive
    # later forwards, which reuse the scratch memory of the DAC codes and the per-tile sums
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 40), nn.ReLU(), nn.Linear(40, 10))
    cfg = mapping_preset("standard", out_noise=0.0, tile_rows=32)
    m = analog.convert(net, cfg, "ideal").eval()
    xs = [torch.randn(5, 3, 8, 8) for _ in range(3)]
    outs, copies = [], []
    with torch.no_grad():
        for x in xs:
            y = m(x)
            outs.append(y)
            copies.append(y.clone())  # its value right after the forward
    for y, c in zip(outs, copies):
        assert torch.equal(y, c)  # unchanged by the later forwards
    assert not torch.equal(outs[0], outs[1])
