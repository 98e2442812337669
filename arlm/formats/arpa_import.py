"""Reading ARPA back-off files (plain or gzip) into a back-off model: :func:`arlm.formats.arpa.import_arpa`.

Sections are parsed with NumPy over chunks of lines; every error names the file and the line.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np

from ..errors import ArlmError
from .arpa import (BYTE_NAME, CHUNK_LINES, DOCUMENTS_HEADER, EXPORTABLE_VOCABS, MARKERS, UNK_LOG10, VOCAB_HEADER,
                   unescape_word)


# -- import -----------------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    from ..corpus import open_binary

    with open_binary(path, "an ARPA file") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ArlmError(f"{path} is a corrupt gzip file: {e}") from None
    return data


class _Cursor:
    """Line-by-line reading of the small parts (header, section titles) with line numbers."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.pos, self.lineno = data, path, 0, 0

    def error(self, lineno: int, msg: str) -> ArlmError:
        return ArlmError(f"{self.path}: line {lineno}: {msg}")

    def next_line(self) -> bytes | None:
        if self.pos >= len(self.data):
            return None
        end = self.data.find(b"\n", self.pos)
        end = len(self.data) if end < 0 else end
        line = self.data[self.pos:end]
        self.pos, self.lineno = end + 1, self.lineno + 1
        return line

    def next_nonblank(self) -> bytes | None:
        while True:
            line = self.next_line()
            if line is None or line.strip():
                return line


def _show(b: bytes, limit: int = 40) -> str:
    s = b.decode("utf-8", errors="replace").strip()
    return repr(s if len(s) <= limit else s[:limit] + "…")


def _floats(col: list[bytes], what: str, line_of, cur: _Cursor) -> np.ndarray:
    try:
        out = np.array(col, dtype=np.bytes_).astype(np.float64) if col else np.zeros(0)
    except ValueError:
        out = None
    if out is None:
        for j, x in enumerate(col):
            try:
                float(x)
            except ValueError:
                raise cur.error(line_of(j), f"{what} {_show(x)} is not a number") from None
        out = np.array([float(x) for x in col])
    bad = np.flatnonzero(np.isnan(out) | (out == np.inf))
    if len(bad):
        raise cur.error(line_of(int(bad[0])), f"{what} {_show(col[bad[0]])} is not a finite number")
    return out


def _unigram_vocab(words: list[bytes], kind: str, line_of, cur: _Cursor):
    """(vocab, ids: arlm token id of each listed unigram or -1 to drop, unk_missing)."""
    from ..vocab import ByteVocab, CharVocab, WordVocab

    texts = []
    for j, w in enumerate(words):
        try:
            texts.append(w.decode("utf-8"))
        except UnicodeDecodeError:
            raise cur.error(line_of(j), f"the word {_show(w)} is not valid UTF-8") from None
    seen: dict[str, int] = {}
    for j, t in enumerate(texts):
        if t in seen:
            raise cur.error(line_of(j), f"the 1-gram {t!r} is listed twice (first at line {line_of(seen[t])})")
        seen[t] = j
    for marker in ("<s>", "</s>"):
        if marker not in seen:
            raise cur.error(line_of(0) if words else cur.lineno, f"the 1-grams lack {marker}, which every ARPA model needs")
    plain = [(j, t) for j, t in enumerate(texts) if t not in MARKERS.values()]
    if kind == "word":
        vocab = WordVocab(sorted(unescape_word(t) for _, t in plain))
        ids = [vocab.stoi[unescape_word(t)] if t not in MARKERS.values() else -1 for t in texts]
    elif kind == "char":
        chars = []
        for j, t in plain:
            c = unescape_word(t)
            if len(c) != 1:
                raise cur.error(line_of(j), f"{t!r} is not one character, but the header says {VOCAB_HEADER} char")
            chars.append(c)
        vocab = CharVocab(sorted(chars))
        ids = [vocab.stoi[unescape_word(t)] if t not in MARKERS.values() else -1 for t in texts]
    elif kind == "byte":
        vocab = ByteVocab()
        ids = []
        for j, t in enumerate(texts):
            if t in MARKERS.values():
                ids.append(-1)
                continue
            m = BYTE_NAME.fullmatch(t)
            if m is None and not (len(t) == 1 and 0x21 <= ord(t) <= 0x7E):
                raise cur.error(line_of(j), f"{t!r} is not a byte token (a printable ASCII character or <0xNN>)")
            ids.append(int(m.group(1), 16) if m else ord(t))
        missing = sorted(set(range(256)) - set(ids))
        if missing:
            raise cur.error(cur.lineno, f"the 1-grams lack the byte <0x{missing[0]:02X}>, but the header says "
                                        f"{VOCAB_HEADER} byte")
    else:
        raise cur.error(1, f"unknown vocab {kind!r} in the {VOCAB_HEADER} header: choose from {', '.join(EXPORTABLE_VOCABS)}")
    ids[seen["<s>"]] = vocab.bos_id
    ids[seen["</s>"]] = vocab.eos_id
    unk_missing = False
    if kind == "word":
        if "<unk>" in seen:
            ids[seen["<unk>"]] = vocab.unk_id
        else:
            unk_missing = True
    return vocab, ids, unk_missing


