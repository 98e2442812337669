"""The optimiser and precision: AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay
Regularization"), or Muon for the hidden matrices (:mod:`.muon`); bf16 autocast of the training forward."""

from __future__ import annotations

import torch

from ..errors import ArlmError
from .settings import TrainSettings, auto_weight_decay


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

    ``s.optimizer == "muon"``: :class:`arlm.training.muon.MuonAdamW`, Muon (weight decay
    ``s.muon_weight_decay``) on the hidden matrices (:func:`arlm.training.muon.hidden_matrices`), AdamW as above on the rest.

    Raises:
        ArlmError: an unknown optimizer.
    """
    if s.optimizer == "muon":
        from .muon import MuonAdamW, hidden_matrices

        hidden = {id(p) for p in hidden_matrices(model)}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in hidden]
        return MuonAdamW([
            {"params": [p for p in model.parameters() if id(p) in hidden], "use_muon": True,
             "weight_decay": s.muon_weight_decay or 0.0},  # None (auto): set every step
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



#: Muon's momentum before and after ``--muon-momentum-warmup`` (modded-nanoGPT's values).
MUON_MOMENTUM = (0.85, 0.95)


def set_step_hyperparameters(optimizer: torch.optim.Optimizer, s: TrainSettings, lr: float, step: int,
                             passes: float | None = None) -> None:
    """Set the learning rate ``lr`` on every group, and Muon's momentum of optimiser step ``step`` (0-based):
    with ``s.muon_momentum_warmup`` = N > 0 it rises linearly from 0.85 to 0.95 over the first N steps
    (Keller Jordan et al., modded-nanoGPT), else it stays at the optimizer's 0.95. With
    ``s.muon_weight_decay`` None, Muon's weight decay is :func:`.settings.auto_weight_decay` of ``passes``
    (:func:`.schedule.planned_passes`)."""
    for g in optimizer.param_groups:
        g["lr"] = lr
        if s.muon_weight_decay is None and g.get("use_muon"):
            g["weight_decay"] = auto_weight_decay(passes)
        if s.muon_momentum_warmup and g.get("use_muon"):
            lo, hi = MUON_MOMENTUM
            g["momentum"] = lo + (hi - lo) * min(1.0, step / s.muon_momentum_warmup)
