"""Lossless compression with a model (arlm.coding): round trips, size against the model's nll, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arlm.coding import PRECISION, compress_bytes, decompress_bytes, quantise
from arlm.errors import ArlmError
from arlm.lm import LM

from conftest import FAMILY_CASES, build_case, names_docs, run_arlm

# multi-byte characters (2, 3 and 4 UTF-8 bytes), longer than the tiny GPT's block of 8
TEXT = "emma naïve café — ☃ olivia 𝄞 ava\r\nzoë\n"
CASES = sorted(FAMILY_CASES)


def _saved(tmp_path, name, documents="file"):
    docs = names_docs(300) + [TEXT]  # the char vocab must hold TEXT's characters
    model, vocab = build_case(name, docs)
    d = tmp_path / name
    LM(model, vocab, documents).save(d)
    return d


def _roundtrip(d, data: bytes, documents=None):
    blob, stats = compress_bytes(LM.load(d), d, data, documents)
    out, _ = decompress_bytes(LM.load(d), d, blob)  # a fresh load: nothing shared with the encoder
    assert out == data
    return blob, stats


@pytest.mark.parametrize("name", CASES)
def test_roundtrip_every_family_and_vocab(name, tmp_path):
    d = _saved(tmp_path, name)
    for data in [TEXT.encode(), b"", "é".encode(), b"a"]:
        _roundtrip(d, data)
    _roundtrip(d, ("emma\n\nava\r\nzoë\n").encode(), documents="lines")  # empty line, CRLF, final break


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-20, 5), min_size=3, max_size=300))
def test_quantise_is_a_full_distribution_with_every_token(z):
    z = np.array(z)
    lp = z - np.log(np.exp(z).sum())
    freq = quantise(lp)
    assert freq.dtype == np.int64 and freq.min() >= 1 and int(freq.sum()) == 1 << PRECISION
    # close to the distribution: no token loses more than its share of the V units spent on the floor of 1
    p = np.exp(lp)
    assert np.all(freq / (1 << PRECISION) >= p * (1 - len(z) / (1 << PRECISION)) - 1 / (1 << PRECISION))


_arlm = run_arlm

def test_cli_size_matches_eval_and_decodes_in_a_fresh_process(tmp_path):
    """Compressed size = Σ −log₂ p from `arlm eval` within 0.1% + 64 bytes; decoding in another process."""
    for name in ["gpt-char", "mixer-char"]:
        d = _saved(tmp_path, name)
        src = tmp_path / f"{name}.txt"
        text = "".join(n + " " for n in names_docs(400)[300:]) + TEXT  # not seen by the n-gram
        src.write_text(text, encoding="utf-8")
        z = json.loads(_arlm("compress", d, src, tmp_path / "z", "--json", "--no-progress").stdout)
        _arlm("decompress", d, tmp_path / "z", tmp_path / "back.txt", "--no-progress")
        assert (tmp_path / "back.txt").read_bytes() == src.read_bytes()
        # step gives each token the last block_size tokens: eval's sliding window with stride 1
        ev = json.loads(_arlm("eval", d, src, "--json", "--stride", "1").stdout)
        bits = ev["nll"] / math.log(2)
        size = (tmp_path / "z").stat().st_size
        assert size == z["compressed_bytes"]
        assert abs(8 * size - bits) <= 0.001 * bits + 8 * 64, (name, size, bits / 8)
        assert z["nll_bits"] == pytest.approx(bits, rel=1e-6)


def test_lines_mode_size_matches_eval(tmp_path):
    d = _saved(tmp_path, "ngram3-char", documents="lines")
    text = "".join(n + "\n" for n in names_docs(600)[300:])
    blob, stats = _roundtrip(d, text.encode())
    bits = LM.load(d).evaluate(text, "lines")["nll"] / math.log(2)
    assert abs(8 * len(blob) - bits) <= 0.001 * bits + 8 * 64
    assert stats["nll_bits"] == pytest.approx(bits, rel=1e-9)


def test_bad_inputs_are_one_line_errors(tmp_path):
    d = _saved(tmp_path, "ngram3-char")
    other = _saved(tmp_path, "ngram5-char")
    data = ("".join(n + " " for n in names_docs(200))).encode()
    blob, _ = compress_bytes(LM.load(d), d, data)
    lm = LM.load(d)
    with pytest.raises(ArlmError, match="different model"):
        decompress_bytes(LM.load(other), other, blob)
    with pytest.raises(ArlmError, match="truncated"):
        decompress_bytes(lm, d, blob[:-5])
    with pytest.raises(ArlmError, match="truncated"):
        decompress_bytes(lm, d, blob[:10])
    with pytest.raises(ArlmError, match="not an arlm"):
        decompress_bytes(lm, d, b"hello world")
    for pos in [5, 20, len(blob) // 2, len(blob) - 1]:
        bad = bytearray(blob)
        bad[pos] ^= 0x41
        with pytest.raises(ArlmError, match="corrupt|different model"):
            decompress_bytes(lm, d, bytes(bad))
    with pytest.raises(ArlmError, match="not valid UTF-8"):
        compress_bytes(lm, d, b"ab\xff")
    with pytest.raises(ArlmError, match="U\\+"):
        compress_bytes(lm, d, "ω".encode())  # not in the char vocab
    # the command line prints each as one line, exit status 2
    (tmp_path / "z").write_bytes(blob[: len(blob) // 2])
    res = _arlm("decompress", d, tmp_path / "z", tmp_path / "out", check=False)
    assert res.returncode == 2 and res.stderr.startswith("arlm: error:") and res.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()
    (tmp_path / "z").write_bytes(blob)
    res = _arlm("decompress", other, tmp_path / "z", tmp_path / "out", check=False)
    assert res.returncode == 2 and "different model" in res.stderr and res.stderr.count("\n") == 1


def test_threads_accepted_and_the_readme_header_size_is_an_empty_files(tmp_path):
    import re
    from pathlib import Path

    d = _saved(tmp_path, "ngram3-char")
    (tmp_path / "empty.txt").write_bytes(b"")
    _arlm("compress", d, tmp_path / "empty.txt", tmp_path / "e.arlz", "--threads", "1")
    _arlm("decompress", d, tmp_path / "e.arlz", tmp_path / "e.out", "--threads", "2")
    assert (tmp_path / "e.out").read_bytes() == b""
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").split())
    said = re.search(r"a header of (\d+) bytes for an empty file", readme)
    assert said and int(said.group(1)) == (tmp_path / "e.arlz").stat().st_size == 30


def test_adapted_compression_decodes_in_a_fresh_process_and_matches_eval(tmp_path):
    """`compress --adapt`: the header carries the settings (decompress needs no flags); size = `eval --adapt`'s
    Σ −log₂ p within 0.1% + 64 bytes; a file coded without --adapt stays format version 1."""
    d = _saved(tmp_path, "gpt-char")
    src = tmp_path / "in.txt"
    src.write_text("".join(n + " " for n in names_docs(400)[300:]) + TEXT, encoding="utf-8")
    flags = ["--adapt", "--adapt-optimizer", "rms", "--adapt-learning-rate", "0.01", "--adapt-chunk-size", "4"]
    z = json.loads(_arlm("compress", d, src, tmp_path / "z", "--json", "--no-progress", *flags).stdout)
    _arlm("decompress", d, tmp_path / "z", tmp_path / "back.txt", "--no-progress")
    assert (tmp_path / "back.txt").read_bytes() == src.read_bytes()
    assert (tmp_path / "z").read_bytes()[4] == 2
    ev = json.loads(_arlm("eval", d, src, "--json", *flags).stdout)
    static = json.loads(_arlm("eval", d, src, "--json").stdout)
    assert ev["nll"] < static["nll"] - 10
    bits = ev["nll"] / math.log(2)
    size = (tmp_path / "z").stat().st_size
    assert abs(8 * size - bits) <= 0.001 * bits + 8 * 64, (size, bits / 8)
    assert z["nll_bits"] == pytest.approx(bits, rel=1e-6)
    _arlm("compress", d, src, tmp_path / "z1", "--no-progress")
    assert (tmp_path / "z1").read_bytes()[4] == 1


def test_adapt_flags_are_checked(tmp_path):
    d = _saved(tmp_path, "ngram3-char")
    src = tmp_path / "in.txt"
    src.write_text("emma\n", encoding="utf-8")
    for args, msg in [(["eval", d, src, "--adapt-steps", "2"], "--adapt-steps needs --adapt"),
                      (["eval", d, src, "--adapt"], "needs a neural model (gpt or lstm), not 'ngram'"),
                      (["compress", d, src, tmp_path / "z", "--adapt"], "needs a neural model")]:
        r = _arlm(*args, check=False)
        assert r.returncode != 0 and msg in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "z").exists()


def test_header_round_trips_the_adapt_settings_and_rejects_damaged_ones():
    import struct
    import zlib

    from arlm.coding_header import Header

    a = {"chunk_size": 32, "steps": 2, "optimizer": "rms", "learning_rate": 3e-4, "decay": 0.001}
    h = Header(b"x" * 12, "file", True, 10, 1, 11, 3, 7, "cpu", a)
    blob = h.pack()
    back, pos = Header.unpack(blob, "f")
    assert back == h and pos == len(blob)
    body = bytearray(blob[:-4])
    # signature 4, version 1, fingerprint 12, flags 1, four one-byte counts, chunk and steps: the rule's index
    assert body[22:25] == bytes([32, 2, 1])
    body[24] = 9
    bad = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    with pytest.raises(ArlmError, match="dynamic evaluation settings"):
        Header.unpack(bad, "f")