def _read_header(cur: _Cursor, path: Path) -> tuple[str, str, list[int]]:
    """The preamble (arlm's vocab and document headers) and the ``\\data\\`` counts: ``(kind, documents, counts)``."""
    kind, documents = "word", "lines"
    while True:
        line = cur.next_line()
        if line is None:
            raise ArlmError(f"{path}: no \\data\\ line: not an ARPA file")
        s = line.strip()
        if s == b"\\data\\":
            break
        text = s.decode("utf-8", errors="replace")
        if text.startswith(VOCAB_HEADER):
            kind = text[len(VOCAB_HEADER):].strip()
        elif text.startswith(DOCUMENTS_HEADER):
            documents = text[len(DOCUMENTS_HEADER):].strip()
            if documents not in ("lines", "file"):
                raise cur.error(cur.lineno, f"unknown document mode {documents!r}: choose lines or file")
    counts: list[int] = []
    while True:
        line = cur.next_line()
        if line is None or not line.strip():
            break
        m = re.fullmatch(rb"ngram\s+(\d+)\s*=\s*(\d+)", line.strip())
        if m is None:
            raise cur.error(cur.lineno, f"expected a count line 'ngram N=COUNT' after \\data\\, got {_show(line)}")
        if int(m.group(1)) != len(counts) + 1:
            raise cur.error(cur.lineno, f"count lines must give orders 1, 2, … in turn; got order {int(m.group(1))} "
                                        f"where {len(counts) + 1} was due")
        counts.append(int(m.group(2)))
    if not counts:
        raise cur.error(cur.lineno, "\\data\\ lists no 'ngram N=COUNT' lines")

    return kind, documents, counts


