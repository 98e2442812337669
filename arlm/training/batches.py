"""Training and val batches: encoded documents (:class:`TokenData`) and the random windows drawn from them.

Every batch comes from a seeded ``torch.Generator``, so the same seed draws
the same batches in any process (and, under DDP, on every rank: each rank
draws the whole global batch and keeps its slice, see ``arlm.training.distributed``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import ArlmError

IGNORE = -100  # target id of padding positions (F.cross_entropy's ignore_index)


class TokenData:
    """Encoded documents as one flat LongTensor and document offsets.

    ``ids``: LongTensor[N] (all documents, each ``[<bos>, ..., <eos>]``, concatenated),
    or an ``arlm.data.TokenStream`` over a token file on disk (``source`` then
    says how to reopen it: ``{"path", "val_fraction", "seed"}``);
    ``offsets``: LongTensor[n_docs + 1], or None with explicit ``starts`` and
    ``lengths`` (LongTensor[n_docs] each; documents need not be contiguous).
    """

    def __init__(self, ids, offsets: torch.Tensor | None, starts: torch.Tensor | None = None,
                 lengths: torch.Tensor | None = None, source: dict | None = None):
        self.ids = ids.long()
        self.source = source
        if offsets is not None:
            self.offsets = offsets.long()
            starts, lengths = self.offsets[:-1], self.offsets[1:] - self.offsets[:-1]
        self.starts = starts.long()  # [n_docs]
        self.lengths = lengths.long()  # [n_docs]

    @classmethod
    def from_documents(cls, vocab, docs: list[str]) -> "TokenData":
        from ..data import encode_document

        encoded = [encode_document(vocab, d) for d in docs]
        lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
        offsets = torch.zeros(len(encoded) + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(lengths, 0)
        flat = [i for e in encoded for i in e]
        return cls(torch.tensor(flat, dtype=torch.long), offsets)

    @property
    def n_docs(self) -> int:
        return self.lengths.shape[0]

    @property
    def n_tokens(self) -> int:
        return self.ids.shape[0]


def get_batch(data: TokenData, documents: str, batch_size: int, block_size: int, gen: torch.Generator):
    """A random training batch.

    ``file``: ``batch_size`` windows of ``block_size + 1`` tokens at uniform
    random offsets of the single document. ``lines``: ``batch_size`` random
    documents (a random window of those longer than ``block_size + 1``), padded
    to the longest; padded targets are ``IGNORE``.

    Returns:
        (x LongTensor[B, T], y LongTensor[B, T]) with ``y[:, t]`` the target after ``x[:, :t+1]``.
    """
    if documents == "file":
        n = data.n_tokens
        T = min(block_size, n - 1)
        starts = torch.randint(0, n - T, (batch_size,), generator=gen)  # [B]
        idx = starts[:, None] + torch.arange(T + 1)  # [B, T+1]
        chunk = data.ids[idx]
        return chunk[:, :-1], chunk[:, 1:]
    doc = torch.randint(0, data.n_docs, (batch_size,), generator=gen)  # [B]
    lens = data.lengths[doc]  # [B] tokens incl. <bos>, <eos>
    span = torch.clamp(lens - 1, max=block_size)  # [B] predicted tokens per row
    room = lens - 1 - span  # [B] possible extra offset for long documents
    off = (torch.rand(batch_size, generator=gen) * (room + 1).double()).long().clamp(max=room)  # [B]
    T = int(span.max())
    ar = torch.arange(T + 1)  # [T+1]
    idx = (data.starts[doc] + off)[:, None] + ar  # [B, T+1]
    valid = ar[None, :] <= span[:, None]  # [B, T+1]
    chunk = torch.where(valid, data.ids[idx.clamp(max=data.n_tokens - 1)], 0)
    x = chunk[:, :-1]
    y = torch.where(valid[:, 1:], chunk[:, 1:], IGNORE)
    return x, y


#: Up to this many windows an epoch's order is a uniformly random permutation (``torch.randperm``); above (a
#: large token directory), the bijection j -> (a j + b) mod W with random a coprime to W and random b.
EXACT_PERMUTATION_MAX = 1 << 24


class EpochOrder:
    """Training windows in epochs (``--batch-order epochs``, documents ``file``): epoch e cuts the text into
    ``W`` windows of ``block_size + 1`` tokens starting at ``off_e + j block_size`` (j < W, ``off_e`` a random
    offset below ``block_size``) and visits each once, in a random order ``perm_e``; the batch of step s is
    windows ``s B .. s B + B - 1`` of that sequence of epochs. Both are drawn from a generator seeded with
    ``seed`` and e, so a batch depends only on its step: a resume draws what the run would have drawn.
    """

    def __init__(self, data: TokenData, block_size: int, seed: int):
        self.n = data.n_tokens
        self.T = min(block_size, self.n - 1)
        self.W = max(1, (self.n - self.T) // self.T)  # windows per epoch (every offset fits)
        self.seed = seed
        self._epochs: dict[int, tuple] = {}

    def _epoch(self, e: int) -> tuple:
        """(offset, the order: a permutation [W], or (a, b) of the affine bijection) of epoch e."""
        if e not in self._epochs:
            if len(self._epochs) > 2:
                self._epochs.pop(min(self._epochs))
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
            off = int(torch.randint(0, self.T, (1,), generator=gen))
            if self.W <= EXACT_PERMUTATION_MAX:
                order = torch.randperm(self.W, generator=gen)
            else:
                a = 0
                while math.gcd(a, self.W) != 1:
                    a = int(torch.randint(1, self.W, (1,), generator=gen))
                order = (a, int(torch.randint(0, self.W, (1,), generator=gen)))
            self._epochs[e] = (off, order)
        return self._epochs[e]

    def batch(self, data: TokenData, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y LongTensor[B, T]) of optimiser step ``step`` (0-based), as :func:`get_batch` returns them."""
        idx = step * batch_size + torch.arange(batch_size)  # [B] window numbers across epochs
        starts = torch.empty(batch_size, dtype=torch.long)
        for e in torch.unique(idx // self.W).tolist():
            rows = idx // self.W == e
            off, order = self._epoch(e)
            j = idx[rows] % self.W
            starts[rows] = off + (order[j] if isinstance(order, torch.Tensor) else (order[0] * j + order[1]) % self.W) * self.T
        starts.clamp_(max=self.n - self.T - 1)
        chunk = data.ids[starts[:, None] + torch.arange(self.T + 1)]  # [B, T+1]
        return chunk[:, :-1], chunk[:, 1:]


def eval_batches(data: TokenData, documents: str, batch_size: int, block_size: int, n_batches: int, seed: int):
    """A fixed list of val batches (drawn with their own seeded generator).

    For a small ``lines`` val set every document is used once instead.
    """
    gen = torch.Generator().manual_seed(seed + 7919)
    if documents == "lines" and data.n_docs <= n_batches * batch_size:
        out = []
        for s in range(0, data.n_docs, batch_size):
            # deterministic: every document of the slice, first window
            span = torch.clamp(data.lengths[s : s + batch_size] - 1, max=block_size)
            ar = torch.arange(int(span.max()) + 1)
            idx = data.starts[s : s + batch_size, None] + ar
            valid = ar[None, :] <= span[:, None]
            chunk = torch.where(valid, data.ids[idx.clamp(max=data.n_tokens - 1)], 0)
            out.append((chunk[:, :-1], torch.where(valid[:, 1:], chunk[:, 1:], IGNORE)))
        return out
    return [get_batch(data, documents, batch_size, block_size, gen) for _ in range(n_batches)]


def _token_header_digest(path) -> str:
    """SHA-256 of a token directory's header (counts, dtype, vocab): it changes when the directory is re-tokenized."""
    import hashlib

    from ..paths import TOKENS_HEADER

    return hashlib.sha256((Path(path) / TOKENS_HEADER).read_bytes()).hexdigest()


def token_data_from_dir(path, val_fraction: float = 0.1, seed: int = 1337, header_sha256: str | None = None):
    """Train and val :class:`TokenData` over the token directory ``path`` (``arlm tokenize``),
    split as ``arlm.data.split_token_dir``; returns ``(train, val or None, TokenDir)``.

    ``header_sha256`` (a resume): the digest recorded when the run started; a
    directory re-tokenized since then is refused with ArlmError.
    """
    from ..token_dir import TokenDir, is_token_dir, split_token_dir

    if header_sha256 is not None:
        if not is_token_dir(path):
            raise ArlmError(f"cannot resume: the run's token directory {path} is gone (or no longer a token directory)")
        if _token_header_digest(path) != header_sha256:
            raise ArlmError(f"cannot resume: the token directory {path} was re-tokenized since the run started "
                            "(its tokens.json changed); start a new run")

    tokens = TokenDir(path)
    train, val = split_token_dir(tokens, val_fraction, seed)
    source = {"path": str(Path(path).resolve()), "val_fraction": val_fraction, "seed": seed,
              "header_sha256": _token_header_digest(path)}

    def make(part):
        return None if part is None else TokenData(part[0], None, starts=part[1], lengths=part[2], source=source)

    return make(train), make(val), tokens

