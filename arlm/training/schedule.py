"""The learning-rate schedule: linear warm-up, then cosine decay to a floor, fitted to steps and/or time."""

from __future__ import annotations

import math

from .settings import TrainSettings


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


