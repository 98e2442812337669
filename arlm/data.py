"""Documents -> token ids with <bos>/<eos>; token directories on disk for corpora bigger than memory.

``tokenize_file`` streams a text file into a token directory (ids as a flat
uint16/uint32 file, document offsets, a JSON header); ``TokenDir`` and
``TokenStream`` read it back through ``np.memmap`` without loading it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .corpus import line_documents
from .paths import OFFSETS_FILE, TOKENS_FILE, TOKENS_HEADER
from .token_dir import (TOKENS_FORMAT, TokenDir, TokenStream, is_token_dir,  # noqa: F401 (TokenDir, TokenStream,
                        split_token_dir, token_dtype)  # is_token_dir, split_token_dir: their old home)
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


# -- token files on disk -------------------------------------------------------------------
#
# A token directory (written by ``arlm tokenize``) holds
#   tokens.bin   the token ids of every document, ``[<bos>, x_1 … x_n, <eos>]`` each,
#                concatenated, little-endian uint16 (vocab_size <= 65536) or uint32;
#   offsets.bin  int64[n_documents + 1]: document d is tokens[offsets[d]:offsets[d+1]];
#   tokens.json  the header (format, dtype, counts, document mode, vocab kind, source);
#   the vocab file (vocab.json or tokenizer.json), as in a model directory.
# Everything is written in chunks: neither the text nor the ids are ever held whole.

CHUNK_BYTES = 4 << 20  # text per piece; the encoding needs about 25 bytes of memory per byte of text


def iter_text_chunks(path, chunk_bytes: int = CHUNK_BYTES):
    """Yield ``(text, n_bytes)`` pieces of the file ``path`` decoded as strict UTF-8, cut between characters.

    One leading UTF-8 byte-order mark is dropped, as ``corpus.read_text`` does (``n_bytes`` still counts it).

    Raises:
        ArlmError: missing, a directory, empty, unreadable, or not valid UTF-8
            (the message gives the byte offset of the first invalid byte, as ``corpus.read_text``).
    """
    from pathlib import Path

    from .corpus import open_binary
    from .errors import ArlmError

    p = Path(path)
    with open_binary(p) as f:
        pending, offset, seen_any = b"", 0, False
        while True:
            block = f.read(chunk_bytes)
            data = pending + block if pending else block
            if not data:
                break
            seen_any = True
            cut = len(data)
            if block:  # keep a character split by the chunk boundary for the next piece
                j = len(data) - 1
                while j > 0 and len(data) - j < 4 and data[j] & 0xC0 == 0x80:
                    j -= 1
                lead = data[j]
                need = 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
                if lead >= 0xC0 and len(data) - j < need:
                    cut = j
            try:
                text = data[:cut].decode("utf-8", errors="strict")
            except UnicodeDecodeError as e:
                raise ArlmError(
                    f"{p} is not valid UTF-8: invalid byte 0x{data[e.start]:02x} at byte offset {offset + e.start}"
                ) from None
            if offset == 0 and text.startswith("\ufeff"):
                text = text[1:]
            yield text, cut
            offset += cut
            pending = data[cut:]
            if not block:
                if pending:  # cannot happen: the last piece is decoded whole
                    continue
                break
        if not seen_any:
            raise ArlmError(f"file is empty: {p}")


def _split_lines(text: str, carry: str, final: bool) -> tuple[list[str], str]:
    """Documents of ``lines`` mode in ``carry + text`` (as ``corpus.split_documents``), and the unfinished last line."""
    lines = (carry + text).split("\n")
    carry = "" if final else lines.pop()
    return line_documents(lines), carry


def _bpe_safe_cut(text: str) -> int:
    """Index after a newline that has a non-space character on each side, or -1.

    GPT-2's pre-tokenizer pieces never span such a newline and do not depend on
    what lies beyond it, so encoding the two sides apart gives the same ids.
    """
    j = text.rfind("\n")
    while j > 0:
        if j + 1 < len(text) and not text[j - 1].isspace() and not text[j + 1].isspace():
            return j + 1
        j = text.rfind("\n", 0, j)
    return -1


class _Encoder:
    """Vectorised ``vocab.encode`` of many strings at once -> (integer ids, int64 lengths)."""

    def __init__(self, vocab):
        self.vocab = vocab
        self.lut = None
        if vocab.kind == "char":  # code point -> id, -1 outside the vocab (4.4 MB)
            self.lut = np.full(N_CODE_POINTS, -1, dtype=np.int32)
            self.lut[[ord(c) for c in vocab.chars]] = np.arange(len(vocab.chars))
            # ASCII text through bytes.translate (ten times faster than the gather); 255 marks "not in the vocab"
            self.ascii = None
            if vocab.vocab_size < 255:
                self.ascii = bytes(int(i) if i >= 0 else 255 for i in self.lut[:128]) + bytes([255]) * 128

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        from .errors import ArlmError

        kind = self.vocab.kind
        if kind == "char":
            joined = "".join(texts)
            if self.ascii is not None and joined.isascii():
                ids = np.frombuffer(joined.encode("ascii").translate(self.ascii), dtype=np.uint8)
                if 255 in ids:  # rare: find the culprit the slow way
                    ids = self.lut[_code_points(joined)]
            else:
                ids = self.lut[_code_points(joined)]  # int32
            if ids.min(initial=0) < 0:
                c = joined[int(np.argmax(ids < 0))]
                raise ArlmError(f"character {c!r} (U+{ord(c):04X}) is not in the char vocab; "
                                "use --vocab byte to accept any text")
            return ids, np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        if kind == "byte":
            raw = [t.encode("utf-8") for t in texts]
            ids = np.frombuffer(b"".join(raw), dtype=np.uint8).astype(np.int64)
            return ids, np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
        encoded = self.vocab.encode_batch(texts) if hasattr(self.vocab, "encode_batch") else [self.vocab.encode(t) for t in texts]
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        ids = np.fromiter((i for e in encoded for i in e), dtype=np.int64, count=int(lengths.sum()))
        return ids, lengths


def _frame(ids: np.ndarray, lengths: np.ndarray, bos_id: int, eos_id: int) -> np.ndarray:
    """``[<bos>, doc, <eos>]`` for each document of the flat ``ids``; int64[len(ids) + 2 * n_docs]."""
    sizes = lengths + 2
    starts = np.cumsum(sizes) - sizes
    out = np.full(int(sizes.sum()), eos_id, dtype=np.int64)
    out[starts] = bos_id
    body = np.ones(len(out), dtype=bool)
    body[starts] = False
    body[starts + sizes - 1] = False
    out[body] = ids
    return out


N_CODE_POINTS = 0x110000


def _code_points(text: str) -> np.ndarray:
    """The code points of ``text``: uint32[len(text)] (lone surrogates included)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def collect_chars(path, documents: str = "file", chunk_bytes: int = CHUNK_BYTES, progress=None) -> list[str]:
    """The sorted distinct characters of the documents of ``path`` (one streaming pass)."""
    seen = np.zeros(N_CODE_POINTS, dtype=bool)
    carry = ""
    for text, n in iter_text_chunks(path, chunk_bytes):
        if documents == "lines":
            docs, carry = _split_lines(text, carry, final=False)
            text = "".join(docs)
        if text.isascii():
            seen[:128] |= np.bincount(np.frombuffer(text.encode("ascii"), dtype=np.uint8), minlength=128) > 0
        else:
            seen[_code_points(text)] = True
        if progress is not None:
            progress(n)
    if documents == "lines":
        docs, _ = _split_lines("", carry, final=True)
        seen[_code_points("".join(docs))] = True
    return [chr(c) for c in np.flatnonzero(seen)]


