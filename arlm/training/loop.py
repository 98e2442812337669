"""The training loop: get a batch, forward, backward, step, evaluate, checkpoint.

Each concern the loop touches is a small named part: batches
(:mod:`.batches`), the learning rate (:mod:`.schedule`), the optimiser
(:mod:`.optimizer`), the resumable state (:mod:`.state`), the log and plot
(:mod:`.report`), threads and memory (:mod:`.cpu`), several processes
(:mod:`.distributed`). Recipe lineage: nanoGPT (Karpathy) for the GPT training set-up.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import checkpoint
from ..device import resolve_device
from ..errors import ArlmError
from . import distributed
from .batches import IGNORE, EpochOrder, TokenData, eval_batches, get_batch  # noqa: F401
from .cpu import RunThreads, keep_freed_memory
from .ema import ema_in_use, make_ema
from .optimizer import make_optimizer, set_step_hyperparameters
from .report import LOG_FILE, RunLog, diverged, plot_run, truncate_log
from .schedule import lr_at, planned_passes
from .settings import TrainSettings, check_settings
from .parts import (AUTO_COMPILE_MIN_STEPS, AUTO_COMPILE_MIN_TIME, Clock, StopFlag, Throughput, autocast_for, batch_tokens,
                    compile_count, compiles, draws_ahead, estimate_val_loss, progress_postfix, run_summary,
                    stop_reason)  # noqa: F401
from .state import DATA_FILE, RunState, restore_state, save_model_dir, save_state, snapshot, write_data

#: Steps between reads of the losses from the device (and evaluations and checkpoints read them too).
LOG_INTERVAL = 10
#: The ``torch.compile`` backend (tests set a cheaper one).
COMPILE_BACKEND = "inductor"


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
        ``compile_s`` (seconds of the steps that ran ``torch.compile``; not counted in ``elapsed_s``
        nor in ``settings.max_time``, see :func:`compiles`),
        ``world_size`` (processes, 1 without DDP) and ``backend`` (``"gloo"``/``"nccl"``, None without DDP).

    The step reads nothing back from the device: the losses and gradient norms
    of the steps since the last read are read together every ``LOG_INTERVAL``
    steps, at each evaluation and before each checkpoint, so a non-finite value
    stops the run at most ``LOG_INTERVAL - 1`` steps after its step (the error
    names that step) and no checkpoint holds weights after it.

    Raises:
        ArlmError: bad settings, too little data, or a non-finite loss (the
            message names the step; the last good checkpoint is kept).
    """
    from ..progress import Progress

    s = settings
    tr = start_run(model, vocab, train_data, val_data, s, out_dir, meta, resume_state, keep_data)
    run, dist, out_dir = tr.run, tr.dist, tr.out_dir
    stop_flag = StopFlag()
    clock = Clock(run.elapsed)
    meter = Throughput()
    bar = Progress(s.max_steps, s.max_time, run.step, run.elapsed, enabled=progress and dist.is_main)
    val_loss = stopped = None
    restore_malloc = keep_freed_memory() if tr.device.type == "cpu" else (lambda: None)
    try:
        with stop_flag:
            if resume_state is None:
                val_loss = tr.evaluate_and_checkpoint()
            stopped, val_loss = _step_loop(tr, s, train_data, stop_after_steps, stop_flag, clock, meter, bar, val_loss)
            _end_run(tr, meter, stopped)
    except distributed.RankFailure as e:  # say so before the clean-up: torchrun may end this rank any moment
        raise e.reported(f"; this rank stopped before step {run.step + 1}; {out_dir} keeps the checkpoint of step "
                         f"{tr.saved_step}: continue with arlm train --resume {out_dir} (under torchrun or "
                         "with --nproc)") from None
    finally:
        _close_run(tr, bar, restore_malloc, model, vocab)
    dist.barrier("finishing the run")  # leave together: rank 1 once aborted at exit while rank 0 still plotted
    model.eval()
    return run_summary(tr, meter, stopped, stop_flag)


def _close_run(tr, bar, restore_malloc, model, vocab) -> None:
    """Whatever happened: close the progress bar, the log and the thread governor, give freed memory back,
    and (rank 0) draw the loss plot."""
    bar.close()
    tr.log.close()
    tr.threads.close()
    restore_malloc()
    if tr.dist.is_main:
        plot_run(tr.out_dir, model, vocab)


def _end_run(tr, meter, stopped) -> None:
    """Read the last losses, log the last throughput, and evaluate and checkpoint the last step (or record why
    the run stopped)."""
    run = tr.run
    tr.read_losses()
    if meter.seconds:
        tr.log({"step": run.step, "tokens_per_s": round(meter.end_interval(), 1),
                "elapsed_s": round(run.elapsed, 3), **tr.compile_record(), **tr.dist.record()})
    if tr.last_eval_step != run.step:
        tr.evaluate_and_checkpoint(stopped)
    else:
        tr.checkpoint(stopped)  # record why it stopped


