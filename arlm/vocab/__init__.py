"""Vocabularies: ``char``, ``byte``, ``bpe`` (Hugging Face tokenizers) and ``word`` (whitespace tokens + ``<unk>``)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ArlmError
from .base import BOS, EOS, Vocab
from .byte import ByteVocab
from .char import CharVocab
from .word import WordVocab

VOCAB_KINDS = ("char", "byte", "bpe", "word")


def _bpe():
    from .bpe import BPEVocab

    return BPEVocab


def train_vocab(kind: str, documents: list[str], vocab_size: int | None = None) -> Vocab:
    """Build a vocab of ``kind`` from the training documents.

    Raises:
        ArlmError: unknown kind.
    """
    if kind == "char":
        return CharVocab.train(documents)
    if kind == "byte":
        return ByteVocab.train(documents)
    if kind == "bpe":
        return _bpe().train(documents, vocab_size=vocab_size)
    if kind == "word":
        return WordVocab.train(documents, vocab_size=vocab_size)
    raise ArlmError(f"unknown vocab {kind!r}: choose one of {', '.join(VOCAB_KINDS)}")


def load_vocab(kind: str, directory: Path) -> Vocab:
    """Load the vocab of ``kind`` saved in ``directory``."""
    if kind == "char":
        return CharVocab.load(directory)
    if kind == "byte":
        return ByteVocab.load(directory)
    if kind == "bpe":
        return _bpe().load(directory)
    if kind == "word":
        return WordVocab.load(directory)
    raise ArlmError(f"unknown vocab {kind!r} in {directory}")


__all__ = ["BOS", "EOS", "Vocab", "CharVocab", "ByteVocab", "WordVocab", "train_vocab", "load_vocab", "VOCAB_KINDS"]
