from __future__ import annotations

import pytest

from arlm.corpus import builtin_corpus, read_text, split_documents, train_val_split
from arlm.errors import ArlmError


def test_invalid_utf8_names_offset(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_bytes(b"hello \xc3\x28 world")
    with pytest.raises(ArlmError, match="byte offset 6"):
        read_text(f)


def test_missing_empty_and_directory(tmp_path):
    with pytest.raises(ArlmError, match="no such file"):
        read_text(tmp_path / "nope.txt")
    (tmp_path / "e.txt").write_bytes(b"")
    with pytest.raises(ArlmError, match="empty"):
        read_text(tmp_path / "e.txt")
    with pytest.raises(ArlmError, match="directory"):
        read_text(tmp_path)


def test_line_endings_kept_and_lines_mode_treats_crlf_like_lf(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes(b"ab\r\ncd\n\nef\r\n")
    text = read_text(f)
    assert text == "ab\r\ncd\n\nef\r\n"
    assert split_documents(text, "lines") == ["ab", "cd", "ef"]
    assert split_documents(text, "file") == [text]


def test_file_split_is_nanogpt_split():
    text = "x" * 95 + "y" * 5
    train, val = train_val_split(text, "file", 0.1)
    assert train == [text[: int(0.9 * 100)]] and val == [text[90:]]


def test_lines_split_is_seeded_shuffle():
    text = "\n".join(f"name{i}" for i in range(100))
    a = train_val_split(text, "lines", 0.1, seed=1)
    b = train_val_split(text, "lines", 0.1, seed=1)
    c = train_val_split(text, "lines", 0.1, seed=2)
    assert a == b and a != c
    assert len(a[1]) == 10 and sorted(a[0] + a[1]) == sorted(f"name{i}" for i in range(100))
    with pytest.raises(ArlmError, match="val-fraction"):
        train_val_split(text, "lines", 1.5)


def test_builtin_corpus_is_english_text():
    text = builtin_corpus()
    assert len(text) > 100_000 and "the" in text


# -- byte-order marks (issue 9, fault 2) -----------------------------------------------


def test_one_leading_utf8_bom_is_dropped(tmp_path):
    f = tmp_path / "bom.txt"
    f.write_bytes(b"\xef\xbb\xbfanna\r\nbob\n")
    assert read_text(f) == "anna\r\nbob\n"
    assert split_documents(read_text(f), "lines")[0] == "anna"
    f.write_bytes(b"\xef\xbb\xbf\xef\xbb\xbfx")  # only one: a second mark is text
    assert read_text(f) == "\ufeffx"
    f.write_bytes(b"a\xef\xbb\xbfb")  # not leading: text
    assert read_text(f) == "a\ufeffb"
    f.write_bytes(b"\xef\xbb\xbf")
    with pytest.raises(ArlmError, match="empty"):
        read_text(f)
    f.write_bytes(b"\xef\xbb\xbfab\xff")
    with pytest.raises(ArlmError, match="byte offset 5"):  # offsets count the file's bytes, mark included
        read_text(f)


def test_utf16_file_is_named(tmp_path):
    f = tmp_path / "u16.txt"
    f.write_bytes("hello".encode("utf-16"))
    with pytest.raises(ArlmError, match="UTF-16 byte-order mark"):
        read_text(f)
