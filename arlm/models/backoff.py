"""Back-off n-gram model: the model an ARPA file describes, scored as KenLM scores it.

An ARPA file (the format of SRILM, KenLM's ``lmplz`` and most speech and MT
decoders; D. Paul and J. Baker 1992, SRILM's ``ngram-format(5)``) lists n-grams
with a log10 probability and, for those that are contexts, a log10 back-off
weight. For a history h and a token w, with h' the history without its oldest
token (Katz 1987, "Estimation of probabilities from sparse data"):

    p~(w | h) = p(hw)               if the n-gram hw is listed
              = b(h) · p~(w | h')   otherwise (b(h) = 1 when h is not listed)

down to the unigrams, which list every token. This is exactly KenLM's query.
A well-formed file gives distributions that sum to 1 up to its printed
precision (6 decimals in most files); arlm divides by the sum,

    p(w | h) = p~(w | h) / Z(h),   Z(h) = Σ_{w ≠ <s>} p~(w | h),

so that every next-token distribution sums to 1 exactly, as the model contract
requires (DESIGN.md §2). ``Z(h)`` depends only on the longest listed suffix of
``h`` and is computed once per listed context at import (the largest
``|log10 Z|`` is kept in the config as ``max_abs_log10_norm``: about 1e-6 for
a file printed to 6 decimals, so the log-probs equal KenLM's to that
precision). ``<s>`` (``<bos>``) is never predicted (probability 0).

Storage follows :mod:`arlm.models.ngram`: per order n, the sorted keys
``context_node * V + token`` of the listed n-grams (``context_node`` is the
index of the context among the listed (n-1)-grams), their natural-log
probabilities, and for n < N the natural-log back-off weight and log Z of each
n-gram as a context. Everything is float64.
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
from .ngram import context_nodes


@dataclasses.dataclass
class BackoffConfig:
    """Hyperparameters of a back-off model: its order and where it came from.

    ``source``: the ARPA file it was imported from; ``max_abs_log10_norm``: the
    largest |log10 Z(h)| over contexts before renormalisation (see module docstring).
    """

    vocab_size: int
    bos_id: int
    eos_id: int
    order: int = 3
    source: str | None = None
    max_abs_log10_norm: float = 0.0


class BackoffLevel:
    """The listed n-grams of one order n: sorted keys, ln p, and (n < N) ln b and ln Z per n-gram as context."""

    def __init__(self, keys: np.ndarray, log_prob: np.ndarray, vocab_size: int, n_contexts: int,
                 log_backoff: np.ndarray | None = None, log_norm: np.ndarray | None = None):
        self.keys = np.asarray(keys, dtype=np.int64)  # int64[G], sorted
        self.log_prob = np.asarray(log_prob, dtype=np.float64)  # float64[G], ln p(hw)
        G = len(self.keys)
        self.log_backoff = np.zeros(G) if log_backoff is None else np.asarray(log_backoff, dtype=np.float64)
        self.log_norm = np.zeros(G) if log_norm is None else np.asarray(log_norm, dtype=np.float64)
        V = vocab_size
        self.words = self.keys % V  # int64[G]
        self.start = np.searchsorted(self.keys, np.arange(n_contexts, dtype=np.int64) * V)
        self.end = np.searchsorted(self.keys, np.arange(1, n_contexts + 1, dtype=np.int64) * V)

    def lookup(self, query: np.ndarray) -> np.ndarray:
        """Index of each key in ``query`` (int64[...]), or -1 where not listed."""
        if len(self.keys) == 0:
            return np.full(query.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self.keys, query)
        pos_c = np.minimum(pos, len(self.keys) - 1)
        return np.where(self.keys[pos_c] == query, pos_c, -1)


class BackoffNGramModel(LanguageModel):
    """A back-off n-gram model of order 1..N (see the module docstring), usually made by
    ``arlm.formats.arpa.import_arpa``.

    ``logits`` returns natural-log probabilities (float64), valid as logits;
    ``step``'s state is the history, LongTensor[B, max(order-1, 1)].
    """

    family = "backoff"

    def __init__(self, config: BackoffConfig, levels: list[BackoffLevel], log_norm0: float = 0.0):
        super().__init__()
        if config.order < 1 or len(levels) != config.order:
            raise ArlmError(f"a back-off model of order {config.order} needs {config.order} tables, got {len(levels)}")
        self.config = config
        self.levels = levels
        self.log_norm0 = float(log_norm0)  # ln Z of the empty history

    @property
    def block_size(self) -> int:
        return self.config.order - 1

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    # -- building -----------------------------------------------------------------
    @classmethod
    def from_tables(cls, config: BackoffConfig, keys: list[np.ndarray], log_prob: list[np.ndarray],
                    log_backoff: list[np.ndarray]) -> "BackoffNGramModel":
        """Build from per-order sorted keys, ln p and ln b (ln b of order N is ignored); computes Z.

        Args:
            keys[n-1]: int64[G_n] sorted ``context_node * V + token``; every
                token of the vocab except ``<bos>`` must be listed at order 1, and
                the context of every n-gram must be listed at order n-1.
            log_prob[n-1]: float64[G_n], ln p(hw) as listed.
            log_backoff[n-1]: float64[G_n], ln b of each n-gram as a context (0 if none).

        Raises:
            ArlmError: a token other than ``<bos>`` has no unigram.
        """
        V, N, bos = config.vocab_size, config.order, config.bos_id
        unigram_tokens = keys[0] % V
        missing = np.setdiff1d(np.arange(V), np.append(unigram_tokens, bos))
        if len(missing):
            raise ArlmError(f"token id {int(missing[0])} has no 1-gram: the 1-grams must list the whole vocabulary")
        levels, n_ctx = [], 1
        for n in range(N):
            lb = log_backoff[n] if n < N - 1 else None
            levels.append(BackoffLevel(keys[n], log_prob[n], V, n_ctx, lb))
            n_ctx = len(keys[n])
        model = cls(config, levels)
        model._compute_norms()
        return model

    def _compute_norms(self) -> None:
        """Z(h) for the empty history and every listed context, order by order (module docstring).

        Z(h) = Σ_{w listed after h} p(hw) + b(h) · (Z(h') - Σ_{w listed after h} p~(w | h')),
        with Z(h') taken at the longest listed suffix of h.
        """
        V, N, bos = self.config.vocab_size, self.config.order, self.config.bos_id
        lv1 = self.levels[0]
        p1 = np.exp(lv1.log_prob)
        p1[lv1.words == bos] = 0.0
        z0 = p1.sum()
        self.log_norm0 = float(np.log(z0))
        worst = abs(self.log_norm0)
        # suffix node (the n-gram without its oldest token, at order n-1) of every listed n-gram; -1 if not listed
        suffix = np.zeros(len(lv1.keys), dtype=np.int64)  # order 1: the empty history (node 0)
        for n in range(1, N):  # contexts of order n, children of order n+1
            level, child = self.levels[n - 1], self.levels[n]
            w, c = child.words, child.keys // V
            # the child's suffix: (suffix of its context) extended by w
            sc = suffix[c]
            child_suffix = np.where(sc >= 0, self.levels[n - 1].lookup(np.maximum(sc, 0) * V + w), -1)
            if n == 1:
                child_suffix = lv1.lookup(w)  # order-1 n-grams: key 0 * V + w
            listed_p = np.exp(child.log_prob)
            lower_p = np.empty(len(w))
            have = child_suffix >= 0
            lower_p[have] = np.exp(self.levels[n - 1].log_prob[child_suffix[have]])
            if (~have).any():  # the suffix is not listed: back off through the general query
                rows = np.flatnonzero(~have)
                hist = self._tokens(n, c[rows])[:, 1:]  # [M, n-1]: the context without its oldest token
                lower_p[rows] = np.exp(self._query_unnormalised(hist, w[rows]))
            keep = w != bos
            s_listed = np.bincount(c[keep], weights=listed_p[keep], minlength=len(level.keys))
            s_lower = np.bincount(c[keep], weights=lower_p[keep], minlength=len(level.keys))
            z_suffix = self._suffix_norm(n, suffix)
            z = s_listed + np.exp(level.log_backoff) * (z_suffix - s_lower)
            z = np.maximum(z, 1e-300)
            level.log_norm = np.log(z)
            worst = max(worst, float(np.abs(level.log_norm).max(initial=0.0)))
            suffix = np.where(child_suffix >= 0, child_suffix, -1) if n > 1 else child_suffix
        self.config.max_abs_log10_norm = worst / np.log(10.0)

    def _suffix_norm(self, n: int, suffix: np.ndarray) -> np.ndarray:
        """Z of the longest listed suffix of each order-n context's suffix (order n-1 history)."""
        if n == 1:
            return np.full(len(suffix), np.exp(self.log_norm0))
        out = np.empty(len(suffix))
        have = suffix >= 0
        out[have] = np.exp(self.levels[n - 2].log_norm[suffix[have]])
        if (~have).any():
            rows = np.flatnonzero(~have)
            hist = self._tokens(n, rows)[:, 1:]  # [M, n-1]
            out[rows] = np.exp(self._history_log_norm(hist))
        return out

    def _tokens(self, n: int, nodes: np.ndarray) -> np.ndarray:
        """The tokens of listed n-grams of order n: int64[M, n]."""
        V = self.config.vocab_size
        cols = []
        cur = np.asarray(nodes, dtype=np.int64)
        for k in range(n, 0, -1):
            key = self.levels[k - 1].keys[cur]
            cols.append(key % V)
            cur = key // V
        return np.stack(cols[::-1], axis=1)

    def _history_nodes(self, hist: np.ndarray) -> list[np.ndarray]:
        """For histories int64[M, L], ``nodes[k]`` (k = 0..min(L, N-1)) is the node of their last k tokens, -1 if not listed."""
        V = self.config.vocab_size
        M, L = hist.shape
        nodes = [np.zeros(M, dtype=np.int64)]
        for k in range(1, min(L, self.config.order - 1) + 1):
            cur = np.zeros(M, dtype=np.int64)
            for j in range(k):  # the k-gram hist[:, L-k:], prefix by prefix
                tok = hist[:, L - k + j]
                found = self.levels[j].lookup(np.maximum(cur, 0) * V + tok)
                cur = np.where(cur >= 0, found, -1)
            nodes.append(cur)
        return nodes

    def _query_unnormalised(self, hist: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """ln p~(target | hist) by the back-off rule, for explicit histories int64[M, L]: float64[M]."""
        nodes = self._history_nodes(hist)
        return self._backoff_from_nodes(nodes, targets)

    def _history_log_norm(self, hist: np.ndarray) -> np.ndarray:
        nodes = self._history_nodes(hist)
        out = np.full(hist.shape[0], self.log_norm0)
        for k in range(1, len(nodes)):
            h = nodes[k]
            out = np.where(h >= 0, self.levels[k - 1].log_norm[np.maximum(h, 0)], out)
        return out

    def _backoff_from_nodes(self, nodes: list[np.ndarray], targets: np.ndarray) -> np.ndarray:
        """ln p~ from context nodes ``nodes[k]`` (shape S, k = 0..K) and targets (shape S)."""
        V = self.config.vocab_size
        lp = np.full(targets.shape, -np.inf)
        found = np.zeros(targets.shape, dtype=np.int64)
        for n in range(1, len(nodes) + 1):
            h = nodes[n - 1]
            g = self.levels[n - 1].lookup(np.maximum(h, 0) * V + targets)
            g = np.where(h >= 0, g, -1)
            hit = g >= 0
            lp = np.where(hit, self.levels[n - 1].log_prob[np.maximum(g, 0)], lp)
            found = np.where(hit, n, found)
        for k in range(1, len(nodes)):
            h = nodes[k]
            apply = (h >= 0) & (k >= found)
            lp = lp + np.where(apply, self.levels[k - 1].log_backoff[np.maximum(h, 0)], 0.0)
        return lp

    # -- queries -------------------------------------------------------------------
    def _context_nodes(self, ids: np.ndarray, starts: np.ndarray | None = None) -> list[np.ndarray]:
        """For int64[B, T] ids, ``ctx[k][b, t]`` is the node of the last k tokens up to t
        (k = 0..N-1), -1 if not listed; ``starts`` (bool[B, T]) marks where a new sequence begins."""
        return context_nodes(self.levels, self.config.vocab_size, self.config.order, ids, starts)

    def _log_norm_at(self, ctx: list[np.ndarray]) -> np.ndarray:
        out = np.full(ctx[0].shape, self.log_norm0)
        for k in range(1, len(ctx)):
            h = ctx[k]
            out = np.where(h >= 0, self.levels[k - 1].log_norm[np.maximum(h, 0)], out)
        return out

    def target_log_probs(self, ids: np.ndarray, targets: np.ndarray, starts: np.ndarray | None = None) -> np.ndarray:
        """ln p(targets[b, t] | ids[b, :t+1]) as float64[B, T] (normalised; ``<bos>`` is -inf)."""
        ctx = self._context_nodes(ids, starts)
        lp = self._backoff_from_nodes(ctx, targets) - self._log_norm_at(ctx)
        return np.where(targets == self.config.bos_id, -np.inf, lp)

    def dense_log_probs_np(self, ids: np.ndarray) -> np.ndarray:
        """The whole next-token distribution after each position: ln p, float64[B, T, V]."""
        V = self.config.vocab_size
        B, T = ids.shape
        P = B * T
        ctx = self._context_nodes(ids)
        lv1 = self.levels[0]
        uni = np.full(V, -np.inf)
        uni[lv1.words] = lv1.log_prob
        uni[self.config.bos_id] = -np.inf
        lp = np.broadcast_to(uni, (P, V)).copy()
        rows_all = np.arange(P)
        for k in range(1, len(ctx)):
            h = ctx[k].reshape(P)
            use = np.flatnonzero(h >= 0)
            if len(use) == 0:
                continue
            hu = h[use]
            lp[use] += self.levels[k - 1].log_backoff[hu][:, None]
            child = self.levels[k]
            start, end = child.start[hu], child.end[hu]
            n_child = end - start
            rows = np.repeat(rows_all[use], n_child)
            offs = np.repeat(start - (np.cumsum(n_child) - n_child), n_child) + np.arange(n_child.sum())
            lp[rows, child.words[offs]] = child.log_prob[offs]
        lp[:, self.config.bos_id] = -np.inf
        lp -= self._log_norm_at(ctx).reshape(P)[:, None]
        return lp.reshape(B, T, V)

    def logits(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Natural-log next-token probabilities: LongTensor[B, T] -> DoubleTensor[B, T, V]."""
        ids = token_ids.detach().cpu().numpy().astype(np.int64)
        return torch.from_numpy(self.dense_log_probs_np(ids))  # [B, T, V]

    def step(self, token_ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Append one token per row to the history; return log-probs [B, V] and the new history."""
        tok = token_ids.detach().cpu().reshape(-1, 1).long()
        hist = tok if state is None else torch.cat([state, tok], dim=1)
        hist = hist[:, -max(self.config.order - 1, 1):]  # [B, <= order-1]
        return self.logits(hist)[:, -1], hist

    def prefill(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        hist = token_ids.detach().cpu().long()[:, -max(self.config.order - 1, 1):]
        return self.logits(hist)[:, -1], hist

    @torch.no_grad()
    def sequence_log_probs(self, token_ids: torch.Tensor, stride: int | None = None) -> torch.Tensor:
        """log p(token_ids[t+1] | token_ids[:t+1]) for t < T-1, float64[T-1], by sparse lookups only."""
        ids = token_ids.detach().cpu().numpy().astype(np.int64)
        if len(ids) < 2:
            return torch.zeros(0, dtype=torch.float64)
        return torch.from_numpy(self.target_log_probs(ids[None, :-1], ids[None, 1:])[0])

    @torch.no_grad()
    def documents_log_probs(self, documents: list[torch.Tensor], max_batch_tokens: int = 0) -> list[torch.Tensor]:
        """``sequence_log_probs`` of many sequences in one vectorised pass (float64 each)."""
        docs = [d.detach().cpu().numpy().astype(np.int64) for d in documents]
        lengths = np.array([max(len(d) - 1, 0) for d in docs])
        if lengths.sum() == 0:
            return [torch.zeros(0, dtype=torch.float64) for _ in docs]
        inputs = np.concatenate([d[:-1] for d in docs if len(d) > 1])
        targets = np.concatenate([d[1:] for d in docs if len(d) > 1])
        starts = np.zeros(len(inputs), dtype=bool)
        starts[(np.cumsum(lengths) - lengths)[lengths > 0]] = True
        lp = torch.from_numpy(self.target_log_probs(inputs[None], targets[None], starts[None])[0])
        return list(torch.split(lp, lengths.tolist()))

    def num_parameters(self) -> int:
        """Number of listed n-grams."""
        return int(sum(len(level.keys) for level in self.levels))

    # -- persistence -------------------------------------------------------------------
    def save_weights(self, directory: Path, vocab=None) -> None:
        from safetensors.numpy import save_file

        from ..io import atomic_path

        tensors = {"log_norm0": np.array([self.log_norm0])}
        for n, level in enumerate(self.levels, start=1):
            tensors[f"order{n}.keys"] = level.keys
            tensors[f"order{n}.log_prob"] = level.log_prob
            if n < self.config.order:
                tensors[f"order{n}.log_backoff"] = level.log_backoff
                tensors[f"order{n}.log_norm"] = level.log_norm
        with atomic_path(Path(directory) / WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "arlm-backoff"})

    @classmethod
    def load_weights(cls, config: BackoffConfig, directory: Path) -> "BackoffNGramModel":
        from safetensors.numpy import load_file

        t = load_file(str(Path(directory) / WEIGHTS_FILE))
        N, V = config.order, config.vocab_size
        try:
            levels, n_ctx = [], 1
            for n in range(1, N + 1):
                keys = t[f"order{n}.keys"]
                lb = t[f"order{n}.log_backoff"] if n < N else None
                ln = t[f"order{n}.log_norm"] if n < N else None
                levels.append(BackoffLevel(keys, t[f"order{n}.log_prob"], V, n_ctx, lb, ln))
                n_ctx = len(keys)
            log_norm0 = float(t["log_norm0"][0])
        except KeyError as e:
            raise ArlmError(f"{directory}/model.safetensors lacks the back-off table {e.args[0]}") from None
        return cls(config, levels, log_norm0)
