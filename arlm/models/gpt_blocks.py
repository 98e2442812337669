"""The GPT's layers (``models/gpt.py``): LayerNorm, causal self-attention, the MLP, the pre-LN block.

The options beyond GPT-2 (QK-normalisation, ReLU², zero-initialised projections,
value residual, U-net skips, logit soft-cap) follow the modded-nanoGPT speedrun
(Keller Jordan et al. 2024, https://github.com/KellerJordan/modded-nanogpt); see :class:`GPTConfig`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .gpt_kernels import CausalAttention, GeluTanh, ReluSquare, cpu_training_path
from .rotary import rotate

#: The MLP activations of ``GPTConfig.mlp_act``.
MLP_ACTS = ("gelu", "relu2")


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1 everywhere)."""

    def __init__(self, n: int, bias: bool, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n)) if bias else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


def unit_rms(x: torch.Tensor) -> torch.Tensor:
    """x [..., D] scaled to unit root-mean-square over its last dimension (RMSNorm without a gain, eps 1e-6)."""
    return F.rms_norm(x, (x.shape[-1],), eps=1e-6)


def soft_cap(logits: torch.Tensor, cap: float) -> torch.Tensor:
    """``cap * tanh(logits / cap)``: |result| < cap, about ``logits`` where |logits| << cap (Gemma 2's
    logit soft-capping, used by modded-nanoGPT); ``cap <= 0`` returns ``logits`` unchanged."""
    return logits if cap <= 0 else torch.tanh(logits / cap) * cap


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; ``qk_norm`` makes each head's queries and keys unit-RMS before the
    dot product (and before the rotary rotation, which keeps the RMS); ``value_mix`` (value residual, layers
    after the first) mixes the first layer's values into this layer's: v <- v + lambda (v_1 - v)."""

    def __init__(self, config, layer: int = 0):
        super().__init__()
        if config.n_embd % config.n_head != 0:
            raise ValueError(f"n_embd={config.n_embd} must be divisible by n_head={config.n_head}")
        self.n_head = config.n_head
        self.qk_norm = config.qk_norm
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.value_mix = nn.Parameter(torch.tensor(0.5)) if config.value_residual and layer > 0 else None
        self.dropout = config.dropout
        if config.bias and config.pos_emb == "learned" and not config.qk_norm:
            # With learned positions the key bias b adds q_i . b to every score of query i alike, which the
            # softmax ignores: its true gradient is exactly zero, so what autograd returns is rounding noise,
            # which Adam would normalise into steps of up to lr (and which differs between a single process
            # and DDP ranks). Zero it: the key bias keeps its initial (or imported) value. Under rotary
            # embeddings b is rotated by position and does matter; under QK-norm it is inside the norm.
            n = config.n_embd
            self.c_attn.bias.register_hook(lambda g: torch.cat([g[:n], g.new_zeros(n), g[2 * n:]]))
        self.resid_dropout = nn.Dropout(config.dropout)

    def _mixed_qkv(self, x: torch.Tensor, v1: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, C] -> (q, k, v [B, T, 3C] after QK-norm and the value mix, this layer's v [B, T, C] or the
        first layer's values to pass on)."""
        qkv = self.c_attn(x)  # [B, T, 3C]
        if not self.qk_norm and v1 is None and self.value_mix is None:
            return qkv, qkv[..., 2 * x.shape[-1]:]
        B, T, C = x.shape
        q, k, v = qkv.split(C, dim=2)
        if self.qk_norm:
            D = C // self.n_head
            q = unit_rms(q.view(B, T, self.n_head, D)).view(B, T, C)
            k = unit_rms(k.view(B, T, self.n_head, D)).view(B, T, C)
        if self.value_mix is not None and v1 is not None:
            v = torch.lerp(v, v1, self.value_mix.to(v.dtype))
        return torch.cat([q, k, v], dim=2), (v1 if v1 is not None else v)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None,
                rope: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                v1: torch.Tensor | None = None):
        """x: [B, T, C]; past: (k, v) [B, H, P, D] of the P positions before x, or None;
        rope: rotary freqs [T, D/2] of x's positions (``rotary_tables``), or None (learned positions);
        attn_mask: BoolTensor[T, P + T], required with ``past``; None means causal;
        v1: the first layer's values [B, T, C] (value residual), or None.

        Returns ([B, T, C], (k, v) [B, H, P + T, D] or None on the CPU training path, the first layer's
        values [B, T, C]: ``v1``, or this layer's own when ``v1`` is None).
        """
        B, T, C = x.shape
        qkv, v_first = self._mixed_qkv(x, v1)
        if (past is None and attn_mask is None and (self.dropout == 0.0 or not self.training)
                and cpu_training_path(x)):
            y = CausalAttention.apply(qkv, self.n_head, rope)  # [B, T, C]
            return self.resid_dropout(self.c_proj(y)), None, v_first
        shape = (B, T, self.n_head, C // self.n_head)
        q, k, v = (t.view(shape).transpose(1, 2) for t in qkv.split(C, dim=2))  # [B, H, T, D] each
        if rope is not None:
            q, k = rotate(q, rope), rotate(k, rope)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # [B, H, P+T, D]
            v = torch.cat([past[1], v], dim=2)
        p = self.dropout if self.training else 0.0
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        y = y.transpose(1, 2).reshape(B, T, C)  # [B, T, C]
        return self.resid_dropout(self.c_proj(y)), (k, v), v_first


class MLP(nn.Module):
    """Two Linear layers 4x wide with the tanh-approximated GELU (GPT-2) or ReLU² (``mlp_act="relu2"``:
    relu(x)^2, So et al. 2021, "Primer", as in modded-nanoGPT) between them."""

    def __init__(self, config):
        super().__init__()
        self.relu2 = config.mlp_act == "relu2"
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # [B, T, 4C]
        if self.relu2:
            h = ReluSquare.apply(h) if cpu_training_path(h) else F.relu(h).square()
        else:
            h = GeluTanh.apply(h) if cpu_training_path(h) else F.gelu(h, approximate="tanh")
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, config, layer: int = 0):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, config.bias, config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = LayerNorm(config.n_embd, config.bias, config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, past=None, rope=None, attn_mask=None, v1=None):
        """Returns (x [B, T, C], kv, first layer's values); see :meth:`CausalSelfAttention.forward`."""
        a, kv, v1 = self.attn(self.ln_1(x), past, rope, attn_mask, v1)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, kv, v1


def n_encoder(n_layer: int) -> int:
    """U-net skips: the first ``n_layer // 2`` layers are the encoder; the output of encoder layer i is added
    (times a learned weight, 1 at init) to the input of layer ``n_layer - 1 - i``."""
    return n_layer // 2


def run_blocks(model, x: torch.Tensor, past: list | None, rope=None, attn_mask=None):
    """x [B, T, C] through every block of ``model`` (value residual and U-net skips as configured).

    Returns (x [B, T, C], per layer kv as the blocks return it)."""
    cfg = model.config
    unet = cfg.unet_skips
    n_enc = n_encoder(cfg.n_layer)
    skips, kv, v1 = [], [], None
    for i, block in enumerate(model.h):
        if unet and i >= cfg.n_layer - n_enc:
            x = x + model.skip_weights[cfg.n_layer - 1 - i].to(x.dtype) * skips[cfg.n_layer - 1 - i]
        x, layer_kv, v = block(x, None if past is None else past[i], rope, attn_mask, v1)
        if cfg.value_residual:
            v1 = v
        if unet and i < n_enc:
            skips.append(x)
        kv.append(layer_kv)
    return x, kv
