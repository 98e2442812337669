"""Token directories: streaming ``tokenize_file`` equals in-memory encoding; memmap views and splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arlm.corpus import read_text, split_documents, train_val_split
from arlm.data import TokenDir, TokenStream, encode_documents, split_token_dir, token_dtype, tokenize_file
from arlm.errors import ArlmError
from arlm.vocab import ByteVocab, CharVocab
from conftest import NAMES, SHAKESPEARE

# multi-byte characters, \r\n, blank lines, a line without its \n at the end
MIXED = "héllo wörld\r\n\nzażółć 日本語 🎉\nplain line\r\n  \n\nlast 👩\u200d💻 line\r"


def _expected(vocab, text, documents):
    return np.concatenate(encode_documents(vocab, split_documents(text, documents)))


@pytest.mark.parametrize("documents", ["file", "lines"])
@pytest.mark.parametrize("kind", ["char", "byte"])
@pytest.mark.parametrize("chunk_bytes", [1, 7, 1 << 20])
def test_tokenize_equals_in_memory_encoding(tmp_path, documents, kind, chunk_bytes):
    src = tmp_path / "mixed.txt"
    src.write_bytes(MIXED.encode("utf-8"))
    docs = split_documents(MIXED, documents)
    vocab = CharVocab.train(docs) if kind == "char" else ByteVocab()
    header = tokenize_file(src, tmp_path / "tok", vocab, documents, chunk_bytes=chunk_bytes)
    tokens = TokenDir(tmp_path / "tok")
    assert np.array_equal(np.asarray(tokens.ids), _expected(vocab, MIXED, documents))
    offsets = np.asarray(tokens.offsets)
    assert offsets[0] == 0 and offsets[-1] == header["n_tokens"] and len(offsets) == len(docs) + 1
    for d, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        assert tokens.ids[a] == vocab.bos_id and tokens.ids[b - 1] == vocab.eos_id
        assert vocab.decode(tokens.ids[a:b].tolist()) == docs[d]
    assert header["n_documents"] == len(docs) and header["n_bytes"] == len(MIXED.encode())
    assert tokens.vocab().vocab_size == vocab.vocab_size


def test_tokenize_bpe_cuts_only_where_encoding_is_unchanged(tmp_path):
    from arlm.vocab.bpe import BPEVocab

    text = read_text(SHAKESPEARE)[:20_000]
    vocab = BPEVocab.train([text], vocab_size=300)
    src = tmp_path / "s.txt"
    src.write_text(text, encoding="utf-8")
    tokenize_file(src, tmp_path / "tok", vocab, "file", chunk_bytes=997)
    assert np.array_equal(np.asarray(TokenDir(tmp_path / "tok").ids), _expected(vocab, text, "file"))


def test_tokenize_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("abc€".encode() + b"\xff" + b"z" * 20)
    with pytest.raises(ArlmError, match="invalid byte 0xff at byte offset 6"):
        tokenize_file(bad, tmp_path / "t1", ByteVocab(), chunk_bytes=4)
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(ArlmError, match="empty"):
        tokenize_file(empty, tmp_path / "t2", ByteVocab())
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\r\n\n")
    with pytest.raises(ArlmError, match="no non-empty document"):
        tokenize_file(blank, tmp_path / "t3", ByteVocab(), documents="lines")
    other = tmp_path / "other.txt"
    other.write_text("abcq")
    with pytest.raises(ArlmError, match=r"'q' \(U\+0071\)"):
        tokenize_file(other, tmp_path / "t4", CharVocab(list("abc")))
    with pytest.raises(ArlmError, match="not a token directory"):
        TokenDir(tmp_path)


def test_token_dir_detects_truncation(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("hello\nworld\n")
    tokenize_file(src, tmp_path / "tok", ByteVocab(), "lines")
    f = tmp_path / "tok" / "tokens.bin"
    f.write_bytes(f.read_bytes()[:-2])
    with pytest.raises(ArlmError, match="truncated"):
        TokenDir(tmp_path / "tok")


def test_token_dtype():
    assert token_dtype(258) == np.uint16 and token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_token_stream_indexes_like_a_tensor():
    base = np.arange(10, 30, dtype=np.uint16)
    s = TokenStream(base, 5, 12, head=[1], tail=[2, 3])
    full = torch.tensor([1, *range(15, 22), 2, 3])
    assert len(s) == s.shape[0] == len(full)
    idx = torch.tensor([[0, 1, 7, 8], [9, 8, 3, 0]])
    assert torch.equal(s[idx], full[idx]) and s[idx].dtype == torch.long
    assert torch.equal(s[2:9], full[2:9]) and torch.equal(s[:], full)


@pytest.mark.parametrize("documents,path", [("file", SHAKESPEARE), ("lines", NAMES)])
def test_split_token_dir_matches_text_split(tmp_path, documents, path):
    text = read_text(path)
    train_docs, val_docs = train_val_split(text, documents, 0.1, 7)
    vocab = CharVocab.train(split_documents(text, documents))
    tokenize_file(path, tmp_path / "tok", vocab, documents)
    train, val = split_token_dir(TokenDir(tmp_path / "tok"), 0.1, 7)
    for (stream, starts, lengths), docs in ((train, train_docs), (val, val_docs)):
        assert len(starts) == len(lengths) == len(docs)
        got = [stream[int(a) : int(a + n)].numpy() for a, n in zip(starts, lengths)]
        want = encode_documents(vocab, docs)
        assert all(np.array_equal(g, w) for g, w in zip(got, want))
    assert split_token_dir(TokenDir(tmp_path / "tok"), 0.0)[1] is None


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("documents,path", [("file", SHAKESPEARE), ("lines", NAMES)])
@pytest.mark.parametrize("order", [1, 4])
def test_streaming_evaluation_equals_in_memory(documents, path, order):
    from arlm.models.ngram import NGramConfig, NGramModel
    from arlm.scoring import evaluate, evaluate_file

    text = read_text(path)
    docs = split_documents(text, documents)
    vocab = CharVocab.train(docs)
    model = NGramModel.fit(NGramConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, order=order),
                           encode_documents(vocab, docs[: max(1, len(docs) // 2)]))
    want = evaluate(model, vocab, text, documents)
    got = evaluate_file(model, vocab, path, documents, chunk_bytes=10_007, window_tokens=3_001)
    for k in ("n_documents", "n_tokens", "n_chars", "n_bytes"):
        assert got[k] == want[k], k
    assert got["nll"] == pytest.approx(want["nll"], rel=1e-12)
    if documents == "lines":
        assert got["nll"] == want["nll"]


def test_streaming_evaluation_of_one_document_needs_an_ngram(tmp_path):
    from conftest import make_gpt

    from arlm.scoring import evaluate_file

    vocab = ByteVocab()
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(ArlmError, match="n-gram"):
        evaluate_file(make_gpt(vocab), vocab, tmp_path / "a.txt", "file")
    got = evaluate_file(make_gpt(vocab), vocab, NAMES, "lines", chunk_bytes=5000)
    from arlm.scoring import evaluate

    assert got["nll"] == pytest.approx(evaluate(make_gpt(vocab), vocab, read_text(NAMES), "lines")["nll"], rel=1e-9)