class EncodedPiece(NamedTuple):
    """One piece of a text file encoded by ``iter_encoded``.

    ``ids``: token ids (an integer array: int32 for a char vocab, else int64), the stream of documents ``[<bos>, …, <eos>]``
    continued; ``doc_sizes``: tokens of each document that *ends* in this piece
    (counted from its start, possibly in an earlier piece); ``n_bytes`` and
    ``n_chars``: of the text read for this piece; ``n_doc_chars``: characters
    that went into documents (``lines`` mode drops line terminators).
    """

    ids: np.ndarray
    doc_sizes: np.ndarray
    n_bytes: int
    n_chars: int
    n_doc_chars: int


def iter_encoded(path, vocab, documents: str = "file", chunk_bytes: int = CHUNK_BYTES):
    """Encode the text file ``path`` piece by piece (see :class:`EncodedPiece`), never holding it whole.

    The concatenated ids equal ``encode_documents(vocab, split_documents(read_text(path), documents))``
    concatenated (BPE in ``file`` mode: the text is cut only after a newline with
    non-space characters on both sides, where GPT-2's pre-tokenizer cuts too).

    Raises:
        ArlmError: unreadable or invalid text, or a character the vocab lacks.
    """
    enc = _Encoder(vocab)
    bos, eos = vocab.bos_id, vocab.eos_id
    empty = np.zeros(0, dtype=np.int64)
    carry, n_file = "", 0
    for text, n in iter_text_chunks(path, chunk_bytes):
        if documents == "lines":
            docs, carry = _split_lines(text, carry, final=False)
            if docs:
                ids, lengths = enc.encode(docs)
                yield EncodedPiece(_frame(ids, lengths, bos, eos), lengths + 2, n, len(text), int(lengths.sum()))
            else:
                yield EncodedPiece(empty, empty, n, len(text), 0)
            continue
        text = carry + text
        cut = _bpe_safe_cut(text) if vocab.kind == "bpe" else len(text)
        piece, carry = (text[:cut], text[cut:]) if cut >= 0 else ("", text)
        ids = enc.encode([piece])[0] if piece else empty
        if n_file == 0 and piece:
            ids = np.concatenate([[bos], ids])
        n_file += len(ids)
        yield EncodedPiece(ids, empty, n, len(piece), len(piece))
    if documents == "lines":
        docs, _ = _split_lines("", carry, final=True)
        if docs:
            ids, lengths = enc.encode(docs)
            yield EncodedPiece(_frame(ids, lengths, bos, eos), lengths + 2, 0, len(carry), int(lengths.sum()))
        return
    ids = enc.encode([carry])[0] if carry else empty
    if n_file == 0:
        ids = np.concatenate([[bos], ids])
    ids = np.concatenate([ids, [eos]]).astype(np.int64)
    yield EncodedPiece(ids, np.array([n_file + len(ids)]), 0, len(carry), len(carry))


