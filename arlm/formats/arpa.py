"""ARPA back-off files: export arlm's n-gram models, import any ARPA file (KenLM, SRILM, ours).

The format (D. Paul and J. Baker 1992; SRILM's ``ngram-format(5)``; KenLM's
``lm/read_arpa.cc``)::

    # optional comment lines (KenLM accepts only '#' lines before \\data\\)
    \\data\\
    ngram 1=V
    ngram 2=G2

    \\1-grams:
    log10 p <TAB> w1 [<TAB> log10 backoff]
    ...
    \\2-grams:
    log10 p <TAB> w1 w2 [<TAB> log10 backoff]
    ...
    \\end\\

**Export.** arlm's interpolated modified Kneser-Ney model is written the way
KenLM's ``lmplz`` writes its own interpolated models: every n-gram seen in
training is listed with its *interpolated* probability p_n(w | h) (the whole
recursion of :mod:`arlm.models.ngram` down to the uniform distribution), and
every n-gram that is a context with the log10 of its interpolation weight
γ(h) as back-off weight. Since p_n(w | h) = γ(h) · p_{n-1}(w | h') for every w
not seen after h, the back-off rule (:mod:`arlm.models.backoff`) gives back
exactly the interpolated model, to the printed precision (6 decimals of
log10, about 1.4e-6 relative).

Token names (the table :data:`MARKERS` and :func:`token_names`):

* ``<bos>`` is ``<s>`` (listed with log10 probability -99, as SRILM and KenLM's
  own test files do: it is never predicted) and ``<eos>`` is ``</s>``.
* ``<unk>``: the word vocabulary's unknown token is ``<unk>``. Char and byte
  vocabularies have no unknowns; their files list ``<unk>`` with log10
  probability -100 (KenLM's value for a missing ``<unk>``), so that KenLM
  loads them without a warning and maps characters outside the vocab there.
* Escape: ARPA separates fields by spaces and tabs, so a token that holds
  whitespace or an unprintable character, is one of ``<s>``, ``</s>``,
  ``<unk>`` without being that marker, or begins with ``<U+``, is written
  with every character as ``<U+XXXX>`` (its code point in hex): a space in a
  char vocabulary is ``<U+0020>``, a newline ``<U+000A>``, the word ``<s>`` is
  ``<U+003C><U+0073><U+003E>``. Byte tokens are the printable ASCII character
  itself (0x21-0x7E) or ``<0xNN>``. :func:`arpa_words` turns a text into the
  words to give KenLM (``" ".join(arpa_words(vocab, text))``).
* A header comment ``# arlm-vocab: char`` (and ``# arlm-documents: lines``)
  tells ``import_arpa`` how to rebuild the vocabulary.

**Import.** Any valid ARPA file becomes a :class:`~arlm.models.backoff.BackoffNGramModel`
scored as KenLM scores it (module docstring there), with a ``word``
vocabulary unless the header names another (so a file from ``lmplz`` or SRILM
is word-level, each line of text a sentence: document mode ``lines``).
Malformed files raise :class:`~arlm.errors.ArlmError` naming the line.
Parsing works section by section on bytes with vectorised numpy checks, so a
100 MB file loads in a few times KenLM's own load time (``bench/arpa.py``).
"""

from __future__ import annotations

import gc
import gzip
import re
from pathlib import Path

import numpy as np

from ..errors import ArlmError
from ..io import atomic_path

#: arlm special -> ARPA marker
MARKERS = {"<bos>": "<s>", "<eos>": "</s>", "<unk>": "<unk>"}
BOS_LOG10 = -99.0  # the log10 probability written for <s> (never predicted)
UNK_LOG10 = -100.0  # the log10 probability written for <unk> in vocabularies without unknowns
PRECISION = 6  # decimals of log10 written
CHUNK_LINES = 1 << 16  # lines parsed at a time on import (bounds the Python objects alive at once)
LN10 = float(np.log(10.0))
VOCAB_HEADER = "# arlm-vocab:"
DOCUMENTS_HEADER = "# arlm-documents:"
EXPORTABLE_VOCABS = ("char", "byte", "word")
_ESCAPED = re.compile(r"(?:<U\+[0-9A-F]{4,6}>)+")
BYTE_NAME = re.compile(r"<0x([0-9A-F]{2})>")


# -- token names ------------------------------------------------------------------------------
def escape_word(text: str) -> str:
    """The ARPA word of a token text (see the module docstring for the rule)."""
    plain = (
        text != ""
        and all(c.isprintable() and not c.isspace() for c in text)
        and text not in ("<s>", "</s>", "<unk>")
        and not text.startswith("<U+")
    )
    return text if plain else "".join(f"<U+{ord(c):04X}>" for c in text)


def unescape_word(word: str) -> str:
    """Inverse of :func:`escape_word`."""
    if _ESCAPED.fullmatch(word):
        return "".join(chr(int(h, 16)) for h in re.findall(r"<U\+([0-9A-F]{4,6})>", word))
    return word


