"""A token directory written by ``arlm tokenize`` (``data.tokenize_file``), read through ``np.memmap``.

``TokenDir`` opens one, ``TokenStream`` reads a document range of it as one stream of ids,
``split_token_dir`` draws the train/val split; nothing is loaded whole.
"""

from __future__ import annotations

import numpy as np

from .paths import TOKENS_HEADER

TOKENS_FORMAT = "arlm-tokens"


def is_token_dir(path) -> bool:
    """True when ``path`` is a directory written by ``arlm tokenize``."""
    from pathlib import Path

    return Path(path).is_dir() and (Path(path) / TOKENS_HEADER).is_file()


def token_dtype(vocab_size: int):
    """uint16 when every id fits (vocab_size <= 65536), else uint32."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


class TokenDir:
    """A token directory opened for reading: ``ids`` is a read-only ``np.memmap`` (uint16/uint32[n_tokens]),
    ``offsets`` a memmap int64[n_documents + 1], ``header`` the parsed ``tokens.json``.

    Raises:
        ArlmError: not a token directory, or files whose sizes disagree with the header.
    """

    def __init__(self, path):
        import json
        from pathlib import Path

        from .errors import ArlmError

        self.path = Path(path)
        if not is_token_dir(self.path):
            raise ArlmError(f"{self.path} is not a token directory ({TOKENS_HEADER} is missing): run arlm tokenize")
        try:
            h = json.loads((self.path / TOKENS_HEADER).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArlmError(f"{self.path / TOKENS_HEADER} is corrupt: {e}") from None
        if h.get("format") != TOKENS_FORMAT:
            raise ArlmError(f"{self.path / TOKENS_HEADER} is not an arlm token header")
        self.header = h
        tok, off = self.path / h["tokens_file"], self.path / h["offsets_file"]
        dtype = np.dtype(h["dtype"]).newbyteorder("<")
        for f, size in ((tok, h["n_tokens"] * dtype.itemsize), (off, (h["n_documents"] + 1) * 8)):
            if not f.is_file() or f.stat().st_size != size:
                raise ArlmError(f"{f} is missing or truncated (expected {size} bytes): run arlm tokenize again")
        self.ids = np.memmap(tok, dtype=dtype, mode="r")
        self.offsets = np.memmap(off, dtype="<i8", mode="r")
        self.documents = h["documents"]

    @property
    def n_tokens(self) -> int:
        return int(self.header["n_tokens"])

    @property
    def n_documents(self) -> int:
        return int(self.header["n_documents"])

    def vocab(self):
        from .vocab import load_vocab

        return load_vocab(self.header["vocab"], self.path)

    @property
    def tokens_path(self):
        return self.path / self.header["tokens_file"]

    def open_ids(self) -> np.ndarray:
        """A fresh read-only memmap of the ids (see :class:`TokenStream` for why fresh), advised
        for random access (no read-ahead around each page touched)."""
        import mmap

        mm = np.memmap(self.tokens_path, dtype=self.ids.dtype, mode="r")
        raw = getattr(mm, "_mmap", None)
        if raw is not None and hasattr(raw, "madvise") and hasattr(mmap, "MADV_RANDOM"):
            raw.madvise(mmap.MADV_RANDOM)
        return mm

    def iter_chunks(self, chunk_tokens: int, start: int = 0, stop: int | None = None):
        """Yield int64 copies of ``ids[start:stop]`` in pieces of at most ``chunk_tokens``.

        Read with plain file reads, not through the memmap: pages of a mapping
        stay in the process's resident set, so a pass over a mapped file would
        count the whole file as resident memory.
        """
        stop = self.n_tokens if stop is None else stop
        dtype = self.ids.dtype
        with open(self.tokens_path, "rb") as f:
            f.seek(start * dtype.itemsize)
            for a in range(start, stop, chunk_tokens):
                yield np.fromfile(f, dtype=dtype, count=min(chunk_tokens, stop - a)).astype(np.int64)


class TokenStream:
    """Read-only token ids ``head + ids[start:stop] + tail`` over a memmap, indexed like a LongTensor.

    ``stream[idx]`` for a LongTensor (any shape), an int or a slice returns a
    LongTensor of the same shape; only the pages touched are read from disk.
    ``ids`` is an array, or a callable returning one: a :class:`TokenDir`'s
    ``open_ids``, which maps the file afresh for every batch (as nanoGPT does):
    the kernel reads ahead around every page touched and the pages of a
    mapping stay resident until it is closed, so one long-lived mapping would
    grow to the whole file over a few hundred random batches.
    """

    def __init__(self, ids, start: int, stop: int, head=(), tail=()):
        self.mm, self.start, self.stop = ids, int(start), int(stop)
        self.head = np.asarray(head, dtype=np.int64)
        self.tail = np.asarray(tail, dtype=np.int64)
        self.n = len(self.head) + (self.stop - self.start) + len(self.tail)
        self.shape = (self.n,)

    def long(self) -> "TokenStream":
        return self

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx):
        import torch

        if isinstance(idx, slice):
            a, b, _ = idx.indices(self.n)
            idx = np.arange(a, b, dtype=np.int64)
        elif isinstance(idx, torch.Tensor):
            idx = idx.numpy()
        i = np.asarray(idx, dtype=np.int64)
        h, body = len(self.head), self.stop - self.start
        mm = self.mm() if callable(self.mm) else self.mm
        out = np.asarray(mm[self.start + np.clip(i - h, 0, max(body - 1, 0))], dtype=np.int64)
        del mm
        if h:
            out = np.where(i < h, self.head[np.clip(i, 0, h - 1)], out)
        if len(self.tail):
            out = np.where(i >= h + body, self.tail[np.clip(i - h - body, 0, len(self.tail) - 1)], out)
        return torch.from_numpy(np.ascontiguousarray(out))


def split_token_dir(tokens: TokenDir, val_fraction: float = 0.1, seed: int = 1337):
    """Train and val parts of a token directory, as ``corpus.train_val_split`` splits the text.

    ``file`` mode: val is the last ``val_fraction`` of the document's tokens
    (train = the first ``int((1 - f) * n)``; for a char vocab exactly the text
    split), each part framed by ``<bos>``/``<eos>`` without copying the ids.
    ``lines`` mode: the same seeded shuffle of documents as the text split.

    Returns:
        ``(train, val)``, each ``(TokenStream, starts LongTensor[n_docs], lengths LongTensor[n_docs])``
        or ``val`` None when ``val_fraction`` is 0 (or leaves no val token).

    Raises:
        ArlmError: ``val_fraction`` outside [0, 1), or too little data to split.
    """
    import random

    import torch

    from .errors import ArlmError

    if not 0.0 <= val_fraction < 1.0:
        raise ArlmError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    bos, eos = tokens.header["bos_id"], tokens.header["eos_id"]
    if tokens.documents == "file":
        n = tokens.n_tokens - 2  # the document's tokens without <bos>, <eos>
        k = int((1.0 - val_fraction) * n)
        if k < 1:
            raise ArlmError("too little text to split into train and val")
        train = TokenStream(tokens.open_ids, 0, 1 + k, tail=[eos])
        parts = [(train, torch.tensor([0]), torch.tensor([k + 2]))]
        if k < n:
            val = TokenStream(tokens.open_ids, 1 + k, tokens.n_tokens, head=[bos])
            parts.append((val, torch.tensor([0]), torch.tensor([n - k + 2])))
        else:
            parts.append(None)
        return parts[0], parts[1]
    offsets = torch.from_numpy(np.array(tokens.offsets, dtype=np.int64))
    n_docs = tokens.n_documents
    whole = TokenStream(tokens.open_ids, 0, tokens.n_tokens)
    lengths = offsets[1:] - offsets[:-1]
    if val_fraction == 0.0:
        return (whole, offsets[:-1], lengths), None
    order = list(range(n_docs))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(val_fraction * n_docs))
    if n_val >= n_docs:
        raise ArlmError(f"too few documents ({n_docs}) to split into train and val")
    order_t = torch.tensor(order, dtype=torch.long)
    tr, va = order_t[:-n_val], order_t[-n_val:]
    return (whole, offsets[tr], lengths[tr]), (whole, offsets[va], lengths[va])
