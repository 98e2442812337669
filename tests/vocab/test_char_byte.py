from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from arlm.errors import ArlmError
from arlm.vocab import ByteVocab, CharVocab, load_vocab


def test_char_vocab_layout_and_unknown_character(tmp_path):
    v = CharVocab.train(["hello", "world"])
    assert v.vocab_size == len(set("helloworld")) + 2
    assert {v.token_text(v.bos_id), v.token_text(v.eos_id)} == {"<bos>", "<eos>"}
    with pytest.raises(ArlmError, match=r"'é' \(U\+00E9\) at position 2.*--vocab byte"):
        v.encode("heé")
    v.save(tmp_path)
    w = load_vocab("char", tmp_path)
    assert w.encode("world") == v.encode("world") and w.vocab_size == v.vocab_size


@given(st.text())
def test_byte_vocab_round_trip_any_text(text):
    v = ByteVocab()
    ids = v.encode(text)
    assert all(0 <= i < 256 for i in ids)
    assert v.decode(ids) == text


def test_literal_special_text_is_ordinary_text():
    v = CharVocab.train(["<eos> and <bos>"])
    ids = v.encode("<eos>")
    assert v.eos_id not in ids and v.decode(ids) == "<eos>"
    b = ByteVocab()
    assert b.eos_id not in b.encode("<eos>")


# -- text that is not quite text (issue 9, fault 1) ------------------------------------


def test_byte_vocab_scores_the_original_bytes_of_surrogate_escapes():
    import os

    v = ByteVocab()
    arg = os.fsdecode(b"it\x92s")  # how `arlm score DIR $'it\x92s'` hands the argument over
    assert arg == "it\udc92s"
    assert v.encode(arg) == list(b"it\x92s")
    assert v.encode(os.fsdecode(b"caf\xc3")) == list(b"caf\xc3")


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_every_vocab_gives_the_same_error_for_a_lone_surrogate(kind):
    from arlm.vocab import train_vocab

    v = train_vocab(kind, ["a\U0001f600b and some more text to merge", "ab ab ab"], 300 if kind == "bpe" else None)
    with pytest.raises(ArlmError, match=r"^character U\+D83D at position 1 is a lone surrogate, which is not text$"):
        v.encode("a\ud83db")


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_vocabs_without_raw_bytes_name_the_byte_and_point_to_the_byte_vocab(kind):
    from arlm.vocab import train_vocab

    v = train_vocab(kind, ["its it is ok"] * 3, 300 if kind == "bpe" else None)
    with pytest.raises(ArlmError, match=r"byte 0x92 at position 2 is not UTF-8 text.*--vocab byte"):
        v.encode("it\udc92s")


def test_lone_surrogate_through_the_model_api():
    from arlm.lm import LM
    from conftest import make_ngram

    for v in (ByteVocab(), CharVocab.train(["ab", "ba"])):
        lm = LM(make_ngram(v, ["ab", "ba"], 2), v, "lines")
        with pytest.raises(ArlmError, match="lone surrogate"):
            lm.log_prob("a\ud83db")
        with pytest.raises(ArlmError, match="lone surrogate"):
            lm.evaluate("a\ud83db\n")
    lm = LM(make_ngram(ByteVocab(), ["ab", "ba"], 2), ByteVocab(), "lines")
    m = lm.evaluate("a\udc92b\n")  # bits per byte count the original bytes
    assert m["n_bytes"] == 4 and m["n_tokens"] == 4
