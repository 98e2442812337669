"""The training loop for neural language models (GPT and LSTM).

One loop for every neural family. It minimises the training loss, the
``mean_nll`` (nats per predicted token) of the next token, with:

* AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"),
  weight decay on matrices only (biases and LayerNorm gains are not decayed);
* a linear warm-up, then cosine decay of the learning rate to a floor
  (``lr * min_lr_ratio``), fitted to ``max_steps`` and/or the wall-clock ``max_time``;
* gradient-norm clipping;
* batches of random windows of ``block_size + 1`` tokens (``documents="file"``:
  one long document) or of random documents padded to the longest in the batch,
  with the padding masked out of the loss (``documents="lines"``);
* evaluation on val every ``eval_interval`` steps over a fixed set of batches;
  the model directory always holds the best (lowest val loss) weights;
* exact resume: ``training_state.safetensors`` holds the current and best
  weights, the optimiser state, the step, elapsed time and every RNG state
  (as uint8 tensors), with the JSON metadata in its header, in one file written
  atomically, so a crash mid-write leaves the previous checkpoint intact. The
  encoded train/val data is stored once in ``training_data.safetensors``.

Files in the output directory: the model directory of ``arlm.checkpoint``
(``config.json``, ``model.safetensors``, vocab), ``training_state.safetensors``,
``training_data.safetensors``, ``train_log.jsonl`` and ``loss.png``.

Recipe lineage: nanoGPT (Karpathy) for the GPT training setup.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import checkpoint
from .errors import ArlmError
from .io import atomic_path, write_error

STATE_FILE = "training_state.safetensors"
DATA_FILE = "training_data.safetensors"
LOG_FILE = "train_log.jsonl"
PLOT_FILE = "loss.png"
STATE_VERSION = 1
IGNORE = -100  # target id of padding positions (F.cross_entropy's ignore_index)

#: Family defaults, tuned for a 2-minute run on a 2-core CPU (tinyshakespeare, char
#: vocab; see the issue note). At that budget the number of optimiser steps limits
#: the result: small, shallow models with a high learning rate win. GPT (issue 14,
#: bench/README.md): Muon for the hidden matrices (-0.15 nats at 400 steps against
#: AdamW) and a bf16 training forward (~1.5x tokens/s, the same loss per step).
DEFAULTS: dict[str, dict[str, Any]] = {
    "gpt": dict(n_layer=2, n_head=4, n_embd=128, block_size=64, dropout=0.0, batch_size=32, lr=6e-3, min_lr_ratio=0.01,
                precision="bf16", optimizer="muon", muon_lr=0.05),
    "lstm": dict(n_layer=1, n_embd=64, n_hidden=256, block_size=64, dropout=0.0, batch_size=32, lr=4e-2, min_lr_ratio=0.01,
                 precision="auto", optimizer="adamw", muon_lr=0.02),
}
DEFAULT_MAX_TIME = 120.0  # seconds, when neither --max-steps nor --max-time is given


@dataclass
class TrainSettings:
    """Everything about a run that is not the model's hyperparameters.

    ``block_size`` is the training window (for the GPT it equals the model's
    ``block_size``; for the LSTM it is the truncated-backpropagation length).
    ``max_time`` is in seconds of wall-clock time spent in the loop (evaluation
    and checkpoints included). ``threads`` None means: start with
    :func:`default_threads` and let :class:`ThreadGovernor` adapt to the load;
    an explicit count is kept fixed (for bit-exact reproducibility of GPT runs
    across machines and loads, fix it: float reductions depend on it).
    """

    batch_size: int
    block_size: int
    lr: float
    max_steps: int | None = None
    max_time: float | None = None
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 10
    seed: int = 1337
    documents: str = "file"
    device: str = "auto"
    compile: bool = False
    threads: int | None = None
    #: ``"auto"``: bf16 autocast on CUDA, fp32 elsewhere (runs saved before this field); ``"bf16"``: bf16
    #: autocast of the training forward (fp32 weights, optimiser and loss) where bf16 is native (CUDA, CPUs
    #: with AVX-512 BF16 or AMX: :func:`native_bf16`), fp32 elsewhere; ``"fp32"``: no autocast.
    precision: str = "auto"
    #: ``"adamw"`` (runs saved before this field) or ``"muon"``: Muon for hidden matrices, AdamW for the rest
    #: (:mod:`arlm.muon`), Muon's peak rate being ``muon_lr``.
    optimizer: str = "adamw"
    muon_lr: float = 0.02
    #: ``[step, elapsed_s, progress]`` where a resume changed the budget: the cosine
    #: continues from ``progress`` at that point over the rest of the new budget
    #: (see :func:`lr_at`), so the learning rate does not jump.
    schedule_anchor: list[float] | None = None


# -- argument parsing -----------------------------------------------------------


def parse_duration(text: str) -> float:
    """``'90s'``, ``'2m'``, ``'1.5h'``, ``'1h30m'`` or a plain number of seconds -> seconds.

    Raises:
        ArlmError: unparsable or non-positive.
    """
    s = str(text).strip().lower()
    try:
        value = float(s)
    except ValueError:
        parts = re.fullmatch(r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s)?", s)
        if not s or not parts or not any(parts.groups()):
            raise ArlmError(f"cannot parse duration {text!r}: use e.g. 90s, 2m, 1h or a number of seconds") from None
        h, m, sec = (float(g) if g else 0.0 for g in parts.groups())
        value = 3600 * h + 60 * m + sec
    if not value > 0 or not math.isfinite(value):
        raise ArlmError(f"duration must be positive, got {text!r}")
    return value


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the neural-training flags on the ``arlm train`` subparser.

    Defaults are None where the family decides (see ``DEFAULTS``).
    """
    gd, ld = DEFAULTS["gpt"], DEFAULTS["lstm"]

    def both(name: str) -> str:
        return f"default: gpt {gd[name]}, lstm {ld[name]}"

    g = parser.add_argument_group("neural models (gpt, lstm)")
    g.add_argument("--n-layer", type=int, default=None, help=f"layers ({both('n_layer')})")
    g.add_argument("--n-head", type=int, default=None, help=f"attention heads, gpt only (default: {gd['n_head']})")
    g.add_argument("--n-embd", type=int, default=None, help=f"embedding width ({both('n_embd')})")
    g.add_argument("--n-hidden", type=int, default=None, help=f"hidden width, lstm only (default: {ld['n_hidden']})")
    g.add_argument("--block-size", type=int, default=None,
                   help=f"context window (gpt) / truncated-backprop window (lstm), in tokens ({both('block_size')})")
    g.add_argument("--pos-emb", choices=("learned", "rotary"), default=None,
                   help="gpt position scheme: learned (GPT-2) or rotary (sliding-window attention, fast generation past "
                        "--block-size) (default: learned)")
    g.add_argument("--dropout", type=float, default=None, help=f"dropout probability ({both('dropout')})")
    g.add_argument("--batch-size", type=int, default=None, help=f"sequences per optimiser step ({both('batch_size')})")
    g.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate of AdamW, cosine-decayed to {gd['min_lr_ratio']} of it ({both('lr')})")
    g.add_argument("--optimizer", choices=("adamw", "muon"), default=None,
                   help=f"adamw, or muon: Muon for hidden matrices, AdamW for embeddings, head, gains "
                        f"(default: gpt {gd['optimizer']}, lstm {ld['optimizer']})")
    g.add_argument("--muon-lr", type=float, default=None,
                   help=f"peak learning rate of Muon, on --lr's schedule (default: {gd['muon_lr']})")
    g.add_argument("--precision", choices=("bf16", "fp32"), default=None,
                   help="training forward in bf16 autocast where the hardware has bf16 (CUDA, AVX-512 BF16 or AMX "
                        "CPUs; fp32 elsewhere), or fp32; weights, optimiser and scoring stay fp32 "
                        f"(default: gpt {gd['precision']}, lstm bf16 on cuda, else fp32)")
    g.add_argument("--warmup-steps", type=int, default=None,
                   help=f"linear warm-up steps (default: {TrainSettings.warmup_steps}, or a tenth of a short --max-steps)")
    g.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many optimiser steps (default: no step limit, only --max-time)")
    g.add_argument("--max-time", type=str, default=None,
                   help=f"wall-clock budget, e.g. 90s, 2m, 1h (default: {DEFAULT_MAX_TIME:.0f}s when --max-steps "
                        "is not given, else none)")
    g.add_argument("--eval-interval", type=int, default=None,
                   help=f"optimiser steps between val evaluations (default: {TrainSettings.eval_interval})")
    g.add_argument("--eval-iters", type=int, default=None,
                   help=f"val batches per evaluation (default: {TrainSettings.eval_iters})")
    g.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default=None,
                   help="where to train (default: auto, the first available of cuda, mps, cpu)")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the model before training")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads, kept fixed (default: start with the cores idle at launch and adapt to "
                        "the load while training)")
    g.add_argument("--keep-data", action=argparse.BooleanOptionalAction, default=True,
                   help=f"keep {DATA_FILE}, the encoded train/val token ids that only --resume reads")