def _step_loop(tr, s: TrainSettings, train_data: TokenData, stop_after_steps, stop_flag, clock, meter, bar, val_loss):
    """The steps of :func:`run_training` until a stop reason (budget, signal, ``stop_after_steps``): get a batch,
    train on it, log, and evaluate and checkpoint every ``eval_interval`` steps. Returns ``(stopped, val_loss)``."""
    run, dist, threads = tr.run, tr.dist, tr.threads
    post: dict = {}
    while True:
        run.elapsed = clock()
        stopped = stop_reason(s, run, stop_after_steps, stop_flag, timed=dist.is_main)
        stopped, run.elapsed = dist.agree_stop(stopped, run.elapsed)  # rank 0's clock rules every rank
        if stopped:
            break
        t0 = time.perf_counter()
        lr = lr_at(s, run.step, run.elapsed)
        tr.passes = planned_passes(s, run.step, run.elapsed, train_data.n_tokens)
        x, y = tr.next_batch(train_data)  # y_cpu: the targets on the host, for counting
        compiles = compile_count() if tr.compiling else 0
        tr.train_step(x, y, lr)  # forward, backward, clip, optimiser step; nothing read back
        n_tok = batch_tokens(tr.y_cpu, s.documents)
        run.tokens_seen += n_tok
        tr.draw_ahead(train_data)  # the next batch, while the device works on this step
        if run.step % s.eval_interval == 0 or run.step % LOG_INTERVAL == 0 or run.step == 1:
            tr.read_losses()  # the one wait for the device: log and check the interval's losses
        dt = time.perf_counter() - t0
        if tr.compiling and compile_count() != compiles:  # this step compiled (or recompiled): compile time
            tr.compile_s += dt
            clock.exclude(dt)
        else:
            meter.add(n_tok, dt)
            threads.record(dt / max(n_tok, 1))
        run.elapsed = clock()
        if run.step % s.eval_interval == 0:
            tr.log({"step": run.step, "tokens_per_s": round(meter.end_interval(), 1),
                    "elapsed_s": round(run.elapsed, 3), "threads": threads.current, **tr.compile_record(),
                    **tr.dist.record()})
            val_loss = tr.evaluate_and_checkpoint()
        if run.step % 10 == 0 or run.step == 1:
            post = progress_postfix(s, run, tr.last_loss, val_loss, meter)
        bar.update(run.step, run.elapsed, post)
    return stopped, val_loss


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
        self.loss_of = self._loss_of
        self.compiling = compiles(settings, device)
        if self.compiling:
            if self.dist.enabled:  # DDP splits the graph at its gradient buckets
                self.fwd = torch.compile(self.fwd, backend=COMPILE_BACKEND)
            else:  # forward and loss as one graph; the GPT traces whole
                from ..models.gpt import GPTModel

                self.fullgraph = isinstance(model, GPTModel)
                self.compiled = torch.compile(self._loss_of, fullgraph=self.fullgraph, backend=COMPILE_BACKEND)
                self.loss_of = self._compiled_loss_of
        self.optimizer = make_optimizer(model, settings, device)
        self.ema = make_ema(model, settings.ema_decay)
        self.passes: float | None = None  # planned passes over train (.schedule.planned_passes), each step
        self.order: EpochOrder | None = None  # --batch-order epochs, made at the first batch
        self.gen = torch.Generator().manual_seed(settings.seed)
        self.pending: list[tuple[int, float, torch.Tensor | float, torch.Tensor | None]] = []  # unread steps
        self.last_loss = math.nan  # the latest loss read back (progress bar)
        self.compile_s = 0.0  # seconds of steps that compiled, this session
        self.y_cpu: torch.Tensor | None = None  # the current batch's targets on the host
        self.ahead = None  # CUDA: (x, y on the device, y on the host, generator state before drawing them)
        self.prefetch = draws_ahead(device, self.dist)
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
        if self.ema is not None:
            try:
                self.ema.load(tensors)
            except KeyError:  # a run saved without an average: an auto one starts from the resumed weights
                if self.s.ema_decay is not None:
                    raise
                self.ema.reset()
        self.last_eval_step = self.saved_step = self.run.step
        if self.dist.is_main:
            truncate_log(self.out_dir / LOG_FILE, self.run.step)
            self.save_model_dir()

    def next_batch(self, data: TokenData) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of this step (x, y LongTensor[B, T]): drawn now, or (CUDA) the one :meth:`draw_ahead` drew.

        Sets ``y_cpu`` to the targets on the host."""
        if self.ahead is not None:
            x, y, self.y_cpu, _ = self.ahead
            self.ahead = None
            return x, y
        x, y = self._draw(data, self.run.step)
        self.y_cpu = y
        return x, y

    def _draw(self, data: TokenData, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of optimiser step ``step`` (0-based): from ``gen``, or (``--batch-order epochs``, documents
        ``file``) from the step."""
        if self.s.batch_order != "epochs" or self.s.documents != "file":
            return get_batch(data, self.s.documents, self.s.batch_size, self.s.block_size, self.gen)
        if self.order is None:
            self.order = EpochOrder(data, self.s.block_size, self.s.seed)
        return self.order.batch(data, step, self.s.batch_size)

    def draw_ahead(self, data: TokenData) -> None:
        """On CUDA (one process): draw the next batch now, into pinned memory, and start its copy to the device.

        The generator's state before the draw is kept: a checkpoint records that
        state (:meth:`checkpoint` drops the drawn batch), so a resume draws the same batches."""
        if not self.prefetch:
            return
        state = self.gen.get_state()
        x, y = self._draw(data, self.run.step)
        pin = self.device.type == "cuda"  # page-locked: the copy runs while the device computes
        self.ahead = ((x.pin_memory() if pin else x).to(self.device, non_blocking=True),
                      (y.pin_memory() if pin else y).to(self.device, non_blocking=True), y, state)

    def _loss_of(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The batch's ``mean_nll`` (nats per predicted token; a 0-dim float32 tensor on the device)."""
        with self.autocast():
            logits = self.fwd(x)  # [B, T, V]
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE)

    def _compiled_loss_of(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:meth:`_loss_of` compiled; a graph that cannot be traced whole is compiled in parts instead."""
        try:
            return self.compiled(x, y)
        except torch._dynamo.exc.Unsupported:
            if not self.fullgraph:
                raise
            self.fullgraph = False
            self.compiled = torch.compile(self._loss_of, backend=COMPILE_BACKEND)
            return self.compiled(x, y)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> None:
        """One optimiser step on the batch ``x, y`` (LongTensor[B, T] each) at learning rate ``lr``.

        Under DDP ``x, y`` are the global batch; this rank computes its rows
        (:meth:`.distributed.Dist.shard`). Nothing is read back from the device:
        the global batch's loss (``mean_nll``, nats per predicted token, before
        the step) and the gradient norm wait in ``pending`` for :meth:`read_losses`.
        """
        run, s = self.run, self.s
        set_step_hyperparameters(self.optimizer, s, lr, run.step, self.passes)
        if (self.dist.rank, run.step) == self.exit_at:
            os._exit(3)
        if self.dist.enabled:
            loss, loss_value = self._shard_loss(x, y)
        else:
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            loss = self.loss_of(x, y)
            loss_value = loss.detach()
        if run.step == self.nan_at:
            loss_value = loss_value + float("nan")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = None
        if s.grad_clip > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip).detach()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(run.step)
        self.pending.append((run.step, lr, loss_value, gnorm))
        run.step += 1

    def read_losses(self) -> None:
        """Read the pending steps' losses and gradient norms back from the device (one wait), check and log them.

        Raises:
            ArlmError: a non-finite loss or gradient norm (see :func:`.report.diverged`), naming its step.
        """
        if not self.pending:
            return
        on_device = [v for _, _, loss, gnorm in self.pending for v in (loss, gnorm) if isinstance(v, torch.Tensor)]
        values = iter(torch.stack([v.float() for v in on_device]).tolist() if on_device else [])
        pending, self.pending = self.pending, []
        for step, lr, loss, gnorm in pending:
            loss = next(values) if isinstance(loss, torch.Tensor) else loss
            gnorm = next(values) if isinstance(gnorm, torch.Tensor) else gnorm
            if not math.isfinite(loss):
                diverged(step, loss, self.run.best_step, self.out_dir, self.log)
            if gnorm is not None and not math.isfinite(gnorm):
                diverged(step, gnorm, self.run.best_step, self.out_dir, self.log, what="gradient norm")
            self.log({"step": step + 1, "loss": loss, "lr": lr})
            self.last_loss = loss

    def compile_record(self) -> dict:
        """``{"compile_s": ...}`` for a log record when steps of this session compiled, else ``{}``."""
        return {"compile_s": round(self.compile_s, 3)} if self.compile_s else {}

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
        self.read_losses()
        run = self.run
        self.last_eval_step = run.step
        val = None
        averaged = ema_in_use(self.ema, self.s.ema_decay, self.passes)
        with self.ema.swapped_in() if averaged else contextlib.nullcontext():  # EMA: scored, kept
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
        """Write the training state (``stopped``: why the run ended, else None); rank 0 only.

        The pending losses are read and checked first (a divergence raises before anything
        is written); a batch drawn ahead is dropped, the generator rewound to before it."""
        self.read_losses()
        if self.ahead is not None:
            self.gen.set_state(self.ahead[3])
            self.ahead = None
        self.saved_step = self.run.step
        if not self.dist.is_main:
            return
        if self.log is not None:
            self.log.flush()
        save_state(self.out_dir, self.model, self.optimizer, self.gen, self.vocab, self.meta, self.s, self.run, stopped,
                   self.ema.tensors() if self.ema is not None else None)

    def save_model_dir(self) -> None:
        run = self.run
        if not self.dist.is_main:
            return
        save_model_dir(self.model, self.vocab, self.out_dir, self.meta, run.best_weights, run.best_step, run.best_val,
                       self.dist.record())
