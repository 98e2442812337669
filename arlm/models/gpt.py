"""A decoder-only Transformer language model in the GPT-2 style, with a KV cache.

Architecture (Radford et al. 2019, "Language Models are Unsupervised Multitask
Learners"; layout as in Karpathy's nanoGPT): token embeddings plus a position
scheme, ``n_layer`` pre-LayerNorm blocks of causal multi-head self-attention
(``torch.nn.functional.scaled_dot_product_attention``) and a 4x-wide MLP with
the tanh-approximated GELU, a final LayerNorm, and an output head tied to the
token embedding. Parameter names and shapes follow PyTorch ``nn.Linear``
conventions (``weight`` is ``[out, in]``).

Two position schemes (``GPTConfig.pos_emb``):

* ``"learned"`` (the default, GPT-2's): learned absolute position embeddings
  ``wpe`` for positions ``0 .. block_size - 1``. The model sees at most
  ``block_size`` tokens, so it is ``windowed``: ``logits`` refuses longer
  inputs, ``sequence_log_probs`` scores longer texts with the sliding window of
  DESIGN.md §3, and ``step`` past ``block_size`` recomputes the whole window of
  the last ``block_size`` tokens (the positions of every cached key shift when
  the window slides, so no cache stays valid).
* ``"rotary"``: rotary position embeddings (Su et al. 2021, "RoFormer:
  Enhanced Transformer with Rotary Position Embedding"): queries and keys are
  rotated by angles proportional to their absolute position, so ``q_m · k_n``
  depends only on ``m - n``, and no position parameters exist. Attention is
  *sliding-window* attention of width ``block_size`` in every layer (as in
  Longformer, Beltagy et al. 2020, and Mistral 7B, Jiang et al. 2023): in each
  layer the query at position t attends to the keys at positions
  ``max(0, t - block_size + 1) .. t``, whatever the length of the input. For
  inputs of at most ``block_size`` tokens this is plain causal attention (the
  training case). Longer inputs get this banded causal mask over the whole
  sequence (computed in chunks of ``block_size``), so the model is not
  ``windowed``: ``logits`` takes any length, every token is predicted once with
  everything before it, and ``step`` past ``block_size`` costs one token's
  forward over a cache of the last ``block_size - 1`` keys and values per layer
  (cached keys keep their absolute rotation: only relative angles matter).
  Because hidden states in layer l at position j already summarise positions
  down to ``j - l (block_size - 1)``, the prediction at t depends on the last
  ``n_layer (block_size - 1) + 1`` tokens (the receptive field), not only on
  the last ``block_size``: recomputing the last ``block_size`` tokens from
  scratch gives the same scores only for ``n_layer = 1``; recomputing the
  receptive field gives them for any depth (tests/models/test_gpt.py holds both).

Rotary layout as in the paper: dimensions ``(2i, 2i + 1)`` of each head
form pair i, turned by ``position * rotary_base ** (-2i / D)`` radians; the
rotation is a multiplication by ``e^{i angle}`` of the pairs read as complex
numbers (one vectorised operation; real arithmetic under ``torch.compile``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import LanguageModel

#: The position schemes of :class:`GPTConfig` (``pos_emb``).
POS_EMBS = ("learned", "rotary")


@dataclass
class GPTConfig:
    """Hyperparameters of a :class:`GPTModel`.

    ``vocab_size``, ``bos_id``, ``eos_id`` come from the vocab. ``n_embd`` must be
    divisible by ``n_head``. ``dropout`` applies to attention weights, residual
    branches and embeddings during training only. ``bias`` adds biases to the
    Linear and LayerNorm layers (GPT-2 has them). ``tie_word_embeddings=False``
    gives the output head its own matrix (some imported GPT-2 checkpoints). ``pos_emb`` is the position
    scheme, ``"learned"`` or ``"rotary"`` (see the module docstring);
    ``rotary_base`` is the RoFormer frequency base (10,000 in the paper), used by
    ``"rotary"`` only, which also needs an even head size ``n_embd / n_head``.
    """

    vocab_size: int
    bos_id: int
    eos_id: int
    n_layer: int = field(default=2, metadata={"help": "layers"})
    n_head: int = field(default=4, metadata={"help": "attention heads, gpt only"})
    n_embd: int = field(default=128, metadata={"help": "embedding width"})
    block_size: int = field(default=64, metadata={"help": "context window in tokens"})
    dropout: float = field(default=0.0, metadata={"help": "dropout probability"})
    bias: bool = True
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = True
    pos_emb: str = field(default="learned", metadata={
        "help": "gpt position scheme: learned (GPT-2) or rotary (sliding-window attention, fast generation past "
                "--block-size)", "choices": ("learned", "rotary")})
    rotary_base: float = 10000.0


class _KVBuffer:
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

    def window(self, length: int, keep: int, capacity: int) -> "_KVBuffer":
        """A new buffer of ``capacity`` with the last ``keep`` entries before absolute position ``length``."""
        lo = max(self.offset, length - keep)
        a, b = lo - self.offset, length - self.offset
        kv = self.kv.new_empty((*self.kv.shape[:4], capacity, self.kv.shape[5]))  # [n_layer, 2, B, H, capacity, D]
        kv[..., : b - a, :] = self.kv[..., a:b, :]
        return _KVBuffer(kv, lo, length)


class GPTState:
    """The decoding state of a :class:`GPTModel` after ``length`` tokens.

    ``buffer``: the KV cache (a ``_KVBuffer``; None for a learned-position
    model past its window, which is recomputed from ``ids`` at every step);
    ``ids``: LongTensor[B, <= block_size], the last tokens (learned positions
    only; None for rotary); ``weights``: the model's weights laid out for
    decoding (made by ``prefill``; a state belongs to the weights that made
    it, as its cache does). A state is never changed by a later ``step``, so one
    state can be extended along several branches (the second branch copies the
    window it needs). All B rows have the same length.
    """

    __slots__ = ("buffer", "length", "ids", "weights")

    def __init__(self, buffer: _KVBuffer | None, length: int, ids: torch.Tensor | None = None, weights=None):
        self.buffer = buffer
        self.length = length
        self.ids = ids
        self.weights = weights


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


def _rotate(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (2i, 2i + 1) of x [..., T, D] by ``rotary_tables`` freqs [T, D/2]: a new tensor.

    bf16 x (training under autocast) is rotated in float32 and rounded back: complex bf16 does not exist.
    """
    if x.dtype == torch.bfloat16:
        return _rotate(x.float(), freqs).to(x.dtype)
    if torch.compiler.is_compiling():  # real arithmetic: what inductor fuses
        pairs = x.unflatten(-1, (-1, 2))  # [..., T, D/2, 2]
        a, b, c, s = pairs[..., 0], pairs[..., 1], freqs.real.to(x.dtype), freqs.imag.to(x.dtype)
        return torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2)
    return torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * freqs).flatten(-2)


