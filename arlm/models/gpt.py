"""A decoder-only Transformer language model in the GPT-2 style, with a KV cache.

Architecture (Radford et al. 2019, "Language Models are Unsupervised Multitask
Learners"; layout as in Karpathy's nanoGPT): token + learned position
embeddings, ``n_layer`` pre-LayerNorm blocks of causal multi-head
self-attention (``torch.nn.functional.scaled_dot_product_attention``) and a
4x-wide MLP with the tanh-approximated GELU, a final LayerNorm, and an output
head tied to the token embedding. Parameter names and shapes follow PyTorch
``nn.Linear`` conventions (``weight`` is ``[out, in]``).

The model sees at most ``block_size`` tokens (learned positions), so it is
``windowed``: ``sequence_log_probs`` scores longer texts with the sliding
window of DESIGN.md §3, and ``step`` keeps a KV cache that is rebuilt from
the last ``block_size`` tokens whenever it is full, so that generation past
``block_size`` gives exactly the scores ``logits`` gives on the last window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import LanguageModel


@dataclass
class GPTConfig:
    """Hyperparameters of a :class:`GPTModel`.

    ``vocab_size``, ``bos_id``, ``eos_id`` come from the vocab. ``n_embd`` must be
    divisible by ``n_head``. ``dropout`` applies to attention weights, residual
    branches and embeddings during training only. ``bias`` adds biases to the
    Linear and LayerNorm layers (GPT-2 has them). ``tie_word_embeddings=False``
    gives the output head its own matrix (some imported GPT-2 checkpoints).
    """

    vocab_size: int
    bos_id: int
    eos_id: int
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = True
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = True


class GPTState:
    """The decoding state of a :class:`GPTModel`: the KV cache and the tokens it covers.

    ``kv``: one ``(k, v)`` pair per layer, each FloatTensor[B, n_head, L, head_dim];
    ``ids``: LongTensor[B, L], the tokens of the cache (needed to rebuild it
    when the window slides). States are never modified in place, so one state
    can be extended along several branches.
    """

    __slots__ = ("kv", "ids")

    def __init__(self, kv: list[tuple[torch.Tensor, torch.Tensor]], ids: torch.Tensor):
        self.kv = kv
        self.ids = ids

    @property
    def length(self) -> int:
        return self.ids.shape[1]


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
    """

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, n_head: int) -> torch.Tensor:
        B, T, C3 = qkv.shape
        C = C3 // 3
        D = C // n_head
        heads = qkv.view(B, T, 3, n_head, D).permute(2, 0, 3, 1, 4).reshape(3, B * n_head, T, D)  # copy
        q, k, v = heads[0], heads[1], heads[2]  # [B*H, T, D] each, contiguous
        mask = torch.full((T, T), float("-inf"), dtype=qkv.dtype, device=qkv.device).triu_(1)  # [T, T]
        scale = 1.0 / math.sqrt(D)
        p = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=scale)  # [B*H, T, T] scores
        torch._softmax(p, -1, False, out=p)  # in place (row by row), while the scores are in cache
        y = torch.bmm(p, v)  # [B*H, T, D]
        ctx.save_for_backward(heads, p)
        ctx.scale = scale
        return y.view(B, n_head, T, D).transpose(1, 2).reshape(B, T, C)  # [B, T, C]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        heads, p = ctx.saved_tensors
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
        return dheads.view(3, B, H, T, D).permute(1, 3, 0, 2, 4).reshape(B, T, 3 * H * D), None


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
        self.resid_dropout = nn.Dropout(config.dropout)

    def _qkv(self, x: torch.Tensor):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        shape = (B, T, self.n_head, C // self.n_head)
        # [B, H, T, D] each
        return (t.view(shape).transpose(1, 2) for t in (q, k, v))

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None):
        """x: [B, T, C]; past: cached (k, v) [B, H, L, D] or None.

        Returns ([B, T, C], (k, v) [B, H, L + T, D]). With a cache, the T new
        queries attend to all L cached keys and causally among themselves.
        """
        B, T, C = x.shape
        if past is None and (self.dropout == 0.0 or not self.training) and _cpu_training_path(x):
            qkv = self.c_attn(x)  # [B, T, 3C]
            y = _CausalAttention.apply(qkv, self.n_head)  # [B, T, C]
            return self.resid_dropout(self.c_proj(y)), None
        q, k, v = self._qkv(x)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # [B, H, L+T, D]
            v = torch.cat([past[1], v], dim=2)
        L = k.shape[2] - T
        p = self.dropout if self.training else 0.0
        if L == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # one query sees everything
        else:
            mask = torch.ones(T, L + T, dtype=torch.bool, device=x.device).tril(diagonal=L)  # [T, L+T]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
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

    def forward(self, x: torch.Tensor, past=None):
        a, kv = self.attn(self.ln_1(x), past)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, kv


