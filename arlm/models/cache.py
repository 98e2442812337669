"""A cache model: an n-gram model estimated on the document being read.

Kuhn & De Mori, "A Cache-Based Natural Language Model for Speech
Recognition" (IEEE PAMI 1990) observed that words used recently in a document
are likely to be used again; Grave, Joulin & Usunier, "Improving Neural
Language Models with a Continuous Cache" (ICLR 2017) showed the same for
neural models. This family counts the n-grams of the current document's
prefix ``x_<t`` (everything after its ``<bos>``; nothing from training) and
predicts with interpolated absolute discounting (Ney, Essen & Kneser 1994):

    p_n(w | h) = max(c(hw) - D, 0) / c(h·) + D · N1+(h·) / c(h·) · p_{n-1}(w | h')

with ``p_n = p_{n-1}`` when the history ``h`` has not occurred yet, ending in
the uniform distribution over every token but ``<bos>``. Every conditional is
therefore a proper distribution that depends only on the past, so the product
over a document is an exact probability: the cache is an autoregressive model
like any other, whose ``block_size`` is unbounded. Alone it is weak; it is meant
as a component of a mixture (``arlm mix``), whose weights can depend on how
much the cache has seen of the current context.

The model has no trained parameters (``order`` and ``discount`` are its
hyperparameters); ``model.safetensors`` holds only a version marker.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ArlmError
from ..paths import WEIGHTS_FILE
from .base import LanguageModel
from .ngram import COUNT_BINS, count_bin

#: long contexts are cheap for a cache (only histories seen in the document are stored)
#: and catch the long repeats that PPM and zpaq's match models exploit
MAX_CACHE_ORDER = 32


@dataclasses.dataclass
class CacheConfig:
    vocab_size: int
    bos_id: int
    eos_id: int
    order: int = dataclasses.field(default=6, metadata={
        "help": "n-gram or cache order (tokens of context + 1), 1..10"})
    discount: float = 0.75


class CacheState:
    """Counts of the document so far: ``counts[n][ctx_key][w]`` for order n, with the
    context keyed by its last n-1 tokens, and the history (the last ``order - 1`` tokens).
    A state is updated in place by ``step``; copy it with ``clone`` to branch."""

    __slots__ = ("counts", "totals", "history")

    def __init__(self, order: int):
        self.counts: list[dict[tuple, dict[int, int]]] = [dict() for _ in range(order + 1)]
        self.totals: list[dict[tuple, int]] = [dict() for _ in range(order + 1)]
        self.history: list[int] = []

    def clone(self) -> "CacheState":
        c = CacheState(len(self.counts) - 1)
        c.counts = [{k: dict(v) for k, v in level.items()} for level in self.counts]
        c.totals = [dict(t) for t in self.totals]
        c.history = list(self.history)
        return c


class CacheModel(LanguageModel):
    """The document cache of the module docstring. ``windowed`` is False and
    ``block_size`` is None: the whole prefix of the document is used."""

    family = "cache"

    def __init__(self, config: CacheConfig):
        super().__init__()
        if not 1 <= config.order <= MAX_CACHE_ORDER:
            raise ArlmError(f"cache order must be in 1..{MAX_CACHE_ORDER}, got {config.order}")
        if not 0.0 < config.discount < 1.0:
            raise ArlmError(f"cache discount must be in (0, 1), got {config.discount}")
        self.config = config

    @property
    def block_size(self) -> None:
        return None

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    # -- counting -----------------------------------------------------------------------
    def _observe(self, st: CacheState, token: int) -> None:
        """Record ``token`` after the current history (n-grams of every order ending at it)."""
        if st.history or token != self.config.bos_id:
            h = st.history
            for n in range(1, self.config.order + 1):
                if n - 1 > len(h):
                    break
                ctx = tuple(h[len(h) - (n - 1):]) if n > 1 else ()
                kids = st.counts[n].setdefault(ctx, {})
                kids[token] = kids.get(token, 0) + 1
                st.totals[n][ctx] = st.totals[n].get(ctx, 0) + 1
        st.history.append(token)
        if len(st.history) > self.config.order - 1:
            del st.history[0]

    def _seen_levels(self, st: CacheState):
        """Yield (n, count of the order-n history, its continuations) for n = 1, 2, …
        while the history has occurred in the document (a longer one cannot have
        occurred if a shorter one has not)."""
        h = st.history
        for n in range(1, self.config.order + 1):
            if n - 1 > len(h):
                return
            ctx = tuple(h[len(h) - (n - 1):]) if n > 1 else ()
            tot = st.totals[n].get(ctx)
            if not tot:
                return
            yield n, tot, st.counts[n][ctx]

    def _prob(self, st: CacheState, w: int) -> float:
        D = self.config.discount
        p = 0.0 if w == self.config.bos_id else 1.0 / (self.config.vocab_size - 1)
        for _, tot, kids in self._seen_levels(st):
            p = max(kids.get(w, 0) - D, 0.0) / tot + D * len(kids) / tot * p
        return p

    def _dense(self, st: CacheState) -> np.ndarray:
        V, D = self.config.vocab_size, self.config.discount
        p = np.full(V, 1.0 / (V - 1))
        p[self.config.bos_id] = 0.0
        for _, tot, kids in self._seen_levels(st):
            p *= D * len(kids) / tot
            for w, c in kids.items():
                p[w] += (c - D) / tot
        return p

    def seen_context(self, st: CacheState) -> tuple[int, int]:
        """(length of the longest history seen in this document, its count) — mixture buckets."""
        best, count = 0, 0
        for n, tot, _ in self._seen_levels(st):
            if n >= 2:
                best, count = n - 1, tot
        return best, count

    # -- the contract -----------------------------------------------------------------------
    def logits(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Natural-log next-token probabilities: LongTensor[B, T] -> DoubleTensor[B, T, V]."""
        ids = token_ids.detach().cpu().tolist()
        out = np.zeros((len(ids), len(ids[0]) if ids else 0, self.config.vocab_size))
        for b, row in enumerate(ids):
            st = CacheState(self.config.order)
            for t, tok in enumerate(row):
                self._observe(st, tok)
                out[b, t] = self._dense(st)
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(out))  # [B, T, V]

    def step(self, token_ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """One token per row; ``state`` (a list of CacheState, one per row) is updated in place."""
        toks = token_ids.detach().cpu().reshape(-1).tolist()
        states = state if state is not None else [CacheState(self.config.order) for _ in toks]
        rows = []
        for st, tok in zip(states, toks):
            self._observe(st, tok)
            rows.append(self._dense(st))
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(np.stack(rows))), states  # [B, V]

    def prefill(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        states = [CacheState(self.config.order) for _ in range(token_ids.shape[0])]
        rows = []
        for st, row in zip(states, token_ids.detach().cpu().tolist()):
            for tok in row:
                self._observe(st, tok)
            rows.append(self._dense(st))
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(np.stack(rows))), states

    def target_log_probs_and_context(self, ids: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For one sequence: log p(ids[t+1] | ids[:t+1]) float64[T-1], and the seen-context
        length and count before each prediction (int64[T-1] each)."""
        st = CacheState(self.config.order)
        n = len(ids) - 1
        lp = np.empty(n)
        longest = np.zeros(n, dtype=np.int64)
        count = np.zeros(n, dtype=np.int64)
        for t in range(n):
            self._observe(st, ids[t])
            lp[t] = self._prob(st, ids[t + 1])
            longest[t], count[t] = self.seen_context(st)
        with np.errstate(divide="ignore"):
            return np.log(lp), longest, count

    @torch.no_grad()
    def sequence_log_probs(self, token_ids: torch.Tensor, stride: int | None = None) -> torch.Tensor:
        if len(token_ids) < 2:
            return torch.zeros(0, dtype=torch.float64)
        return torch.from_numpy(self.target_log_probs_and_context(token_ids.tolist())[0])

    @torch.no_grad()
    def documents_log_probs(self, documents: list[torch.Tensor], max_batch_tokens: int = 0) -> list[torch.Tensor]:
        return [self.sequence_log_probs(d) for d in documents]

    # -- context features for context-dependent mixture weights -----------------------------
    @property
    def feature_size(self) -> int:
        return self.config.order * COUNT_BINS

    def sequence_features(self, ids: np.ndarray, starts: np.ndarray | None = None) -> np.ndarray:
        """int64[B, T]: (longest history seen so far in the document) x (log-count bin)."""
        out = np.zeros(ids.shape, dtype=np.int64)
        for b in range(ids.shape[0]):
            st = CacheState(self.config.order)
            for t in range(ids.shape[1]):
                if starts is not None and starts[b, t]:
                    st = CacheState(self.config.order)
                self._observe(st, int(ids[b, t]))
                longest, count = self.seen_context(st)
                out[b, t] = longest * COUNT_BINS + count_bin(np.array(float(max(count, 1))))
        return out

    def state_features(self, state) -> np.ndarray:
        out = []
        for st in state:
            longest, count = self.seen_context(st)
            out.append(longest * COUNT_BINS + int(count_bin(np.array(float(max(count, 1))))))
        return np.array(out, dtype=np.int64)

    def num_parameters(self) -> int:
        return 0

    # -- persistence -------------------------------------------------------------------------
    def save_weights(self, directory: Path, vocab=None) -> None:
        from safetensors.torch import save_file

        from ..io import atomic_path

        with atomic_path(Path(directory) / WEIGHTS_FILE) as tmp:
            save_file({"order": torch.tensor([self.config.order])}, str(tmp), metadata={"format": "arlm-cache"})

    @classmethod
    def load_weights(cls, config: CacheConfig, directory: Path) -> "CacheModel":
        if not (Path(directory) / WEIGHTS_FILE).is_file():
            raise ArlmError(f"{directory} is incomplete: model.safetensors is missing")
        return cls(config)