def tokenize_file(path, out_dir, vocab, documents: str = "file", chunk_bytes: int = CHUNK_BYTES,
                  progress=None) -> dict:
    """Encode the text file ``path`` with ``vocab`` into the token directory ``out_dir`` (see above).

    Reads ``chunk_bytes`` of text at a time; ``progress(n_bytes)`` is called after
    each chunk. The ids equal ``encode_documents(vocab, split_documents(read_text(path), documents))``
    concatenated (BPE in file mode: the text is cut only after a newline with
    non-space characters on both sides, where GPT-2's pre-tokenizer cuts too).
    Files are written under temporary names and renamed into place.

    Returns:
        the header written to ``tokens.json``.

    Raises:
        ArlmError: unreadable or invalid text, a character the vocab lacks, no document.
    """
    import json
    from pathlib import Path

    from .errors import ArlmError
    from .io import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab.vocab_size)
    n_tokens, n_docs, n_chars, n_bytes = 0, 0, 0, 0
    with atomic_path(out / TOKENS_FILE) as tok_tmp, atomic_path(out / OFFSETS_FILE) as off_tmp:
        with open(tok_tmp, "wb") as tf, open(off_tmp, "wb") as of:
            np.zeros(1, dtype="<i8").tofile(of)
            for piece in iter_encoded(path, vocab, documents, chunk_bytes):
                piece.ids.astype(dtype).tofile(tf)
                if len(piece.doc_sizes):  # the documents end with the piece
                    sizes = piece.doc_sizes
                    ends = n_tokens + len(piece.ids) - (sizes.sum() - np.cumsum(sizes))
                    ends.astype("<i8").tofile(of)
                n_tokens += len(piece.ids)
                n_docs += len(piece.doc_sizes)
                n_chars += piece.n_doc_chars
                n_bytes += piece.n_bytes
                if progress is not None:
                    progress(piece.n_bytes)
            if n_docs == 0 or (documents == "file" and n_chars == 0):
                raise ArlmError(f"{path} holds no non-empty document")
        vocab.save(out)
        header = {
            "format": TOKENS_FORMAT, "version": 1, "dtype": dtype.name, "tokens_file": TOKENS_FILE,
            "offsets_file": OFFSETS_FILE, "n_tokens": int(n_tokens), "n_documents": int(n_docs),
            "n_chars": int(n_chars), "n_bytes": int(n_bytes), "documents": documents, "vocab": vocab.kind,
            "vocab_size": int(vocab.vocab_size), "bos_id": int(vocab.bos_id), "eos_id": int(vocab.eos_id),
            "source": str(Path(path).resolve()),
        }
    with atomic_path(out / TOKENS_HEADER) as tmp:
        tmp.write_text(json.dumps(header, indent=2) + "\n", encoding="utf-8")
    return header
