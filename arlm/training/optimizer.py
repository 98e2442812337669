"""The optimiser: AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization")."""

from __future__ import annotations

import torch

from .settings import TrainSettings


def make_optimizer(model: torch.nn.Module, s: TrainSettings, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay on parameters with >= 2 dims (matrices, embeddings) only."""
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

