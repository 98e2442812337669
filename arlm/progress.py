"""Progress of a training run on stderr.

On a terminal: a tqdm bar whose total is the step limit (``--max-steps``) or,
for a time budget alone (``--max-time``), the budget in seconds, with the step
count and an estimate of the steps the budget allows beside it. When stderr is
not a terminal (a log file, a pipe, CI): one plain line every ``interval``
seconds (``ARLM_PROGRESS_INTERVAL``, default 5) and one at the end, never a
carriage return.
"""

from __future__ import annotations

import os
import sys
import time


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("ARLM_PROGRESS_INTERVAL", "5")))
    except ValueError:
        return 5.0


class Progress:
    """``update(step, elapsed, postfix)`` after every optimiser step; ``close()`` at the end.

    Args:
        max_steps: the step limit, or None.
        max_time: the time budget in seconds, or None.
        step, elapsed: the step and seconds the run starts at (non-zero on resume).
        enabled: False shows nothing.
        file: where to write (default stderr).
    """

    def __init__(self, max_steps: int | None, max_time: float | None, step: int = 0, elapsed: float = 0.0,
                 enabled: bool = True, file=None):
        self.file = file or sys.stderr
        self.enabled = enabled
        self.max_steps, self.max_time = max_steps, max_time
        self.by_time = max_steps is None and max_time is not None
        self.step0, self.step, self.elapsed0, self.elapsed, self.postfix = step, step, elapsed, elapsed, {}
        self.tty = enabled and hasattr(self.file, "isatty") and self.file.isatty()
        self.interval = _interval()
        self.last_line = time.monotonic()
        self.bar = None
        if self.tty:
            from tqdm import tqdm

            if self.by_time:
                self.bar = tqdm(total=round(max_time), unit="s", file=self.file, dynamic_ncols=True, mininterval=0.5,
                                bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt}s budget{postfix}", initial=min(elapsed, max_time))
            else:
                self.bar = tqdm(total=max_steps, initial=step, unit="step", file=self.file, dynamic_ncols=True,
                                mininterval=0.5)

    def _steps_estimate(self) -> str:
        if not self.by_time or self.elapsed <= self.elapsed0 or self.step <= self.step0:
            return ""
        rate = (self.step - self.step0) / (self.elapsed - self.elapsed0)  # steps per second in this process
        return f"~{self.step + rate * max(0.0, self.max_time - self.elapsed):.0f}"

    def update(self, step: int, elapsed: float, postfix: dict | None = None) -> None:
        if not self.enabled:
            return
        self.step, self.elapsed = step, elapsed
        if postfix is not None:
            self.postfix = postfix
        if self.bar is not None:
            if self.by_time:
                self.bar.n = min(elapsed, self.max_time)
                self.bar.set_postfix({"step": f"{step}/{self._steps_estimate() or '?'}", **self.postfix},
                                     refresh=False)
                now = time.monotonic()
                if now - self.last_line >= 0.5:  # tqdm refreshes on update(), not on setting n
                    self.bar.refresh()
                    self.last_line = now
            else:
                self.bar.set_postfix(self.postfix, refresh=False)
                self.bar.update(step - self.bar.n)
        elif time.monotonic() - self.last_line >= self.interval:
            self._line()

    def _line(self) -> None:
        self.last_line = time.monotonic()
        if self.max_steps is not None:
            where = f"step {self.step}/{self.max_steps}"
        else:
            est = self._steps_estimate()
            where = f"step {self.step}" + (f" (of {est} estimated)" if est else "")
        if self.max_time is not None:
            where += f", {self.elapsed:.0f}s of {self.max_time:.0f}s"
        else:
            where += f", {self.elapsed:.0f}s"
        extra = "  ".join(f"{k} {v}" for k, v in self.postfix.items())
        print(f"training: {where}  {extra}".rstrip(), file=self.file, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            if self.by_time:
                self.bar.refresh()
            self.bar.close()
        else:
            self._line()
