"""The vocabulary protocol shared by every vocab kind.

A vocab maps text to ``token_ids`` (a list of ints in ``[0, vocab_size)``) and
back. ``vocab_size`` counts the two specials ``<bos>`` and ``<eos>``; ``encode``
never produces them (literal text ``"<eos>"`` is ordinary text) and ``decode``
drops them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

BOS = "<bos>"
EOS = "<eos>"


@runtime_checkable
class Vocab(Protocol):
    kind: str  # "char", "byte" or "bpe"
    vocab_size: int
    bos_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]:
        """token_ids of ``text`` without specials. Raises ArlmError for text the vocab cannot encode."""
        ...

    def decode(self, token_ids: list[int]) -> str:
        """Text of ``token_ids``; specials are dropped."""
        ...

    def token_text(self, token_id: int) -> str:
        """A printable, unique name of one token (``<eos>`` for the end token)."""
        ...

    def save(self, directory: Path) -> None:
        """Write the vocab file(s) into ``directory`` atomically."""
        ...
