"""Interpolated modified Kneser-Ney n-gram model (Chen & Goodman 1998).

Source: S. F. Chen and J. Goodman, "An Empirical Study of Smoothing Techniques
for Language Modeling", Harvard TR-10-98 (1998), §3.5 and eq. (26); the
treatment of n-grams that begin with ``<bos>`` (raw counts instead of
continuation counts) and the fallback discounts follow KenLM's ``lmplz``
(Heafield et al. 2013).

For order N and a history h of length n-1 (n ≤ N):

    p_n(w | h) = max(a_n(hw) - D_n(a_n(hw)), 0) / A_n(h) + γ_n(h) · p_{n-1}(w | h')
    γ_n(h)     = (D_n1 N1(h·) + D_n2 N2(h·) + D_n3+ N3+(h·)) / A_n(h)

where ``h'`` drops the oldest token, ``A_n(h) = Σ_w a_n(hw)``, ``N_k(h·)`` counts
the words with ``a_n(hw) = k`` (3+ for k ≥ 3), and a history never seen
(``A_n(h) = 0``) passes ``p_{n-1}`` through unchanged. The adjusted count
``a_n`` is the raw count for the highest order and for n-grams that begin with
``<bos>``; otherwise it is the number of distinct tokens seen to its left (the
continuation count). The recursion ends in the uniform distribution over every
token except ``<bos>``, so each next-token distribution sums to 1 over the whole
vocabulary, ``<eos>`` included, and ``<bos>`` has probability 0.

Discounts are estimated per order from counts of counts n1..n4 of the adjusted
counts: Y = n1 / (n1 + 2 n2), D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2,
D3+ = 3 - 4Y n4/n3. Where an estimate is undefined or outside (0, k] (tiny or
artificial corpora), the order falls back to KenLM's defaults (0.5, 1.0, 1.5),
with a warning for orders above 1 (order 1 of a character or byte vocabulary
falls back routinely: every token is seen many times, so n1..n4 has zeros).

Storage is sparse: per order, the sorted keys ``context_node * V + token`` of the
n-grams seen in training and their adjusted counts; no table is as wide as the
vocabulary per context. All arithmetic is float64.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ArlmError
from ..paths import WEIGHTS_FILE
from .base import LanguageModel

FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
COUNT_BINS = 4  # context-count bins of the mixture features: 1-3, 4-15, 16-63, 64+


def count_bin(count: np.ndarray) -> np.ndarray:
    """Bin of a context count (>= 1): floor(log2(count) / 2), at most COUNT_BINS - 1."""
    return np.minimum(np.floor(np.log2(np.maximum(count, 1.0)) / 2), COUNT_BINS - 1).astype(np.int64)
MAX_ORDER = 10


@dataclasses.dataclass
class NGramConfig:
    """Hyperparameters of an n-gram model.

    ``discounts[n-1] = [D1, D2, D3+]`` for order n; filled in by ``fit``.
    ``fallback_orders`` lists the orders whose estimate was out of range.
    """

    vocab_size: int
    bos_id: int
    eos_id: int
    order: int = dataclasses.field(default=5, metadata={
        "help": "n-gram or cache order (tokens of context + 1), 1..10"})
    discounts: list[list[float]] | None = None
    fallback_orders: list[int] = dataclasses.field(default_factory=list)


def estimate_discounts(counts: np.ndarray) -> tuple[list[float], bool]:
    """Modified Kneser-Ney discounts [D1, D2, D3+] from an array of adjusted counts.

    Returns ``(discounts, ok)``; ``ok`` is False when the estimate was undefined
    or out of range and KenLM's fallback (0.5, 1.0, 1.5) was returned instead.
    """
    n = [int(np.count_nonzero(counts == k)) for k in (1, 2, 3, 4)]
    if min(n) == 0:
        return list(FALLBACK_DISCOUNTS), False
    n1, n2, n3, n4 = n
    y = n1 / (n1 + 2 * n2)
    d = [1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3]
    if not all(0 < dk <= k for dk, k in zip(d, (1, 2, 3))):
        return list(FALLBACK_DISCOUNTS), False
    return d, True


class _Level:
    """The n-grams of one order n: sorted keys ``ctx * V + w``, adjusted counts,
    and per-context totals (indexed by node id of order n-1)."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray, vocab_size: int, n_contexts: int, discounts):
        self.keys = keys  # int64[G], sorted
        self.counts = counts  # float64[G], adjusted counts a_n
        V = vocab_size
        ctx = keys // V
        self.words = keys % V  # int64[G]
        d = np.asarray(discounts, dtype=np.float64)
        cls = np.minimum(counts, 3).astype(np.int64)  # 0 (unused), 1, 2, 3+
        disc = np.where(cls > 0, d[np.maximum(cls, 1) - 1], 0.0)
        self.discounted = np.maximum(counts - disc, 0.0)  # float64[G]
        self.totals = np.bincount(ctx, weights=counts, minlength=n_contexts)  # A_n(h), float64[H]
        self.gamma_num = np.bincount(ctx, weights=disc, minlength=n_contexts)  # Σ D(a) = D1 N1 + D2 N2 + D3 N3+
        # children of context h are keys[start[h]:end[h]] (contiguous: keys sorted by ctx first)
        self.start = np.searchsorted(keys, np.arange(n_contexts, dtype=np.int64) * V)
        self.end = np.searchsorted(keys, np.arange(1, n_contexts + 1, dtype=np.int64) * V)

    def lookup(self, query: np.ndarray) -> np.ndarray:
        """Node index of each key in ``query`` (int64[...]), or -1 where unseen."""
        if len(self.keys) == 0:
            return np.full(query.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self.keys, query)
        pos_c = np.minimum(pos, len(self.keys) - 1)
        return np.where(self.keys[pos_c] == query, pos_c, -1)



