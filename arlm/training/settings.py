"""What a training run is, apart from the model: :class:`TrainSettings`, the family defaults, durations."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import ArlmError

#: Family defaults, tuned for a 2-minute run on a 2-core CPU (tinyshakespeare, char
#: vocab; see the issue note). At that budget the number of optimiser steps limits
#: the result: small, shallow models with a high learning rate win. GPT (issue 14,
#: bench/README.md): Muon for the hidden matrices (-0.15 nats at 400 steps against
#: AdamW; its rate 0.03 measured best at 2,600 steps, a 2-minute run) and a bf16
#: training forward (~1.5x tokens/s, the same loss per step).
DEFAULTS: dict[str, dict[str, Any]] = {
    "gpt": dict(n_layer=2, n_head=4, n_embd=128, block_size=64, dropout=0.0, batch_size=32, lr=6e-3, min_lr_ratio=0.01,
                precision="bf16", optimizer="muon", muon_lr=0.03, lr_schedule="cosine", cooldown_fraction=0.5),
    "lstm": dict(n_layer=1, n_embd=64, n_hidden=256, block_size=64, dropout=0.0, batch_size=32, lr=4e-2, min_lr_ratio=0.01,
                 precision="auto", optimizer="adamw", muon_lr=0.02, lr_schedule="cosine", cooldown_fraction=0.5),
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
    #: with AVX-512 BF16 or AMX: :func:`arlm.training.optimizer.native_bf16`), fp32 elsewhere; ``"fp32"``: no autocast.
    precision: str = "auto"
    #: ``"adamw"`` (runs saved before this field) or ``"muon"``: Muon for hidden matrices, AdamW for the rest
    #: (:mod:`arlm.training.muon`), Muon's peak rate being ``muon_lr``.
    optimizer: str = "adamw"
    muon_lr: float = 0.02
    #: ``"cosine"`` (runs saved before this field) or ``"wsd"``: the decay's shape (:func:`arlm.training.lr_at`);
    #: ``cooldown_fraction``: the share of the budget over which ``"wsd"`` decays linearly.
    lr_schedule: str = "cosine"
    cooldown_fraction: float = 0.5
    #: ``[step, elapsed_s, progress]`` where a resume changed the budget: the cosine
    #: continues from ``progress`` at that point over the rest of the new budget
    #: (see :func:`lr_at`), so the learning rate does not jump.
    schedule_anchor: list[float] | None = None



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
    if s.threads is not None and s.threads < 1:
        raise ArlmError(f"--threads must be >= 1, got {s.threads}")
