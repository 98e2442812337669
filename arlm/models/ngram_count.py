"""Counting n-grams in a memory budget: sorted runs spilled to disk, then merged.

The design of KenLM's ``lmplz`` (Heafield, Pouzyrevsky, Clark and Koehn 2013,
"Scalable Modified Kneser-Ney Language Model Estimation", ACL): count in
chunks that fit in memory, write each chunk's counts as a run sorted by
n-gram, and merge the sorted runs in one streaming pass, summing the counts of
equal n-grams. Nothing larger than the budget is held while counting; the
merged tables are the model itself (``arlm.models.ngram``), which has to fit
in memory to be used.

An n-gram ``w_1 … w_n`` is packed into one int64 as the base-``V`` number
``w_1 V^(n-1) + … + w_n`` (so ``V ** order`` must stay below 2**63: a char or
byte vocab up to order 7, a 1024-token BPE vocab up to order 6). For a fixed
n, numeric order of packed keys is lexicographic order of the n-grams, which is
the order of the node ids of ``NGramModel``: ``fit_budgeted`` converts the
merged tables to exactly the keys and adjusted counts that ``NGramModel.fit``
computes in memory, so the two models are bit-identical (same float64 counts,
same discounts, same probabilities).

The input is the flat token stream of a token directory (``arlm.data``):
documents ``[<bos>, x_1 … x_n, <eos>]`` concatenated; an n-gram never crosses a
``<bos>`` (the start of a document).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import ArlmError
from .ngram import MAX_ORDER, NGramConfig, NGramModel

#: Bytes of working memory per token of a counting chunk, per order (the
#: packed keys, their sorted copy and np.unique's temporaries).
BYTES_PER_TOKEN_ORDER = 48
MIN_BUDGET = 64 << 10


def parse_memory(text: str, option: str = "--memory") -> int:
    """``'2G'``, ``'512M'``, ``'64K'``, ``'1.5G'`` or a plain number of bytes -> bytes (powers of 1024).

    Raises:
        ArlmError: unparsable, or below 64 KiB; the message names ``option``
            (the flag the size was given as).
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not m:
        raise ArlmError(f"cannot parse {option} {text!r} as a memory size: use e.g. 2G, 512M or a number of bytes")
    value = int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))
    if value < MIN_BUDGET:
        raise ArlmError(f"{option} must be at least 64K, got {text!r}")
    return value