def _byte_name(b: int) -> str:
    return chr(b) if 0x21 <= b <= 0x7E else f"<0x{b:02X}>"


def token_names(vocab) -> list[str]:
    """The ARPA word of every token id of ``vocab`` (char, byte or word).

    Raises:
        ArlmError: another vocab kind (a BPE vocab's tokens need its tokenizer file to mean anything).
    """
    if vocab.kind not in EXPORTABLE_VOCABS:
        raise ArlmError(f"ARPA export supports the {', '.join(EXPORTABLE_VOCABS)} vocabularies, not {vocab.kind!r}")
    names = []
    for i in range(vocab.vocab_size):
        if i == vocab.bos_id:
            names.append(MARKERS["<bos>"])
        elif i == vocab.eos_id:
            names.append(MARKERS["<eos>"])
        elif vocab.kind == "word" and i == vocab.unk_id:
            names.append(MARKERS["<unk>"])
        elif vocab.kind == "byte":
            names.append(_byte_name(i))
        else:
            names.append(escape_word(vocab.token_text(i)))
    return names


def arpa_words(vocab, text: str) -> list[str]:
    """The ARPA words of ``text`` (no ``<s>``/``</s>``), e.g. for ``kenlm.Model.score(" ".join(...))``."""
    names = token_names(vocab)
    return [names[i] for i in vocab.encode(text)]


