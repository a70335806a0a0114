"""``cimkit.utils.progress``: cimkit's progress-bar API drawn by tqdm."""

from __future__ import annotations

import io

from cimkit.utils import progress


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_forced_bar_writes_desc_count_and_fields() -> None:
    out = io.StringIO()  # not a terminal: only ``force`` draws
    bar = progress(range(7), desc="epoch 1/3", force=True, unit="batch", file=out)
    seen = []
    for i in bar:
        seen.append(i)
        bar.set(loss=0.25, acc=0.5)
    text = out.getvalue()
    assert seen == list(range(7))
    assert "epoch 1/3" in text and "7/7" in text and "batch" in text
    assert "loss=0.25" in text and "acc=0.5" in text
    assert bar.n == 7 and not bar.enabled  # closed after the loop


def test_not_a_terminal_or_disabled_writes_nothing_and_yields_everything() -> None:
    for kw in ({"enabled": True}, {"enabled": False, "force": True}):
        out = io.StringIO()
        bar = progress(iter(range(5)), desc="x", file=out, **kw)
        items = list(bar)
        bar.set(loss=1.0)
        bar.update(3)
        bar.close()
        assert items == [0, 1, 2, 3, 4] and out.getvalue() == ""
        assert bar._bar is None  # no tqdm object was ever made


def test_terminal_bar_and_manual_updates() -> None:
    out = _TTY()
    bar = progress(iter(()), total=10, desc="mnist.gz", unit="kB", file=out)
    assert bar.enabled
    for _ in range(4):
        bar.update(2)
    bar.close()
    bar.close()  # closing twice is harmless
    assert "mnist.gz" in out.getvalue() and "8/10" in out.getvalue()


def test_breaking_out_then_closing() -> None:
    out = io.StringIO()
    bar = progress(range(100), desc="probes", force=True, file=out)
    for k in bar:
        if k == 9:
            break
    bar.close()  # items count when the loop body finished with them: the 10th was not
    assert "9/100" in out.getvalue() and out.getvalue().endswith("\n")
