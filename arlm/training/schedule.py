"""The learning-rate schedule: linear warm-up, then a cosine or warm-up-stable-decay (WSD) decay to a floor,
fitted to steps and/or time."""

from __future__ import annotations

import math

from .settings import TrainSettings


def lr_at(s: TrainSettings, step: int, elapsed: float) -> float:
    """Learning rate for the update after ``step`` updates and ``elapsed`` seconds.

    Linear warm-up over ``warmup_steps``, then a decay from ``lr`` to ``lr * min_lr_ratio`` as the
    progress (:func:`schedule_progress`) goes from 0 to 1, shaped by ``s.lr_schedule``:

    * ``"cosine"``: ``floor + (lr - floor) * (1 + cos(pi * progress)) / 2`` (Loshchilov & Hutter 2017, SGDR);
    * ``"wsd"`` (warm-up, stable, decay): ``lr`` until progress ``1 - cooldown_fraction``, then linear to
      the floor (Hu et al. 2024, "MiniCPM"; the modded-nanoGPT speedrun's schedule).
    """
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    progress = schedule_progress(s, step, elapsed)
    floor = s.lr * s.min_lr_ratio
    if s.lr_schedule == "wsd":
        c = s.cooldown_fraction
        return s.lr if progress <= 1.0 - c else s.lr - (s.lr - floor) * (progress - (1.0 - c)) / c
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (s.lr - floor)


def schedule_progress(s: TrainSettings, step: int, elapsed: float) -> float:
    """How far the decay is (0..1) at ``step`` / ``elapsed``: 0 during warm-up.

    Progress is the larger of the step fraction (after warm-up) and the time fraction of the budget.
    After a resume that changed the budget (``s.schedule_anchor = [k, e, p]``) progress is ``p`` at
    step ``k`` / ``e`` seconds and reaches 1 at the end of the new budget: the rate is continuous,
    decaying from where it was.
    """
    if step < s.warmup_steps:
        return 0.0
    step0, time0, p0 = (s.warmup_steps, 0.0, 0.0) if s.schedule_anchor is None else s.schedule_anchor
    frac = 0.0
    if s.max_steps is not None:
        frac = (step - step0) / max(1, s.max_steps - step0)
    if s.max_time is not None:
        frac = max(frac, (elapsed - time0) / max(s.max_time - time0, 1e-9))
    progress = p0 + (1.0 - p0) * min(max(frac, 0.0), 1.0)
    return min(max(progress, 0.0), 1.0)


def planned_passes(s: TrainSettings, step: int, elapsed: float, train_tokens: int) -> float | None:
    """The passes over ``train_tokens`` that the run will have made at the end of its budget, as known after
    ``step`` steps and ``elapsed`` seconds: ``--max-steps`` exactly, a time budget extrapolated from the steps
    per second so far (the smaller of both when both are set); None while nothing is known (no step yet).
    A step reads ``batch_size * block_size`` tokens."""
    steps = float(s.max_steps) if s.max_steps is not None else None
    if s.max_time is not None and step > 0 and elapsed > 0:
        by_time = step * s.max_time / elapsed
        steps = by_time if steps is None else min(steps, by_time)
    if steps is None:
        return None
    return steps * s.batch_size * s.block_size / max(train_tokens, 1)