# -- export -----------------------------------------------------------------------------------
def _interpolated(model) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Per order n, p_n(w | h) of every stored n-gram (float64[G_n]) and γ_{n+1} of each as a
    context (nan where it has no continuation, or n = N); plus p_1 of every token (float64[V])."""
    cfg = model.config
    V, N, bos = cfg.vocab_size, cfg.order, cfg.bos_id
    levels = model.levels
    lv1 = levels[0]
    tot0 = lv1.totals[0] if len(lv1.totals) else 0.0
    gamma0 = lv1.gamma_num[0] / tot0 if tot0 > 0 else 1.0
    p_uni = np.full(V, gamma0 / (V - 1))
    if tot0 > 0:
        np.add.at(p_uni, lv1.words, lv1.discounted / tot0)
    p_uni[bos] = 0.0
    probs = [p_uni[lv1.words]]
    suffix = np.zeros(len(lv1.keys), dtype=np.int64)  # suffix node of each order-1 n-gram: the empty history
    for n in range(2, N + 1):
        lv = levels[n - 1]
        ctx = lv.keys // V
        suf = levels[n - 2].lookup(suffix[ctx] * V + lv.words)  # w2..wn among the order n-1 n-grams
        if (suf < 0).any():
            raise ArlmError(f"corrupt n-gram model: an order-{n} n-gram lacks its suffix")
        tot = lv.totals[ctx]
        gamma = lv.gamma_num[ctx] / tot
        probs.append(lv.discounted / tot + gamma * probs[n - 2][suf])
        suffix = suf
    backoffs = []
    for n in range(1, N + 1):
        if n < N:
            nxt = levels[n]
            with np.errstate(divide="ignore", invalid="ignore"):
                g = np.where(nxt.totals > 0, nxt.gamma_num / np.where(nxt.totals > 0, nxt.totals, 1.0), np.nan)
            backoffs.append(g)
        else:
            backoffs.append(np.full(len(levels[n - 1].keys), np.nan))
    return probs, backoffs, p_uni


def _log10_tables(model) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """log10 tables to write: unigram p and back-off of every token id (float64[V] each), and per
    order n >= 2 the p and back-off of each stored n-gram; nan where no back-off is written."""
    V, N, bos = model.config.vocab_size, model.config.order, model.config.bos_id
    levels = model.levels
    node_of = levels[0].lookup(np.arange(V, dtype=np.int64))  # key 0 * V + w
    with np.errstate(divide="ignore", invalid="ignore"):
        if model.family == "ngram":
            probs, backoffs, p_uni = _interpolated(model)
            uni = np.log10(p_uni)
            p10 = [np.log10(p) for p in probs]
            b10 = [np.log10(b) for b in backoffs]
        else:  # a back-off model (an imported ARPA file): its own numbers
            uni = np.full(V, -np.inf)
            uni[levels[0].words] = levels[0].log_prob / LN10
            p10 = [lv.log_prob / LN10 for lv in levels]
            b10 = []
            for n, lv in enumerate(levels, start=1):
                has = (lv.log_backoff != 0) | ((levels[n].end > levels[n].start) if n < N else False)
                b10.append(np.where(has & (n < N), lv.log_backoff / LN10, np.nan))
    uni = np.where(np.isfinite(uni), np.maximum(uni, BOS_LOG10), BOS_LOG10)
    uni[bos] = BOS_LOG10
    uni_bo = np.where(node_of >= 0, b10[0][np.maximum(node_of, 0)], np.nan)
    return uni, uni_bo, p10, b10



def export_arpa(model, vocab, path: str | Path, documents: str = "file") -> dict:
    """Write an n-gram model in ARPA back-off form (gzip-compressed when ``path`` ends in ``.gz``).

    Args:
        model: an :class:`~arlm.models.ngram.NGramModel`, or a
            :class:`~arlm.models.backoff.BackoffNGramModel` (an imported ARPA
            file, written back with its own numbers).
        vocab: its char, byte or word vocab.
        documents: the document mode recorded in the header (``import_arpa`` restores it).

    Returns:
        ``{"path", "order", "ngrams": [count per order]}``.

    Raises:
        ArlmError: another family or vocab kind, or ``path`` cannot be written.
    """
    from .. import __version__

    if getattr(model, "family", None) not in ("ngram", "backoff"):
        raise ArlmError(f"ARPA export is for n-gram models; a {model.family} model can be exported with "
                        f"{'--format hf' if model.family == 'gpt' else 'no other format'}")
    names = token_names(vocab)
    V, N = model.config.vocab_size, model.config.order
    uni, uni_bo, p10, b10 = _log10_tables(model)
    levels = model.levels

    def fields(p: np.ndarray, b: np.ndarray) -> tuple[list[str], list[str]]:
        p = np.where(np.isfinite(p), np.maximum(p, BOS_LOG10), BOS_LOG10)
        return ([f"{x:.{PRECISION}f}" for x in p.tolist()],
                [f"\t{x:.{PRECISION}f}\n" if np.isfinite(x) else "\n" for x in b.tolist()])

    sections: list[list[str]] = []
    p_field, b_field = fields(uni, uni_bo)  # order 1: every token of the vocab, in id order
    lines = [f"{p}\t{s}{t}" for p, s, t in zip(p_field, names, b_field)]
    if vocab.kind != "word":
        lines.append(f"{UNK_LOG10:.0f}\t{MARKERS['<unk>']}\n")
    sections.append(lines)
    phrase = [names[w] for w in levels[0].words.tolist()]  # by order-1 node
    for n in range(2, N + 1):
        lv = levels[n - 1]
        ctx = (lv.keys // V).tolist()
        phrase = [phrase[c] + " " + names[w] for c, w in zip(ctx, lv.words.tolist())]
        p_field, b_field = fields(p10[n - 1], b10[n - 1])
        sections.append([f"{p}\t{s}{t}" for p, s, t in zip(p_field, phrase, b_field)])
    counts = [len(s) for s in sections]

    path = Path(path)
    header = (f"# written by arlm {__version__}: interpolated modified Kneser-Ney (Chen & Goodman 1998), "
              f"order {N}, in ARPA back-off form\n{VOCAB_HEADER} {vocab.kind}\n{DOCUMENTS_HEADER} {documents}\n")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            opener = (lambda p: gzip.open(p, "wt", encoding="utf-8", newline="\n", compresslevel=6)) \
                if path.name.endswith(".gz") else (lambda p: open(p, "w", encoding="utf-8", newline="\n"))
            with opener(tmp) as f:
                f.write(header + "\n\\data\\\n")
                f.writelines(f"ngram {n}={c}\n" for n, c in enumerate(counts, start=1))
                for n, lines in enumerate(sections, start=1):
                    f.write(f"\n\\{n}-grams:\n")
                    f.writelines(lines)
                f.write("\n\\end\\\n")
    except OSError as e:
        raise ArlmError(f"cannot write {path}: {e.strerror or e}") from None
    return {"path": str(path), "order": N, "ngrams": counts}


# -- import (arpa_import.py) -----------------------------------------------------------------
def import_arpa(path: str | Path, out: str | Path | None = None):
    """Read an ARPA file (plain or gzip) into an :class:`arlm.lm.LM` holding a back-off model.

    The vocabulary is ``word`` unless a ``# arlm-vocab:`` header names
    ``char`` or ``byte`` (files written by :func:`export_arpa`); the document
    mode is ``lines`` unless a ``# arlm-documents:`` header says otherwise. A
    word-level file without ``<unk>`` gets it with log10 probability -100, as
    KenLM does. With ``out`` the model directory is written there.

    Raises:
        ArlmError: the file is missing or malformed (the message names the line):
            no ``\\data\\``, a bad count line, a section missing or out of place, a
            section whose entry count disagrees with ``\\data\\``, a line with the
            wrong number of fields, a probability or back-off that is not a number
            (or a positive log probability), a word absent from the 1-grams, an
            n-gram listed twice or whose context is not listed, a missing ``\\end\\``.
    """
    was_enabled = gc.isenabled()
    gc.disable()  # millions of short-lived lists: the cyclic collector would rescan them over and over
    try:
        from .arpa_import import _import_arpa

        return _import_arpa(Path(path), out)
    finally:
        if was_enabled:
            gc.enable()
