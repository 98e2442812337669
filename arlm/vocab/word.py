"""Word vocabulary: whitespace-separated tokens, ``<unk>`` for words outside the vocab.

The vocabulary of most n-gram models in the wild (KenLM's ``lmplz``, SRILM):
a text is the sequence of its words, split on ASCII whitespace (space, tab,
newline, vertical tab, form feed, carriage return: the characters KenLM's
query splits on), and a word not in the vocab becomes ``<unk>``, as KenLM
maps it. ``decode`` joins words with single spaces.

Unlike the char, byte and BPE vocabularies this one is not exact: ``"a  b"``,
``"a\\nb"`` and ``" a b "`` encode to the same tokens, and every unknown word
to the same ``<unk>``, so a model's probabilities are over *token sequences*,
not over strings (p("a b") is the probability of the words a, b, not of that
exact text). ``bits_per_char`` still divides the nll by the characters of the
text scored, but compare word models with each other by perplexity.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from ..errors import ArlmError
from ..io import atomic_write_text
from ..paths import VOCAB_FILE
from .base import BOS, EOS

UNK = "<unk>"
# the ASCII whitespace KenLM's query splits on; Python's str.split() would also split on U+00A0 etc.
_SPLIT = re.compile(r"[ \t\n\v\f\r]+")
N_SPECIALS = 3  # <unk>, <bos>, <eos>


def split_words(text: str) -> list[str]:
    """The words of ``text``: maximal runs of characters other than ASCII whitespace."""
    return [w for w in _SPLIT.split(text) if w]


class WordVocab:
    """The words of the training text (sorted), then ``<unk>``, ``<bos>``, ``<eos>``.

    ``vocab_size = n_words + 3``; ``unk_id = n_words``, ``bos_id = n_words + 1``,
    ``eos_id = n_words + 2``. The literal word ``<unk>`` in a text is the
    unknown token (KenLM does the same); ``<bos>``/``<eos>`` typed in a text are
    ordinary words.
    """

    kind = "word"
    filename = VOCAB_FILE

    def __init__(self, words: list[str]):
        """Raises ArlmError: repeated words, an empty word, a word holding whitespace, or ``<unk>`` among them."""
        if len(set(words)) != len(words):
            raise ArlmError("a word vocab needs distinct words")
        for w in words:
            if not w or _SPLIT.search(w) or w == UNK:
                raise ArlmError(f"{w!r} cannot be a word of a word vocab (empty, holds whitespace, or is {UNK})")
        self.words = list(words)
        self.stoi = {w: i for i, w in enumerate(self.words)}
        self.unk_id = len(self.words)
        self.bos_id = len(self.words) + 1
        self.eos_id = len(self.words) + 2
        self.vocab_size = len(self.words) + N_SPECIALS
        self.stoi[UNK] = self.unk_id

    @classmethod
    def train(cls, documents: list[str], vocab_size: int | None = None) -> "WordVocab":
        """The distinct words of ``documents``; with ``vocab_size`` only the ``vocab_size - 3`` most
        frequent (ties broken by the word), the others becoming ``<unk>``.

        Raises:
            ArlmError: no words in the documents, or ``vocab_size`` < 4.
        """
        counts = Counter(w for d in documents for w in split_words(d))
        counts.pop(UNK, None)
        if not counts:
            raise ArlmError("cannot build a word vocab from text with no words")
        if vocab_size is None:
            return cls(sorted(counts))
        if vocab_size < N_SPECIALS + 1:
            raise ArlmError(f"a word vocab needs --vocab-size of at least {N_SPECIALS + 1}, got {vocab_size}")
        kept = sorted(counts, key=lambda w: (-counts[w], w))[: vocab_size - N_SPECIALS]
        return cls(sorted(kept))

    def encode(self, text: str) -> list[int]:
        """Token ids of the words of ``text`` (no specials); unknown words give ``unk_id``."""
        if not isinstance(text, str):
            raise ArlmError(f"can only encode text (str), got {type(text).__name__}")
        stoi, unk = self.stoi, self.unk_id
        return [stoi.get(w, unk) for w in split_words(text)]

    def decode(self, token_ids) -> str:
        """The words joined by single spaces; ``<bos>``/``<eos>`` dropped, unknown words as ``<unk>``."""
        n = len(self.words)
        return " ".join(self.words[i] if i < n else UNK for i in token_ids if i < n or i == self.unk_id)

    def token_text(self, token_id: int) -> str:
        if not 0 <= token_id < self.vocab_size:
            raise ArlmError(f"token id {token_id} is outside this word vocab (size {self.vocab_size})")
        if token_id == self.bos_id:
            return BOS
        if token_id == self.eos_id:
            return EOS
        if token_id == self.unk_id:
            return UNK
        return self.words[token_id]

    def save(self, directory: Path) -> None:
        atomic_write_text(Path(directory) / self.filename,
                          json.dumps({"kind": "word", "words": self.words}, ensure_ascii=False))

    @classmethod
    def load(cls, directory: Path) -> "WordVocab":
        data = json.loads((Path(directory) / cls.filename).read_text(encoding="utf-8"))
        return cls(data["words"])
