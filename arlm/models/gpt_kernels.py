"""Hand-written CPU training kernels of the GPT (``models/gpt.py``): attention and GELU with their backward.

Used only on CPU while autograd records; inference and CUDA keep PyTorch's kernels.
Each computes the same function as PyTorch's op, equal up to rounding (tests/models/test_gpt.py).
"""

from __future__ import annotations

import math

import torch

from .rotary import rotate_

#: Use the hand-written CPU training kernels of this module (tests switch them off to compare).
FAST_CPU_TRAINING = True


def cpu_training_path(x: torch.Tensor) -> bool:
    """True where the hand-written CPU training kernels of this module replace PyTorch's (see :class:`CausalAttention`).

    Only on CPU and only when autograd records (training): inference keeps
    PyTorch's kernels, so scores are exactly what they always were; CUDA keeps
    its fused kernels and ``torch.compile`` traces the plain ops it can fuse.
    """
    return (FAST_CPU_TRAINING and x.device.type == "cpu" and x.requires_grad and torch.is_grad_enabled()
            and not torch.compiler.is_compiling())


_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


class GeluTanh(torch.autograd.Function):
    """``F.gelu(x, approximate="tanh")`` for CPU training, faster forward and backward (~1.5 ms a step at the
    default size on 2 cores, measured in bench-style A/B runs).

    0.5 x (1 + tanh(u)) = x sigmoid(2u) with u = sqrt(2/pi) (x + 0.044715 x^3):
    the same function (equal to rounding), but PyTorch's CPU ``sigmoid`` is
    vectorised where its ``tanh`` is not. d/dx = s + x s (1 - s) 2u', s = sigmoid(2u).
    """

    @staticmethod
    def _sigmoid_2u(x: torch.Tensor) -> torch.Tensor:
        c = torch.full((), 2 * _GELU_C, dtype=x.dtype, device=x.device)
        return torch.addcmul(c, x, x, value=2 * _GELU_C * _GELU_A).mul_(x).sigmoid_()

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        # One new buffer, then in-place passes over it while it is in cache; only
        # x is saved (backward recomputes the sigmoid: cheaper than a second buffer).
        ctx.save_for_backward(x)
        return GeluTanh._sigmoid_2u(x).mul_(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        s = GeluTanh._sigmoid_2u(x)
        c = torch.full((), 2 * _GELU_C, dtype=x.dtype, device=x.device)
        d = torch.addcmul(c, x, x, value=6 * _GELU_C * _GELU_A).mul_(x)  # x 2u'
        d.addcmul_(d, s, value=-1.0).mul_(s)  # x 2u' (1 - s) s
        return d.add_(s).mul_(grad)


class ReluSquare(torch.autograd.Function):
    """relu(x)^2 (``GPTConfig.mlp_act="relu2"``) for CPU training: one saved tensor, relu(x), from which
    both the output and the derivative 2 relu(x) are made (autograd's relu then square keeps two)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        r = torch.relu(x)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return (r * 2.0).mul_(grad)


class CausalAttention(torch.autograd.Function):
    """Causal multi-head attention over a fused ``[B, T, 3C]`` q/k/v projection, for CPU training.

    Plain softmax attention, softmax(q k^T / sqrt(D) + causal mask) v, the
    function ``F.scaled_dot_product_attention(..., is_causal=True)`` computes,
    written as six batched matrix products with a hand-written backward: at
    training sizes (T = 64, D = 32) PyTorch's CPU flash-attention kernel,
    forward and backward, takes about 1.3x as long (measured on 2 cores), and
    the split/view/transpose of q, k, v and of their gradients costs extra copies.
    Saves the probabilities ``[B*H, T, T]`` for backward (no recomputation).
    With rotary ``freqs`` [T, D/2] (``rotary_tables``), q and k are rotated
    in place in that copy, and the gradients of the rotated q and k are turned
    back by the inverse rotation (the conjugate).
    """

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, n_head: int, freqs: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C3 = qkv.shape
        C = C3 // 3
        D = C // n_head
        heads = qkv.view(B, T, 3, n_head, D).permute(2, 0, 3, 1, 4).reshape(3, B * n_head, T, D)  # copy
        if freqs is not None:
            if heads.data_ptr() == qkv.data_ptr():  # reshape made a view (T = 1, H = 1): never write into qkv
                heads = heads.clone()
            rotate_(heads[:2], freqs)  # [2, B*H, T, D]: q and k
        q, k, v = heads[0], heads[1], heads[2]  # [B*H, T, D] each, contiguous
        mask = torch.full((T, T), float("-inf"), dtype=qkv.dtype, device=qkv.device).triu_(1)  # [T, T]
        scale = 1.0 / math.sqrt(D)
        p = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=scale)  # [B*H, T, T] scores
        torch._softmax(p, -1, False, out=p)  # in place (row by row), while the scores are in cache
        y = torch.bmm(p, v)  # [B*H, T, D]
        ctx.save_for_backward(heads, p, freqs)
        ctx.scale = scale
        return y.view(B, n_head, T, D).transpose(1, 2).reshape(B, T, C)  # [B, T, C]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        heads, p, freqs = ctx.saved_tensors
        q, k, v = heads[0], heads[1], heads[2]
        _, BH, T, D = heads.shape
        B = grad.shape[0]
        H = BH // B
        dy = grad.reshape(B, T, H, D).transpose(1, 2).reshape(BH, T, D)  # [B*H, T, D]
        dheads = torch.empty_like(heads)  # [3, B*H, T, D]
        torch.bmm(p.transpose(1, 2), dy, out=dheads[2])  # dv
        dp = torch.bmm(dy, v.transpose(1, 2))  # [B*H, T, T]
        ds = torch._softmax_backward_data(dp, p, -1, p.dtype, grad_input=dp).mul_(ctx.scale)  # [B*H, T, T], in place
        torch.bmm(ds, k, out=dheads[0])  # dq
        torch.bmm(ds.transpose(1, 2), q, out=dheads[1])  # dk
        if freqs is not None:  # the rotation's transpose is the rotation by minus the angle
            rotate_(dheads[:2], freqs.conj())
        return dheads.view(3, B, H, T, D).permute(1, 3, 0, 2, 4).reshape(B, T, 3 * H * D), None, None
