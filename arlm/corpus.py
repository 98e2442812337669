"""Read text, split it into documents, split documents into train and val.

Text is read as strict UTF-8 (an invalid byte is an error naming its byte
offset); one leading UTF-8 byte-order mark (``EF BB BF``, which Windows editors
write) is dropped, as Python's ``utf-8-sig`` codec does; line endings are kept
as they are. Every text file arlm reads (train, val, eval, mix --fit-on,
compare, split) goes through :func:`read_text`. Two document modes:

* ``lines``: every non-empty line is one i.i.d. document (a list of names).
  ``\\n`` and ``\\r\\n`` both end a line; the terminator is not part of the document.
* ``file``: the whole text is one long document (a play).
"""

from __future__ import annotations

import random
from pathlib import Path

from .errors import ArlmError

DOCUMENT_MODES = ("lines", "file")


UTF8_BOM = b"\xef\xbb\xbf"


def open_binary(path: str | Path, what: str = "a text file"):
    """Open the file ``path`` for reading bytes (a file object, to use in ``with``).

    Raises:
        ArlmError: one line when it is missing, a directory (``what`` names what was expected) or unreadable.
    """
    p = Path(path)
    if not p.exists():
        raise ArlmError(f"no such file: {p}")
    if p.is_dir():
        raise ArlmError(f"expected {what} but {p} is a directory")
    try:
        return open(p, "rb")
    except OSError as e:
        raise ArlmError(f"cannot read {p}: {e.strerror}") from None


def read_text(path: str | Path) -> str:
    """Return the contents of ``path`` decoded as strict UTF-8, without one leading byte-order mark.

    The mark (U+FEFF at offset 0) says how the file is encoded, it is not
    text: kept, it would become a character of the vocab and the first
    character of the first document. Only one is dropped; a U+FEFF anywhere
    else is text.

    Raises:
        ArlmError: the file is missing, unreadable, empty (a lone mark counts as
            empty), or not valid UTF-8 (the message gives the byte offset of the
            first invalid byte, and names UTF-16 when the file starts with its mark).
    """
    p = Path(path)
    with open_binary(p) as f:
        raw = f.read()
    skip = len(UTF8_BOM) if raw.startswith(UTF8_BOM) else 0
    if len(raw) == skip:
        raise ArlmError(f"file is empty: {p}")
    try:
        return raw[skip:].decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        hint = ""
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            hint = " (it starts with a UTF-16 byte-order mark: save it as UTF-8)"
        raise ArlmError(
            f"{p} is not valid UTF-8: invalid byte 0x{raw[skip + e.start]:02x} at byte offset {skip + e.start}{hint}"
        ) from None


def check_document_mode(documents: str) -> None:
    """Raises:
        ArlmError: ``documents`` is not one of ``DOCUMENT_MODES``."""
    if documents not in DOCUMENT_MODES:
        raise ArlmError(f"unknown document mode {documents!r}: choose one of {', '.join(DOCUMENT_MODES)}")


def line_documents(lines: list[str]) -> list[str]:
    """The documents of ``lines`` mode among ``lines`` (a text split at ``\n``): each line
    without a trailing ``\r``, empty lines dropped. The one rule every reader uses."""
    docs = [line[:-1] if line.endswith("\r") else line for line in lines]
    return [d for d in docs if d]


def split_documents(text: str, documents: str) -> list[str]:
    """Split ``text`` into documents.

    ``documents="lines"``: non-empty lines, terminators (``\\n`` or ``\\r\\n``) removed.
    ``documents="file"``: ``[text]`` unchanged.

    Raises:
        ArlmError: unknown mode, or no non-empty document.
    """
    check_document_mode(documents)
    docs = ([text] if text else []) if documents == "file" else line_documents(text.split("\n"))
    if not docs:
        raise ArlmError("the text holds no non-empty document")
    return docs


def train_val_split(
    text: str, documents: str, val_fraction: float = 0.1, seed: int = 1337
) -> tuple[list[str], list[str]]:
    """Split one text into train and val documents.

    ``file`` mode: val is the last ``val_fraction`` of the characters (nanoGPT's
    split: train = ``text[:int((1 - f) * n)]``). ``lines`` mode: a seeded shuffle
    of the documents, the last ``round(f * n_docs)`` (at least one) become val.
    ``val_fraction=0`` gives an empty val list.

    Raises:
        ArlmError: ``val_fraction`` outside [0, 1), or too little text to split.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ArlmError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if documents == "file":
        n_train = int((1.0 - val_fraction) * len(text))
        train, val = text[:n_train], text[n_train:]
        if not train:
            raise ArlmError("too little text to split into train and val")
        return [train], ([val] if val else [])
    docs = split_documents(text, documents)
    if val_fraction == 0.0:
        return docs, []
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(val_fraction * len(docs)))
    if n_val >= len(docs):
        raise ArlmError(f"too few documents ({len(docs)}) to split into train and val")
    shuffled = [docs[i] for i in order]
    return shuffled[:-n_val], shuffled[-n_val:]


def builtin_corpus() -> str:
    """English text present on every CPython install: the pydoc help topics.

    About 465,000 characters of Python's documentation (``pydoc_data.topics``),
    joined in sorted topic order; no network, no files of ours.
    """
    from pydoc_data.topics import topics

    return "\n".join(topics[k].strip("\n") for k in sorted(topics)) + "\n"
