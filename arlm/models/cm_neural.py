"""The network input of the context-mixing family: a neural model's next-token distribution as the
12-bit probability of each branch of cm's vocab tree (P(right) = its right subtree's mass / the node's),
the network stepped one token at a time on one thread (``LanguageModel.step``)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from numba import njit

from ..errors import ArlmError


def node_ranges(path_nodes: np.ndarray, path_bits: np.ndarray, path_len: np.ndarray, n_nodes: int):
    """(leaves int64[V-1] in tree order, lo, mid, hi int64[n_nodes]): node j's leaves are
    leaves[lo[j]:hi[j]], its right subtree's leaves[mid[j]:hi[j]]."""
    V = path_len.shape[0]
    # tree order: sort the leaves by their branch strings (left before right)
    leaves = sorted((v for v in range(V) if path_len[v] > 0 or n_nodes == 0),
                    key=lambda v: [int(b) for b in path_bits[v, : path_len[v]]])
    lo = np.full(max(n_nodes, 1), 1 << 30, dtype=np.int64)
    hi = np.zeros(max(n_nodes, 1), dtype=np.int64)
    mid = np.full(max(n_nodes, 1), 1 << 30, dtype=np.int64)
    for i, v in enumerate(leaves):
        for d in range(path_len[v]):
            j = path_nodes[v, d]
            lo[j], hi[j] = min(lo[j], i), max(hi[j], i + 1)
            if path_bits[v, d]:
                mid[j] = min(mid[j], i)
    return np.array(leaves, dtype=np.int64), lo, mid, hi


@njit(cache=True)
def node_probs(lp, leaves, lo, mid, hi, out):
    """Scores lp float64[V] (log-probs or logits) -> out int64[n_nodes]: the 12-bit P(right branch)
    of every node, round(4096 · right mass / node mass) clipped to [1, 4095]."""
    m = -np.inf
    for i in range(leaves.shape[0]):
        if lp[leaves[i]] > m:
            m = lp[leaves[i]]
    p = np.empty(leaves.shape[0])
    for i in range(leaves.shape[0]):
        p[i] = np.exp(lp[leaves[i]] - m)
    for j in range(out.shape[0]):
        right = 0.0
        for i in range(mid[j], hi[j]):
            right += p[i]
        left = 0.0
        for i in range(lo[j], mid[j]):
            left += p[i]
        q = int(4096.0 * right / (left + right) + 0.5) if left + right > 0 else 2048
        out[j] = 1 if q < 1 else (4095 if q > 4095 else q)


@contextlib.contextmanager
def one_thread():
    """torch on one thread (so that every caller computes the same floats), restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class NeuralInput:
    """Steps a network (any ``LanguageModel`` with ``step``) and turns each distribution into the
    node probabilities of ``cm``'s tree (``rows``: int64[T, n_nodes])."""

    def __init__(self, network, vocab_size: int, bos_id: int, eos_id: int, tree):
        if (network.vocab_size, network.bos_id, network.eos_id) != (vocab_size, bos_id, eos_id):
            raise ArlmError(f"the network has vocab size {network.vocab_size} (bos {network.bos_id}, eos "
                            f"{network.eos_id}); cm has {vocab_size} ({bos_id}, {eos_id}): train both on one vocab")
        self.network = network
        self.leaves, self.lo, self.mid, self.hi = tree
        self.n_nodes = len(self.lo)

    @torch.no_grad()
    def row(self, tok: int, state):
        """Feed one token: (int64[n_nodes] node probabilities of the next token, new state)."""
        with one_thread():
            return self._row(tok, state)

    def _row(self, tok: int, state):
        out = np.empty(self.n_nodes, dtype=np.int64)
        scores, state = self.network.step(torch.tensor([tok], dtype=torch.long, device=self.network.device), state)
        node_probs(scores[0].double().cpu().numpy(), self.leaves, self.lo, self.mid, self.hi, out)
        return out, state

    @torch.no_grad()
    def rows(self, ids: np.ndarray, start: int = 0, warm: int = 0) -> np.ndarray:
        """Node probabilities after each of ids[start:T-1] (int64[max(T-1-start, 0), n_nodes]);
        the network starts reading at ids[max(0, start - warm)]."""
        T = len(ids)
        out = np.zeros((max(T - 1 - start, 0), self.n_nodes), dtype=np.int64)
        state = None
        with one_thread():
            for t in range(max(0, start - warm), T - 1):
                r, state = self._row(int(ids[t]), state)
                if t >= start:
                    out[t - start] = r
        return out