def _arg(args, name: str):
    return getattr(args, name, None)


# -- devices and threads --------------------------------------------------------

# One place checks --device for every command (arlm.device); one place knows the
# user's thread cap (arlm.threads). Re-exported here for callers of arlm.train.
from .device import resolve_device  # noqa: E402,F401
from .threads import cpu_count, default_threads, explicit_threads  # noqa: E402,F401


def keep_freed_memory():
    """Let glibc's malloc keep freed memory for reuse while training on CPU; returns the undo.

    A training step allocates and frees the same activation buffers (MB each)
    over and over. glibc hands big freed blocks back to the kernel (``mmap``
    threshold, heap trimming), so every step page-faults them in again: about
    a thousand page faults a step at the default size, each one costlier in a
    virtual machine. Raising the two thresholds keeps the memory in the
    process. A no-op where ``mallopt`` is not available (not glibc).
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return lambda: None
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    if not mallopt(M_MMAP_THRESHOLD, 32 << 20) or not mallopt(M_TRIM_THRESHOLD, 1 << 30):
        return lambda: None
    # glibc's default trim threshold; the mmap threshold stays (glibc raises it
    # by itself as big blocks are freed, up to the same 32 MiB)
    return lambda: mallopt(M_TRIM_THRESHOLD, 128 * 1024)


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


# -- data ------------------------------------------------------------------------


class TokenData:
    """Encoded documents as one flat LongTensor and document offsets.

    ``ids``: LongTensor[N] (all documents, each ``[<bos>, ..., <eos>]``, concatenated),
    or an ``arlm.data.TokenStream`` over a token file on disk (``source`` then
    says how to reopen it: ``{"path", "val_fraction", "seed"}``);
    ``offsets``: LongTensor[n_docs + 1], or None with explicit ``starts`` and
    ``lengths`` (LongTensor[n_docs] each; documents need not be contiguous).
    """

    def __init__(self, ids, offsets: torch.Tensor | None, starts: torch.Tensor | None = None,
                 lengths: torch.Tensor | None = None, source: dict | None = None):
        self.ids = ids.long()
        self.source = source
        if offsets is not None:
            self.offsets = offsets.long()
            starts, lengths = self.offsets[:-1], self.offsets[1:] - self.offsets[:-1]
        self.starts = starts.long()  # [n_docs]
        self.lengths = lengths.long()  # [n_docs]

    @classmethod
    def from_documents(cls, vocab, docs: list[str]) -> "TokenData":
        from .data import encode_document

        encoded = [encode_document(vocab, d) for d in docs]
        lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
        offsets = torch.zeros(len(encoded) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(lengths, 0)
        flat = [i for e in encoded for i in e]
        return cls(torch.tensor(flat, dtype=torch.long), offsets)

    @property
    def n_docs(self) -> int:
        return self.lengths.shape[0]

    @property
    def n_tokens(self) -> int:
        return self.ids.shape[0]


def get_batch(data: TokenData, documents: str, batch_size: int, block_size: int, gen: torch.Generator):
    """A random training batch.

    ``file``: ``batch_size`` windows of ``block_size + 1`` tokens at uniform
    random offsets of the single document. ``lines``: ``batch_size`` random
    documents (a random window of those longer than ``block_size + 1``), padded
    to the longest; padded targets are ``IGNORE``.

    Returns:
        (x LongTensor[B, T], y LongTensor[B, T]) with ``y[:, t]`` the target after ``x[:, :t+1]``.
    """
    if documents == "file":
        n = data.n_tokens
        T = min(block_size, n - 1)
        starts = torch.randint(0, n - T, (batch_size,), generator=gen)  # [B]
        idx = starts[:, None] + torch.arange(T + 1)  # [B, T+1]
        chunk = data.ids[idx]
        return chunk[:, :-1], chunk[:, 1:]
    doc = torch.randint(0, data.n_docs, (batch_size,), generator=gen)  # [B]
    lens = data.lengths[doc]  # [B] tokens incl. <bos>, <eos>
    span = torch.clamp(lens - 1, max=block_size)  # [B] predicted tokens per row
    room = lens - 1 - span  # [B] possible extra offset for long documents
    off = (torch.rand(batch_size, generator=gen) * (room + 1).double()).long().clamp(max=room)  # [B]
    T = int(span.max())
    ar = torch.arange(T + 1)  # [T+1]
    idx = (data.starts[doc] + off)[:, None] + ar  # [B, T+1]
    valid = ar[None, :] <= span[:, None]  # [B, T+1]
    chunk = torch.where(valid, data.ids[idx.clamp(max=data.n_tokens - 1)], 0)
    x = chunk[:, :-1]
    y = torch.where(valid[:, 1:], chunk[:, 1:], IGNORE)
    return x, y


def eval_batches(data: TokenData, documents: str, batch_size: int, block_size: int, n_batches: int, seed: int):
    """A fixed list of val batches (drawn with their own seeded generator).

    For a small ``lines`` val set every document is used once instead.
    """
    gen = torch.Generator().manual_seed(seed + 7919)
    if documents == "lines" and data.n_docs <= n_batches * batch_size:
        out = []
        for s in range(0, data.n_docs, batch_size):
            # deterministic: every document of the slice, first window
            span = torch.clamp(data.lengths[s : s + batch_size] - 1, max=block_size)
            ar = torch.arange(int(span.max()) + 1)
            idx = data.starts[s : s + batch_size, None] + ar
            valid = ar[None, :] <= span[:, None]
            chunk = torch.where(valid, data.ids[idx.clamp(max=data.n_tokens - 1)], 0)
            out.append((chunk[:, :-1], torch.where(valid[:, 1:], chunk[:, 1:], IGNORE)))
        return out
    return [get_batch(data, documents, batch_size, block_size, gen) for _ in range(n_batches)]


def _token_header_digest(path) -> str:
    """SHA-256 of a token directory's header (counts, dtype, vocab): it changes when the directory is re-tokenized."""
    import hashlib

    from .data import TOKENS_HEADER

    return hashlib.sha256((Path(path) / TOKENS_HEADER).read_bytes()).hexdigest()