def _rotate_(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """In-place ``_rotate`` of a tensor x [..., T, D] whose last dimension is contiguous (bf16: via float32)."""
    if x.dtype == torch.bfloat16:
        return x.copy_(_rotate_(x.float(), freqs))
    torch.view_as_complex(x.unflatten(-1, (-1, 2))).mul_(freqs)
    return x


def _band_mask(t: int, past: int, block: int, device) -> torch.Tensor:
    """The sliding-window mask, BoolTensor[t, past + t] (True = may attend).

    Query i stands at key index ``past + i`` and sees key indices ``past + i -
    block + 1 .. past + i``: a causal band of width ``block``.
    """
    return torch.ones(t, past + t, dtype=torch.bool, device=device).tril(past).triu(past - block + 1)


#: Use the hand-written CPU training kernels below (tests switch them off to compare).
FAST_CPU_TRAINING = True


def _cpu_training_path(x: torch.Tensor) -> bool:
    """True where the hand-written CPU training kernels below replace PyTorch's (see :class:`_CausalAttention`).

    Only on CPU and only when autograd records (training): inference keeps
    PyTorch's kernels, so scores are exactly what they always were; CUDA keeps
    its fused kernels and ``torch.compile`` traces the plain ops it can fuse.
    """
    return (FAST_CPU_TRAINING and x.device.type == "cpu" and x.requires_grad and torch.is_grad_enabled()
            and not torch.compiler.is_compiling())


_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


class _GeluTanh(torch.autograd.Function):
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
        return _GeluTanh._sigmoid_2u(x).mul_(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        s = _GeluTanh._sigmoid_2u(x)
        c = torch.full((), 2 * _GELU_C, dtype=x.dtype, device=x.device)
        d = torch.addcmul(c, x, x, value=6 * _GELU_C * _GELU_A).mul_(x)  # x 2u'
        d.addcmul_(d, s, value=-1.0).mul_(s)  # x 2u' (1 - s) s
        return d.add_(s).mul_(grad)


class _CausalAttention(torch.autograd.Function):
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
            _rotate_(heads[:2], freqs)  # [2, B*H, T, D]: q and k
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
            _rotate_(dheads[:2], freqs.conj())
        return dheads.view(3, B, H, T, D).permute(1, 3, 0, 2, 4).reshape(B, T, 3 * H * D), None, None


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (PyTorch's has no bias=False before 2.1 everywhere)."""

    def __init__(self, n: int, bias: bool, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n)) if bias else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.n_embd % config.n_head != 0:
            raise ValueError(f"n_embd={config.n_embd} must be divisible by n_head={config.n_head}")
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        if config.bias and config.pos_emb == "learned":
            # With learned positions the key bias b adds q_i . b to every score of query i alike, which the
            # softmax ignores: its true gradient is exactly zero, so what autograd returns is rounding noise,
            # which Adam would normalise into steps of up to lr (and which differs between a single process
            # and DDP ranks). Zero it: the key bias keeps its initial (or imported) value. Under rotary
            # embeddings b is rotated by position and does matter.
            n = config.n_embd
            self.c_attn.bias.register_hook(lambda g: torch.cat([g[:n], g.new_zeros(n), g[2 * n:]]))
        self.resid_dropout = nn.Dropout(config.dropout)

    def _qkv(self, x: torch.Tensor):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        shape = (B, T, self.n_head, C // self.n_head)
        # [B, H, T, D] each
        return (t.view(shape).transpose(1, 2) for t in (q, k, v))

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None,
                rope: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None):
        """x: [B, T, C]; past: (k, v) [B, H, P, D] of the P positions before x, or None;
        rope: rotary freqs [T, D/2] of x's positions (``rotary_tables``), or None (learned positions);
        attn_mask: BoolTensor[T, P + T], required with ``past``; None means causal.

        Returns ([B, T, C], (k, v) [B, H, P + T, D]; None on the CPU training path).
        """
        B, T, C = x.shape
        if (past is None and attn_mask is None and (self.dropout == 0.0 or not self.training)
                and _cpu_training_path(x)):
            qkv = self.c_attn(x)  # [B, T, 3C]
            y = _CausalAttention.apply(qkv, self.n_head, rope)  # [B, T, C]
            return self.resid_dropout(self.c_proj(y)), None
        q, k, v = self._qkv(x)
        if rope is not None:
            q, k = _rotate(q, rope), _rotate(k, rope)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # [B, H, P+T, D]
            v = torch.cat([past[1], v], dim=2)
        p = self.dropout if self.training else 0.0
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        y = y.transpose(1, 2).reshape(B, T, C)  # [B, T, C]
        return self.resid_dropout(self.c_proj(y)), (k, v)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # [B, T, 4C]
        h = _GeluTanh.apply(h) if _cpu_training_path(h) else F.gelu(h, approximate="tanh")
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, config.bias, config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, config.bias, config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, past=None, rope=None, attn_mask=None):
        a, kv = self.attn(self.ln_1(x), past, rope, attn_mask)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, kv


#: Rotary tables are kept for positions below this (grown by doubling); beyond, computed per call.
_ROPE_TABLE_MAX = 1 << 16


class GPTModel(LanguageModel):
    """GPT-2-style Transformer language model (see the module docstring).

    ``GPTModel(GPTConfig(vocab_size=..., bos_id=..., eos_id=..., ...))``.
    Weights are initialised as in GPT-2/nanoGPT: N(0, 0.02), residual
    projections N(0, 0.02/sqrt(2 n_layer)), biases 0; the global torch RNG is
    used, so ``torch.manual_seed`` makes the initialisation reproducible.

    Raises:
        ValueError: ``n_embd`` not divisible by ``n_head``, a non-positive size,
            an unknown ``pos_emb``, or an odd head size with ``pos_emb="rotary"``.
    """

    family = "gpt"

    def __init__(self, config: GPTConfig):
        super().__init__()
        for name in ("vocab_size", "n_layer", "n_head", "n_embd", "block_size"):
            if getattr(config, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
        if not 0.0 <= config.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")
        if config.pos_emb not in POS_EMBS:
            raise ValueError(f"pos_emb must be one of {', '.join(POS_EMBS)}; got {config.pos_emb!r}")
        if config.pos_emb == "rotary" and (config.n_embd // config.n_head) % 2:
            raise ValueError(f"pos_emb='rotary' needs an even head size n_embd / n_head, got "
                             f"{config.n_embd} / {config.n_head}")
        self.config = config
        self.rotary = config.pos_emb == "rotary"
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if not self.rotary:
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = LayerNorm(config.n_embd, config.bias, config.layer_norm_epsilon)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf 2017)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        self._rope_tables: dict = {}  # (device, dtype) -> freqs [N, D/2]; not parameters, not saved
        self._decode_cache = None  # (parameter versions, weights laid out for _decode)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def block_size(self) -> int:
        return self.config.block_size

    @property
    def windowed(self) -> bool:
        """True for learned positions (``logits`` takes at most ``block_size`` tokens); False for rotary."""
        return not self.rotary

    @property
    def head_dim(self) -> int:
        return self.config.n_embd // self.config.n_head

    def _rope(self, start: int, T: int, device, dtype) -> torch.Tensor:
        """Rotary freqs [T, D/2] of positions start .. start + T - 1 (see ``rotary_tables``)."""
        end = start + T
        key = (device, dtype)
        tables = self._rope_tables.get(key)
        if tables is None or tables.shape[0] < end:
            if end > _ROPE_TABLE_MAX:
                return rotary_tables(torch.arange(start, end), self.head_dim, self.config.rotary_base, dtype, device)
            n = min(_ROPE_TABLE_MAX, max(256, 1 << (end - 1).bit_length()))
            tables = rotary_tables(torch.arange(n), self.head_dim, self.config.rotary_base, dtype, device)
            self._rope_tables[key] = tables
        return tables[start:end]

    # -- forward passes ---------------------------------------------------------
    def _head(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(self.ln_f(x))  # [B, T, V]
        logits[..., self.config.bos_id] = float("-inf")  # <bos> is never a next token
        return logits

    def _forward(self, ids: torch.Tensor, past: list | None, start: int, last_only: bool = False):
        """Learned positions: ids [B, T] at positions start..start+T-1 -> (logits [B, T or 1, V], kv list)."""
        T = ids.shape[1]
        pos = torch.arange(start, start + T, device=ids.device)  # [T]
        x = self.drop(self.wte(ids) + self.wpe(pos))  # [B, T, C]
        kv = []
        for i, block in enumerate(self.h):
            x, layer_kv = block(x, None if past is None else past[i])
            kv.append(layer_kv)
        if last_only:
            x = x[:, -1:]
        return self._head(x), kv

    def _forward_rotary(self, ids: torch.Tensor, last_only: bool = False, on_chunk=None):
        """Rotary, sliding-window attention over ids [B, T] at positions 0..T-1, in chunks of ``block_size``.

        Returns (logits [B, T or 1, V], per layer (k, v) [B, H, P, D] of the
        last P = min(T, block_size - 1) positions, what the next step needs).
        With ``on_chunk``, each chunk's logits [B, t, V] go to ``on_chunk(start,
        logits)`` instead (memory for one chunk at a time) and None is returned for them.
        """
        B, T = ids.shape
        W = self.config.block_size
        keep = W - 1
        past = None
        hidden = []
        for s in range(0, T, W):
            chunk = ids[:, s : s + W]  # [B, t]
            t = chunk.shape[1]
            rope = self._rope(s, t, ids.device, self.wte.weight.dtype)
            P = 0 if past is None else past[0][0].shape[2]
            # one chunk: plain causal attention (the training path); several: the band of width W
            mask = None if T <= W else _band_mask(t, P, W, ids.device)  # [t, P + t]
            x = self.drop(self.wte(chunk))  # [B, t, C]
            kv = []
            for i, block in enumerate(self.h):
                x, layer_kv = block(x, None if past is None else past[i], rope, mask)
                if layer_kv is not None:  # None on the CPU training path (one chunk: nothing to carry)
                    k, v = layer_kv
                    n = min(keep, k.shape[2])
                    kv.append((k[:, :, k.shape[2] - n :], v[:, :, v.shape[2] - n :]))  # [B, H, n, D]
            if on_chunk is not None:
                on_chunk(s, self._head(x))
            else:
                hidden.append(x[:, -1:] if last_only and s + W >= T else x)
            past = kv
        if on_chunk is not None:
            return None, past
        x = hidden[-1] if last_only else torch.cat(hidden, dim=1)  # [B, T or 1, C]
        return self._head(x), past

    def logits(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced scores: LongTensor[B, T] -> FloatTensor[B, T, V].

        Row t scores the token after ``token_ids[:, :t+1]``; column ``bos_id`` is
        -inf. Learned positions take T <= block_size; rotary takes any T, with
        sliding-window attention of width ``block_size`` in every layer.

        Raises:
            ValueError: T > block_size with learned positions (score longer texts with ``sequence_log_probs``).
        """
        if self.rotary:
            return self._forward_rotary(token_ids)[0]
        T = token_ids.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size={self.config.block_size}")
        return self._forward(token_ids, None, 0)[0]

    forward = logits

    @torch.no_grad()
    def sequence_log_probs(self, token_ids: torch.Tensor, stride: int | None = None) -> torch.Tensor:
        """Log-probability (nats) of every token after the first: LongTensor[T] -> float64 FloatTensor[T - 1].

        Learned positions: the sliding window of ``LanguageModel.sequence_log_probs``
        (``stride`` applies). Rotary: one pass of sliding-window attention over
        the whole sequence, gathered chunk by chunk (memory for ``block_size``
        rows of logits at a time); ``stride`` is ignored.
        """
        if not self.rotary or token_ids.shape[0] - 1 <= self.config.block_size:
            return super().sequence_log_probs(token_ids, stride)
        ids = token_ids.to(self.device)
        targets = ids[1:]
        parts = []

        def gather(start: int, logits: torch.Tensor) -> None:  # logits [1, t, V]
            t = logits.shape[1]
            lp = torch.log_softmax(logits[0].double(), dim=-1)  # [t, V]
            parts.append(lp.gather(1, targets[start : start + t, None])[:, 0].cpu())

        self._forward_rotary(ids[None, :-1], on_chunk=gather)
        return torch.cat(parts)

    # -- decoding -----------------------------------------------------------------
    def _new_buffer(self, kv: list, length: int, capacity: int) -> _KVBuffer:
        """A buffer of ``capacity`` holding kv (per layer (k, v) [B, H, n, D], the n positions before ``length``)."""
        k0 = kv[0][0]
        B, H, n, D = k0.shape
        buf = k0.new_empty((len(kv), 2, B, H, capacity, D))  # [n_layer, 2, B, H, capacity, D]
        if n:
            buf[..., :n, :] = torch.stack([torch.stack(layer) for layer in kv])  # [n_layer, 2, B, H, n, D]
        return _KVBuffer(buf, length - n, length)

    def _decode_weights(self) -> list:
        """The weights as ``_decode`` uses them: Linear weights transposed to [in, out] and contiguous
        (a row vector times such a matrix is about twice as fast on CPU as ``F.linear``'s layout).

        Made once and kept until a parameter changes (in place, e.g. by an optimiser, or replaced).
        """
        key = tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in self.parameters())
        if self._decode_cache is not None and self._decode_cache[0] == key:
            return self._decode_cache[1]

        def t(linear: nn.Linear):
            return linear.weight.detach().t().contiguous(), linear.bias

        layers = [(b.ln_1.weight, b.ln_1.bias, *t(b.attn.c_attn), *t(b.attn.c_proj), b.ln_2.weight, b.ln_2.bias,
                   *t(b.mlp.c_fc), *t(b.mlp.c_proj)) for b in self.h]
        weights = [layers, self.ln_f.weight, self.ln_f.bias, self.lm_head.weight.detach().t().contiguous()]  # tied: wte
        self._decode_cache = (key, weights)
        return weights

    @torch.no_grad()
    def prefill(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, GPTState]:
        """Process a prompt LongTensor[B, T] (T >= 1) in one forward pass.

        Returns (FloatTensor[B, V] scores of the next token, state). With
        learned positions a prompt longer than ``block_size`` keeps only its
        last ``block_size`` tokens, the context the model can see; with rotary
        the whole prompt is read (sliding-window attention, in chunks).
        """
        W = self.config.block_size
        if self.rotary:
            logits, kv = self._forward_rotary(token_ids, last_only=True)
            T = token_ids.shape[1]
            return logits[:, -1], GPTState(self._new_buffer(kv, T, 2 * W), T, None, self._decode_weights())
        ids = token_ids[:, -W:]
        logits, kv = self._forward(ids, None, 0, last_only=True)
        T = ids.shape[1]
        buffer = self._new_buffer(kv, T, W) if T < W else None  # a full window is recomputed at the next step
        return logits[:, -1], GPTState(buffer, T, ids, self._decode_weights() if buffer is not None else None)

    def _decode(self, x: torch.Tensor, weights: list, buffer: _KVBuffer, idx: int, lo: int,
                freqs: torch.Tensor | None) -> torch.Tensor:
        """One position per row through every layer: x [B, C] -> logits [B, V].

        Writes the position's keys and values at buffer index ``idx`` and attends
        to indices ``lo .. idx``. Plain tensor calls on ``_decode_weights`` (no
        module dispatch, no dropout: decoding is inference), few temporaries.
        """
        cfg = self.config
        B, C, H = x.shape[0], cfg.n_embd, cfg.n_head
        D = C // H
        eps = cfg.layer_norm_epsilon
        layers, lnf_w, lnf_b, head = weights
        for (ln1_w, ln1_b, attn_w, attn_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, fc2_w, fc2_b), kv in zip(
                layers, buffer.layers):
            h = F.layer_norm(x, (C,), ln1_w, ln1_b, eps)
            qkv = (h @ attn_w if attn_b is None else torch.addmm(attn_b, h, attn_w)).view(B, 3, H, D)  # [B, 3, H, D]
            if freqs is not None:
                _rotate_(qkv[:, :2], freqs)  # q and k, in place
            kv.select(3, idx).copy_(qkv[:, 1:].transpose(0, 1))  # kv [2, B, H, capacity, D] <- [2, B, H, D]
            window = kv[:, :, :, lo : idx + 1]  # [2, B, H, n, D]
            # one query per row: SDPA's CPU kernel beat matmul/softmax/matmul at B = 1 and 16 (measured)
            y = F.scaled_dot_product_attention(qkv[:, 0, :, None], window[0], window[1]).reshape(B, C)
            x = torch.addmm(x, y, proj_w) if proj_b is None else torch.addmm(x + proj_b, y, proj_w)
            h = F.layer_norm(x, (C,), ln2_w, ln2_b, eps)
            h = F.gelu(h @ fc_w if fc_b is None else torch.addmm(fc_b, h, fc_w), approximate="tanh")  # [B, 4C]
            x = torch.addmm(x, h, fc2_w) if fc2_b is None else torch.addmm(x + fc2_b, h, fc2_w)
        logits = F.layer_norm(x, (C,), lnf_w, lnf_b, eps) @ head  # [B, V]
        logits[:, cfg.bos_id] = float("-inf")
        return logits

    @torch.no_grad()
    def step(self, token_ids: torch.Tensor, state: GPTState | None = None) -> tuple[torch.Tensor, GPTState]:
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
            return self.prefill(token_ids[:, None])
        W = self.config.block_size
        L = state.length
        if self.rotary:
            buffer = state.buffer
            if buffer.tip != L or L - buffer.offset == buffer.capacity:  # a second branch, or the buffer is full
                buffer = buffer.window(L, W - 1, 2 * W)
            idx = L - buffer.offset
            x = F.embedding(token_ids, self.wte.weight)  # [B, C]
            logits = self._decode(x, state.weights, buffer, idx, max(0, idx - W + 1),
                                  self._rope(L, 1, x.device, x.dtype))  # [B, V]
            buffer.tip = L + 1
            return logits, GPTState(buffer, L + 1, None, state.weights)
        ids = torch.cat([state.ids, token_ids[:, None]], dim=1)[:, -W:]  # [B, <= W]
        if L >= W:
            return self._forward(ids, None, 0, last_only=True)[0][:, -1], GPTState(None, L + 1, ids)
        buffer = state.buffer
        if buffer.tip != L:
            buffer = buffer.window(L, W, W)
        x = F.embedding(token_ids, self.wte.weight) + self.wpe.weight[L]  # [B, C]
        logits = self._decode(x, state.weights, buffer, L, 0, None)  # [B, V]
        buffer.tip = L + 1
        return logits, GPTState(buffer, L + 1, ids, state.weights)
