"""The training loop: get a batch, forward, backward, step, evaluate, checkpoint.

Each concern the loop touches is a small named part: batches
(:mod:`.batches`), the learning rate (:mod:`.schedule`), the optimiser
(:mod:`.optimizer`), the resumable state (:mod:`.state`), the log and plot
(:mod:`.report`), threads and memory (:mod:`.cpu`), several processes
(:mod:`.distributed`). Recipe lineage: nanoGPT (Karpathy) for the GPT training set-up.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import checkpoint
from ..device import resolve_device
from ..errors import ArlmError
from . import distributed
from .batches import IGNORE, TokenData, eval_batches, get_batch
from .cpu import RunThreads, keep_freed_memory
from .optimizer import make_optimizer, uses_bf16
from .report import LOG_FILE, RunLog, diverged, plot_run, truncate_log
from .schedule import lr_at
from .settings import TrainSettings, check_settings
from .state import DATA_FILE, RunState, restore_state, save_model_dir, save_state, snapshot, write_data


def run_training(
    model,
    vocab,
    train_data: TokenData,
    val_data: TokenData | None,
    settings: TrainSettings,
    out_dir: str | Path,
    meta: dict | None = None,
    resume_state: tuple[dict, dict] | None = None,
    stop_after_steps: int | None = None,
    progress: bool = True,
    keep_data: bool = True,
) -> dict:
    """Train ``model`` in place and keep its best weights in the model directory ``out_dir``.

    The loss is the ``mean_nll`` (nats per predicted token) of the next token.
    Under torchrun every rank calls this with the same arguments and the ranks
    train one model (:mod:`.distributed`); only rank 0 writes ``out_dir``.
    The model directory always holds the best (lowest val loss) weights, and
    ``training_state.safetensors`` the last checkpoint (see :mod:`.state`).

    Args:
        model: a GPTModel or LSTMModel (freshly initialised, or the model of ``resume_state``).
        vocab: the vocab of the model (saved into ``out_dir``).
        train_data, val_data: encoded documents (:class:`TokenData`); ``val_data``
            None or empty: no evaluation, the last weights count as the best.
        settings: see :class:`TrainSettings`.
        out_dir: the output directory (created if needed).
        meta: extra JSON fields for ``config.json`` (e.g. ``{"documents": "file"}``).
        resume_state: ``read_state(out_dir / STATE_FILE)`` to continue a run.
        stop_after_steps: stop (cleanly, with a checkpoint) after this many
            steps even if the budget is not spent: simulates an interruption.
        progress: show a progress bar on stderr (see ``arlm.progress``).
        keep_data: write ``training_data.safetensors`` (the encoded train and
            val ids), which only a resume reads.

    Returns:
        a summary dict: ``step``, ``best_step``, ``best_val_loss`` (nats/token or
        None), ``elapsed_s``, ``tokens_per_s``, ``stopped`` (why the run ended),
        ``signal`` (SIGINT / SIGTERM that interrupted the run, else None), ``val_tokens``,
        ``world_size`` (processes, 1 without DDP) and ``backend`` (``"gloo"``/``"nccl"``, None without DDP).

    Raises:
        ArlmError: bad settings, too little data, or a non-finite loss (the
            message names the step; the last good checkpoint is kept).
    """
    from ..progress import Progress

    s = settings
    tr = start_run(model, vocab, train_data, val_data, s, out_dir, meta, resume_state, keep_data)
    run, dist, threads, out_dir = tr.run, tr.dist, tr.threads, tr.out_dir
    stop_flag = StopFlag()
    clock = Clock(run.elapsed)
    meter = Throughput()
    bar = Progress(s.max_steps, s.max_time, run.step, run.elapsed, enabled=progress and dist.is_main)
    post: dict = {}
    val_loss = stopped = None
    restore_malloc = keep_freed_memory() if tr.device.type == "cpu" else (lambda: None)
    try:
        with stop_flag:
            if resume_state is None:
                val_loss = tr.evaluate_and_checkpoint()
            while True:
                run.elapsed = clock()
                stopped = stop_reason(s, run, stop_after_steps, stop_flag, timed=dist.is_main)
                stopped, run.elapsed = dist.agree_stop(stopped, run.elapsed)  # rank 0's clock rules every rank
                if stopped:
                    break
                t0 = time.perf_counter()
                lr = lr_at(s, run.step, run.elapsed)
                x, y = get_batch(train_data, s.documents, s.batch_size, s.block_size, tr.gen)
                loss_value = tr.train_step(x, y, lr)  # forward, backward, clip, optimiser step
                n_tok = batch_tokens(y, s.documents)
                run.tokens_seen += n_tok
                dt = time.perf_counter() - t0
                meter.add(n_tok, dt)
                threads.record(dt / max(n_tok, 1))
                tr.log({"step": run.step, "loss": loss_value, "lr": lr})
                run.elapsed = clock()
                if run.step % s.eval_interval == 0:
                    tr.log({"step": run.step, "tokens_per_s": round(meter.end_interval(), 1),
                            "elapsed_s": round(run.elapsed, 3), "threads": threads.current, **dist.record()})
                    val_loss = tr.evaluate_and_checkpoint()
                if run.step % 10 == 0 or run.step == 1:
                    post = progress_postfix(s, run, loss_value, val_loss, meter)
                bar.update(run.step, run.elapsed, post)
            if meter.seconds:
                tr.log({"step": run.step, "tokens_per_s": round(meter.end_interval(), 1),
                        "elapsed_s": round(run.elapsed, 3), **dist.record()})
            if tr.last_eval_step != run.step:
                val_loss = tr.evaluate_and_checkpoint(stopped)
            else:
                tr.checkpoint(stopped)  # record why it stopped
    except distributed.RankFailure as e:  # say so before the clean-up: torchrun may end this rank any moment
        raise e.reported(f"; this rank stopped before step {run.step + 1}; {out_dir} keeps the checkpoint of step "
                         f"{tr.saved_step}: continue with arlm train --resume {out_dir} (under torchrun or "
                         "with --nproc)") from None
    finally:
        bar.close()
        tr.log.close()
        threads.close()
        restore_malloc()
        if dist.is_main:
            plot_run(out_dir, model, vocab)
    model.eval()
    return {
        "step": run.step,
        "best_step": run.best_step,
        "best_val_loss": run.best_val if math.isfinite(run.best_val) else None,
        "elapsed_s": run.elapsed,
        "tokens_per_s": meter.tok_s,
        "stopped": stopped,
        "signal": stop_flag.signum,  # SIGINT / SIGTERM that interrupted the run, else None
        "val_tokens": sum(int((y != IGNORE).sum()) for _, y in tr.val_batches),
        **dist.record(),  # world_size (1: a single process) and the DDP backend (None: a single process)
    }


def start_run(model, vocab, train_data: TokenData, val_data: TokenData | None, s: TrainSettings, out_dir,
              meta: dict | None, resume_state: tuple[dict, dict] | None, keep_data: bool) -> "Trainer":
    """Check the settings, join the process group under torchrun, and set up a fresh or resumed run.

    Raises:
        ArlmError: bad settings or too little data (see :func:`run_training`).
    """
    dist = distributed.setup(s.device)  # under torchrun: join the process group; else a single process
    out_dir = checkpoint.prepare_dir(out_dir) if dist.is_main else Path(out_dir)
    meta = dict(meta or {})
    meta.setdefault("documents", s.documents)
    if train_data.n_tokens < 2 or int(train_data.lengths.max()) < 2:
        raise ArlmError("too little training data: need at least one token per document")
    check_settings(s)
    device = dist.device if dist.enabled else resolve_device(s.device)
    threads = RunThreads(s.threads, device, dist)
    has_val = val_data is not None and val_data.n_tokens >= 2
    # Recurrent models also train on independent random windows from the zero
    # state: carrying the state across consecutive batches (truncated BPTT over
    # contiguous streams) measured worse here (1.766 vs 1.678 nats on
    # tinyshakespeare val, LSTM 256, 2300 steps), the batches being less diverse.
    val_batches = eval_batches(val_data, s.documents, s.batch_size, s.block_size, s.eval_iters, s.seed) if has_val else []
    tr = Trainer(model, vocab, s, out_dir, meta, device, val_batches, dist)
    tr.threads = threads
    if resume_state is not None:
        tr.resume(*resume_state)
    elif dist.is_main and keep_data:
        write_data(out_dir, train_data, val_data if has_val else None)
    elif dist.is_main:
        (out_dir / DATA_FILE).unlink(missing_ok=True)  # a stale copy from an earlier run
    tr.log = RunLog(out_dir, fresh=resume_state is None, enabled=dist.is_main)
    return tr


class Trainer:
    """The parts of one run that the loop calls: a training step, evaluation, checkpoints.

    Holds the model, its optimiser, the batch generator ``gen`` (seeded with
    ``settings.seed``), the fixed val batches and ``run`` (:class:`RunState`).
    """

    def __init__(self, model, vocab, settings: TrainSettings, out_dir: Path, meta: dict, device: torch.device,
                 val_batches: list, dist: distributed.Dist | None = None):
        self.model, self.vocab, self.s, self.out_dir, self.meta = model, vocab, settings, out_dir, meta
        self.device, self.val_batches = device, val_batches
        self.dist = dist or distributed.Dist()
        model.to(device)
        model.train()
        self.autocast = autocast_for(settings, device)
        self.fwd = self.dist.wrap(model)  # the model itself in a single process
        if settings.compile:
            self.fwd = torch.compile(self.fwd)
        self.optimizer = make_optimizer(model, settings, device)
        self.gen = torch.Generator().manual_seed(settings.seed)
        self.run = RunState()
        self.last_eval_step = -1
        self.saved_step: int | None = None  # the step of the last checkpoint written (by rank 0)
        self.threads: RunThreads | None = None
        self.log: RunLog | None = None
        self.nan_at = int(os.environ.get("ARLM_TEST_NAN_AT_STEP", "-1"))  # test hook: a NaN loss at this step
        # test hook: ARLM_TEST_EXIT_AT="RANK:STEP" makes that rank die (exit 3, no clean-up) before that step
        self.exit_at = tuple(int(v) for v in os.environ.get("ARLM_TEST_EXIT_AT", "-1:-1").split(":"))

    def resume(self, tensors: dict, st: dict) -> None:
        """Continue from a checkpoint: weights, optimiser, RNGs, step; the log is cut back to that step."""
        self.run = restore_state(self.model, self.optimizer, self.gen, tensors, st)
        self.last_eval_step = self.saved_step = self.run.step
        if self.dist.is_main:
            truncate_log(self.out_dir / LOG_FILE, self.run.step)
            self.save_model_dir()

    def train_step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
        """One optimiser step on the batch ``x, y`` (LongTensor[B, T] each) at learning rate ``lr``.

        Under DDP ``x, y`` are the global batch; this rank computes its rows
        (:meth:`.distributed.Dist.shard`). Returns the global batch's loss
        (``mean_nll``, nats per predicted token) before the step.

        Raises:
            ArlmError: a non-finite loss or gradient norm (see :func:`.report.diverged`).
        """
        run, s = self.run, self.s
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        if (self.dist.rank, run.step) == self.exit_at:
            os._exit(3)
        if self.dist.enabled:
            loss, loss_value = self._shard_loss(x, y)
        else:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with self.autocast():
                logits = self.fwd(x)  # [B, T, V]
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE)
            loss_value = loss.detach().item()
        if run.step == self.nan_at:
            loss_value = float("nan")
        if not math.isfinite(loss_value):
            diverged(run.step, loss_value, run.best_step, self.out_dir, self.log)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip > 0:
            gnorm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip))
            if not math.isfinite(gnorm):
                diverged(run.step, gnorm, run.best_step, self.out_dir, self.log, what="gradient norm")
        self.optimizer.step()
        run.step += 1
        return loss_value

    def _shard_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
        """This rank's share of the global batch's loss (scaled so DDP's gradient average is the
        global ``mean_nll``'s gradient) and the global ``mean_nll`` itself (summed across ranks)."""
        n_global = int((y != IGNORE).sum())  # predicted tokens of the global batch
        rows = self.dist.shard(x.shape[0])
        x, y = x[rows].to(self.device, non_blocking=True), y[rows].to(self.device, non_blocking=True)
        with self.autocast():
            logits = self.fwd(x)  # [B / world_size, T, V]
        nll = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum")
        (total,) = self.dist.all_reduce([nll.detach().item()], what=f"summing the loss of step {self.run.step + 1}")
        return nll * (self.dist.world_size / max(n_global, 1)), total / max(n_global, 1)

    def evaluate_and_checkpoint(self, stopped: str | None = None) -> float | None:
        """Val loss (nats per token, None without val); keep the best weights; write the checkpoint."""
        run = self.run
        self.last_eval_step = run.step
        val = None
        if self.val_batches:
            val = estimate_val_loss(self.model, self.val_batches, self.device, self.autocast, self.dist)
            self.log({"step": run.step, "val_loss": val, "elapsed_s": round(run.elapsed, 3)})
        if val is None or val < run.best_val or run.best_weights is None:
            if val is not None:
                run.best_val = val
            run.best_step = run.step
            run.best_weights = snapshot(self.model)
            self.save_model_dir()
        self.checkpoint(stopped)
        return val

    def checkpoint(self, stopped: str | None = None) -> None:
        """Write the training state (``stopped``: why the run ended, else None); rank 0 only."""
        self.saved_step = self.run.step
        if not self.dist.is_main:
            return
        if self.log is not None:
            self.log.flush()
        save_state(self.out_dir, self.model, self.optimizer, self.gen, self.vocab, self.meta, self.s, self.run, stopped)

    def save_model_dir(self) -> None:
        run = self.run
        if not self.dist.is_main:
            return
        save_model_dir(self.model, self.vocab, self.out_dir, self.meta, run.best_weights, run.best_step, run.best_val,
                       self.dist.record())


# -- small parts of the loop -------------------------------------------------------------


def autocast_for(s: TrainSettings, device: torch.device):
    """bf16 autocast of the training forward where ``s.precision`` asks for it (:func:`.optimizer.uses_bf16`),
    none elsewhere: a function returning the context manager."""
    bf16 = uses_bf16(s, device)
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


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
