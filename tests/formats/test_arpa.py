"""ARPA export and import, checked by KenLM itself (the ``kenlm`` module loads and scores the files)."""

from __future__ import annotations

import gzip
import math
import subprocess
import sys

import kenlm
import numpy as np
import pytest
import torch

from arlm import scoring
from arlm.errors import ArlmError
from arlm.formats.arpa import arpa_words, escape_word, export_arpa, import_arpa, unescape_word
from arlm.lm import LM
from arlm.vocab import ByteVocab, CharVocab, WordVocab

from conftest import SHAKESPEARE, make_gpt, make_ngram, names_docs

LN10 = math.log(10.0)


def _case(kind: str):
    """(model, vocab, train docs, val docs) for a char, byte or word vocab."""
    if kind == "word":
        lines = [ln for ln in SHAKESPEARE.read_text(encoding="utf-8").splitlines() if ln.strip()]
        train, val = lines[:2500], lines[2500:2600]
        vocab = WordVocab.train(train)
        return make_ngram(vocab, train, 4), vocab, train, val
    docs = names_docs(3000)
    train, val = docs[:2500], docs[2500:2800] + ["Zoë  ünïcode\tand space", "\n", ""]
    if kind == "char":
        vocab = CharVocab.train(train + val)  # every val char is in the vocab (arlm and KenLM both need that)
        return make_ngram(vocab, train, 5), vocab, train, val
    return make_ngram(ByteVocab(), train, 4), ByteVocab(), train, val


_EXPORTED = {}


def _exported(kind, tmp_path_factory):
    if kind not in _EXPORTED:
        model, vocab, train, val = _case(kind)
        path = tmp_path_factory.mktemp("arpa") / f"{kind}.arpa"
        export_arpa(model, vocab, path, documents="lines")
        _EXPORTED[kind] = (kind, model, vocab, val, path, kenlm.Model(str(path)))
    return _EXPORTED[kind]


@pytest.fixture(params=["char", "byte", "word"])
def exported(request, tmp_path_factory):
    return _exported(request.param, tmp_path_factory)


def test_kenlm_scores_the_export_as_arlm_does(exported):
    kind, model, vocab, val, path, km = exported
    assert km.order == model.config.order
    worst = 0.0
    for doc in val:
        ours = scoring.log_prob(model, vocab, doc) / LN10
        theirs = km.score(" ".join(arpa_words(vocab, doc)), bos=True, eos=True)
        worst = max(worst, abs(ours - theirs))
    assert worst < 1e-4, (kind, worst)


def test_import_scores_as_kenlm_does(exported):
    kind, model, vocab, val, path, km = exported
    lm = import_arpa(path)
    assert lm.vocab.kind == kind and lm.vocab.vocab_size == vocab.vocab_size
    assert lm.model.config.max_abs_log10_norm < 1e-5  # the export sums to 1 up to its 6 printed decimals
    worst = 0.0
    for doc in val:
        words = arpa_words(vocab, doc)
        kenlm_total = sum(p for p, _, _ in km.full_scores(" ".join(words), bos=True, eos=True))  # log10, per token
        per_token = scoring.token_logprobs(lm.model, lm.vocab, doc)
        assert len(per_token) == len(words) + 1
        worst = max(worst, abs(lm.log_prob(doc) / LN10 - kenlm_total))
    assert worst < 1e-5, (kind, worst)


def test_per_token_scores_match_kenlm_full_scores(exported):
    kind, model, vocab, val, path, km = exported
    lm = import_arpa(path)
    doc = max(val[:50], key=len)
    theirs = [p for p, _, _ in km.full_scores(" ".join(arpa_words(vocab, doc)), bos=True, eos=True)]
    ours = [v / LN10 for _, v in scoring.token_logprobs(lm.model, lm.vocab, doc)]
    np.testing.assert_allclose(ours, theirs, atol=2e-6, rtol=0)


def test_an_imported_file_exports_back_to_the_same_model(exported, tmp_path):
    kind, model, vocab, val, path, km = exported
    lm = import_arpa(path)
    export_arpa(lm.model, lm.vocab, tmp_path / "again.arpa", documents=lm.documents)
    again = import_arpa(tmp_path / "again.arpa")
    for level_a, level_b in zip(lm.model.levels, again.model.levels):
        np.testing.assert_array_equal(level_a.keys, level_b.keys)
        np.testing.assert_allclose(level_a.log_prob, level_b.log_prob, atol=1e-5, rtol=0)
    for doc in val[:30]:
        assert again.log_prob(doc) == pytest.approx(lm.log_prob(doc), abs=1e-5)


