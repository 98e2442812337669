"""The small parts of the training loop (:mod:`.loop`): autocast, the compile rule, the clock, the throughput
meter, the stop flag, stop reasons, the progress line, and the val estimate."""

from __future__ import annotations

import math
import signal
import time

import torch
import torch.nn.functional as F

from . import distributed
from .batches import IGNORE
from .optimizer import uses_bf16
from .settings import TrainSettings
from .state import RunState

#: ``settings.compile`` None compiles on CUDA when the run has at least this time budget (seconds) ...
AUTO_COMPILE_MIN_TIME = 300.0
#: ... or, with no time budget, at least this many steps (:func:`compiles`).
AUTO_COMPILE_MIN_STEPS = 5000


# -- small parts of the loop -------------------------------------------------------------


def autocast_for(s: TrainSettings, device: torch.device):
    """bf16 autocast of the training forward where ``s.precision`` asks for it (:func:`.optimizer.uses_bf16`),
    none elsewhere: a function returning the context manager."""
    bf16 = uses_bf16(s, device)
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def compiles(s: TrainSettings, device: torch.device) -> bool:
    """Whether the run compiles its training step with ``torch.compile``.

    ``s.compile`` True or False decides; None (the default) compiles on CUDA when the budget pays for
    the compilation (a minute or so, spent once per process and not counted in the budget): a
    ``max_time`` of at least ``AUTO_COMPILE_MIN_TIME`` seconds or, without one, at least
    ``AUTO_COMPILE_MIN_STEPS`` steps. Never by default on the CPU, where compiling takes longer
    than a short run gains.
    """
    if s.compile is not None:
        return bool(s.compile)
    if device.type != "cuda":
        return False
    if s.max_time is not None:
        return s.max_time >= AUTO_COMPILE_MIN_TIME
    return s.max_steps is not None and s.max_steps >= AUTO_COMPILE_MIN_STEPS


def draws_ahead(device: torch.device, dist: distributed.Dist) -> bool:
    """Whether the loop draws each batch a step ahead (:meth:`Trainer.draw_ahead`): on CUDA in one process,
    where the host is otherwise idle while the device works; elsewhere the step is synchronous anyway."""
    return device.type == "cuda" and not dist.enabled


def compile_count() -> int:
    """Graphs ``torch.compile`` has built in this process so far (a step that changes it compiled)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def batch_tokens(y: torch.Tensor, documents: str) -> int:
    """Predicted tokens in a batch of targets ``y`` (LongTensor[B, T]): padding does not count."""
    return y.numel() if documents == "file" else int((y != IGNORE).sum())


def stop_reason(s: TrainSettings, run: RunState, stop_after_steps: int | None, stop_flag: "StopFlag",
                timed: bool = True) -> str | None:
    """Why the run stops before its next step (``max_steps``, ``max_time``, ``interrupted``), or None.

    ``timed`` False (a DDP rank other than 0) leaves ``max_time`` to rank 0's clock.
    """
    if s.max_steps is not None and run.step >= s.max_steps:
        return "max_steps"
    if timed and s.max_time is not None and run.elapsed >= s.max_time:
        return "max_time"
    if stop_after_steps is not None and run.step >= stop_after_steps:
        return "interrupted"
    if stop_flag.stop:
        return "interrupted"
    return None


def progress_postfix(s: TrainSettings, run: RunState, loss_value: float, val_loss: float | None,
                     meter: "Throughput") -> dict:
    """What the progress bar shows beside the step count."""
    post = {"loss": f"{loss_value:.3f}"}
    if val_loss is not None:  # the last evaluation's, every --eval-interval steps
        post["val"] = f"{val_loss:.3f}@{run.step - run.step % s.eval_interval}"
    post["tok/s"] = f"{meter.now():.0f}"
    if s.max_time is not None:
        post["left"] = f"{max(0.0, s.max_time - run.elapsed):.0f}s"
    return post


class Clock:
    """Seconds of training so far: ``elapsed_before`` (earlier sessions of the run) plus this session's."""

    def __init__(self, elapsed_before: float):
        self.before = elapsed_before
        self.t_start = time.perf_counter()

    def __call__(self) -> float:
        return self.before + time.perf_counter() - self.t_start

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` just spent (compiling) out of the training time."""
        self.before -= seconds


class Throughput:
    """Tokens per second of the training steps (evaluation and checkpoints excluded), per interval."""

    def __init__(self):
        self.tokens, self.seconds, self.tok_s = 0, 0.0, 0.0

    def add(self, n_tokens: int, seconds: float) -> None:
        self.tokens += n_tokens
        self.seconds += seconds

    def end_interval(self) -> float:
        """The interval's tokens per second (kept as ``tok_s``); starts the next interval."""
        self.tok_s = self.tokens / max(self.seconds, 1e-9)
        self.tokens, self.seconds = 0, 0.0
        return self.tok_s

    def now(self) -> float:
        return self.tokens / self.seconds if self.seconds else self.tok_s


class StopFlag:
    """Set by SIGINT/SIGTERM so the loop stops at the next step boundary and checkpoints."""

    def __init__(self):
        self.stop = False
        self.signum: int | None = None
        self._old = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.stop:  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.stop = True
        self.signum = signum

    def __exit__(self, *exc):
        for sig, h in self._old.items():
            signal.signal(sig, h)


@torch.no_grad()
def estimate_val_loss(model, batches, device, autocast, dist: distributed.Dist | None = None) -> float:
    """Mean NLL (nats per target token) of ``model`` over fixed batches (x, y LongTensor[B, T]).

    Under DDP each rank scores every ``world_size``-th batch and the sums are added across ranks.
    """
    dist = dist or distributed.Dist()
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in batches[dist.rank::dist.world_size]:
        x, y = x.to(device), y.to(device)
        with autocast():
            logits = model.logits(x)  # [B, T, V]
        nll = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum")
        total += float(nll)
        count += int((y != IGNORE).sum())
    model.train(was_training)
    if dist.enabled:
        total, count = dist.all_reduce([total, count], what="summing the val loss")
    return total / max(count, 1)


def run_summary(tr, meter, stopped, stop_flag) -> dict:
    """What :func:`run_training` returns (see there)."""
    run = tr.run
    return {
        "step": run.step,
        "best_step": run.best_step,
        "best_val_loss": run.best_val if math.isfinite(run.best_val) else None,
        "elapsed_s": run.elapsed,
        "tokens_per_s": meter.tok_s,
        "stopped": stopped,
        "signal": stop_flag.signum,  # SIGINT / SIGTERM that interrupted the run, else None
        "val_tokens": sum(int((y != IGNORE).sum()) for _, y in tr.val_batches),
        "compile_s": tr.compile_s,  # seconds of steps that compiled: outside ``elapsed_s`` and the --max-time budget
        **tr.dist.record(),  # world_size (1: a single process) and the DDP backend (None: a single process)
    }
