"""How many CPU threads arlm uses, and when it must leave the count alone.

A thread count the user fixed is respected everywhere, training and inference:
``--threads N``, then ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` in the
environment, then a ``torch.set_num_threads`` call made after ``arlm`` was
imported (one made before cannot be told from PyTorch's default). Only when
none is given does arlm choose: the idle cores (:func:`default_threads`) for
inference, and the load-adaptive :class:`ThreadGovernor` for
training.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

from .errors import ArlmError

_TORCH_THREADS_AT_IMPORT = torch.get_num_threads()
_set_by_arlm: int | None = None  # the last count arlm chose by itself (not the user's)
_fixed_by_user: int | None = None  # a --threads of an inference command, kept for training in the same process
ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """The cores that are idle now: the CPU count (affinity) minus the other
    runnable processes (``/proc/loadavg``), at least 1."""
    busy = 0
    try:
        # field 4 is "running/total"; running counts this process too
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        busy = max(0, running - 1)
    except (OSError, ValueError, IndexError):
        pass
    return max(1, cpu_count() - busy)


def explicit_threads(requested: int | None = None) -> int | None:
    """The thread count the user fixed, or None when arlm may choose.

    ``requested`` (a ``--threads`` value) wins; then ``OMP_NUM_THREADS`` or
    ``MKL_NUM_THREADS`` (the first number of a nested list such as ``4,2``);
    then a ``torch.set_num_threads`` made since ``arlm`` was imported.

    Raises:
        ArlmError: ``requested`` below 1.
    """
    if requested is not None:
        if requested < 1:
            raise ArlmError(f"--threads must be >= 1, got {requested}")
        return int(requested)
    if _fixed_by_user is not None:
        return _fixed_by_user
    for var in ENV_VARS:
        value = os.environ.get(var, "").split(",")[0].strip()
        if value.isdigit() and int(value) >= 1:
            return int(value)
    if torch.get_num_threads() not in (_TORCH_THREADS_AT_IMPORT, _set_by_arlm):
        return torch.get_num_threads()
    return None


def set_inference_threads(requested: int | None = None) -> int:
    """Set the thread count for scoring and sampling and return it: the user's
    (:func:`explicit_threads`) when given, else the idle cores. PyTorch's
    one-thread-per-core default collapses when another process keeps a core
    busy (its threads spin-wait for each other)."""
    global _set_by_arlm, _fixed_by_user
    n = explicit_threads(requested)
    if requested is not None:
        _fixed_by_user = n
    else:
        n = _set_by_arlm = n or default_threads()
    torch.set_num_threads(n)
    return n


class IdleCores:
    """How many of this process's CPUs were idle since the last call, from ``/proc/stat``.

    Calling the object returns idle cores (a float, e.g. 0.97 of one core) over
    the interval since the previous call, or None where ``/proc/stat`` cannot
    be read (not Linux) or no time has passed.
    """

    def __init__(self):
        try:
            self.cpus = os.sched_getaffinity(0)
        except AttributeError:
            self.cpus = None
        self.last = self._read()

    def _read(self) -> tuple[int, int, int] | None:
        try:
            lines = Path("/proc/stat").read_text().splitlines()
        except OSError:
            return None
        idle = total = n = 0
        for line in lines:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            parts = line.split()
            try:
                cpu = int(parts[0][3:])
                ticks = [int(x) for x in parts[1:9]]
            except ValueError:
                continue
            if self.cpus is not None and cpu not in self.cpus:
                continue
            idle += ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
            total += sum(ticks)
            n += 1
        return (idle, total, n) if n else None

    def __call__(self) -> float | None:
        cur, prev = self._read(), self.last
        self.last = cur
        if cur is None or prev is None or cur[1] <= prev[1]:
            return None
        return (cur[0] - prev[0]) / (cur[1] - prev[1]) * cur[2]


class ThreadGovernor:
    """Adapts the CPU thread count to the load while training (used unless the user fixed a count).

    PyTorch's threads spin-wait for each other at every operation, so when
    another process takes a core, a step with one thread per core can become
    tens of times slower, while fewer threads only lose their share of a core.
    The governor records the time per token of every step (the first step
    after a switch is a warm-up and is not judged):

    * at all cores, when the median of the last 5 steps rises above
      ``collapse`` times the best median seen, it steps down (to 1 thread on
      a 2-core machine, to one thread fewer on bigger ones);
    * below all cores it probes all cores again: at once when ``/proc/stat``
      shows the other cores idle for a second (the disturbance has ended;
      at most every 3 s, backing off to 30 s while such probes fail), and in
      any case after a back-off (10 s, doubling after each failed probe, at
      most 60 s). A probe keeps all cores when the median of its 3 judged
      steps beats the lower count by 5 %, and is abandoned after the first
      step slower than ``collapse`` times it.

    So a short disturbance (an eval pass, another short process) costs a few
    seconds at the lower count, a lasting one costs at most a collapsed step
    or two per back-off, and a quiet machine runs at all cores.
    """

    collapse = 2.0
    backoff_start, backoff_max = 10.0, 60.0
    idle_gap_start, idle_gap_max = 3.0, 30.0
    probe_steps = 3

    def __init__(self, start: int, max_threads: int, enabled: bool = True, clock=time.perf_counter,
                 idle_cores=None):
        self.max = max(1, max_threads)
        self.enabled = enabled and self.max > 1
        self.clock = clock
        self.idle_cores = idle_cores if idle_cores is not None else (IdleCores() if self.enabled else None)
        self.current = min(max(1, start), self.max) if self.enabled else max(1, start)
        self.low = self.current if self.current < self.max else self._lower(self.max)
        self.hist: dict[int, list[float]] = {}
        self.best_max = math.inf
        now = clock()
        self.backoff = self.backoff_start
        self.next_probe = now + self.backoff  # a start below all cores (a busy moment at launch): the idle check comes first
        self.idle_gap = self.idle_gap_start
        self.next_idle_check = now + 1.0
        self.next_idle_probe = now
        self.probing: list[float] | None = None
        self.probe_reason = ""
        self.warmup = 0
        self.switches = 0
        torch.set_num_threads(self.current)

    def _lower(self, n: int) -> int:
        return 1 if n <= 2 else n - 1

    def _set(self, n: int) -> None:
        if n != self.current:
            self.current = n
            self.switches += 1
            self.warmup = 1  # the first step after a switch wakes or parks the thread pool
            torch.set_num_threads(n)

    @staticmethod
    def _median(xs: list[float]) -> float:
        ys = sorted(xs)
        return ys[len(ys) // 2]

    def _ref_low(self) -> float:
        h = self.hist.get(self.low)
        return self._median(h[-5:]) if h else math.inf

    def record(self, seconds_per_token: float) -> None:
        """Take the time per token (seconds) of the step just done; may change the thread count."""
        if not self.enabled:
            return
        now = self.clock()
        if self.warmup:
            self.warmup -= 1
            if self.probing is not None and seconds_per_token > 4 * self.collapse * self._ref_low():
                self._end_probe(ok=False, now=now)  # hopeless: all cores are fought over
            return
        if self.probing is not None:
            self.probing.append(seconds_per_token)
            ref = self._ref_low()
            if seconds_per_token > self.collapse * ref:
                self._end_probe(ok=False, now=now)
            elif len(self.probing) >= self.probe_steps:
                self._end_probe(ok=self._median(self.probing) < 0.95 * ref, now=now)
            return
        h = self.hist.setdefault(self.current, [])
        h.append(seconds_per_token)
        del h[:-9]
        if self.current == self.max:
            if len(h) >= 5:
                recent = self._median(h[-5:])
                self.best_max = min(self.best_max, recent)
                if recent > self.collapse * self.best_max:
                    self.low = self._lower(self.max)
                    self.hist[self.low] = []
                    self._set(self.low)
                    self.backoff = self.backoff_start
                    self.next_probe = now + self.backoff
                    self.next_idle_probe = now + 1.0
            return
        if len(h) < 3:
            return
        reason = ""
        if now >= self.next_probe:
            reason = "backoff"
        elif now >= self.next_idle_check:
            self.next_idle_check = now + 1.0
            idle = self.idle_cores() if self.idle_cores is not None else None
            if idle is not None and idle >= 0.6 * (self.max - self.current) and now >= self.next_idle_probe:
                reason = "idle"
        if reason:
            self.low = self.current
            self.probing = []
            self.probe_reason = reason
            self.hist[self.max] = []
            self._set(self.max)

    def _end_probe(self, ok: bool, now: float) -> None:
        self.probing = None
        if ok:
            self.backoff = self.backoff_start
            self.idle_gap = self.idle_gap_start
            self.best_max = math.inf
            return
        self._set(self.low)
        if self.probe_reason == "idle":
            self.idle_gap = min(self.idle_gap * 2, self.idle_gap_max)
            self.next_idle_probe = now + self.idle_gap
        else:
            self.backoff = min(self.backoff * 2, self.backoff_max)
            self.next_probe = now + self.backoff
        if self.idle_cores is not None:
            self.idle_cores()  # measure idleness afresh, without the probe in it
        self.next_idle_check = now + 1.0