class GPTModel(LanguageModel):
    """GPT-2-style Transformer language model (see the module docstring).

    ``GPTModel(GPTConfig(vocab_size=..., bos_id=..., eos_id=..., ...))``.
    Weights are initialised as in GPT-2/nanoGPT: N(0, 0.02), residual
    projections N(0, 0.02/sqrt(2 n_layer)), biases 0; the global torch RNG is
    used, so ``torch.manual_seed`` makes the initialisation reproducible.

    Raises:
        ValueError: ``n_embd`` not divisible by ``n_head``, or a non-positive size.
    """

    family = "gpt"
    windowed = True

    def __init__(self, config: GPTConfig):
        super().__init__()
        for name in ("vocab_size", "n_layer", "n_head", "n_embd", "block_size"):
            if getattr(config, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
        if not 0.0 <= config.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
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

    # -- forward passes ---------------------------------------------------------
    def _forward(self, ids: torch.Tensor, past: list | None, start: int, last_only: bool = False):
        """ids [B, T] at positions start..start+T-1 -> (logits [B, T or 1, V], kv list)."""
        T = ids.shape[1]
        pos = torch.arange(start, start + T, device=ids.device)  # [T]
        x = self.drop(self.wte(ids) + self.wpe(pos))  # [B, T, C]
        kv = []
        for i, block in enumerate(self.h):
            x, layer_kv = block(x, None if past is None else past[i])
            kv.append(layer_kv)
        if last_only:
            x = x[:, -1:]
        x = self.ln_f(x)
        logits = self.lm_head(x)  # [B, T, V]
        logits[..., self.config.bos_id] = float("-inf")  # <bos> is never a next token
        return logits, kv

    def logits(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced scores: LongTensor[B, T] (T <= block_size) -> FloatTensor[B, T, V].

        Row t scores the token after ``token_ids[:, :t+1]``; column ``bos_id`` is -inf.

        Raises:
            ValueError: T > block_size (score longer texts with ``sequence_log_probs``).
        """
        T = token_ids.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size={self.config.block_size}")
        return self._forward(token_ids, None, 0)[0]

    forward = logits

    @torch.no_grad()
    def prefill(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, GPTState]:
        """Process a prompt LongTensor[B, T] in one forward pass.

        Returns (FloatTensor[B, V] scores of the next token, state). A prompt
        longer than ``block_size`` keeps only its last ``block_size`` tokens,
        the context the model can see.
        """
        ids = token_ids[:, -self.config.block_size :]
        logits, kv = self._forward(ids, None, 0, last_only=True)
        return logits[:, -1], GPTState(kv, ids)

    @torch.no_grad()
    def step(self, token_ids: torch.Tensor, state: GPTState | None = None) -> tuple[torch.Tensor, GPTState]:
        """Scores after appending one token per row, using and extending the KV cache.

        Args:
            token_ids: LongTensor[B].
            state: a :class:`GPTState` from ``step``/``prefill`` or None (start).

        Returns:
            (FloatTensor[B, V], new state). While the cache holds fewer than
            ``block_size`` tokens a step costs one position's work; once full,
            the cache is rebuilt from the last ``block_size`` tokens (absolute
            position embeddings shift with the window), so the scores equal
            ``logits`` on the last ``block_size`` tokens.
        """
        new = token_ids[:, None]  # [B, 1]
        if state is None:
            return self.prefill(new)
        if state.length >= self.config.block_size:
            return self.prefill(torch.cat([state.ids, new], dim=1))
        logits, kv = self._forward(new, state.kv, state.length)
        return logits[:, -1], GPTState(kv, torch.cat([state.ids, new], dim=1))