def _parse_rows(seg: list[bytes], n: int, N: int, first_line: int, word_ids: dict, cur: _Cursor):
    """The lines ``seg`` of the n-grams section, parsed in chunks of ``CHUNK_LINES``: ``(nonblank, lp10, bo10,
    cols, unigram_words)``: the indices of the non-blank lines, their log10 probabilities and back-offs, the
    word ids int32[rows, n] of each n-gram (n > 1) and the words of the 1-grams (n = 1)."""
    # in chunks of lines, so that the per-field Python objects never exist for a whole section at once
    lp_parts, bo_parts, col_parts, nb_parts, unigram_words = [], [], [], [], []
    for c0 in range(0, len(seg), CHUNK_LINES):
        rows = list(map(bytes.split, seg[c0:c0 + CHUNK_LINES]))
        lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        nb = np.flatnonzero(lens > 0)
        if len(nb) != len(rows):
            rows = [rows[j] for j in nb.tolist()]
            lens = lens[nb]

        def line_of(j: int, nb=nb, c0=c0, first_line=first_line) -> int:
            return int(first_line + c0 + nb[j])

        bad = np.flatnonzero((lens != n + 1) & (lens != n + 2))
        if len(bad):
            j = int(bad[0])
            raise cur.error(line_of(j), f"a {n}-gram line has a log10 probability, {n} word{'s' * (n > 1)} and an "
                                        f"optional back-off weight; this one has {lens[j]} fields")
        lp10 = _floats([r[0] for r in rows], "log10 probability", line_of, cur)
        pos_bad = np.flatnonzero(lp10 > 0)
        if len(pos_bad):
            raise cur.error(line_of(int(pos_bad[0])), f"positive log10 probability {lp10[pos_bad[0]]} (a probability above 1)")
        with_bo = np.flatnonzero(lens == n + 2)
        bo10 = np.zeros(len(rows))
        if len(with_bo):
            bo_vals = _floats([rows[j][n + 1] for j in with_bo.tolist()], "back-off weight",
                              lambda k, with_bo=with_bo, line_of=line_of: line_of(int(with_bo[k])), cur)
            if np.isneginf(bo_vals).any():
                k = int(np.flatnonzero(np.isneginf(bo_vals))[0])
                raise cur.error(line_of(int(with_bo[k])), "back-off weight -inf is not a finite number")
            if n == N and (bo_vals != 0).any():
                k = int(np.flatnonzero(bo_vals != 0)[0])
                raise cur.error(line_of(int(with_bo[k])), f"a {n}-gram of the highest order cannot have a back-off weight")
            bo10[with_bo] = bo_vals
        if n == 1:
            unigram_words.extend(r[1] for r in rows)
        else:
            cols = np.empty((len(rows), n), dtype=np.int32)
            for k in range(n):
                col = [r[k + 1] for r in rows]
                try:
                    cols[:, k] = np.fromiter(map(word_ids.__getitem__, col), dtype=np.int32, count=len(col))
                except KeyError as e:
                    j = col.index(e.args[0])
                    raise cur.error(line_of(j), f"the word {_show(e.args[0])} of this {n}-gram is not among "
                                                f"the 1-grams") from None
            col_parts.append(cols)
        lp_parts.append(lp10)
        bo_parts.append(bo10)
        nb_parts.append(nb + c0)
        del rows
    nonblank = np.concatenate(nb_parts) if nb_parts else np.zeros(0, dtype=np.int64)
    lp10 = np.concatenate(lp_parts) if lp_parts else np.zeros(0)
    bo10 = np.concatenate(bo_parts) if bo_parts else np.zeros(0)

    def line_of(j: int, nonblank=nonblank, first_line=first_line) -> int:
        return int(first_line + nonblank[j])

    cols = None
    if n > 1:
        cols = np.concatenate(col_parts) if col_parts else np.zeros((0, n), dtype=np.int32)
    return nonblank, lp10, bo10, cols, unigram_words


def _unigram_keys(words: list[bytes], kind: str, lp10: np.ndarray, bo10: np.ndarray, line_of, cur: _Cursor):
    """The 1-grams: ``(vocab, word_ids, keys, lp10, bo10, keep)``, keys being the arlm token ids of the kept rows."""
    vocab, ids, unk_missing = _unigram_vocab(words, kind, line_of, cur)
    word_ids = dict(zip(words, ids))
    tok = np.asarray(ids, dtype=np.int64)
    if unk_missing:
        tok = np.append(tok, vocab.unk_id)
        lp10 = np.append(lp10, UNK_LOG10)
        bo10 = np.append(bo10, 0.0)
    keep = tok >= 0
    tok, lp10, bo10 = tok[keep], lp10[keep], bo10[keep]
    keys = tok  # context node 0
    return vocab, word_ids, keys, lp10, bo10, keep


def _ngram_keys(n: int, cols: np.ndarray, lp10: np.ndarray, bo10: np.ndarray, V: int, keys_by_order: list,
                seg: list[bytes], nonblank: np.ndarray, line_of, cur: _Cursor):
    """The n-grams (n > 1): ``(keys, lp10, bo10, keep)``, each key ``context node * V + word``."""
    keep = (cols >= 0).all(axis=1)  # n-grams of a dropped word (<unk> in a char or byte vocab) go with it
    ctx = np.zeros(len(cols), dtype=np.int64)
    for k in range(n - 1):  # the context's node, order by order
        query = ctx * V + cols[:, k]
        lk = keys_by_order[k]
        found = np.minimum(lk.searchsorted(query), max(len(lk) - 1, 0))
        hit = (lk[found] == query) if len(lk) else np.zeros(len(cols), bool)
        ctx = np.where(hit & (ctx >= 0), found, -1)
    missing = np.flatnonzero(keep & (ctx < 0))
    if len(missing):
        j = int(missing[0])
        r = seg[int(nonblank[j])].split()
        raise cur.error(line_of(j), f"the context {_show(b' '.join(r[1:n]))} of the {n}-gram "
                                    f"{_show(b' '.join(r[1:n + 1]))} is not listed among the {n - 1}-grams")
    keys = (ctx * V + cols[:, n - 1])[keep]
    lp10, bo10 = lp10[keep], bo10[keep]
    return keys, lp10, bo10, keep


