"""The word vocabulary: whitespace tokens, <unk> for unknown words, single-space detokenisation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from arlm.errors import ArlmError
from arlm.lm import LM
from arlm.vocab import WordVocab, load_vocab, train_vocab

from conftest import SHAKESPEARE


def test_encode_decode_and_unknown_words():
    v = WordVocab.train(["the cat sat", "the dog\tran\n"])
    assert v.words == ["cat", "dog", "ran", "sat", "the"]
    assert (v.unk_id, v.bos_id, v.eos_id, v.vocab_size) == (5, 6, 7, 8)
    assert v.encode("  the   cat\r\nsat ") == [4, 0, 3]
    assert v.encode("the bird <unk>") == [4, v.unk_id, v.unk_id]
    assert v.decode([v.bos_id, 4, v.unk_id, 0, v.eos_id]) == "the <unk> cat"
    assert v.token_text(v.unk_id) == "<unk>" and v.token_text(v.eos_id) == "<eos>"
    assert v.encode("the\u00a0cat") == [v.unk_id]  # only ASCII whitespace separates words, as in KenLM
    with pytest.raises(ArlmError):
        v.token_text(99)


def test_vocab_size_keeps_the_most_frequent_words():
    v = train_vocab("word", ["a a a b b c d"], vocab_size=5)
    assert v.words == ["a", "b"] and v.vocab_size == 5
    assert v.encode("a c d") == [0, v.unk_id, v.unk_id]
    with pytest.raises(ArlmError, match="at least 4"):
        WordVocab.train(["a"], vocab_size=3)
    with pytest.raises(ArlmError, match="no words"):
        WordVocab.train([" \n "])


def test_save_load(tmp_path):
    v = WordVocab.train(["héllo wörld ü"])
    v.save(tmp_path)
    w = load_vocab("word", tmp_path)
    assert w.words == v.words and w.encode("wörld x") == v.encode("wörld x")


def test_cli_trains_a_word_ngram(tmp_path):
    r = subprocess.run([sys.executable, "-m", "arlm", "train", str(SHAKESPEARE), "--vocab", "word", "--order", "3",
                        "--documents", "lines", "--out", str(tmp_path / "w"), "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["vocab"] == "word" and 1 < result["val"]["perplexity"] < 5000
    lm = LM.load(tmp_path / "w")
    assert lm.vocab.kind == "word"
    assert lm.log_prob("the king") > lm.log_prob("king the")
