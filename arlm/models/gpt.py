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

from . import gpt_decode
from .base import LanguageModel
from .gpt_decode import GPTState
from .gpt_blocks import MLP_ACTS, Block, CausalSelfAttention, LayerNorm, MLP, n_encoder, run_blocks, soft_cap  # noqa: F401
from .rotary import band_mask, rotary_tables

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
    ``qk_norm``, ``mlp_act``, ``zero_init``, ``logit_softcap``, ``value_residual``
    and ``unet_skips`` are the modded-nanoGPT options of ``models/gpt_blocks.py``
    (all off: GPT-2); ``zero_init`` zeroes every block's ``c_proj`` and an untied ``lm_head``.
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
    tie_word_embeddings: bool = field(default=True, metadata={
        "help": "gpt: the output head is the token embedding matrix (untie: a matrix of its own)",
        "optional_bool": True})
    pos_emb: str = field(default="learned", metadata={
        "help": "gpt position scheme: learned (GPT-2) or rotary (sliding-window attention, fast generation past "
                "--block-size)", "choices": ("learned", "rotary")})
    rotary_base: float = 10000.0
    # modded-nanoGPT options (Keller Jordan et al. 2024; models/gpt_blocks.py)
    qk_norm: bool = field(default=False, metadata={
        "help": "gpt: queries and keys unit-RMS per head before the dot product (QK-norm)", "optional_bool": True})
    mlp_act: str = field(default="gelu", metadata={
        "help": "gpt MLP activation: gelu (GPT-2, tanh approximation) or relu2 (relu(x)^2)",
        "choices": MLP_ACTS})
    zero_init: bool = field(default=False, metadata={
        "help": "gpt: output projections (and an untied head) start at zero", "optional_bool": True})
    logit_softcap: float = field(default=0.0, metadata={
        "help": "gpt: logits become cap * tanh(logits / cap); 0: off", "metavar": "CAP"})
    value_residual: bool = field(default=False, metadata={
        "help": "gpt: layers after the first mix the first layer's values into theirs (learned weight)",
        "optional_bool": True})
    unet_skips: bool = field(default=False, metadata={
        "help": "gpt: U-net skips, encoder layer i's output added to layer n-1-i's input (learned weights)",
        "optional_bool": True})


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
        if config.mlp_act not in MLP_ACTS:
            raise ValueError(f"mlp_act must be one of {', '.join(MLP_ACTS)}; got {config.mlp_act!r}")
        if not config.logit_softcap >= 0:
            raise ValueError(f"logit_softcap must be >= 0 (0: off), got {config.logit_softcap}")
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
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        if config.unet_skips and n_encoder(config.n_layer):
            self.skip_weights = nn.Parameter(torch.ones(n_encoder(config.n_layer)))
        self.ln_f = LayerNorm(config.n_embd, config.bias, config.layer_norm_epsilon)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf 2017)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.zero_init:
            for block in self.h:
                nn.init.zeros_(block.attn.c_proj.weight)
                nn.init.zeros_(block.mlp.c_proj.weight)
            if not config.tie_word_embeddings:
                nn.init.zeros_(self.lm_head.weight)
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
        logits = soft_cap(self.lm_head(self.ln_f(x)), self.config.logit_softcap)  # [B, T, V]
        logits[..., self.config.bos_id] = float("-inf")  # <bos> is never a next token
        return logits

    def _forward(self, ids: torch.Tensor, past: list | None, start: int, last_only: bool = False):
        """Learned positions: ids [B, T] at positions start..start+T-1 -> (logits [B, T or 1, V], kv list)."""
        T = ids.shape[1]
        pos = torch.arange(start, start + T, device=ids.device)  # [T]
        x = self.drop(self.wte(ids) + self.wpe(pos))  # [B, T, C]
        x, kv = run_blocks(self, x, past)
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
            mask = None if T <= W else band_mask(t, P, W, ids.device)  # [t, P + t]
            x = self.drop(self.wte(chunk))  # [B, t, C]
            x, layer_kvs = run_blocks(self, x, past, rope, mask)
            kv = []
            for layer_kv in layer_kvs:
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

    # -- decoding (models/gpt_decode.py) -----------------------------------------------
    @torch.no_grad()
    def prefill(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, GPTState]:
        """Process a prompt LongTensor[B, T] (T >= 1) in one forward pass.

        Returns (FloatTensor[B, V] scores of the next token, state). With
        learned positions a prompt longer than ``block_size`` keeps only its
        last ``block_size`` tokens, the context the model can see; with rotary
        the whole prompt is read (sliding-window attention, in chunks).
        """
        return gpt_decode.prefill(self, token_ids)

    @torch.no_grad()
    def step(self, token_ids: torch.Tensor, state: GPTState | None = None) -> tuple[torch.Tensor, GPTState]:
        """Scores after appending one token per row, using and extending the KV cache.

        Args:
            token_ids: LongTensor[B].
            state: a :class:`GPTState` from ``step``/``prefill`` (of B rows) or None (start).

        Returns:
            (FloatTensor[B, V], new state); the scores equal ``logits`` on the
            whole sequence so far (rotary) or on its last ``block_size`` tokens
            (learned), up to rounding. Cost: see ``gpt_decode.step``.
        """
        return gpt_decode.step(self, token_ids, state)
