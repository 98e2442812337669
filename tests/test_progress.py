"""Progress of a training run: a total on a terminal, plain lines elsewhere (issue 8, item 3)."""

from __future__ import annotations

import io

from arlm.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_when_not_a_terminal(monkeypatch):
    monkeypatch.setenv("ARLM_PROGRESS_INTERVAL", "0")
    out = io.StringIO()
    p = Progress(None, 120.0, file=out)
    for step in range(1, 4):
        p.update(step, 10.0 * step, {"loss": f"{3 - step * 0.1:.3f}"})
    p.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 4  # one per update (interval 0) and one at the end
    assert lines[-1].startswith("training: step 3 (of ~12 estimated), 30s of 120s") and "loss 2.700" in lines[-1]


def test_plain_lines_are_rate_limited(monkeypatch):
    monkeypatch.setenv("ARLM_PROGRESS_INTERVAL", "3600")
    out = io.StringIO()
    p = Progress(50, None, file=out)
    for step in range(1, 51):
        p.update(step, step * 0.01)
    p.close()
    assert out.getvalue().splitlines() == ["training: step 50/50, 0s"]


def test_terminal_bar_shows_the_time_budget_as_its_total():
    out = _Terminal()
    p = Progress(None, 90.0, step=0, file=out)
    p.update(5, 30.0, {"loss": "2.000"})
    p.close()
    text = out.getvalue()
    assert "/90s budget" in text and "step=5/~15" in text


def test_terminal_bar_counts_steps_with_a_step_limit():
    out = _Terminal()
    p = Progress(40, None, file=out)
    for step in range(1, 41):
        p.update(step, step * 0.1)
    p.close()
    assert "40/40" in out.getvalue()


def test_disabled_progress_writes_nothing():
    out = _Terminal()
    p = Progress(10, None, enabled=False, file=out)
    p.update(1, 1.0)
    p.close()
    assert out.getvalue() == ""
