"""Documents -> token ids with <bos>/<eos> -> training windows and batches."""

from __future__ import annotations

import numpy as np

from .vocab.base import Vocab


def encode_document(vocab: Vocab, text: str, eos: bool = True) -> list[int]:
    """``[<bos>] + vocab.encode(text) (+ [<eos>])``: how every document is fed to a model."""
    ids = [vocab.bos_id, *vocab.encode(text)]
    if eos:
        ids.append(vocab.eos_id)
    return ids


def encode_documents(vocab: Vocab, documents: list[str]) -> list[np.ndarray]:
    """Each document as an int64 array ``[<bos>, x_1 … x_n, <eos>]``."""
    return [np.asarray(encode_document(vocab, d), dtype=np.int64) for d in documents]