def test_gzip_export_imports_identically(tmp_path):
    model, vocab, _, val = _case("char")
    export_arpa(model, vocab, tmp_path / "m.arpa")
    export_arpa(model, vocab, tmp_path / "m.arpa.gz")
    with gzip.open(tmp_path / "m.arpa.gz", "rt", encoding="utf-8") as f:
        assert f.read() == (tmp_path / "m.arpa").read_text(encoding="utf-8")
    a, b = import_arpa(tmp_path / "m.arpa"), import_arpa(tmp_path / "m.arpa.gz")
    for doc in val[:20]:
        assert a.log_prob(doc) == b.log_prob(doc)


def test_escapes_round_trip_and_separate_fields():
    for text in [" ", "\n", "\t", "a b", "<s>", "</s>", "<unk>", "<U+0041>", "x", "é", "\u00a0", "<"]:
        word = escape_word(text)
        assert unescape_word(word) == text
        assert word and not any(c.isspace() for c in word)
    assert escape_word(" ") == "<U+0020>" and escape_word("\n") == "<U+000A>"
    assert escape_word("hello") == "hello"
    names = arpa_words(ByteVocab(), "a é\n")
    assert names == ["a", "<0x20>", "<0xC3>", "<0xA9>", "<0x0A>"]


def test_word_vocab_unknown_words_score_as_kenlm_unk(tmp_path_factory):
    kind, model, vocab, val, path, km = _exported("word", tmp_path_factory)
    doc = "the qwertyuiop king"
    assert "qwertyuiop" not in vocab.stoi
    assert vocab.encode(doc)[1] == vocab.unk_id
    lm = import_arpa(path)
    assert lm.log_prob(doc) / LN10 == pytest.approx(km.score(doc, bos=True, eos=True), abs=1e-5)


def test_foreign_kenlm_style_file(tmp_path):
    """A hand-written word-level file in lmplz's layout (no <unk>, a context without back-off, no header)."""
    text = "\n".join([
        "\\data\\", "ngram 1=5", "ngram 2=4", "",
        "\\1-grams:",
        "-0.6989700\t</s>",
        "-99\t<s>\t-0.30103",
        "-0.6989700\ta\t-0.1760913",
        "-0.5228787\tb",
        "-1.0000000\tc\t-0.2",
        "", "\\2-grams:",
        "-0.3010300\t<s> a",
        "-0.4771213\ta b",
        "-0.2218487\tc </s>",
        "-0.6989700\t<s> c",
        "", "\\end\\", "",
    ])
    path = tmp_path / "foreign.arpa"
    path.write_text(text, encoding="utf-8")
    km = kenlm.Model(str(path))
    lm = import_arpa(path)
    assert lm.vocab.kind == "word" and lm.documents == "lines"
    for sentence in ["a b", "c", "a c b", "b b a", "zz a"]:
        ids = [lm.vocab.bos_id, *lm.vocab.encode(sentence), lm.vocab.eos_id]
        lp = lm.model.sequence_log_probs(torch.tensor(ids)).numpy()
        theirs = [p for p, _, _ in km.full_scores(sentence, bos=True, eos=True)]
        # arlm divides by Z(h) so that each distribution sums to 1; KenLM reports the file's numbers as they are
        ctx_norm = []
        for t in range(len(ids) - 1):
            ctx = lm.model._context_nodes(np.array([ids[: t + 1]]))
            ctx_norm.append(lm.model._log_norm_at(ctx)[0, -1])
        np.testing.assert_allclose(lp + np.array(ctx_norm), np.array(theirs) * LN10, atol=1e-5, rtol=0)


BASE = """# a tiny model
\\data\\
ngram 1=4
ngram 2=2

\\1-grams:
-0.5\t</s>
-99\t<s>\t-0.3
-0.4\ta\t-0.2
-0.6\tb

\\2-grams:
-0.2\t<s> a
-0.3\ta b

\\end\\
"""

