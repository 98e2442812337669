"""What a training run is, apart from the model: :class:`TrainSettings` (the gradient loop),
:class:`CountSettings` (counting), durations. Fields with ``metadata["help"]`` are ``arlm train`` flags;
the family table (``arlm.models.registry``) holds the defaults that differ per family."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..errors import ArlmError

DEFAULT_MAX_TIME = 120.0  # seconds, when neither --max-steps nor --max-time is given

#: The "auto" regularisation of many-epoch runs (``muon_weight_decay`` / ``ema_decay`` None): off below
#: ``AUTO_PASSES[0]`` planned passes over the training tokens; the weight decay rises linearly to
#: ``AUTO_WEIGHT_DECAY`` at ``AUTO_PASSES[1]``; the EMA is on from ``AUTO_PASSES[0]`` (bench/README.md, issue 24).
AUTO_PASSES = (15.0, 30.0)
AUTO_WEIGHT_DECAY = 0.5
AUTO_EMA_DECAY = 0.999


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

    batch_size: int = field(metadata={"help": "sequences per optimiser step"})
    block_size: int = field(metadata={"help": "training window in tokens (lstm: the truncated-backprop length)"})
    lr: float = field(metadata={"help": "peak learning rate of AdamW, decayed by --lr-schedule to its floor"})
    max_steps: int | None = field(default=None,
        metadata={"help": "stop after this many optimiser steps (default: no step limit, only --max-time)",
                  "resume": True})
    max_time: float | None = field(default=None,
        metadata={"help": "wall-clock budget, e.g. 90s, 2m, 1h (default: 120s when --max-steps is not "
                           "given, else none)", "flag_type": str, "resume": True})
    min_lr_ratio: float = 0.1
    warmup_steps: int = field(default=100,
        metadata={"help": "linear warm-up steps (default: 100, or a tenth of a short --max-steps)"})
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = field(default=250, metadata={"help": "optimiser steps between val evaluations"})
    eval_iters: int = field(default=10, metadata={"help": "val batches per evaluation"})
    seed: int = 1337
    documents: str = "file"
    device: str = field(default="auto",
        metadata={"help": "where to train (default: auto, the first available of cuda, mps, cpu)",
                  "choices": ("auto", "cpu", "cuda", "mps"), "any_model": True, "resume": True})
    #: ``torch.compile`` the training step: True, False, or None (the default): on CUDA when the budget is
    #: long enough to pay for it (:func:`arlm.training.loop.compiles`). Compiling is not counted in ``max_time``.
    compile: bool | None = field(default=None, metadata={
        "help": "torch.compile the training step; the compile time is reported apart and not counted in "
                "--max-time (default: on cuda when --max-time is at least 5m, or --max-steps at least 5000 "
                "without a time budget; never on cpu)", "resume": True, "optional_bool": True})
    threads: int | None = field(default=None,
        metadata={"help": "CPU threads, kept fixed (default: start with the cores idle at launch and adapt "
                           "to the load while training)", "any_model": True, "resume": True})
    #: ``"auto"``: bf16 autocast on CUDA, fp32 elsewhere (runs saved before this field); ``"bf16"``: bf16
    #: autocast of the training forward (fp32 weights, optimiser and loss) where bf16 is native (CUDA, CPUs
    #: with AVX-512 BF16 or AMX: :func:`arlm.training.optimizer.native_bf16`), fp32 elsewhere; ``"fp32"``: no autocast.
    precision: str = field(default="auto",
        metadata={"help": "training forward in bf16 autocast where the hardware has bf16 (CUDA, AVX-512 "
                           "BF16 or AMX CPUs; fp32 elsewhere), or fp32; weights, optimiser and scoring stay "
                           "fp32 (default: {defaults}; auto: bf16 on cuda, else fp32)",
                  "choices": ("bf16", "fp32")})
    #: ``"adamw"`` (runs saved before this field) or ``"muon"``: Muon for hidden matrices, AdamW for the rest
    #: (:mod:`arlm.training.muon`), Muon's peak rate being ``muon_lr``.
    optimizer: str = field(default="adamw",
        metadata={"help": "adamw, or muon: Muon for hidden matrices, AdamW for embeddings, head, gains",
                  "choices": ("adamw", "muon")})
    muon_lr: float = field(default=0.02,
        metadata={"help": "with --optimizer muon: peak learning rate of Muon, on --lr's schedule"})
    #: Muon's decoupled weight decay (W <- W (1 - lr wd), lr being Muon's scheduled rate) and its momentum
    #: warm-up (0.85 -> 0.95 linearly over ``muon_momentum_warmup`` steps), both from modded-nanoGPT.
    #: None ("auto", the gpt default): :func:`auto_weight_decay` of the run's planned passes over train.
    muon_weight_decay: float | None = field(default=0.0, metadata={
        "help": "with --optimizer muon: decoupled weight decay of the Muon matrices, W <- W (1 - lr wd) a step "
                "(default: {defaults}; auto: 0 up to 15 planned passes over the training tokens, rising "
                "linearly to 0.5 at 30 passes)"})
    muon_momentum_warmup: int = field(default=0, metadata={
        "help": "with --optimizer muon: steps over which Muon's momentum rises linearly from 0.85 to 0.95 "
                "(0: 0.95 throughout)"})
    #: ``ema_decay`` > 0: the model directory gets an exponential moving average of the weights, which is
    #: also what the val loss is measured on (:class:`arlm.training.ema.WeightEMA`).
    #: None ("auto", the gpt default): 0.999 once the run plans at least ``AUTO_PASSES[0]`` passes over train.
    ema_decay: float | None = field(default=0.0, metadata={
        "help": "evaluate and save an exponential moving average of the weights with this decay a step, e.g. "
                "0.99 (0: off; default: {defaults}; auto: 0.999 from 15 planned passes over the training "
                "tokens, else off)"})
    #: How training windows are drawn (:mod:`.batches`): ``"random"`` (uniform random offsets, with
    #: replacement) or ``"epochs"`` (:class:`.batches.EpochOrder`).
    batch_order: str = field(default="random", metadata={
        "help": "random: windows at uniform random offsets; epochs: each epoch cuts the text into --block-size "
                "windows at a random offset and visits each once, in a random order (--documents file; with "
                "--documents lines, random)",
        "choices": ("random", "epochs")})
    #: ``"cosine"`` (runs saved before this field) or ``"wsd"``: the decay's shape (:func:`arlm.training.lr_at`);
    #: ``cooldown_fraction``: the share of the budget over which ``"wsd"`` decays linearly.
    lr_schedule: str = field(default="cosine",
        metadata={"help": "decay after the warm-up: cosine, or wsd (stable, then linear over the last "
                           "--cooldown-fraction of the budget)", "choices": ("cosine", "wsd")})
    cooldown_fraction: float = field(default=0.5, metadata={"help": "share of the budget over which wsd decays"})
    #: ``[step, elapsed_s, progress]`` where a resume changed the budget: the cosine
    #: continues from ``progress`` at that point over the rest of the new budget
    #: (see :func:`lr_at`), so the learning rate does not jump.
    schedule_anchor: list[float] | None = None


@dataclass
class CountSettings:
    """How a counted family (the n-gram) is fitted, apart from its model's hyperparameters."""

    refit: bool = field(default=True, metadata={
        "help": "n-gram: keep the val split out of the saved model (without it the model is refitted on all of "
                "DATA after val is scored)"})
    memory: str | None = field(default=None, metadata={
        "help": "n-gram: count in chunks within SIZE bytes (e.g. 2G), spilling sorted runs to $TMPDIR; fits on "
                "all of DATA, val only from --val-file (default: count in memory)", "metavar": "SIZE"})