def context_nodes(levels, vocab_size: int, order: int, ids: np.ndarray,
                  starts: np.ndarray | None = None) -> list[np.ndarray]:
    """The history nodes of every position of int64[B, T] ``ids`` in a table of
    n-gram levels (each with ``lookup(keys) -> node or -1``, a key being
    ``parent_node * vocab_size + token``): ``ctx[n][b, t]`` for n = 0..order-1,
    -1 where the history is not listed; ``starts`` (bool[B, T]) marks where a new
    sequence begins inside a row. Shared by the Kneser-Ney and back-off families."""
    B, T = ids.shape
    ctx = [np.zeros((B, T), dtype=np.int64)]
    prev = ctx[0]
    for n in range(1, order):
        if n == 1:
            shifted = np.zeros((B, T), dtype=np.int64)
        else:
            shifted = np.full((B, T), -1, dtype=np.int64)
            shifted[:, 1:] = prev[:, :-1]
            if starts is not None:
                shifted[starts] = -1
        found = levels[n - 1].lookup(np.maximum(shifted, 0) * vocab_size + ids)
        node = np.where(shifted >= 0, found, -1)
        ctx.append(node)
        prev = node
    return ctx


class NGramModel(LanguageModel):
    """Interpolated modified Kneser-Ney model of order 1..10 (see module docstring).

    Build with ``NGramModel.fit(config, documents_ids)``. ``logits`` returns
    natural-log probabilities (float64), valid as logits; ``step``'s state is the
    history, a LongTensor[B, max(order-1, 1)] of the last tokens.
    """

    family = "ngram"

    def __init__(self, config: NGramConfig, levels: list[_Level] | None = None):
        super().__init__()
        if not 1 <= config.order <= MAX_ORDER:
            raise ArlmError(f"n-gram order must be in 1..{MAX_ORDER}, got {config.order}")
        self.config = config
        self.levels = levels or []

    @property
    def block_size(self) -> int:
        return self.config.order - 1

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    # -- estimation --------------------------------------------------------------
    @classmethod
    def fit(cls, config: NGramConfig, documents: list[np.ndarray]) -> "NGramModel":
        """Count n-grams of every order in ``documents`` and estimate the model.

        Args:
            documents: int64 arrays ``[<bos>, x_1 … x_n, <eos>]``.

        Raises:
            ArlmError: order outside 1..10, or no documents.
        """
        N, V = config.order, config.vocab_size
        if not 1 <= N <= MAX_ORDER:
            raise ArlmError(f"n-gram order must be in 1..{MAX_ORDER}, got {N}")
        if not documents:
            raise ArlmError("cannot fit an n-gram model on no documents")
        ids = np.concatenate(documents).astype(np.int64)
        lengths = np.array([len(d) for d in documents])
        pos = np.arange(len(ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # position in document

        # node[n][i]: id of the n-gram ids[i-n+1 .. i] among the distinct n-grams (-1 if it crosses the start)
        node_prev = np.zeros(len(ids), dtype=np.int64)  # order 0: the empty history, node 0
        raw_keys, raw_inverse = [], []
        for n in range(1, N + 1):
            valid = pos >= n - 1
            prev_shift = np.empty_like(node_prev)
            prev_shift[0] = -1
            prev_shift[1:] = node_prev[:-1] if n > 1 else 0
            if n == 1:
                prev_shift[:] = 0
            key = prev_shift * V + ids
            vi = np.flatnonzero(valid)
            uniq, inv = np.unique(key[vi], return_inverse=True)
            node = np.full(len(ids), -1, dtype=np.int64)
            node[vi] = inv
            raw_keys.append(uniq)
            raw_inverse.append(node)
            node_prev = node

        # adjusted counts; n-grams ending at <bos> (position 0) are never predicted
        levels_counts = []
        for n in range(1, N + 1):
            node = raw_inverse[n - 1]
            G = len(raw_keys[n - 1])
            target = pos >= max(n - 1, 1)  # valid and not ending at <bos>
            raw = np.bincount(node[target], minlength=G).astype(np.float64)
            if n == N:
                adj = raw
            else:
                # continuation count: distinct (n+1)-grams that extend this n-gram to the left
                up = raw_inverse[n]
                sel = np.flatnonzero(up >= 0)
                pairs = np.unique(up[sel])  # distinct (n+1)-grams
                first = np.zeros(len(raw_keys[n]), dtype=np.int64)
                first[up[sel]] = node[sel]  # suffix n-gram of each (n+1)-gram
                adj = np.bincount(first[pairs], minlength=G).astype(np.float64)
                # n-grams starting with <bos> have nothing to their left: raw counts
                bos_initial = np.zeros(G, dtype=bool)
                starts = target & (pos == n - 1)
                bos_initial[node[starts]] = True
                adj[bos_initial] = raw[bos_initial]
            levels_counts.append(adj)
        return cls.from_adjusted_counts(config, raw_keys, levels_counts)

    @classmethod
    def from_adjusted_counts(cls, config: NGramConfig, keys: list[np.ndarray], counts: list[np.ndarray]) -> "NGramModel":
        """Estimate the discounts and build the model from the sorted keys and adjusted counts of
        every order (as ``fit`` computes them; ``arlm.models.ngram_count`` computes the same on disk)."""
        discounts, fallback = [], []
        for n, adj in enumerate(counts, start=1):
            d, ok = estimate_discounts(adj[adj > 0])
            discounts.append(d)
            if not ok:
                fallback.append(n)
        if [n for n in fallback if n > 1]:
            # Order 1 of a small vocabulary (characters, bytes) routinely has a zero count of counts:
            # every token is seen many times. Its fallback is expected and not worth a warning.
            warnings.warn(
                f"Kneser-Ney discount estimate out of range for order(s) {[n for n in fallback if n > 1]} "
                f"(a count of counts n1..n4 is zero or a discount falls outside (0, k]: the text is very small "
                f"or repetitive); using KenLM's fallback discounts {list(FALLBACK_DISCOUNTS)} there",
                stacklevel=3,
            )
        config = dataclasses.replace(config, discounts=discounts, fallback_orders=fallback)
        return cls(config, cls._build_levels(config, keys, counts))

    @staticmethod
    def _build_levels(config: NGramConfig, keys: list[np.ndarray], counts: list[np.ndarray]) -> list[_Level]:
        levels, n_contexts = [], 1
        for n in range(config.order):
            levels.append(_Level(keys[n], counts[n], config.vocab_size, n_contexts, config.discounts[n]))
            n_contexts = len(keys[n])
        return levels

    # -- queries -------------------------------------------------------------------
    def _context_nodes(self, ids: np.ndarray, starts: np.ndarray | None = None) -> list[np.ndarray]:
        """For int64[B, T] ids, ``ctx[n][b, t]`` is the node of the order-n history
        ending at t (n = 0..N-1; order 0 is the empty history, node 0), -1 if unseen
        or longer than the sequence so far. ``starts`` (bool[B, T]) marks where a
        new sequence begins inside a row (no history reaches back across it)."""
        return context_nodes(self.levels, self.config.vocab_size, self.config.order, ids, starts)

    def target_probs(self, ids: np.ndarray, targets: np.ndarray, starts: np.ndarray | None = None) -> np.ndarray:
        """p(targets[b, t] | ids[b, :t+1]) as float64[B, T] (not log); ``starts`` as in ``_context_nodes``."""
        V = self.config.vocab_size
        ctx = self._context_nodes(ids, starts)
        p = np.full(ids.shape, 1.0 / (V - 1))
        for n, level in enumerate(self.levels, start=1):
            h = ctx[n - 1]
            seen = h >= 0
            hs = np.maximum(h, 0)
            tot = np.where(seen, level.totals[hs], 0.0)
            use = tot > 0
            g = level.lookup(hs * V + targets)
            g = np.where(use, g, -1)
            num = np.where(g >= 0, level.discounted[np.maximum(g, 0)], 0.0)
            tot_safe = np.where(use, tot, 1.0)
            gamma = level.gamma_num[hs] / tot_safe
            p = np.where(use, num / tot_safe + gamma * p, p)
        p = np.where(targets == self.config.bos_id, 0.0, p)
        return p

    def dense_probs(self, ids: np.ndarray) -> np.ndarray:
        """The whole next-token distribution after each position: float64[B, T, V]."""
        V = self.config.vocab_size
        B, T = ids.shape
        P = B * T
        ctx = self._context_nodes(ids)
        probs = np.full((P, V), 1.0 / (V - 1))
        probs[:, self.config.bos_id] = 0.0
        rows_all = np.arange(P)
        for n, level in enumerate(self.levels, start=1):
            h = ctx[n - 1].reshape(P)
            hs = np.maximum(h, 0)
            tot = np.where(h >= 0, level.totals[hs], 0.0)
            use = np.flatnonzero(tot > 0)
            if len(use) == 0:
                continue
            hu, tu = hs[use], tot[use]
            probs[use] *= (level.gamma_num[hu] / tu)[:, None]
            start, end = level.start[hu], level.end[hu]
            n_child = end - start
            rows = np.repeat(rows_all[use], n_child)
            offs = np.repeat(start - (np.cumsum(n_child) - n_child), n_child) + np.arange(n_child.sum())
            probs[rows, level.words[offs]] += level.discounted[offs] / np.repeat(tu, n_child)
        return probs.reshape(B, T, V)

    def logits(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Natural-log next-token probabilities: LongTensor[B, T] -> DoubleTensor[B, T, V]."""
        ids = token_ids.detach().cpu().numpy().astype(np.int64)
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(self.dense_probs(ids)))  # [B, T, V]

    def step(self, token_ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Append one token per row to the history; return log-probs [B, V] and the new history."""
        tok = token_ids.detach().cpu().reshape(-1, 1).long()
        hist = tok if state is None else torch.cat([state, tok], dim=1)
        hist = hist[:, -max(self.config.order - 1, 1) :]  # [B, <= order-1]
        return self.logits(hist)[:, -1], hist

    def prefill(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        hist = token_ids.detach().cpu().long()[:, -max(self.config.order - 1, 1) :]
        return self.logits(hist)[:, -1], hist

    @torch.no_grad()
    def sequence_log_probs(self, token_ids: torch.Tensor, stride: int | None = None) -> torch.Tensor:
        """log p(token_ids[t+1] | token_ids[:t+1]) for t < T-1, float64[T-1], by sparse lookups only."""
        ids = token_ids.detach().cpu().numpy().astype(np.int64)
        if len(ids) < 2:
            return torch.zeros(0, dtype=torch.float64)
        p = self.target_probs(ids[None, :-1], ids[None, 1:])[0]
        with np.errstate(divide="ignore"):
            return torch.from_numpy(np.log(p))

    @torch.no_grad()
    def documents_log_probs(self, documents: list[torch.Tensor], max_batch_tokens: int = 0) -> list[torch.Tensor]:
        """``sequence_log_probs`` of many sequences in one vectorised pass (float64 each)."""
        docs = [d.detach().cpu().numpy().astype(np.int64) for d in documents]
        inputs = np.concatenate([d[:-1] for d in docs])
        targets = np.concatenate([d[1:] for d in docs])
        lengths = np.array([len(d) - 1 for d in docs])
        starts = np.zeros(len(inputs), dtype=bool)
        starts[(np.cumsum(lengths) - lengths)[lengths > 0]] = True
        p = self.target_probs(inputs[None], targets[None], starts[None])[0]
        with np.errstate(divide="ignore"):
            lp = torch.from_numpy(np.log(p))
        return list(torch.split(lp, lengths.tolist()))

    # -- context features for context-dependent mixture weights ---------------------------
    @property
    def feature_size(self) -> int:
        return self.config.order * COUNT_BINS

    def sequence_features(self, ids: np.ndarray, starts: np.ndarray | None = None) -> np.ndarray:
        """int64[B, T]: (order of the longest history seen in training) x (log-count bin) at each position."""
        ctx = self._context_nodes(ids, starts)
        longest = np.zeros(ids.shape, dtype=np.int64)
        count = np.ones(ids.shape)
        for n, level in enumerate(self.levels, start=1):
            h = ctx[n - 1]
            tot = np.where(h >= 0, level.totals[np.maximum(h, 0)], 0.0)
            seen = tot > 0
            longest = np.where(seen, n - 1, longest)
            count = np.where(seen, tot, count)
        return longest * COUNT_BINS + count_bin(count)

    def state_features(self, state) -> np.ndarray:
        """int64[B]: ``sequence_features`` at the end of the history held in a ``step`` state."""
        return self.sequence_features(state.numpy())[:, -1]

    def num_parameters(self) -> int:
        """Number of stored n-grams (the model's free parameters are their counts)."""
        return int(sum(len(level.keys) for level in self.levels))

    # -- persistence -------------------------------------------------------------------
    def save_weights(self, directory: Path, vocab=None) -> None:
        from safetensors.numpy import save_file

        from ..io import atomic_path

        tensors = {}
        for n, level in enumerate(self.levels, start=1):
            tensors[f"order{n}.keys"] = level.keys
            tensors[f"order{n}.counts"] = level.counts
        with atomic_path(Path(directory) / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "arlm-ngram"})

    @classmethod
    def load_weights(cls, config: NGramConfig, directory: Path) -> "NGramModel":
        from safetensors.numpy import load_file

        tensors = load_file(str(Path(directory) / WEIGHTS_FILE))
        try:
            keys = [tensors[f"order{n}.keys"] for n in range(1, config.order + 1)]
            counts = [tensors[f"order{n}.counts"] for n in range(1, config.order + 1)]
        except KeyError as e:
            raise ArlmError(f"{directory}/model.safetensors lacks the n-gram table {e.args[0]}") from None
        if config.discounts is None or len(config.discounts) != config.order:
            raise ArlmError(f"{directory}/config.json lacks the discounts of every order")
        return cls(config, cls._build_levels(config, keys, counts))
