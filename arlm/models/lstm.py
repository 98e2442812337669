"""An LSTM language model (Hochreiter & Schmidhuber 1997, "Long Short-Term Memory").

Token embedding -> ``torch.nn.LSTM`` with ``n_layer`` layers of ``n_hidden``
units -> output head. The recurrent state ``(h, c)`` carries across the whole
text, so the model needs no context window (``block_size`` is None):
``sequence_log_probs`` processes long texts in chunks, carrying the state, so
memory stays bounded while every token is conditioned on everything before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import LanguageModel

#: tokens per chunk when scoring long sequences (bounds activation memory)
SCORE_CHUNK = 4096


@dataclass
class LSTMConfig:
    """Hyperparameters of an :class:`LSTMModel`.

    ``vocab_size``, ``bos_id``, ``eos_id`` come from the vocab; ``n_embd`` is the
    embedding width, ``n_hidden`` the width of every LSTM layer; ``dropout`` is
    applied (training only) to the embeddings, between layers and before the head.
    """

    vocab_size: int
    bos_id: int
    eos_id: int
    n_layer: int = field(default=1, metadata={"help": "layers"})
    n_embd: int = field(default=64, metadata={"help": "embedding width"})
    n_hidden: int = field(default=256, metadata={"help": "hidden width, lstm only"})
    dropout: float = field(default=0.0, metadata={"help": "dropout probability"})


class LSTMModel(LanguageModel):
    """LSTM language model (see the module docstring).

    ``LSTMModel(LSTMConfig(vocab_size=..., bos_id=..., eos_id=..., ...))``. The
    decoding state is the tuple ``(h, c)``, each FloatTensor[n_layer, B, n_hidden].
    Initialisation (``_reset_parameters``) draws from the global torch RNG, so
    ``torch.manual_seed`` makes it reproducible.

    Raises:
        ValueError: a non-positive size or dropout outside [0, 1).
    """

    family = "lstm"

    def __init__(self, config: LSTMConfig):
        super().__init__()
        for name in ("vocab_size", "n_layer", "n_embd", "n_hidden"):
            if getattr(config, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
        if not 0.0 <= config.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.n_embd,
            config.n_hidden,
            num_layers=config.n_layer,
            dropout=config.dropout if config.n_layer > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Linear(config.n_hidden, config.vocab_size)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Embedding N(0, 0.1); LSTM weights keep PyTorch's U(-1/sqrt(H), 1/sqrt(H)),
        # forget-gate biases set to 1 so gradients flow early (Jozefowicz et al. 2015);
        # head N(0, 0.02) with zero bias so the initial distribution is nearly uniform.
        nn.init.normal_(self.embedding.weight, std=0.1)
        H = self.config.n_hidden
        for name, p in self.lstm.named_parameters():
            if name.startswith("bias_ih"):
                with torch.no_grad():
                    p[H : 2 * H].fill_(1.0)  # gate order i, f, g, o
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    @property
    def block_size(self) -> None:
        return None

    def forward_with_state(self, token_ids: torch.Tensor, state=None):
        """Scores of LongTensor[B, T] continuing from ``state`` (None: start).

        Returns (FloatTensor[B, T, V], new state (h, c) each [n_layer, B, n_hidden]).
        """
        x = self.drop(self.embedding(token_ids))  # [B, T, n_embd]
        y, state = self.lstm(x, state)  # [B, T, n_hidden]
        logits = self.head(self.drop(y))  # [B, T, V]
        logits[..., self.config.bos_id] = float("-inf")  # <bos> is never a next token
        return logits, state

    def logits(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced scores from the zero state: LongTensor[B, T] -> FloatTensor[B, T, V]."""
        return self.forward_with_state(token_ids)[0]

    forward = logits

    @torch.no_grad()
    def step(self, token_ids: torch.Tensor, state=None):
        """Scores after one more token per row: LongTensor[B] -> (FloatTensor[B, V], (h, c))."""
        logits, state = self.forward_with_state(token_ids[:, None], state)
        return logits[:, 0], state

    @torch.no_grad()
    def prefill(self, token_ids: torch.Tensor):
        """Feed a prompt LongTensor[B, T] in one call; return (FloatTensor[B, V], (h, c))."""
        logits, state = self.forward_with_state(token_ids, None)
        return logits[:, -1], state

    @torch.no_grad()
    def sequence_log_probs(self, token_ids: torch.Tensor, stride: int | None = None) -> torch.Tensor:
        """Log-probability (nats) of every token after the first, with the full history.

        Args:
            token_ids: LongTensor[T], normally ``[<bos>, x_1, ..., x_n, (<eos>)]``.
            stride: ignored (a recurrent model needs no window).

        Returns:
            FloatTensor[T - 1] (float64): entry t is log p(token_ids[t+1] | token_ids[:t+1]).
            The text is processed in chunks of ``SCORE_CHUNK`` tokens carrying
            ``(h, c)``, so memory does not grow with T.
        """
        ids = token_ids.to(self.device)
        n_pred = ids.shape[0] - 1
        out = torch.empty(max(n_pred, 0), dtype=torch.float64)
        state = None
        for s in range(0, n_pred, SCORE_CHUNK):
            e = min(s + SCORE_CHUNK, n_pred)
            logits, state = self.forward_with_state(ids[None, s:e], state)  # [1, e-s, V]
            lp = F.log_softmax(logits[0].double(), dim=-1)  # [e-s, V]
            out[s:e] = lp.gather(1, ids[s + 1 : e + 1, None])[:, 0].cpu()
        return out
