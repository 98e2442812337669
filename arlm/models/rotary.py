"""Rotary position embeddings and the sliding-window mask of a rotary GPT (``models/gpt.py``).

Su et al. 2021, "RoFormer": dimensions ``(2i, 2i + 1)`` of each head form pair i,
turned by ``position * base ** (-2i / D)`` radians, i.e. multiplied by ``e^{i angle}``.
"""

from __future__ import annotations

import torch


def rotary_tables(positions: torch.Tensor, head_dim: int, base: float, dtype: torch.dtype,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Rotary position embeddings (Su et al. 2021, RoFormer eq. 15) as unit complex numbers.

    Args:
        positions: absolute positions, any integer tensor [T].
        head_dim: D (even).
        base: frequency base; pair i (dimensions 2i, 2i + 1) turns by
            ``position * base ** (-2i / D)`` radians.
        dtype: the real dtype of the model (float32 -> complex64, float64 -> complex128).

    Returns:
        ComplexTensor[T, D/2], ``e^{i angle}``. Angles are computed in float64
        (exact enough for positions in the millions) and rounded once.
    """
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # [D/2]
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]  # [T, D/2]
    freqs = torch.polar(torch.ones_like(angles), angles)  # complex128
    return freqs.to(device=device, dtype=torch.complex128 if dtype == torch.float64 else torch.complex64)


def rotate(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (2i, 2i + 1) of x [..., T, D] by ``rotary_tables`` freqs [T, D/2]: a new tensor.

    bf16 x (training under autocast) is rotated in float32 and rounded back: complex bf16 does not exist.
    """
    if x.dtype == torch.bfloat16:
        return rotate(x.float(), freqs).to(x.dtype)
    if torch.compiler.is_compiling():  # real arithmetic: what inductor fuses
        pairs = x.unflatten(-1, (-1, 2))  # [..., T, D/2, 2]
        a, b, c, s = pairs[..., 0], pairs[..., 1], freqs.real.to(x.dtype), freqs.imag.to(x.dtype)
        return torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2)
    return torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * freqs).flatten(-2)


def rotate_(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """In-place ``rotate`` of a tensor x [..., T, D] whose last dimension is contiguous (bf16: via float32)."""
    if x.dtype == torch.bfloat16:
        return x.copy_(rotate_(x.float(), freqs))
    torch.view_as_complex(x.unflatten(-1, (-1, 2))).mul_(freqs)
    return x


def band_mask(t: int, past: int, block: int, device) -> torch.Tensor:
    """The sliding-window mask, BoolTensor[t, past + t] (True = may attend).

    Query i stands at key index ``past + i`` and sees key indices ``past + i -
    block + 1 .. past + i``: a causal band of width ``block``.
    """
    return torch.ones(t, past + t, dtype=torch.bool, device=device).tril(past).triu(past - block + 1)
