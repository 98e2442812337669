"""An exponential moving average of a model's weights (``--ema-decay``), for evaluation and the saved model.

Polyak & Juditsky 1992 ("Acceleration of stochastic approximation by averaging"), in the
exponential form common in deep learning; the warm-up of the decay is TensorFlow's
``ExponentialMovingAverage`` with ``num_updates``.
"""

from __future__ import annotations

import contextlib

import torch

from .settings import AUTO_EMA_DECAY, AUTO_PASSES

class WeightEMA:
    """``ema <- ema + (1 - d_t) (w - ema)`` after every optimiser step, d_t = min(decay, (1 + t) / (10 + t))
    at step t (0-based): early averages forget the random initialisation quickly.

    The averages live beside the parameters (same device, float32 like them); ``tensors()`` /
    ``load()`` save and restore them (``ema.NAME`` entries of the training state).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.avg = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold the current weights in, after optimiser step ``step`` (0-based)."""
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        torch._foreach_lerp_(self.avg, [p.detach() for p in self.params], 1.0 - d)

    @torch.no_grad()
    def reset(self) -> None:
        """Start the averages again from the current weights."""
        for a, p in zip(self.avg, self.params):
            a.copy_(p)

    @contextlib.contextmanager
    def swapped_in(self):
        """Inside the block the model's parameters hold the averages; the trained weights come back after."""
        with torch.no_grad():
            kept = [p.detach().clone() for p in self.params]
            for p, a in zip(self.params, self.avg):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, k in zip(self.params, kept):
                    p.copy_(k)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"ema.{n}": a for n, a in zip(self.names, self.avg)}

    @torch.no_grad()
    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`tensors` gave. Raises KeyError for a state without the averages."""
        for n, a in zip(self.names, self.avg):
            a.copy_(tensors[f"ema.{n}"])


def make_ema(model: torch.nn.Module, decay: float | None) -> WeightEMA | None:
    """The average a run keeps: ``--ema-decay`` > 0, or auto (None: ``AUTO_EMA_DECAY``, kept from the start and
    used once :func:`ema_in_use` says so); None for 0."""
    return WeightEMA(model, AUTO_EMA_DECAY if decay is None else decay) if decay is None or decay > 0 else None


def ema_in_use(ema: WeightEMA | None, decay: float | None, passes: float | None) -> bool:
    """Whether the average is what is scored and saved: ``--ema-decay`` > 0, or auto (None) with at least
    ``AUTO_PASSES[0]`` planned passes over train (:func:`.schedule.planned_passes`)."""
    return ema is not None and (decay is not None or (passes or 0.0) >= AUTO_PASSES[0])