MALFORMED = [
    ("no data line", lambda s: s.replace("\\data\\", "data"), "no \\data\\ line"),
    ("count disagrees", lambda s: s.replace("ngram 2=2", "ngram 2=3"), "line 12: the \\2-grams: section has 2 entries"),
    ("missing end", lambda s: s.replace("\\end\\\n", ""), "missing \\end\\"),
    ("non-numeric probability", lambda s: s.replace("-0.6\tb", "abc\tb"), "line 10: log10 probability 'abc' is not a number"),
    ("non-numeric backoff", lambda s: s.replace("a\t-0.2", "a\tx1"), "line 9: back-off weight 'x1' is not a number"),
    ("absent context", lambda s: s.replace("ngram 2=2", "ngram 2=2\nngram 3=1").replace(
        "\n\\end\\", "\n\\3-grams:\n-0.1\tb a b\n\n\\end\\"),
     "line 18: the context 'b a' of the 3-gram 'b a b' is not listed among the 2-grams"),
    ("word not in unigrams", lambda s: s.replace("-0.3\ta b", "-0.3\ta zz"), "line 14: the word 'zz' of this 2-gram is not among the 1-grams"),
    ("wrong field count", lambda s: s.replace("-0.3\ta b", "-0.3\ta b c d"), "line 14: a 2-gram line has"),
    ("positive log probability", lambda s: s.replace("-0.6\tb", "0.6\tb"), "line 10: positive log10 probability"),
    ("bad count line", lambda s: s.replace("ngram 2=2", "ngram two=2"), "line 4: expected a count line"),
    ("orders out of turn", lambda s: s.replace("ngram 2=2", "ngram 3=2"), "line 4: count lines must give orders"),
    ("section missing", lambda s: s.replace("\\2-grams:", "\\3-grams:"), "line 12: expected the \\2-grams: section"),
    ("duplicate n-gram", lambda s: s.replace("-0.3\ta b", "-0.3\t<s> a").replace("ngram 2=2", "ngram 2=2"), "line 14: this 2-gram is listed twice"),
    ("duplicate unigram", lambda s: s.replace("-0.6\tb", "-0.6\ta"), "line 10: the 1-gram 'a' is listed twice"),
    ("no end of sentence", lambda s: s.replace("-0.5\t</s>\n", "-0.5\tc\n"), "the 1-grams lack </s>"),
    ("backoff on highest order", lambda s: s.replace("-0.3\ta b", "-0.3\ta b\t-0.1"), "line 14: a 2-gram of the highest order cannot have a back-off"),
    ("nan probability", lambda s: s.replace("-0.6\tb", "nan\tb"), "line 10: log10 probability 'nan' is not a finite number"),
    ("text after end", lambda s: s + "more\n", "text after \\end\\"),
]


@pytest.mark.parametrize("name,mutate,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_arpa_gives_one_line_error_with_line_number(tmp_path, name, mutate, message):
    path = tmp_path / "bad.arpa"
    path.write_text(mutate(BASE), encoding="utf-8")
    with pytest.raises(ArlmError) as e:
        import_arpa(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert message in msg, msg


def test_base_file_is_valid(tmp_path):
    path = tmp_path / "ok.arpa"
    path.write_text(BASE, encoding="utf-8")
    lm = import_arpa(path)
    assert lm.model.config.order == 2 and lm.vocab.words == ["a", "b"]
    assert kenlm.Model(str(path)).order == 2


def test_export_refuses_other_families_and_vocabs(tmp_path):
    vocab = CharVocab.train(names_docs(200))
    with pytest.raises(ArlmError, match="ARPA export is for n-gram models"):
        export_arpa(make_gpt(vocab), vocab, tmp_path / "x.arpa")
    from conftest import bpe_vocab

    bv = bpe_vocab(names_docs())
    with pytest.raises(ArlmError, match="supports the char, byte, word"):
        export_arpa(make_ngram(bv, names_docs(200), 2), bv, tmp_path / "x.arpa")


def test_cli_export_import_and_errors(tmp_path, capsys):
    model, vocab, _, val = _case("char")
    LM(model, vocab, "lines").save(tmp_path / "m")
    arlm = [sys.executable, "-m", "arlm"]
    r = subprocess.run(arlm + ["export", str(tmp_path / "m"), "--format", "arpa", "--out", str(tmp_path / "m.arpa.gz")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(arlm + ["import", str(tmp_path / "m.arpa.gz"), "--out", str(tmp_path / "back")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    back = LM.load(tmp_path / "back")
    assert back.model.family == "backoff" and back.documents == "lines"
    assert back.log_prob(val[0]) == pytest.approx(scoring.log_prob(model, vocab, val[0]), abs=1e-4)
    (tmp_path / "bad.arpa").write_text(BASE.replace("-0.6\tb", "abc\tb"), encoding="utf-8")
    from arlm.cli import main  # the errors in-process: the same code path, without two more interpreter starts

    capsys.readouterr()
    assert main(["import", str(tmp_path / "bad.arpa"), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "line 10" in err, err
    assert main(["export", str(tmp_path / "back"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be exported as hf" in err, err
