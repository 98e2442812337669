"""Byte-level BPE vocab: exact round trip, literal specials, save/load, boundary policy, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from arlm.errors import ArlmError
from arlm.vocab import Vocab, load_vocab, train_vocab
from arlm.vocab.bpe import DEFAULT_VOCAB_SIZE, BPEVocab

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return (DATA / "shakespeare.txt").read_text(encoding="utf-8")[:60_000]


@pytest.fixture(scope="module")
def vocab(shakespeare) -> BPEVocab:
    # Literal "<eos>"/"<bos>" in the training text must not become special or be merged into one token.
    return BPEVocab.train([shakespeare, "a<eos>b <bos> <eos>\n" * 50], vocab_size=400)


@pytest.fixture(scope="module")
def hello_vocab() -> BPEVocab:
    return BPEVocab.train(["hello world, hello there\n" * 100, "help held hell\n" * 5], vocab_size=300)


def test_sizes_and_specials(vocab):
    assert isinstance(vocab, Vocab)
    assert vocab.kind == "bpe" and vocab.filename == "tokenizer.json"
    assert vocab.vocab_size == 400
    assert (vocab.bos_id, vocab.eos_id) == (0, 1)
    assert vocab.token_text(vocab.bos_id) == "<bos>" and vocab.token_text(vocab.eos_id) == "<eos>"
    names = [vocab.token_text(i) for i in range(vocab.vocab_size)]
    assert len(set(names)) == vocab.vocab_size  # scoring uses names as dict keys
    ids = vocab.encode("To be, or not to be")
    assert all(2 <= i < vocab.vocab_size for i in ids)
    assert len(ids) < len("To be, or not to be")  # merges were learnt


@settings(max_examples=200, deadline=None)
@given(text=st.text())
@example(text="")
@example(text="  leading spaces\n\n trailing  ")
@example(text="\r\n\r\nline\r\n")
@example(text="\x00nul\x00")
@example(text="\u0301\u0308 lone combining marks")
@example(text="emoji 🎉👩\u200d💻🏳️\u200d🌈")
@example(text="\ufffd replacement \ud7ff \U0010ffff")
@example(text="<eos><bos><eos>")
def test_round_trip_any_text(vocab, text):
    ids = vocab.encode(text)
    assert vocab.eos_id not in ids and vocab.bos_id not in ids
    assert vocab.decode(ids) == text
    assert vocab.decode([vocab.bos_id, *ids, vocab.eos_id]) == text  # specials are dropped


def test_literal_specials_are_text(vocab):
    for text in ("a<eos>b", "<bos>", " <eos>\n", "<eos>"):
        ids = vocab.encode(text)
        assert vocab.decode(ids) == text
        assert vocab.eos_id not in ids and vocab.bos_id not in ids
    assert vocab.encode_batch(["a<eos>b", "x"]) == [vocab.encode("a<eos>b"), vocab.encode("x")]


def test_token_text_shows_partial_bytes(vocab):
    ids = vocab.encode("é")  # unseen in training: two byte tokens
    assert [vocab.token_text(i) for i in ids] == ["<0xC3>", "<0xA9>"]
    assert vocab.decode(ids[:1]) == "\ufffd"  # a sample cut inside a character still decodes


def test_save_load_identical(vocab, shakespeare, tmp_path):
    vocab.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json"]
    loaded = BPEVocab.load(tmp_path)
    again = load_vocab("bpe", tmp_path)
    text = shakespeare[:5000] + " a<eos>b 🎉"
    assert loaded.encode(text) == again.encode(text) == vocab.encode(text)
    assert (loaded.vocab_size, loaded.bos_id, loaded.eos_id) == (vocab.vocab_size, vocab.bos_id, vocab.eos_id)
    assert [loaded.token_text(i) for i in range(loaded.vocab_size)] == [vocab.token_text(i) for i in range(vocab.vocab_size)]


def test_load_errors(tmp_path):
    with pytest.raises(ArlmError, match="no tokenizer.json"):
        BPEVocab.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ArlmError, match="not a valid tokenizer file"):
        BPEVocab.load(tmp_path)


def test_load_refuses_tokenizer_without_specials(hello_vocab, tmp_path):
    spec = json.loads(hello_vocab.to_json())
    spec["added_tokens"] = []
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(ArlmError, match="special tokens"):
        BPEVocab.load(tmp_path)


def test_encode_pair_moves_trailing_whitespace(hello_vocab):
    v = hello_vocab
    assert v.encode_pair("hello ", "world") == (v.encode("hello"), v.encode(" world"))
    assert v.encode_pair("hello \n", "there") == (v.encode("hello"), v.encode(" \nthere"))
    assert v.encode_pair("   ", "hello") == ([], v.encode("   hello"))
    assert v.encode_pair("hello ", "") == (v.encode("hello "), [])


def test_encode_pair_splits_a_single_token_word(hello_vocab):
    v = hello_vocab
    assert len(v.encode("hello")) == 1
    given_ids, completion_ids = v.encode_pair("hel", "lo")
    assert len(completion_ids) >= 1
    assert v.decode(given_ids + completion_ids) == "hello"
    for given_text, completion in [("hello wor", "ld"), ("he", "llo"), ("", "hello"), ("hello", " ")]:
        g, c = v.encode_pair(given_text, completion)
        assert len(c) >= 1 and v.decode(g + c) == given_text + completion


@pytest.mark.parametrize("bad", [0, 257, -1, 3.5, "1024", True])
def test_bad_vocab_size(bad):
    with pytest.raises(ArlmError, match="vocab size"):
        BPEVocab.train(["some text"], vocab_size=bad)


def test_smallest_vocab_and_default(tmp_path):
    smallest = BPEVocab.train(["abc abc"], vocab_size=258)
    assert smallest.vocab_size == 258
    assert smallest.decode(smallest.encode("abc ☃")) == "abc ☃"
    assert DEFAULT_VOCAB_SIZE == 1024
    v = train_vocab("bpe", ["hello hello hello"])  # default size; a tiny corpus learns fewer merges
    assert 258 < v.vocab_size <= DEFAULT_VOCAB_SIZE
    with pytest.raises(ArlmError, match="empty"):
        BPEVocab.train(["", ""])


def test_errors_for_bad_ids_and_text(vocab):
    with pytest.raises(ArlmError, match="outside"):
        vocab.decode([vocab.vocab_size])
    with pytest.raises(ArlmError, match="outside"):
        vocab.token_text(-1)
    with pytest.raises(ArlmError, match="U\\+D800 at position 1"):
        vocab.encode("a\ud800b")


def test_pieces_handed_to_the_trainer_are_bounded_so_one_long_line_trains_in_linear_time():
    import random

    from arlm.vocab.bpe import MAX_PIECE_BYTES, BPEVocab

    rng = random.Random(0)
    dna = "".join(rng.choice("ACGT") for _ in range(20_000))  # one line, no whitespace: one regex piece of 20 kB
    text = dna + " " + "é" * 100 + "\n" + "{\"k\":[1,2,3]}" * 50
    v = BPEVocab.train([text], 600)
    pieces = [p for p, _ in v._tokenizer.pre_tokenizer.pre_tokenize_str(text)]  # byte-level: one char per byte
    assert sum(map(len, pieces)) == len(text.encode()) and max(map(len, pieces)) == MAX_PIECE_BYTES
    assert v.decode(v.encode(text)) == text
    tokens = [v._tokenizer.id_to_token(i) for i in range(v.vocab_size)]
    assert max(len(t) for t in tokens if t not in ("<bos>", "<eos>")) <= MAX_PIECE_BYTES
