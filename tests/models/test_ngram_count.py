"""Budgeted n-gram counting (sorted runs on disk, merged) gives exactly the in-memory model."""

from __future__ import annotations

import numpy as np
import pytest

from arlm.corpus import read_text, split_documents
from arlm.data import encode_documents
from arlm.errors import ArlmError
from arlm.models.ngram import NGramConfig, NGramModel
from arlm.models.ngram_count import RunCounter, fit_budgeted, parse_memory
from arlm.vocab import CharVocab
from conftest import NAMES, SHAKESPEARE


def _stream(path, documents):
    docs = split_documents(read_text(path), documents)
    vocab = CharVocab.train(docs)
    encoded = encode_documents(vocab, docs)
    return vocab, encoded, np.concatenate(encoded)


def _assert_identical(a: NGramModel, b: NGramModel, ids: np.ndarray) -> None:
    assert a.config == b.config  # discounts included, compared as floats for equality
    for la, lb in zip(a.levels, b.levels):
        assert np.array_equal(la.keys, lb.keys)
        assert np.array_equal(la.counts, lb.counts)
    pa = a.target_probs(ids[None, :-1], ids[None, 1:])
    pb = b.target_probs(ids[None, :-1], ids[None, 1:])
    assert np.array_equal(pa, pb)  # bit-identical probabilities of every token of the text
    window = ids[None, :2000]
    assert np.array_equal(a.dense_probs(window), b.dense_probs(window))


# budgets chosen to force at least 8 sorted runs per order on the 100 kB fixture
@pytest.mark.parametrize("order,budget", [(3, 300_000), (5, 1_000_000), (7, 1_200_000)])
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_budgeted_counting_is_bit_identical_on_shakespeare(order, budget, tmp_path):
    vocab, encoded, stream = _stream(SHAKESPEARE, "file")
    config = NGramConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, order=order)
    stats: dict = {}
    # chunks of uneven sizes: the counter re-cuts them to its budget
    budgeted = fit_budgeted(config, np.array_split(stream, 13), budget, tmp_dir=tmp_path, stats=stats)
    assert min(stats["runs"]) >= 8, stats
    assert not list(tmp_path.iterdir())  # the runs are removed
    _assert_identical(NGramModel.fit(config, encoded), budgeted, stream)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("order", [1, 2, 4])
def test_budgeted_counting_many_documents(order):
    vocab, encoded, stream = _stream(NAMES, "lines")
    config = NGramConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, order=order)
    stats: dict = {}
    budgeted = fit_budgeted(config, [stream], 100_000, stats=stats)
    assert order == 1 or max(stats["runs"]) >= 2
    _assert_identical(NGramModel.fit(config, encoded), budgeted, stream)


def test_run_counter_merges_sorted_runs(tmp_path):
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 500, 20_000)
    counter = RunCounter(tmp_path, "t")
    for i, part in enumerate(np.array_split(keys, 40)):
        u, c = np.unique(part, return_counts=True)
        counter.add(u, c)
        if i % 4 == 3:
            counter.spill()
    assert len(counter.runs) == 10
    merged_keys, merged_counts = counter.merged(block=16)  # tiny blocks: many merge steps
    u, c = np.unique(keys, return_counts=True)
    assert np.array_equal(merged_keys, u) and np.array_equal(merged_counts, c)
    assert not list(tmp_path.iterdir())


def test_parse_memory_and_limits():
    assert parse_memory("2G") == 2 << 30
    assert parse_memory("512M") == 512 << 20
    assert parse_memory("1.5g") == 3 << 29
    assert parse_memory("100000") == 100000
    for bad in ("lots", "1K", "-3M"):
        with pytest.raises(ArlmError):
            parse_memory(bad)
    config = NGramConfig(vocab_size=50_000, bos_id=0, eos_id=1, order=5)
    with pytest.raises(ArlmError, match=r"vocab_size \*\* order"):
        fit_budgeted(config, [np.array([0, 5, 1])], 1 << 20)