def _reduce(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort ``keys`` and sum the ``counts`` of equal keys: (unique sorted keys, summed counts)."""
    if len(keys) == 0:
        return keys, counts
    order = np.argsort(keys, kind="stable")
    k, c = keys[order], counts[order]
    starts = np.flatnonzero(np.concatenate([[True], k[1:] != k[:-1]]))
    return k[starts], np.add.reduceat(c, starts)


class RunCounter:
    """Sums int64 counts per int64 key; buffered pieces are spilled to ``directory`` as sorted runs.

    ``add`` buffers; ``spill`` writes the buffer as one run (two ``.npy`` files,
    no pickle); ``merged(block)`` merges every run and the buffer, reading at
    most ``block`` entries of each run at a time.
    """

    def __init__(self, directory: Path, name: str):
        self.directory, self.name = Path(directory), name
        self.buffer: list[tuple[np.ndarray, np.ndarray]] = []
        self.buffered_bytes = 0
        self.runs: list[tuple[Path, Path]] = []

    def add(self, keys: np.ndarray, counts: np.ndarray) -> None:
        if len(keys):
            self.buffer.append((keys, counts))
            self.buffered_bytes += keys.nbytes + counts.nbytes

    def _take_buffer(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.buffer:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        k, c = _reduce(np.concatenate([b[0] for b in self.buffer]), np.concatenate([b[1] for b in self.buffer]))
        self.buffer, self.buffered_bytes = [], 0
        return k, c

    def spill(self) -> None:
        k, c = self._take_buffer()
        if len(k) == 0:
            return
        i = len(self.runs)
        kp, cp = self.directory / f"{self.name}.run{i}.keys.npy", self.directory / f"{self.name}.run{i}.counts.npy"
        try:
            np.save(kp, k, allow_pickle=False)
            np.save(cp, c, allow_pickle=False)
        except OSError as e:
            raise ArlmError(f"cannot write a sorted run to {self.directory}: {e.strerror} (set TMPDIR to a roomier disk)") from None
        self.runs.append((kp, cp))

    def merged(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """All keys, sorted and unique, with their summed counts (int64 each). Removes the runs."""
        if not self.runs:
            return self._take_buffer()
        self.spill()
        keys = [np.load(kp, mmap_mode="r", allow_pickle=False) for kp, _ in self.runs]
        counts = [np.load(cp, mmap_mode="r", allow_pickle=False) for _, cp in self.runs]
        pos = [0] * len(keys)
        out_k, out_c = [], []
        while True:
            active = [r for r in range(len(keys)) if pos[r] < len(keys[r])]
            if not active:
                break
            # every key <= bound is in the blocks read now: no run holds a smaller one further on
            bound = min(keys[r][min(pos[r] + block, len(keys[r])) - 1] for r in active)
            pk, pc = [], []
            for r in active:
                end = pos[r] + int(np.searchsorted(keys[r][pos[r] : pos[r] + block], bound, side="right"))
                pk.append(np.asarray(keys[r][pos[r] : end]))
                pc.append(np.asarray(counts[r][pos[r] : end]))
                pos[r] = end
            k, c = _reduce(np.concatenate(pk), np.concatenate(pc))
            out_k.append(k)
            out_c.append(c)
        del keys, counts
        for kp, cp in self.runs:
            kp.unlink(missing_ok=True)
            cp.unlink(missing_ok=True)
        self.runs = []
        return np.concatenate(out_k), np.concatenate(out_c)


def fit_budgeted(config: NGramConfig, chunks: Iterable[np.ndarray], memory: int,
                 tmp_dir: str | Path | None = None, stats: dict | None = None) -> NGramModel:
    """Fit the same model as ``NGramModel.fit`` from a token stream, counting within ``memory`` bytes.

    Args:
        config: order and vocab of the model.
        chunks: int64 arrays whose concatenation is the token stream (documents
            ``[<bos>, …, <eos>]`` back to back); any chunk sizes, they are re-cut to the budget.
        memory: bytes of working memory for counting (the chunk being counted
            and the buffered counts); the finished model comes on top.
        tmp_dir: where the sorted runs go (default: the system temporary directory, ``TMPDIR``).
        stats: if given, filled with ``runs`` (sorted runs spilled per order), ``chunk_tokens`` and ``n_tokens``.

    Raises:
        ArlmError: order outside 1..10, ``vocab_size ** order`` beyond int64, no tokens, or a full disk.
    """
    N, V, bos = config.order, config.vocab_size, config.bos_id
    if not 1 <= N <= MAX_ORDER:
        raise ArlmError(f"n-gram order must be in 1..{MAX_ORDER}, got {N}")
    if V ** N >= 2**63:
        raise ArlmError(f"counting in a memory budget packs an n-gram into 64 bits, which needs vocab_size ** order "
                        f"< 2**63 (here {V} ** {N}); lower --order or count in memory (no --memory)")
    # a quarter of the budget for the chunk being counted; the buffered counts are
    # spilled at an eighth, as sorting them for the run takes about 2.5 times their size
    chunk_tokens = max(256, memory // (4 * BYTES_PER_TOKEN_ORDER * N))
    spill_at = memory // 8
    with tempfile.TemporaryDirectory(prefix="arlm-ngram-", dir=tmp_dir) as tmp:
        counters = [RunCounter(Path(tmp), f"order{n}") for n in range(1, N + 1)]
        carry = np.zeros(0, np.int64)  # the last N-1 tokens and their positions in their document
        carry_pos = np.zeros(0, np.int64)
        prev = -1  # position of the last token read in its document (a stream starts with <bos>)
        n_tokens = 0
        for chunk in _recut(chunks, chunk_tokens):
            n_tokens += len(chunk)
            idx = np.arange(len(chunk), dtype=np.int64)
            last_bos = np.maximum.accumulate(np.where(chunk == bos, idx, -1))
            pos = np.where(last_bos >= 0, idx - last_bos, prev + 1 + idx)
            prev = int(pos[-1])
            ext, ext_pos, L = np.concatenate([carry, chunk]), np.concatenate([carry_pos, pos]), len(carry)
            key = ext.copy()  # order 1
            for n in range(1, N + 1):
                if n > 1:
                    key[1:] = key[:-1] * V + ext[1:]  # packed n-gram ending at each position (garbage where invalid)
                valid = ext_pos[L:] >= n - 1
                k = key[L:][valid]
                if n == 1:  # <bos> at a document start is a key but never a predicted token
                    c = np.bincount(k, weights=(ext_pos[L:][valid] >= 1), minlength=V).astype(np.int64)
                    present = np.flatnonzero(np.bincount(k, minlength=V))
                    counters[0].add(present.astype(np.int64), c[present])
                else:
                    u, c = np.unique(k, return_counts=True)
                    counters[n - 1].add(u, c.astype(np.int64))
            carry, carry_pos = ext[len(ext) - (N - 1):], ext_pos[len(ext) - (N - 1):]
            if sum(c.buffered_bytes for c in counters) > spill_at:
                for c in counters:
                    c.spill()
        if n_tokens == 0:
            raise ArlmError("cannot fit an n-gram model on no tokens")
        runs = [len(c.runs) for c in counters]
        packed, raw = [], []
        for c in counters:
            block = max(1024, memory // (4 * 16 * max(1, len(c.runs))))
            k, r = c.merged(block)
            packed.append(k)
            raw.append(r)
    if stats is not None:
        stats.update(runs=runs, chunk_tokens=chunk_tokens, n_tokens=n_tokens)
    return NGramModel.from_adjusted_counts(config, *_model_tables(packed, raw, V, bos))


def _model_tables(packed: list[np.ndarray], raw: list[np.ndarray], V: int, bos: int):
    """Packed n-grams and raw counts of every order -> the node keys and adjusted counts of ``NGramModel``."""
    N = len(packed)
    keys, adjusted = [], []
    for n in range(1, N + 1):
        P = packed[n - 1]
        if n == 1:
            keys.append(P.copy())  # context node 0
        else:
            node = np.searchsorted(packed[n - 2], P // V)  # node id of the (n-1)-gram prefix
            keys.append(node * V + P % V)
        if n == N:
            adj = raw[n - 1].astype(np.float64)
        else:
            # continuation count: distinct (n+1)-grams whose last n tokens are this n-gram
            suffix = np.searchsorted(P, packed[n] % V**n)
            adj = np.bincount(suffix, minlength=len(P)).astype(np.float64)
            if n > 1:  # n-grams that start with <bos> have nothing to their left: raw counts
                first = P // V ** (n - 1) == bos
                adj[first] = raw[n - 1][first]
        adjusted.append(adj)
    return keys, adjusted


def _recut(chunks: Iterable[np.ndarray], size: int):
    """Re-cut a stream of arrays into arrays of ``size`` (the last may be shorter)."""
    pending: list[np.ndarray] = []
    have = 0
    for ch in chunks:
        ch = np.asarray(ch, dtype=np.int64)
        while len(ch):
            take = min(size - have, len(ch))
            pending.append(ch[:take])
            have += take
            ch = ch[take:]
            if have == size:
                yield np.concatenate(pending)
                pending, have = [], 0
    if have:
        yield np.concatenate(pending)

