"""The context-mixing family (arlm.models.cm): exactness, determinism, adaptation, the CLI and compression."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from arlm.data import encode_document
from arlm.errors import ArlmError
from arlm.lm import LM
from arlm.models.cm import CMConfig, CMModel, build_tree, word_token_ids
from arlm.vocab import ByteVocab, CharVocab

from conftest import make_cm, names_docs, run_arlm

DATA = Path(__file__).resolve().parents[1] / "data"


def test_tree_paths_give_every_token_but_bos_one_leaf():
    for V, bos in [(3, 1), (7, 5), (66, 64), (258, 256)]:
        path_nodes, path_bits, path_len, depth, is_leaf = build_tree(V, bos)
        assert len(depth) == V - 2 and is_leaf[bos] == 0 and path_len[bos] == 0
        codes = {tuple(path_bits[v, : path_len[v]]) for v in range(V) if v != bos}
        assert len(codes) == V - 1  # distinct paths: a prefix code over the V - 1 leaves
        assert max(path_len) <= math.ceil(math.log2(V - 1))


def test_step_matches_sequence_scores_exactly_and_sums_to_one():
    docs = names_docs(300)
    vocab = CharVocab.train(docs)
    model = make_cm(vocab, docs)
    ids = torch.tensor(encode_document(vocab, "annamarialee" * 3 + "emmaolivia"))
    lp = model.sequence_log_probs(ids)
    state, got = None, []
    for t in range(len(ids) - 1):
        out, state = model.step(ids[t : t + 1], state)  # [1, V]
        assert math.fsum(np.exp(out[0].numpy())) == pytest.approx(1.0, abs=1e-12)
        got.append(out[0, ids[t + 1]].item())
    assert torch.equal(torch.tensor(got, dtype=torch.float64), lp)  # bit-identical, not just close


def test_two_loads_score_identically_and_reading_does_not_change_the_model(tmp_path):
    docs = names_docs(300)
    vocab = CharVocab.train(docs)
    LM(make_cm(vocab, docs), vocab, "file").save(tmp_path / "m")
    a, b = LM.load(tmp_path / "m"), LM.load(tmp_path / "m")
    ids = torch.tensor(encode_document(vocab, "oliviaavaemma" * 5))
    first = a.model.sequence_log_probs(ids)
    assert torch.equal(first, b.model.sequence_log_probs(ids))
    assert torch.equal(first, a.model.sequence_log_probs(ids))  # each sequence starts from the trained tables


def test_it_adapts_to_the_text_it_reads():
    """A random string is costly the first time and cheap when it repeats (counters + match model)."""
    vocab = ByteVocab()
    model = CMModel(CMConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, table_bits=14, match_bits=12))
    rng = np.random.default_rng(0)
    chunk = bytes(rng.integers(97, 123, 200).tolist()).decode()
    lp = model.sequence_log_probs(torch.tensor(encode_document(vocab, chunk * 2))).numpy()
    first, second = -lp[:200].sum(), -lp[200:400].sum()
    assert second < 0.2 * first, (first, second)


def test_training_conditions_later_text():
    text = (DATA / "shakespeare.txt").read_text(encoding="utf-8")
    vocab = CharVocab.train([text])
    cfg = CMConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, table_bits=16, match_bits=14,
                   word_token_ids=word_token_ids(vocab))
    untrained, trained = CMModel(cfg), CMModel(cfg)
    trained.fit([np.array(encode_document(vocab, text[:60000]))])
    held_out = torch.tensor(encode_document(vocab, text[60000:70000]))
    bits = [-m.sequence_log_probs(held_out).sum().item() / math.log(2) / 10000 for m in (untrained, trained)]
    assert bits[1] < bits[0] - 0.4 and bits[1] < 2.8, bits


def test_bad_config_is_an_arlm_error():
    for bad in [dict(orders=[]), dict(orders=[99]), dict(table_bits=40), dict(count_limit=0)]:
        with pytest.raises(ArlmError):
            CMModel(CMConfig(5, 3, 4, **bad))


_arlm = run_arlm

@pytest.mark.parametrize("vocab", ["char", "byte"])
def test_cli_train_compress_decompress_and_eval_agree(vocab, tmp_path):
    """`arlm train --model cm`, then compress in one process and decompress in another, byte for byte;
    the size is Σ −log₂ p of `arlm eval` within 0.1% + 64 bytes."""
    text = (DATA / "shakespeare.txt").read_text(encoding="utf-8")
    (tmp_path / "train.txt").write_text(text[:90000], encoding="utf-8")
    d = tmp_path / "cm"
    _arlm("train", tmp_path / "train.txt", "--model", "cm", "--vocab", vocab, "--val-fraction", "0",
          "--table-bits", "14", "--match-bits", "12", "--orders", "0,1,2,3,4", "--out", d)
    # empty and one-token texts are round-tripped for every family in tests/test_coding.py
    samples = {"val": text[90000:96000]} if vocab == "char" else {"multibyte": "naïve café — ☃ 𝄞 zoë\r\n" * 3}
    for name, sample in samples.items():
        src = tmp_path / f"{name}.txt"
        src.write_text(sample, encoding="utf-8")
        z = json.loads(_arlm("compress", d, src, tmp_path / f"{name}.z", "--json", "--no-progress").stdout)
        _arlm("decompress", d, tmp_path / f"{name}.z", tmp_path / f"{name}.back", "--no-progress")
        assert (tmp_path / f"{name}.back").read_bytes() == src.read_bytes(), name
        if sample:
            ev = json.loads(_arlm("eval", d, src, "--json").stdout)
            bits = ev["nll"] / math.log(2)
            size = (tmp_path / f"{name}.z").stat().st_size
            assert abs(8 * size - bits) <= 0.001 * bits + 8 * 64, (name, size, bits / 8)
            assert z["nll_bits"] == pytest.approx(bits, rel=1e-9)
    if vocab == "byte":
        return
    res = _arlm("train", tmp_path / "train.txt", "--model", "cm", "--orders", "1,x", "--out", tmp_path / "bad",
                check=False)
    assert res.returncode != 0 and "--orders" in res.stderr and "Traceback" not in res.stderr
    res = _arlm("train", tmp_path / "train.txt", "--model", "ngram", "--table-bits", "14", "--out", tmp_path / "bad",
                check=False)
    assert res.returncode != 0 and "--table-bits" in res.stderr and "Traceback" not in res.stderr



def test_a_config_saved_before_line_contexts_loads_without_them():
    from arlm.models.base import config_from_dict

    old = {"vocab_size": 5, "bos_id": 0, "eos_id": 1}
    assert config_from_dict(CMConfig, old).line_contexts is False  # what such a model computed
    assert config_from_dict(CMConfig, {**old, "line_contexts": True}).line_contexts is True
    assert CMConfig(5, 0, 1).line_contexts is True  # new models have them