def token_data_from_dir(path, val_fraction: float = 0.1, seed: int = 1337, header_sha256: str | None = None):
    """Train and val :class:`TokenData` over the token directory ``path`` (``arlm tokenize``),
    split as ``arlm.data.split_token_dir``; returns ``(train, val or None, TokenDir)``.

    ``header_sha256`` (a resume): the digest recorded when the run started; a
    directory re-tokenized since then is refused with ArlmError.
    """
    from .data import TokenDir, is_token_dir, split_token_dir

    if header_sha256 is not None:
        if not is_token_dir(path):
            raise ArlmError(f"cannot resume: the run's token directory {path} is gone (or no longer a token directory)")
        if _token_header_digest(path) != header_sha256:
            raise ArlmError(f"cannot resume: the token directory {path} was re-tokenized since the run started "
                            "(its tokens.json changed); start a new run")

    tokens = TokenDir(path)
    train, val = split_token_dir(tokens, val_fraction, seed)
    source = {"path": str(Path(path).resolve()), "val_fraction": val_fraction, "seed": seed,
              "header_sha256": _token_header_digest(path)}

    def make(part):
        return None if part is None else TokenData(part[0], None, starts=part[1], lengths=part[2], source=source)

    return make(train), make(val), tokens


# -- optimisation ----------------------------------------------------------------


def native_bf16(device: torch.device) -> bool:
    """True on CUDA and on CPUs with AVX-512 BF16 or AMX tiles; elsewhere bf16 is emulated (slower than fp32)."""
    if device.type == "cuda":
        return True
    try:
        return device.type == "cpu" and bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes
        return False


def uses_bf16(s: TrainSettings, device: torch.device) -> bool:
    """Whether the training forward runs under bf16 autocast (``s.precision``; see :class:`TrainSettings`).

    Raises:
        ArlmError: an unknown precision.
    """
    if s.precision not in ("auto", "bf16", "fp32"):
        raise ArlmError(f"--precision must be bf16 or fp32, got {s.precision!r}")
    return (s.precision == "bf16" and native_bf16(device)) or (s.precision == "auto" and device.type == "cuda")