def _sorted_section(n: int, keys: np.ndarray, keep: np.ndarray, lp10: np.ndarray, bo10: np.ndarray, line_of,
                    cur: _Cursor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The section's keys sorted, with their log10 probabilities and back-offs. Raises for an n-gram listed twice."""
    src_rows = np.flatnonzero(keep)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    dup = np.flatnonzero(np.diff(keys) == 0)
    if len(dup):
        j = int(order[dup[0] + 1])
        j = int(src_rows[min(j, len(src_rows) - 1)])
        raise cur.error(line_of(j), f"this {n}-gram is listed twice")
    return keys, lp10[order], bo10[order]


def _import_arpa(path: Path, out):
    from ..lm import LM
    from ..models.backoff import BackoffConfig, BackoffNGramModel

    path = Path(path)
    data = _read_bytes(path)
    cur = _Cursor(data, path)
    kind, documents, counts = _read_header(cur, path)
    N = len(counts)

    vocab = None
    word_ids: dict[bytes, int] = {}
    keys_by_order: list[np.ndarray] = []
    lp_by_order: list[np.ndarray] = []
    bo_by_order: list[np.ndarray] = []
    V = 0
    for n in range(1, N + 1):
        head = cur.next_nonblank()
        if head is None:
            raise cur.error(cur.lineno, f"the file ends before the \\{n}-grams: section")
        if head.strip() != f"\\{n}-grams:".encode():
            if head.strip() == b"\\end\\":
                raise cur.error(cur.lineno, f"\\end\\ where the \\{n}-grams: section was due (\\data\\ declares order {N})")
            raise cur.error(cur.lineno, f"expected the \\{n}-grams: section, got {_show(head)}")
        head_line = cur.lineno
        start = cur.pos
        nxt = data.find(b"\n\\", start - 1)
        end = len(data) if nxt < 0 else nxt + 1
        seg = data[start:end].split(b"\n")
        first_line = head_line + 1
        cur.pos, cur.lineno = end, head_line + data.count(b"\n", start, end)
        nonblank, lp10, bo10, cols, unigram_words = _parse_rows(seg, n, N, first_line, word_ids, cur)

        def line_of(j: int, nonblank=nonblank, first_line=first_line) -> int:
            return int(first_line + nonblank[j])

        if len(nonblank) != counts[n - 1]:
            raise cur.error(head_line, f"the \\{n}-grams: section has {len(nonblank)} entries but \\data\\ declares "
                                       f"ngram {n}={counts[n - 1]}")
        if n == 1:
            vocab, word_ids, keys, lp10, bo10, keep = _unigram_keys(unigram_words, kind, lp10, bo10, line_of, cur)
            V = vocab.vocab_size
        else:
            keys, lp10, bo10, keep = _ngram_keys(n, cols, lp10, bo10, V, keys_by_order, seg, nonblank, line_of, cur)
        del seg, cols
        keys, lp, bo = _sorted_section(n, keys, keep, lp10, bo10, line_of, cur)
        keys_by_order.append(keys)
        lp_by_order.append(lp)
        bo_by_order.append(bo)
    tail = cur.next_nonblank()
    if tail is None:
        raise cur.error(cur.lineno, f"missing \\end\\ after the \\{N}-grams: section")
    if tail.strip() != b"\\end\\":
        raise cur.error(cur.lineno, f"expected \\end\\ after the \\{N}-grams: section (\\data\\ declares order {N}), "
                                    f"got {_show(tail)}")
    extra = cur.next_nonblank()
    if extra is not None:
        raise cur.error(cur.lineno, f"text after \\end\\: {_show(extra)}")

    ln10 = np.log(10.0)
    config = BackoffConfig(V, vocab.bos_id, vocab.eos_id, order=N, source=str(path))
    for lp, bo in zip(lp_by_order, bo_by_order):  # log10 -> ln, in place
        lp *= ln10
        bo *= ln10
    model = BackoffNGramModel.from_tables(config, keys_by_order, lp_by_order, bo_by_order)
    lm = LM(model, vocab, documents)
    if out is not None:
        lm.save(out, {"imported_from": {"format": "arpa", "path": str(path)}})
    return lm
