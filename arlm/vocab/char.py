"""Character vocabulary: the distinct characters of the training text plus <bos>, <eos>."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ArlmError
from ..io import atomic_write_text
from ..paths import VOCAB_FILE
from .base import BOS, EOS, is_surrogate, surrogate_error


class CharVocab:
    """The characters of the training text, sorted by code point, then ``<bos>``, ``<eos>``.

    ``vocab_size = n_chars + 2``. Encoding a character outside the vocab raises
    ArlmError naming it (U+ code and position) and suggesting ``--vocab byte``.
    """

    kind = "char"
    filename = VOCAB_FILE

    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ArlmError("a char vocab needs distinct single characters")
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.bos_id = len(self.chars)
        self.eos_id = len(self.chars) + 1
        self.vocab_size = len(self.chars) + 2

    @classmethod
    def train(cls, documents: list[str]) -> "CharVocab":
        chars = sorted(set().union(*map(set, documents)))
        if not chars:
            raise ArlmError("cannot build a char vocab from empty text")
        return cls(chars)

    def encode(self, text: str) -> list[int]:
        stoi = self.stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            bad = next((i for i, c in enumerate(text) if is_surrogate(c)), None)
            if bad is not None:  # not text at all: the error every vocab gives
                raise surrogate_error(text, bad) from None
            pos = next(i for i, c in enumerate(text) if c not in stoi)
            c = text[pos]
            raise ArlmError(
                f"character {c!r} (U+{ord(c):04X}) at position {pos} is not in this model's char vocab; "
                "train with --vocab byte to accept any text"
            ) from None

    def decode(self, token_ids) -> str:
        n = len(self.chars)
        return "".join(self.chars[i] for i in token_ids if i < n)

    def token_text(self, token_id: int) -> str:
        if token_id == self.bos_id:
            return BOS
        if token_id == self.eos_id:
            return EOS
        return self.chars[token_id]

    def save(self, directory: Path) -> None:
        atomic_write_text(Path(directory) / self.filename, json.dumps({"kind": "char", "chars": self.chars}, ensure_ascii=False))

    @classmethod
    def load(cls, directory: Path) -> "CharVocab":
        data = json.loads((Path(directory) / cls.filename).read_text(encoding="utf-8"))
        return cls(data["chars"])
