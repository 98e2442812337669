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
