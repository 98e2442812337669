"""The GPT's decode engine (``models/gpt.py``): a preallocated KV cache and one-position forward passes.

``prefill`` reads a prompt in one forward pass; ``step`` extends a state by one token per
row, with the block's maths written as plain tensor calls on weights laid out for decoding.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .rotary import rotate_


class KVBuffer:
    """Preallocated keys and values of every layer, filled left to right.

    ``kv``: FloatTensor[n_layer, 2, B, n_head, capacity, head_dim] (keys, then
    values); index j holds absolute position ``offset + j``; ``tip`` is the
    absolute length of the longest state written into it. Entries below ``tip
    - offset`` are never overwritten, so every state that points here stays
    valid; a state behind the tip (a second branch) or at the end of the
    capacity continues in a new buffer holding its last ``block_size - 1`` entries.
    """

    __slots__ = ("kv", "layers", "offset", "tip")

    def __init__(self, kv: torch.Tensor, offset: int, tip: int):
        self.kv, self.offset, self.tip = kv, offset, tip
        self.layers = list(kv.unbind(0))  # [2, B, H, capacity, D] each, views made once

    @property
    def capacity(self) -> int:
        return self.kv.shape[4]

    def window(self, length: int, keep: int, capacity: int) -> "KVBuffer":
        """A new buffer of ``capacity`` with the last ``keep`` entries before absolute position ``length``."""
        lo = max(self.offset, length - keep)
        a, b = lo - self.offset, length - self.offset
        kv = self.kv.new_empty((*self.kv.shape[:4], capacity, self.kv.shape[5]))  # [n_layer, 2, B, H, capacity, D]
        kv[..., : b - a, :] = self.kv[..., a:b, :]
        return KVBuffer(kv, lo, length)


class GPTState:
    """The decoding state of a :class:`GPTModel` after ``length`` tokens.

    ``buffer``: the KV cache (a ``KVBuffer``; None for a learned-position
    model past its window, which is recomputed from ``ids`` at every step);
    ``ids``: LongTensor[B, <= block_size], the last tokens (learned positions
    only; None for rotary); ``weights``: the model's weights laid out for
    decoding (made by ``prefill``; a state belongs to the weights that made
    it, as its cache does). A state is never changed by a later ``step``, so one
    state can be extended along several branches (the second branch copies the
    window it needs). All B rows have the same length.
    """

    __slots__ = ("buffer", "length", "ids", "weights")

    def __init__(self, buffer: KVBuffer | None, length: int, ids: torch.Tensor | None = None, weights=None):
        self.buffer = buffer
        self.length = length
        self.ids = ids
        self.weights = weights


def new_buffer(kv: list, length: int, capacity: int) -> KVBuffer:
    """A buffer of ``capacity`` holding kv (per layer (k, v) [B, H, n, D], the n positions before ``length``)."""
    k0 = kv[0][0]
    B, H, n, D = k0.shape
    buf = k0.new_empty((len(kv), 2, B, H, capacity, D))  # [n_layer, 2, B, H, capacity, D]
    if n:
        buf[..., :n, :] = torch.stack([torch.stack(layer) for layer in kv])  # [n_layer, 2, B, H, n, D]
    return KVBuffer(buf, length - n, length)


def decode_weights(model) -> list:
    """The weights as ``decode`` uses them: Linear weights transposed to [in, out] and contiguous
    (a row vector times such a matrix is about twice as fast on CPU as ``F.linear``'s layout).

    Made once and kept until a parameter changes (in place, e.g. by an optimiser, or replaced).
    """
    key = tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in model.parameters())
    if model._decode_cache is not None and model._decode_cache[0] == key:
        return model._decode_cache[1]

    def t(linear: nn.Linear):
        return linear.weight.detach().t().contiguous(), linear.bias

    layers = [(b.ln_1.weight, b.ln_1.bias, *t(b.attn.c_attn), *t(b.attn.c_proj), b.ln_2.weight, b.ln_2.bias,
               *t(b.mlp.c_fc), *t(b.mlp.c_proj)) for b in model.h]
    mixes = [None if b.attn.value_mix is None else b.attn.value_mix.detach() for b in model.h]  # value residual
    skips = model.skip_weights.detach() if hasattr(model, "skip_weights") else None  # U-net
    weights = [layers, model.ln_f.weight, model.ln_f.bias, model.lm_head.weight.detach().t().contiguous(),  # tied: wte
               mixes, skips]
    model._decode_cache = (key, weights)
    return weights


def prefill(model, token_ids: torch.Tensor) -> tuple[torch.Tensor, "GPTState"]:
    """Process a prompt LongTensor[B, T] (T >= 1) in one forward pass.

    Returns (FloatTensor[B, V] scores of the next token, state). With
    learned positions a prompt longer than ``block_size`` keeps only its
    last ``block_size`` tokens, the context the model can see; with rotary
    the whole prompt is read (sliding-window attention, in chunks).
    """
    W = model.config.block_size
    if model.rotary:
        logits, kv = model._forward_rotary(token_ids, last_only=True)
        T = token_ids.shape[1]
        return logits[:, -1], GPTState(new_buffer(kv, T, 2 * W), T, None, decode_weights(model))
    ids = token_ids[:, -W:]
    logits, kv = model._forward(ids, None, 0, last_only=True)
    T = ids.shape[1]
    buffer = new_buffer(kv, T, W) if T < W else None  # a full window is recomputed at the next step
    return logits[:, -1], GPTState(buffer, T, ids, decode_weights(model) if buffer is not None else None)


def decode(cfg, x: torch.Tensor, weights: list, buffer: KVBuffer, idx: int, lo: int,
           freqs: torch.Tensor | None) -> torch.Tensor:
    """One position per row through every layer: x [B, C] -> logits [B, V].

    Writes the position's keys and values at buffer index ``idx`` and attends
    to indices ``lo .. idx``. Plain tensor calls on ``decode_weights`` (no
    module dispatch, no dropout: decoding is inference), few temporaries.
    """
    B, C, H = x.shape[0], cfg.n_embd, cfg.n_head
    D = C // H
    eps = cfg.layer_norm_epsilon
    layers, lnf_w, lnf_b, head, mixes, skip_w = weights
    n_enc = len(skip_w) if skip_w is not None else 0
    skips, v1 = [], None
    for i, ((ln1_w, ln1_b, attn_w, attn_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, fc2_w, fc2_b), kv) in enumerate(
            zip(layers, buffer.layers)):
        if n_enc and i >= cfg.n_layer - n_enc:  # U-net skip from encoder layer n_layer - 1 - i
            x = x + skip_w[cfg.n_layer - 1 - i] * skips[cfg.n_layer - 1 - i]
        h = F.layer_norm(x, (C,), ln1_w, ln1_b, eps)
        qkv = (h @ attn_w if attn_b is None else torch.addmm(attn_b, h, attn_w)).view(B, 3, H, D)  # [B, 3, H, D]
        if cfg.qk_norm:
            qkv[:, :2] = F.rms_norm(qkv[:, :2], (D,), eps=1e-6)
        if cfg.value_residual:
            if v1 is None:
                v1 = qkv[:, 2].clone()  # [B, H, D]
            else:
                qkv[:, 2].lerp_(v1, mixes[i])
        if freqs is not None:
            rotate_(qkv[:, :2], freqs)  # q and k, in place
        kv.select(3, idx).copy_(qkv[:, 1:].transpose(0, 1))  # kv [2, B, H, capacity, D] <- [2, B, H, D]
        window = kv[:, :, :, lo : idx + 1]  # [2, B, H, n, D]
        # one query per row: SDPA's CPU kernel beat matmul/softmax/matmul at B = 1 and 16 (measured)
        y = F.scaled_dot_product_attention(qkv[:, 0, :, None], window[0], window[1]).reshape(B, C)
        x = torch.addmm(x, y, proj_w) if proj_b is None else torch.addmm(x + proj_b, y, proj_w)
        h = F.layer_norm(x, (C,), ln2_w, ln2_b, eps)
        h = h @ fc_w if fc_b is None else torch.addmm(fc_b, h, fc_w)  # [B, 4C]
        h = F.relu(h).square_() if cfg.mlp_act == "relu2" else F.gelu(h, approximate="tanh")
        x = torch.addmm(x, h, fc2_w) if fc2_b is None else torch.addmm(x + fc2_b, h, fc2_w)
        if i < n_enc:
            skips.append(x)
    logits = F.layer_norm(x, (C,), lnf_w, lnf_b, eps) @ head  # [B, V]
    if cfg.logit_softcap > 0:
        logits = torch.tanh(logits / cfg.logit_softcap) * cfg.logit_softcap
    logits[:, cfg.bos_id] = float("-inf")
    return logits


def step(model, token_ids: torch.Tensor, state: "GPTState | None" = None) -> tuple[torch.Tensor, "GPTState"]:
    """Scores after appending one token per row, using and extending the KV cache.

    Args:
        token_ids: LongTensor[B].
        state: a :class:`GPTState` from ``step``/``prefill`` (of B rows) or None (start).

    Returns:
        (FloatTensor[B, V], new state); the scores equal ``logits`` on the
        whole sequence so far (rotary) or on its last ``block_size`` tokens
        (learned), up to rounding.

    Cost: rotary, always one position's forward over at most ``block_size``
    cached keys (the cache is a preallocated buffer of 2 ``block_size``
    positions; every ``block_size + 1`` steps its last ``block_size - 1``
    entries move to a new one). Learned, one position's forward while the
    sequence is shorter than ``block_size``; after that a forward over the
    whole window per token (absolute positions shift with the window).
    """
    if state is None:
        return prefill(model, token_ids[:, None])
    W = model.config.block_size
    L = state.length
    if model.rotary:
        buffer = state.buffer
        if buffer.tip != L or L - buffer.offset == buffer.capacity:  # a second branch, or the buffer is full
            buffer = buffer.window(L, W - 1, 2 * W)
        idx = L - buffer.offset
        x = F.embedding(token_ids, model.wte.weight)  # [B, C]
        logits = decode(model.config, x, state.weights, buffer, idx, max(0, idx - W + 1),
                        model._rope(L, 1, x.device, x.dtype))  # [B, V]
        buffer.tip = L + 1
        return logits, GPTState(buffer, L + 1, None, state.weights)
    ids = torch.cat([state.ids, token_ids[:, None]], dim=1)[:, -W:]  # [B, <= W]
    if L >= W:
        return model._forward(ids, None, 0, last_only=True)[0][:, -1], GPTState(None, L + 1, ids)
    buffer = state.buffer
    if buffer.tip != L:
        buffer = buffer.window(L, W, W)
    x = F.embedding(token_ids, model.wte.weight) + model.wpe.weight[L]  # [B, C]
    logits = decode(model.config, x, state.weights, buffer, L, 0, None)  # [B, V]
    buffer.tip = L + 1
    return logits, GPTState(buffer, L + 1, ids, state.weights)
