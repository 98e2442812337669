"""The vocabulary protocol shared by every vocab kind.

A vocab maps text to ``token_ids`` (a list of ints in ``[0, vocab_size)``) and
back. ``vocab_size`` counts the two specials ``<bos>`` and ``<eos>``; ``encode``
never produces them (literal text ``"<eos>"`` is ordinary text) and ``decode``
drops them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from ..errors import ArlmError

BOS = "<bos>"
EOS = "<eos>"


def is_surrogate(c: str) -> bool:
    return 0xD800 <= ord(c) <= 0xDFFF


def surrogate_error(text: str, pos: int) -> ArlmError:
    """The one error every vocab raises for a surrogate code point at ``text[pos]``.

    U+DC80..U+DCFF is how Python hands over a byte that is not UTF-8 in a
    command-line argument or file name (a surrogate escape, PEP 383): only the
    byte vocab scores it, as that byte. Any other surrogate is a lone half of a
    UTF-16 pair, which has no bytes at all.
    """
    c = text[pos]
    if 0xDC80 <= ord(c) <= 0xDCFF:
        return ArlmError(
            f"byte 0x{ord(c) - 0xDC00:02X} at position {pos} is not UTF-8 text (an undecodable byte, e.g. of a "
            "command-line argument); only a byte-vocab model (--vocab byte) scores raw bytes"
        )
    return ArlmError(f"character U+{ord(c):04X} at position {pos} is a lone surrogate, which is not text")


def text_bytes(text: str) -> bytes:
    """The bytes of ``text``: its UTF-8 encoding, with each surrogate escape
    (U+DC80..U+DCFF, see :func:`surrogate_error`) turned back into the original
    byte, as ``os.fsencode`` does for command-line arguments.

    Raises:
        ArlmError: ``text`` holds a lone surrogate (not an escape), which has no bytes.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as e:
        raise surrogate_error(text, e.start) from None


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
