"""The vocab side of the context-mixing family (``arlm.models.cm``): the binary tree of decisions
over the tokens, and the token classes its word and line contexts use."""

from __future__ import annotations

import numpy as np


def build_tree(vocab_size: int, bos_id: int):
    """A balanced binary tree over the tokens other than ``<bos>``.

    Returns (path_nodes int32[V, D], path_bits uint8[V, D], path_len int32[V],
    node_depth int32[n_nodes], is_leaf uint8[V]): token v's decisions are
    nodes path_nodes[v, :path_len[v]] with branches path_bits[v, :path_len[v]]
    (1 = right); n_nodes = V - 2 internal nodes, numbered in preorder.
    """
    leaves = [v for v in range(vocab_size) if v != bos_id]
    paths: dict[int, list[tuple[int, int]]] = {v: [] for v in leaves}
    depth: list[int] = []

    def build(lo: int, hi: int, d: int, prefix: list[tuple[int, int]]) -> None:
        if hi - lo == 1:
            paths[leaves[lo]] = prefix
            return
        j = len(depth)
        depth.append(d)
        mid = (lo + hi) // 2
        build(lo, mid, d + 1, prefix + [(j, 0)])
        build(mid, hi, d + 1, prefix + [(j, 1)])

    if leaves:
        build(0, len(leaves), 0, [])
    D = max(1, max((len(p) for p in paths.values()), default=1))
    path_nodes = np.zeros((vocab_size, D), dtype=np.int32)
    path_bits = np.zeros((vocab_size, D), dtype=np.uint8)
    path_len = np.zeros(vocab_size, dtype=np.int32)
    is_leaf = np.zeros(vocab_size, dtype=np.uint8)
    for v, p in paths.items():
        is_leaf[v] = 1
        path_len[v] = len(p)
        for d, (j, b) in enumerate(p):
            path_nodes[v, d] = j
            path_bits[v, d] = b
    return path_nodes, path_bits, path_len, np.array(depth, dtype=np.int32), is_leaf


def word_token_ids(vocab) -> list[int]:
    """Ids of the tokens that are letters (or runs of letters, or apostrophes): the word contexts' alphabet."""
    out = []
    for v in range(vocab.vocab_size):
        if v in (vocab.bos_id, vocab.eos_id):
            continue
        text = vocab.token_text(v)
        if text and all(ch.isalpha() or ch == "'" for ch in text):
            out.append(v)
    return out


def newline_id(vocab) -> int:
    """Id of the token that is exactly a line break (the line contexts' separator), else -1."""
    for v in range(vocab.vocab_size):
        if v not in (vocab.bos_id, vocab.eos_id) and vocab.token_text(v) == "\n":
            return v
    return -1