def make_optimizer(model: torch.nn.Module, s: TrainSettings, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; weight decay on parameters with >= 2 dims (matrices, embeddings) only.

    ``s.optimizer == "muon"``: :class:`arlm.muon.MuonAdamW`, Muon (no weight decay) on the hidden matrices
    (:func:`arlm.muon.hidden_matrices`), AdamW as above on the rest.
    """
    if s.optimizer == "muon":
        from .muon import MuonAdamW, hidden_matrices

        hidden = {id(p) for p in hidden_matrices(model)}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in hidden]
        return MuonAdamW([
            {"params": [p for p in model.parameters() if id(p) in hidden], "use_muon": True, "weight_decay": 0.0},
            {"params": [p for p in rest if p.dim() >= 2], "weight_decay": s.weight_decay},
            {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
        ], lr=s.lr, betas=(s.beta1, s.beta2), lr_ratio=s.muon_lr / s.lr,
           ns_dtype="bfloat16" if uses_bf16(s, device) else "float32")
    if s.optimizer != "adamw":
        raise ArlmError(f"--optimizer must be adamw or muon, got {s.optimizer!r}")
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": s.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel updates every parameter in one call (CUDA, and CPU since
    # torch 2.4, where the per-tensor loop costs ~1 ms a step at the default size);
    # it agrees with the loop to rounding.
    try:
        return torch.optim.AdamW(groups, lr=s.lr, betas=(s.beta1, s.beta2), fused=device.type in ("cuda", "cpu"))
    except (RuntimeError, TypeError, ValueError):  # an older torch or another device: no fused kernel
        return torch.optim.AdamW(groups, lr=s.lr, betas=(s.beta1, s.beta2))


def lr_at(s: TrainSettings, step: int, elapsed: float) -> float:
    """Learning rate for the update after ``step`` updates and ``elapsed`` seconds.

    Linear warm-up over ``warmup_steps``, then cosine decay from ``lr`` to
    ``lr * min_lr_ratio`` as progress goes from 0 to 1, where progress is the
    larger of the step fraction (after warm-up) and the time fraction.

    After a resume that changed the budget (``s.schedule_anchor = [k, e, p]``)
    progress is ``p`` at step ``k`` / ``e`` seconds and reaches 1 at the end of
    the new budget: the rate is continuous, decaying from where it was.
    """
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    step0, time0, p0 = (s.warmup_steps, 0.0, 0.0) if s.schedule_anchor is None else s.schedule_anchor
    frac = 0.0
    if s.max_steps is not None:
        frac = (step - step0) / max(1, s.max_steps - step0)
    if s.max_time is not None:
        frac = max(frac, (elapsed - time0) / max(s.max_time - time0, 1e-9))
    progress = p0 + (1.0 - p0) * min(max(frac, 0.0), 1.0)
    progress = min(max(progress, 0.0), 1.0)
    floor = s.lr * s.min_lr_ratio
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (s.lr - floor)


def schedule_progress(s: TrainSettings, step: int, elapsed: float) -> float:
    """The cosine's progress (0..1) that :func:`lr_at` uses at ``step`` / ``elapsed``."""
    if step < s.warmup_steps:
        return 0.0
    floor = s.lr * s.min_lr_ratio
    if s.lr == floor:
        return 0.0
    c = (lr_at(s, step, elapsed) - floor) / (0.5 * (s.lr - floor)) - 1.0
    return math.acos(min(max(c, -1.0), 1.0)) / math.pi


# -- state files -------------------------------------------------------------------


def _rng_tensors(gen: torch.Generator) -> dict[str, torch.Tensor]:
    out = {"rng.data": gen.get_state(), "rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = st
    return out


def _checkpoint_write_hook(step: int) -> None:
    # Test hook: ARLM_TEST_CHECKPOINT_SLEEP="STEP:SECONDS" holds the half-written
    # temporary state file of step STEP for SECONDS, so a test can SIGKILL the
    # process in the middle of a checkpoint write.
    spec = os.environ.get("ARLM_TEST_CHECKPOINT_SLEEP")
    if spec:
        at, _, seconds = spec.partition(":")
        if int(at) == step:
            print(f"ARLM_TEST: writing checkpoint of step {step}", file=sys.stderr, flush=True)
            time.sleep(float(seconds))


def write_state(path: Path, tensors: dict[str, torch.Tensor], meta: dict, _hook=None) -> None:
    """Write ``tensors`` + JSON ``meta`` (in the header) as one safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"arlm_training_state": json.dumps(meta)})
        if _hook is not None:
            _hook()


def read_state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`write_state`.

    Raises:
        ArlmError: missing or corrupt.
    """
    from safetensors import safe_open

    if not path.is_file():
        raise ArlmError(f"cannot resume: {path} is missing (was the run trained by arlm train?)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = json.loads((f.metadata() or {})["arlm_training_state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for a bad file
        raise ArlmError(f"cannot resume: {path} is corrupt ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return tensors, meta


def _write_data(out_dir: Path, train: TokenData, val: TokenData | None) -> None:
    if train.source is not None:  # a token directory on disk: store where it is, not the data
        write_state(out_dir / DATA_FILE, {}, {"version": STATE_VERSION, "token_dir": train.source})
        return
    t = {"train.ids": train.ids.int(), "train.offsets": train.offsets}
    if val is not None:
        t.update({"val.ids": val.ids.int(), "val.offsets": val.offsets})
    write_state(out_dir / DATA_FILE, t, {"version": STATE_VERSION})


def _read_data(out_dir: Path) -> tuple[TokenData, TokenData | None]:
    if not (out_dir / DATA_FILE).is_file():
        raise ArlmError(f"cannot resume {out_dir}: {DATA_FILE} (the training token ids) is missing; the run was "
                        "trained with --no-keep-data or the file was deleted: start a new run instead")
    t, meta = read_state(out_dir / DATA_FILE)
    if "token_dir" in meta:
        return token_data_from_dir(**meta["token_dir"])[:2]
    train = TokenData(t["train.ids"], t["train.offsets"])
    val = TokenData(t["val.ids"], t["val.offsets"]) if "val.ids" in t else None
    return train, val


# -- the loop ------------------------------------------------------------------------


class _StopFlag:
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
def estimate_val_loss(model, batches, device, autocast) -> float:
    """Mean NLL (nats per target token) of ``model`` over fixed batches."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        with autocast():
            logits = model.logits(x)  # [B, T, V]
        nll = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum")
        total += float(nll)
        count += int((y != IGNORE).sum())
    model.train(was_training)
    return total / max(count, 1)


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
        None), ``elapsed_s``, ``tokens_per_s``, ``stopped`` (why the run ended).

    Raises:
        ArlmError: bad settings, too little data, or a non-finite loss (the
            message names the step; the last good checkpoint is kept).
    """
    from .progress import Progress

    s = settings
    out_dir = checkpoint.prepare_dir(out_dir)
    meta = dict(meta or {})
    meta.setdefault("documents", s.documents)
    if s.batch_size < 1 or s.block_size < 1:
        raise ArlmError(f"--batch-size and --block-size must be >= 1 (got {s.batch_size}, {s.block_size})")
    if not s.lr > 0:
        raise ArlmError(f"--lr must be positive, got {s.lr}")
    if s.max_steps is not None and s.max_steps < 1:
        raise ArlmError(f"--max-steps must be >= 1, got {s.max_steps}")
    if s.eval_interval < 1 or s.eval_iters < 1:
        raise ArlmError("--eval-interval and --eval-iters must be >= 1")
    if train_data.n_tokens < 2 or int(train_data.lengths.max()) < 2:
        raise ArlmError("too little training data: need at least one token per document")
    if s.max_steps is None and s.max_time is None:
        s.max_time = DEFAULT_MAX_TIME

    if s.threads is not None and s.threads < 1:
        raise ArlmError(f"--threads must be >= 1, got {s.threads}")
    device = resolve_device(s.device)
    threads_before = torch.get_num_threads()
    fixed_threads = explicit_threads(s.threads)  # --threads, OMP_NUM_THREADS or torch.set_num_threads
    governor = ThreadGovernor(fixed_threads or default_threads(), cpu_count(),
                              enabled=fixed_threads is None and device.type == "cpu")
    model.to(device)
    model.train()
    bf16 = uses_bf16(s, device)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)  # noqa: E731
    fwd = torch.compile(model) if s.compile else model

    optimizer = make_optimizer(model, s, device)
    gen = torch.Generator().manual_seed(s.seed)
    has_val = val_data is not None and val_data.n_tokens >= 2
    # Recurrent models also train on independent random windows from the zero
    # state: carrying the state across consecutive batches (truncated BPTT over
    # contiguous streams) measured worse here (1.766 vs 1.678 nats on
    # tinyshakespeare val, LSTM 256, 2300 steps), the batches being less diverse.
    val_batches = (
        eval_batches(val_data, s.documents, s.batch_size, s.block_size, s.eval_iters, s.seed) if has_val else []
    )
    param_names = [n for n, _ in model.named_parameters()]

    step, elapsed_before, best_val, best_step = 0, 0.0, math.inf, -1
    tokens_seen = 0
    best_weights: dict[str, torch.Tensor] | None = None
    if resume_state is not None:
        tensors, st = resume_state
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(tensors[f"model.{n}"])
        opt_sd = {"state": {}, "param_groups": st["optimizer"]["param_groups"]}
        for key in st["optimizer"]["keys"]:
            idx, name = key.split(".", 1)
            opt_sd["state"].setdefault(int(idx), {})[name] = tensors[f"optim.{key}"]
        for g in opt_sd["param_groups"]:
            g["betas"] = tuple(g["betas"])
        optimizer.load_state_dict(opt_sd)
        gen.set_state(tensors["rng.data"])
        torch.set_rng_state(tensors["rng.torch"])
        if torch.cuda.is_available():
            states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
        step, elapsed_before = st["step"], st["elapsed_s"]
        best_val = st["best_val_loss"] if st["best_val_loss"] is not None else math.inf
        best_step = st["best_step"]
        tokens_seen = st["tokens_seen"]
        best_weights = {n: tensors[f"best.{n}"] for n in param_names}
        _truncate_log(out_dir / LOG_FILE, step)
        _save_model_dir(model, vocab, out_dir, meta, best_weights, best_step, best_val)
    else:
        if keep_data:
            _write_data(out_dir, train_data, val_data if has_val else None)
        else:
            (out_dir / DATA_FILE).unlink(missing_ok=True)  # a stale copy from an earlier run
        try:
            (out_dir / LOG_FILE).write_text("", encoding="utf-8")
        except OSError as e:
            raise write_error(out_dir / LOG_FILE, e) from None

    def snapshot() -> dict[str, torch.Tensor]:
        return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}

    def save_state(stopped: str | None = None) -> None:
        tensors = {f"model.{n}": p for n, p in model.named_parameters()}
        tensors.update({f"best.{n}": t for n, t in (best_weights or snapshot()).items()})
        sd = optimizer.state_dict()
        keys = []
        for idx, st_ in sd["state"].items():
            for name, t in st_.items():
                keys.append(f"{idx}.{name}")
                tensors[f"optim.{idx}.{name}"] = t if t.dim() else t.reshape(())
        tensors.update(_rng_tensors(gen))
        groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
        st = {
            "version": STATE_VERSION,
            "family": model.family,
            "model_config": dataclasses.asdict(model.config),
            "vocab": vocab.kind,
            "meta": meta,
            "settings": dataclasses.asdict(s),
            "step": step,
            "elapsed_s": elapsed,
            "tokens_seen": tokens_seen,
            "best_val_loss": best_val if math.isfinite(best_val) else None,
            "best_step": best_step,
            "stopped": stopped,
            "optimizer": {"param_groups": groups, "keys": keys},
        }
        flush_log()
        write_state(out_dir / STATE_FILE, tensors, st, _hook=lambda: _checkpoint_write_hook(step))

    try:
        log_f = open(out_dir / LOG_FILE, "a", encoding="utf-8")
    except OSError as e:
        raise write_error(out_dir / LOG_FILE, e) from None

    def log(record: dict) -> None:
        try:
            log_f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise write_error(out_dir / LOG_FILE, e) from None

    def flush_log() -> None:
        try:
            log_f.flush()
        except OSError as e:
            raise write_error(out_dir / LOG_FILE, e) from None

    last_eval_step = step if resume_state is not None else -1

    def evaluate_and_checkpoint(stopped: str | None = None) -> float | None:
        nonlocal best_val, best_step, best_weights, last_eval_step
        last_eval_step = step
        val = None
        if has_val:
            val = estimate_val_loss(model, val_batches, device, autocast)
            log({"step": step, "val_loss": val, "elapsed_s": round(elapsed, 3)})
        if val is None or val < best_val or best_weights is None:
            if val is not None:
                best_val = val
            best_step = step
            best_weights = snapshot()
            _save_model_dir(model, vocab, out_dir, meta, best_weights, best_step, best_val)
        save_state(stopped)
        return val

    stop_flag = _StopFlag()
    t_start = time.perf_counter()
    elapsed = elapsed_before
    val_loss = None
    stopped = None
    interval_tokens, interval_time = 0, 0.0
    tok_s = 0.0
    bar = Progress(s.max_steps, s.max_time, step, elapsed_before, enabled=progress)
    post: dict = {}
    nan_at = int(os.environ.get("ARLM_TEST_NAN_AT_STEP", "-1"))
    restore_malloc = keep_freed_memory() if device.type == "cpu" else (lambda: None)
    try:
        with stop_flag:
            if resume_state is None:
                val_loss = evaluate_and_checkpoint()
            while True:
                elapsed = elapsed_before + time.perf_counter() - t_start
                if s.max_steps is not None and step >= s.max_steps:
                    stopped = "max_steps"
                elif s.max_time is not None and elapsed >= s.max_time:
                    stopped = "max_time"
                elif stop_after_steps is not None and step >= stop_after_steps:
                    stopped = "interrupted"
                elif stop_flag.stop:
                    stopped = "interrupted"
                if stopped:
                    break
                t0 = time.perf_counter()
                lr = lr_at(s, step, elapsed)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                x, y = get_batch(train_data, s.documents, s.batch_size, s.block_size, gen)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with autocast():
                    logits = fwd(x)  # [B, T, V]
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE)
                loss_value = loss.detach().item()
                if step == nan_at:
                    loss_value = float("nan")
                if not math.isfinite(loss_value):
                    _diverged(step, loss_value, best_step, out_dir, log_f)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if s.grad_clip > 0:
                    gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip))
                    if not math.isfinite(gnorm):
                        _diverged(step, gnorm, best_step, out_dir, log_f, what="gradient norm")
                optimizer.step()
                step += 1
                n_tok = y.numel() if s.documents == "file" else int((y != IGNORE).sum())
                tokens_seen += n_tok
                dt = time.perf_counter() - t0
                interval_tokens += n_tok
                interval_time += dt
                governor.record(dt / max(n_tok, 1))
                log({"step": step, "loss": loss_value, "lr": lr})
                elapsed = elapsed_before + time.perf_counter() - t_start
                if step % s.eval_interval == 0:
                    tok_s = interval_tokens / max(interval_time, 1e-9)
                    interval_tokens, interval_time = 0, 0.0
                    log({"step": step, "tokens_per_s": round(tok_s, 1), "elapsed_s": round(elapsed, 3),
                         "threads": governor.current})
                    val_loss = evaluate_and_checkpoint()
                if step % 10 == 0 or step == 1:
                    post = {"loss": f"{loss_value:.3f}"}
                    if val_loss is not None:  # the last evaluation's, every --eval-interval steps
                        post["val"] = f"{val_loss:.3f}@{step - step % s.eval_interval}"
                    post["tok/s"] = f"{(interval_tokens / interval_time if interval_time else tok_s):.0f}"
                    if s.max_time is not None:
                        post["left"] = f"{max(0.0, s.max_time - elapsed):.0f}s"
                bar.update(step, elapsed, post)
            if interval_time:
                tok_s = interval_tokens / interval_time
                log({"step": step, "tokens_per_s": round(tok_s, 1), "elapsed_s": round(elapsed, 3)})
            if last_eval_step != step:
                val_loss = evaluate_and_checkpoint(stopped)
            else:
                save_state(stopped)  # record why it stopped
    finally:
        bar.close()
        try:
            log_f.close()
        except OSError:  # a full disk: the error that stopped the run is the one to report
            pass
        torch.set_num_threads(threads_before)
        restore_malloc()
        try:
            from .plots import plot_loss

            plot_loss(out_dir / LOG_FILE, out_dir / PLOT_FILE,
                      title=f"{out_dir}: {model.family}, {model.num_parameters():,} parameters, {vocab.kind} vocab "
                            f"- mean_nll per step")
        except Exception as e:  # a plot is never worth losing a run
            import warnings

            warnings.warn(f"could not draw {PLOT_FILE}: {e}", stacklevel=1)
    model.eval()
    return {
        "step": step,
        "best_step": best_step,
        "best_val_loss": best_val if math.isfinite(best_val) else None,
        "elapsed_s": elapsed,
        "tokens_per_s": tok_s,
        "stopped": stopped,
        "signal": stop_flag.signum,  # SIGINT / SIGTERM that interrupted the run, else None
        "val_tokens": sum(int((y != IGNORE).sum()) for _, y in val_batches),
    }


