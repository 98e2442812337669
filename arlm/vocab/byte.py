"""Byte vocabulary: the 256 UTF-8 byte values plus <bos>, <eos>; any text, no unknowns."""

from __future__ import annotations

import json
from pathlib import Path

from ..io import atomic_write_text
from ..paths import VOCAB_FILE
from .base import BOS, EOS, text_bytes


class ByteVocab:
    """Token id ``b`` is the byte ``b`` (0..255); ``bos_id = 256``, ``eos_id = 257``.

    Text given as ``str`` is scored as its UTF-8 bytes; an argument that arrived
    with bytes that are not UTF-8 (``arlm score DIR $'it\\x92s'``) is scored as
    those very bytes (Python keeps them as surrogate escapes, PEP 383).

    ``decode`` joins the bytes and decodes UTF-8 with replacement, so a sample
    cut inside a multi-byte character still gives text.
    """

    kind = "byte"
    filename = VOCAB_FILE
    bos_id = 256
    eos_id = 257
    vocab_size = 258

    @classmethod
    def train(cls, documents: list[str]) -> "ByteVocab":
        return cls()

    def encode(self, text: str) -> list[int]:
        """The UTF-8 bytes of ``text``; a surrogate escape (an undecodable byte of a
        command-line argument, U+DC80..U+DCFF) is that original byte.

        Raises:
            ArlmError: a lone surrogate, which has no bytes (the same error as every vocab).
        """
        return list(text_bytes(text))

    def decode(self, token_ids) -> str:
        return bytes(i for i in token_ids if i < 256).decode("utf-8", errors="replace")

    def token_text(self, token_id: int) -> str:
        if token_id == self.bos_id:
            return BOS
        if token_id == self.eos_id:
            return EOS
        if 0x20 <= token_id < 0x7F:
            return chr(token_id)
        return f"<0x{token_id:02X}>"

    def save(self, directory: Path) -> None:
        atomic_write_text(Path(directory) / self.filename, json.dumps({"kind": "byte"}))

    @classmethod
    def load(cls, directory: Path) -> "ByteVocab":
        return cls()