def parse_duration(text: str, name: str = "max_time") -> float:
    """``'90s'``, ``'2m'``, ``'1.5h'``, ``'1h30m'`` or a plain number of seconds -> seconds.

    Raises:
        ArlmError: unparsable or non-positive, naming ``name`` (the option it was given as).
    """
    s = str(text).strip().lower()
    try:
        value = float(s)
    except ValueError:
        parts = re.fullmatch(r"(?:(\d+(?:\.\d*)?)h)?(?:(\d+(?:\.\d*)?)m)?(?:(\d+(?:\.\d*)?)s)?", s)
        if not s or not parts or not any(parts.groups()):
            raise ArlmError(f"cannot parse {name} {text!r}: use a duration such as 90s, 2m, 1h or a number of "
                              "seconds") from None
        h, m, sec = (float(g) if g else 0.0 for g in parts.groups())
        value = 3600 * h + 60 * m + sec
    if not value > 0 or not math.isfinite(value):
        raise ArlmError(f"{name} must be a positive duration, got {text!r}")
    return value


def check_settings(s: TrainSettings) -> None:
    """Refuse settings no run can use; a run without a budget gets ``DEFAULT_MAX_TIME``.

    Raises:
        ArlmError: one line naming the flag and its value.
    """
    if s.batch_size < 1 or s.block_size < 1:
        raise ArlmError(f"--batch-size and --block-size must be >= 1 (got {s.batch_size}, {s.block_size})")
    if not s.lr > 0:
        raise ArlmError(f"--lr must be positive, got {s.lr}")
    if s.max_steps is not None and s.max_steps < 1:
        raise ArlmError(f"--max-steps must be >= 1, got {s.max_steps}")
    if s.eval_interval < 1 or s.eval_iters < 1:
        raise ArlmError("--eval-interval and --eval-iters must be >= 1")
    if s.max_steps is None and s.max_time is None:
        s.max_time = DEFAULT_MAX_TIME
    if s.lr_schedule not in ("cosine", "wsd"):
        raise ArlmError(f"--lr-schedule must be cosine or wsd, got {s.lr_schedule!r}")
    if not 0.0 < s.cooldown_fraction <= 1.0:
        raise ArlmError(f"--cooldown-fraction must be in (0, 1], got {s.cooldown_fraction}")
    if s.ema_decay is not None and not 0.0 <= s.ema_decay < 1.0:
        raise ArlmError(f"--ema-decay must be in [0, 1), got {s.ema_decay}")
    if s.muon_weight_decay is not None and not s.muon_weight_decay >= 0:
        raise ArlmError(f"--muon-weight-decay must be >= 0, got {s.muon_weight_decay}")
    if s.muon_momentum_warmup < 0:
        raise ArlmError(f"--muon-momentum-warmup must be >= 0, got {s.muon_momentum_warmup}")
    if s.batch_order not in ("random", "epochs"):
        raise ArlmError(f"--batch-order must be random or epochs, got {s.batch_order!r}")
    if s.threads is not None and s.threads < 1:
        raise ArlmError(f"--threads must be >= 1, got {s.threads}")


def auto_weight_decay(passes: float | None) -> float:
    """The "auto" Muon weight decay for a run planning ``passes`` passes over its training tokens (None:
    not known yet): 0 up to ``AUTO_PASSES[0]``, linear to ``AUTO_WEIGHT_DECAY`` at ``AUTO_PASSES[1]``."""
    if passes is None:
        return 0.0
    lo, hi = AUTO_PASSES
    return AUTO_WEIGHT_DECAY * min(1.0, max(0.0, (passes - lo) / (hi - lo)))