def _diverged(step, value, best_step, out_dir, log_f, what="loss") -> None:
    log_f.write(json.dumps({"step": step + 1, "error": f"non-finite {what}"}) + "\n")
    raise ArlmError(
        f"training stopped at step {step + 1}: the {what} is {value} (diverged); "
        f"{out_dir} keeps the best checkpoint (step {best_step}) and the last good training state; "
        "try a lower --lr"
    )


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records after ``step`` (written after the checkpoint we resume from)."""
    from .plots import read_log

    keep = [r for r in read_log(path) if r.get("step", 0) <= step and "error" not in r]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")


def _save_model_dir(model, vocab, out_dir, meta, weights, best_step, best_val) -> None:
    """Write the model directory with ``weights`` (the best so far) without touching ``model``."""
    family = type(model)
    with torch.random.fork_rng(devices=[]):  # building a model draws from the RNG; training must not notice
        cpu_model = family(model.config)
    with torch.no_grad():
        for n, p in cpu_model.named_parameters():
            p.copy_(weights[n])
    cpu_model.eval()
    m = dict(meta)
    m["training"] = {"best_step": best_step, "best_val_loss": best_val if math.isfinite(best_val) else None}
    checkpoint.save(out_dir, cpu_model, vocab, m)


# -- CLI entry points --------------------------------------------------------------------


def build_model(family: str, vocab, args) -> tuple[Any, int]:
    """A freshly initialised model of ``family`` from CLI args (None -> family default).

    Returns (model, training window length).

    Raises:
        ArlmError: unknown family or invalid hyperparameters.
    """
    if family not in DEFAULTS:
        raise ArlmError(f"arlm.train trains gpt and lstm models, not {family!r}")
    d = DEFAULTS[family]

    def pick(name):
        v = _arg(args, name)
        return d[name] if v is None else v

    block = pick("block_size")
    try:
        if family == "gpt":
            from .models.gpt import GPTConfig, GPTModel

            cfg = GPTConfig(vocab_size=vocab.vocab_size, bos_id=vocab.bos_id, eos_id=vocab.eos_id,
                            n_layer=pick("n_layer"), n_head=pick("n_head"), n_embd=pick("n_embd"),
                            block_size=block, dropout=pick("dropout"), bias=True,
                            pos_emb=_arg(args, "pos_emb") or "learned")
            return GPTModel(cfg), block
        if _arg(args, "pos_emb") is not None:
            raise ArlmError(f"--pos-emb applies to gpt models, not {family}")
        from .models.lstm import LSTMConfig, LSTMModel

        cfg = LSTMConfig(vocab_size=vocab.vocab_size, bos_id=vocab.bos_id, eos_id=vocab.eos_id,
                         n_layer=pick("n_layer"), n_embd=pick("n_embd"), n_hidden=pick("n_hidden"),
                         dropout=pick("dropout"))
        return LSTMModel(cfg), block
    except ValueError as e:
        raise ArlmError(str(e)) from None


def settings_from_args(args, family: str, block_size: int, documents: str) -> TrainSettings:
    d = DEFAULTS[family]
    max_time = _arg(args, "max_time")
    s = TrainSettings(
        batch_size=_arg(args, "batch_size") or d["batch_size"],
        block_size=block_size,
        lr=_arg(args, "lr") or d["lr"],
        min_lr_ratio=d["min_lr_ratio"],
        max_steps=_arg(args, "max_steps"),
        max_time=parse_duration(max_time) if max_time is not None else None,
        seed=_arg(args, "seed") if _arg(args, "seed") is not None else 1337,
        documents=documents,
        device=_arg(args, "device") or "auto",
        compile=bool(_arg(args, "compile")),
        threads=_arg(args, "threads"),
        precision=_arg(args, "precision") or d["precision"],
        optimizer=_arg(args, "optimizer") or d["optimizer"],
        muon_lr=_arg(args, "muon_lr") or d["muon_lr"],
    )
    for name in ("warmup_steps", "eval_interval", "eval_iters"):
        if _arg(args, name) is not None:
            setattr(s, name, _arg(args, name))
    if s.max_steps is not None and s.max_steps < 1:
        raise ArlmError(f"--max-steps must be >= 1, got {s.max_steps}")
    if s.max_steps is not None and s.warmup_steps > s.max_steps // 2 and _arg(args, "warmup_steps") is None:
        s.warmup_steps = max(1, s.max_steps // 10)
    return s


def cli_train(args, family: str, vocab, train_docs: list[str], val_docs: list[str], documents: str,
              out_dir: Path, meta: dict, token_data: tuple | None = None) -> None:
    """Train a gpt or lstm from parsed ``arlm train`` args into the model directory ``out_dir``.

    Writes the ``arlm.checkpoint`` model directory (best weights) plus
    ``training_state.safetensors``, ``training_data.safetensors``,
    ``train_log.jsonl`` and ``loss.png``. Prints a one-line summary to stderr.

    Raises:
        ArlmError: bad flags, too little data, or a diverged (non-finite) loss.
        Interrupted: SIGINT or SIGTERM stopped the run after it saved its checkpoint.
    """
    seed = _arg(args, "seed") if _arg(args, "seed") is not None else 1337
    torch.manual_seed(seed)
    model, block = build_model(family, vocab, args)
    s = settings_from_args(args, family, block, documents)
    if token_data is not None:  # already encoded (a token directory): (train, val or None)
        train_data, val_data = token_data
    else:
        train_data = TokenData.from_documents(vocab, train_docs)
        val_data = TokenData.from_documents(vocab, val_docs) if val_docs else None
    summary = run_training(model, vocab, train_data, val_data, s, out_dir, meta,
                           keep_data=_arg(args, "keep_data") is not False)
    _print_summary(summary, model, out_dir)
    _raise_if_interrupted(summary, out_dir)


#: What may change when a run is resumed: its budget and where it runs (and how
#: the result is printed). Every other flag defines the run and is refused.
RESUME_FLAGS = frozenset({"resume", "max_steps", "max_time", "device", "threads", "compile", "json"})


def check_resume_flags(given, out_dir: Path, out: str | None = None) -> None:
    """Refuse flags given with ``--resume`` that would change the run (data, model, vocab, optimiser...).

    ``given`` holds the argparse dests the user typed (``arlm.cli`` finds them);
    ``data`` is the DATA positional.

    Raises:
        ArlmError: one line naming every refused flag.
    """
    refused = set(given) - RESUME_FLAGS
    if "out" in refused and out is not None and Path(out).resolve() == Path(out_dir).resolve():
        refused.discard("out")
    if refused:
        names = sorted("DATA" if d == "data" else "--" + d.replace("_", "-") for d in refused)
        raise ArlmError(
            f"--resume continues the run in {out_dir} with its own data and settings; {', '.join(names)} cannot "
            "change on resume (only --max-steps, --max-time, --device, --threads, --compile may): "
            "drop them, or train a new run into another --out"
        )


def cli_resume(args, out_dir: Path) -> None:
    """Continue the interrupted run in ``out_dir`` from its last checkpoint.

    ``args`` may carry new ``--max-steps`` / ``--max-time`` (totals for the
    whole run, counted from its start), ``--device``, ``--threads``, ``--compile``;
    any other flag the user typed (``args.given_flags``, filled by the CLI) is
    refused. A changed budget keeps the learning rate continuous: the cosine
    continues from the rate reached so far down to the floor at the end of the
    new budget (said on stderr). On CPU the continuation with an unchanged
    budget is exact: the same losses and final weights as an uninterrupted run
    with the same limits and a fixed thread count (time limits are not deterministic).

    Raises:
        ArlmError: no or corrupt training state in ``out_dir``, a model directory
            whose model is not the run's, or a flag that cannot change on resume.
        Interrupted: SIGINT or SIGTERM stopped the run again after it saved.
    """
    out_dir = Path(out_dir)
    given = getattr(args, "given_flags", None)
    if given is not None:
        check_resume_flags(given, out_dir, _arg(args, "out"))
    tensors, st = read_state(out_dir / STATE_FILE)
    if st.get("version") != STATE_VERSION:
        raise ArlmError(f"cannot resume: {out_dir / STATE_FILE} has state version {st.get('version')}")
    for stale in out_dir.glob(".*.tmp"):  # half-written files of a killed process (never renamed into place)
        stale.unlink(missing_ok=True)
    if (out_dir / checkpoint.CONFIG).is_file():
        cfg = checkpoint.read_config(out_dir)
        if cfg.get("family") != st["family"] or cfg.get("vocab") != st["vocab"]:
            raise ArlmError(
                f"cannot resume: {out_dir} holds {checkpoint.a_family(cfg.get('family'))} model ({cfg.get('vocab')} vocab) but the "
                f"training state of a {st['family']} run ({st['vocab']} vocab); resuming would replace that model"
            )
    from .models.registry import get_family
    from .vocab import load_vocab

    config_cls, model_cls = get_family(st["family"])
    model = model_cls(config_cls(**st["model_config"]))
    vocab = load_vocab(st["vocab"], out_dir)
    train_data, val_data = _read_data(out_dir)
    s = TrainSettings(**st["settings"])
    old = dataclasses.replace(s)
    if _arg(args, "max_steps") is not None:
        s.max_steps = _arg(args, "max_steps")
        if s.max_steps < 1:
            raise ArlmError(f"--max-steps must be >= 1, got {s.max_steps}")
    if _arg(args, "max_time") is not None:
        s.max_time = parse_duration(_arg(args, "max_time"))
    for name in ("device", "threads"):
        if _arg(args, name) is not None:
            setattr(s, name, _arg(args, name))
    if _arg(args, "compile"):
        s.compile = True
    step, elapsed = st["step"], st["elapsed_s"]
    if (s.max_steps, s.max_time) != (old.max_steps, old.max_time):
        _continue_schedule(old, s, step, elapsed)
    summary = run_training(model, vocab, train_data, val_data, s, out_dir, st["meta"], resume_state=(tensors, st))
    _print_summary(summary, model, out_dir)
    _raise_if_interrupted(summary, out_dir)


def _continue_schedule(old: TrainSettings, new: TrainSettings, step: int, elapsed: float) -> None:
    """Anchor ``new``'s cosine at the point ``old`` had reached, and say so on stderr."""
    def budget(x: TrainSettings) -> str:
        parts = ([f"{x.max_steps} steps"] if x.max_steps is not None else []) + (
            [f"{x.max_time:g} s"] if x.max_time is not None else [])
        return " / ".join(parts) or "none"

    lr_now = lr_at(old, step, elapsed)
    floor = new.lr * new.min_lr_ratio
    if step >= new.warmup_steps:
        new.schedule_anchor = [step, elapsed, schedule_progress(old, step, elapsed)]
    done = (new.max_steps is not None and step >= new.max_steps) or (new.max_time is not None and elapsed >= new.max_time)
    if done:
        print(f"resume: the run is already at step {step}, {elapsed:.0f} s, past its budget ({budget(new)}); "
              "nothing to train: raise --max-steps or --max-time", file=sys.stderr)
        return
    if lr_now <= floor * (1 + 1e-9):
        how = f"the run had already decayed to its floor learning rate {floor:.3g}: it continues at that rate"
    else:
        how = (f"the learning rate continues from {lr_now:.3g} at step {step} and decays to {floor:.3g} at the "
               "end of the new budget (no jump)")
    print(f"resume: budget {budget(old)} -> {budget(new)}; {how}", file=sys.stderr)


def _raise_if_interrupted(summary: dict, out_dir: Path) -> None:
    signum = summary.get("signal")
    if summary.get("stopped") == "interrupted" and signum is not None:
        from .errors import Interrupted

        raise Interrupted(signum, f"interrupted by {signal.Signals(signum).name} at step {summary['step']}: "
                                  f"{out_dir} holds its checkpoint; continue with: arlm train --resume {out_dir}")


def _print_summary(summary: dict, model, out_dir: Path) -> None:
    bv = summary["best_val_loss"]
    print(
        f"trained {model.family} ({model.num_parameters():,} parameters): {summary['step']} steps in "
        f"{summary['elapsed_s']:.0f}s ({summary['stopped']}), {summary['tokens_per_s']:.0f} tokens/s; "
        + (f"best val mean_nll {bv:.4f} nats/token (estimated on {summary.get('val_tokens', 0):,} val tokens) "
           f"at step {summary['best_step']}" if bv is not None else "no val text") + f" -> {out_dir}",
        file=sys.stderr,
    )
