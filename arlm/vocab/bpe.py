"""Byte-level BPE vocabulary trained on the user's text with Hugging Face ``tokenizers``.

Byte-pair encoding (Sennrich, Haddow and Birch 2016, "Neural Machine
Translation of Rare Words with Subword Units") starts from an alphabet of
symbols and repeatedly merges the most frequent adjacent pair. Byte-level BPE
(GPT-2: Radford et al. 2019, "Language Models are Unsupervised Multitask
Learners") runs the merges over the UTF-8 *bytes* of the text, after splitting
it into pieces with GPT-2's regular expression, so the base alphabet is the
256 byte values and every Unicode string encodes without unknowns; pieces
longer than ``MAX_PIECE_BYTES`` bytes are cut, so training and encoding take
time proportional to the text even without whitespace. Training
and encoding are done by the Hugging Face ``tokenizers`` library
(https://huggingface.co/docs/tokenizers): ``models.BPE`` with the
``ByteLevel`` pre-tokenizer and decoder, trained by ``BpeTrainer``.

Token ids: ``<bos>`` is id 0 and ``<eos>`` is id 1 (the trainer's special
tokens come first, as in Hugging Face tokenizers); the 256 byte tokens and the
learnt merges follow. ``vocab_size`` counts both specials.

Literal text such as ``"<eos>"`` is ordinary text: ``encode`` runs a copy of
the tokenizer that has no added tokens, so its special-token matcher cannot cut
``<eos>`` out of the input, and the GPT-2 pre-tokenizer splits ``<eos>`` into
the pieces ``<``, ``eos``, ``>``, which no merge can join. The saved
``tokenizer.json`` is an ordinary Hugging Face tokenizer file with ``<bos>``
and ``<eos>`` as special added tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from ..errors import ArlmError
from ..io import atomic_write_text
from ..paths import TOKENIZER_FILE
from .base import BOS, EOS, is_surrogate, surrogate_error

N_SPECIALS = 2
MIN_VOCAB_SIZE = 256 + N_SPECIALS
DEFAULT_VOCAB_SIZE = 1024

# Every byte value, some control and format characters, and multi-byte text: a
# loaded tokenizer must give back exactly this string, or it is refused.
_PROBE = "".join(map(chr, range(256))) + " héllo\r\n\tzażółć 日本語 \u0301 \u200d 🎉👩\u200d💻 <eos><bos> \ufffd"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters (the ByteLevel alphabet)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


_BYTE_OF_CHAR = {c: b for b, c in bytes_to_unicode().items()}


def _name_of_bytes(data: bytes) -> str:
    """The text of ``data``, with each byte that is not part of valid UTF-8 written ``<0xNN>``.

    A partial multi-byte character (a token may end inside one) is thus shown
    by its bytes, so different tokens never share a name.
    """
    out = []
    while data:
        try:
            out.append(data.decode("utf-8"))
            break
        except UnicodeDecodeError as e:
            out.append(data[: e.start].decode("utf-8"))
            out.extend(f"<0x{b:02X}>" for b in data[e.start : e.end])
            data = data[e.end :]
    return "".join(out)


#: The longest piece (in bytes) the pre-tokenizer hands to BPE. GPT-2's regex alone keeps a run of letters
#: or digits whole, and the trainer's cost grows with the square of a piece's length: a line of DNA or
#: minified JSON would take quadratic time. No token is longer than this.
MAX_PIECE_BYTES = 64


def pre_tokenizer():
    """GPT-2's byte-level pre-tokenizer (regex pieces, bytes as printable characters), then every piece cut
    into runs of at most ``MAX_PIECE_BYTES`` bytes (lossless: the pieces still concatenate to the text)."""
    return pre_tokenizers.Sequence([
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        pre_tokenizers.Split(Regex(f"[\\s\\S]{{1,{MAX_PIECE_BYTES}}}"), behavior="isolated"),
    ])


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


class BPEVocab:
    """A byte-level BPE vocab: ``<bos>`` (id 0), ``<eos>`` (id 1), the 256 bytes, then the learnt merges.

    Build one with ``BPEVocab.train(documents, vocab_size)`` or
    ``BPEVocab.load(directory)``; ``save(directory)`` writes ``tokenizer.json``.

    ``encode`` gives the tokenizer's canonical segmentation (GPT-2's
    pre-tokenizer regex, then the merges in the order learnt) and never a
    special; ``decode`` drops specials and is the exact inverse of ``encode``
    for any string. Encoding is not additive over concatenation: ``encode(a +
    b)`` may differ from ``encode(a) + encode(b)`` (both decode to ``a + b``);
    ``encode_pair`` is the boundary policy for conditional scoring.
    """

    kind = "bpe"
    filename = TOKENIZER_FILE

    def __init__(self, tokenizer: Tokenizer):
        """Wrap a trained byte-level ``tokenizers.Tokenizer`` holding ``<bos>`` and ``<eos>`` as special tokens.

        Raises:
            ArlmError: the tokenizer lacks the specials, or does not encode and
                decode every string exactly (not byte-level).
        """
        bos_id, eos_id = tokenizer.token_to_id(BOS), tokenizer.token_to_id(EOS)
        specials = {t.content for t in tokenizer.get_added_tokens_decoder().values() if t.special}
        if bos_id is None or eos_id is None or not {BOS, EOS} <= specials:
            raise ArlmError(f"a BPE tokenizer needs {BOS} and {EOS} as special tokens")
        self._tokenizer = tokenizer
        # The copy used by encode has no added tokens, so literal "<eos>" in text is never matched as the special.
        spec = json.loads(tokenizer.to_str())
        spec["added_tokens"] = []
        spec["post_processor"] = None
        spec["truncation"] = None
        spec["padding"] = None
        self._encoder = Tokenizer.from_str(json.dumps(spec))
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self._names = self._token_names()
        try:
            exact = self.decode(self.encode(_PROBE)) == _PROBE
        except Exception:  # noqa: BLE001 - any failure here means the tokenizer is unusable
            exact = False
        if not exact:
            raise ArlmError("this tokenizer does not encode and decode every string exactly; arlm needs a byte-level BPE")

    def to_json(self) -> str:
        """The ``tokenizers`` JSON of this vocab (compact), e.g. to build another tokenizer from it."""
        return self._tokenizer.to_str()

    def _token_names(self) -> list[str]:
        names: list[str] = []
        seen = {BOS, EOS}
        for i in range(self.vocab_size):
            if i == self.bos_id:
                names.append(BOS)
                continue
            if i == self.eos_id:
                names.append(EOS)
                continue
            token = self._tokenizer.id_to_token(i)
            if token is None or any(c not in _BYTE_OF_CHAR for c in token):
                name = f"<token {i}>"
            else:
                name = _name_of_bytes(bytes(_BYTE_OF_CHAR[c] for c in token))
            if name in seen:  # cannot happen for a tokenizer trained here; keeps names unique for any file
                name = f"<token {i}>"
            seen.add(name)
            names.append(name)
        return names

    @classmethod
    def train(cls, documents: list[str], vocab_size: int | None = None) -> "BPEVocab":
        """Learn a byte-level BPE vocab of at most ``vocab_size`` tokens (specials included) from ``documents``.

        Each document is pre-tokenized on its own, as ``encode`` will see it.
        The default, 1024, suits corpora of about a megabyte: on
        tinyshakespeare (1.1 MB) it gives about 2.4 characters per token (1.9
        at 512, 2.9 at 2048), the last merges learnt still occur about a
        hundred times each, so a small model sees every token often enough,
        and the embedding and output layers stay small. GPT-2's 50257 would
        leave most tokens of such a corpus rare or unseen. A pair must occur at
        least twice to be merged, so a small corpus may give fewer tokens than
        asked for; ``vocab_size`` is then the number actually learnt.

        Raises:
            ArlmError: ``vocab_size`` is not an integer of at least 258 (256
                bytes + ``<bos>`` + ``<eos>``), or the documents hold no text.
        """
        if vocab_size is None:
            vocab_size = DEFAULT_VOCAB_SIZE
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
            raise ArlmError(
                f"BPE vocab size must be an integer of at least {MIN_VOCAB_SIZE} (256 bytes + {BOS} + {EOS}), "
                f"got {vocab_size!r}"
            )
        if not any(documents):
            raise ArlmError("cannot train a BPE vocab on empty text")
        tokenizer = Tokenizer(models.BPE())
        # add_prefix_space=False: no space is invented before the text, so decode(encode(x)) == x.
        tokenizer.pre_tokenizer = pre_tokenizer()
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=[BOS, EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen in training or not
            show_progress=False,
        )
        tokenizer.train_from_iterator(documents, trainer=trainer, length=len(documents))
        return cls(tokenizer)

    def encode(self, text: str) -> list[int]:
        """The canonical token ids of ``text`` (no specials); any string encodes.

        One call encodes the whole text (a long document in file mode is a
        single call, about a second per megabyte on one CPU core).

        Raises:
            ArlmError: ``text`` holds a lone surrogate, which has no UTF-8 form.
        """
        try:
            return self._encoder.encode(text, add_special_tokens=False).ids
        except Exception as e:
            raise self._encode_error(text, e) from None

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """``[encode(t) for t in texts]``, computed in parallel by ``tokenizers``."""
        try:
            return [e.ids for e in self._encoder.encode_batch(list(texts), add_special_tokens=False)]
        except Exception as e:
            raise self._encode_error("".join(t for t in texts if isinstance(t, str)), e) from None

    @staticmethod
    def _encode_error(text, e: Exception) -> ArlmError:
        if not isinstance(text, str):
            return ArlmError(f"can only encode text (str), got {type(text).__name__}")
        pos = next((i for i, c in enumerate(text) if is_surrogate(c)), None)
        if pos is not None:
            return surrogate_error(text, pos)
        return ArlmError(f"cannot encode text: {_one_line(e)}")

    def decode(self, token_ids) -> str:
        """The text of ``token_ids``; ``<bos>`` and ``<eos>`` are dropped.

        Exact inverse of ``encode``. Ids that end inside a multi-byte
        character (a sample cut short) decode with U+FFFD in its place.

        Raises:
            ArlmError: an id outside ``[0, vocab_size)``.
        """
        ids = [int(i) for i in token_ids]
        bad = next((i for i in ids if not 0 <= i < self.vocab_size), None)
        if bad is not None:
            raise ArlmError(f"token id {bad} is outside this BPE vocab (size {self.vocab_size})")
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def encode_pair(self, given: str, completion: str) -> tuple[list[int], list[int]]:
        """Token ids of ``(given, completion)`` for scoring log p(completion | given).

        The boundary policy (lm-evaluation-harness practice): whitespace at the
        end of ``given`` moves to the start of ``completion`` (``"The cat"``,
        ``" sat"`` rather than ``"The cat "``, ``"sat"``, matching how BPE
        attaches a space to the following word), then the two parts are
        encoded separately. So a non-empty completion always gets at least one
        token of its own, even where ``given + completion`` would be one token
        (``"hel"``, ``"lo"``), and the ids decode to ``given + completion``.
        The completion is therefore scored over its own canonical tokens, not
        over the tail of the canonical tokens of the concatenation. An empty
        completion gives ``(encode(given), [])``.
        """
        if completion == "":
            return self.encode(given), []
        stripped = given.rstrip()
        completion = given[len(stripped):] + completion
        return self.encode(stripped), self.encode(completion)

    def token_text(self, token_id: int) -> str:
        """A printable name of one token, unique within the vocab.

        ``<bos>`` and ``<eos>`` for the specials; otherwise the token's text
        (``" the"`` keeps its leading space), with any byte that is only part
        of a UTF-8 character written ``<0xNN>``.

        Raises:
            ArlmError: ``token_id`` is outside ``[0, vocab_size)``.
        """
        if not 0 <= token_id < self.vocab_size:
            raise ArlmError(f"token id {token_id} is outside this BPE vocab (size {self.vocab_size})")
        return self._names[token_id]

    def save(self, directory: Path) -> None:
        """Write ``tokenizer.json`` (a Hugging Face tokenizer file) into ``directory`` atomically."""
        atomic_write_text(Path(directory) / self.filename, self._tokenizer.to_str(pretty=True))

    @classmethod
    def load(cls, directory: Path) -> "BPEVocab":
        """Read ``tokenizer.json`` from ``directory``.

        Raises:
            ArlmError: the file is missing, is not a tokenizer file, or is not a
                byte-level BPE with ``<bos>`` and ``<eos>``.
        """
        path = Path(directory) / cls.filename
        if not path.is_file():
            raise ArlmError(f"no {cls.filename} in {directory}")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:
            raise ArlmError(f"{path} is not a valid tokenizer file: {_one_line(e)}") from None
        return cls(tokenizer)
