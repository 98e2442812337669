"""Interpolated modified Kneser-Ney: hand-computed values, an independent
reference implementation, discount fallback, and the sparse/dense paths."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from arlm import scoring
from arlm.data import encode_documents
from arlm.errors import ArlmError
from arlm.models.ngram import FALLBACK_DISCOUNTS, NGramConfig, NGramModel, estimate_discounts
from arlm.vocab import CharVocab

from conftest import names_docs


def fit(docs, order):
    v = CharVocab.train(docs)
    return NGramModel.fit(NGramConfig(v.vocab_size, v.bos_id, v.eos_id, order=order), encode_documents(v, docs)), v


def test_hand_computed_bigram_probabilities():
    # Three sentences; every order falls back to discounts (0.5, 1, 1.5).
    with pytest.warns(UserWarning, match="fallback"):
        model, v = fit(["ab", "abb", "ba"], 2)
    assert model.config.discounts == [list(FALLBACK_DISCOUNTS)] * 2
    # unigram continuation counts a:2 b:3 <eos>:2, gamma = 3.5/7, uniform 1/3 over {a, b, <eos>}
    p1 = {"a": 13 / 42, "b": 16 / 42, "<eos>": 13 / 42}
    dist = {k: math.exp(x) for k, x in scoring.next_token_log_probs(model, v, "").items()}
    # after <bos>: raw counts a:2 b:1 (n-grams that start with <bos>), gamma = 1.5/3
    assert dist["a"] == pytest.approx(1 / 3 + 0.5 * p1["a"], abs=1e-15) == pytest.approx(41 / 84)
    assert dist["b"] == pytest.approx(0.5 * p1["b"] + (1 - 0.5) / 3, abs=1e-15)
    assert dist["<eos>"] == pytest.approx(0.5 * p1["<eos>"], abs=1e-15)
    after_a = {k: math.exp(x) for k, x in scoring.next_token_log_probs(model, v, "a").items()}
    assert after_a["b"] == pytest.approx(11 / 21, abs=1e-15)
    assert after_a["a"] == pytest.approx(0.5 * p1["a"], abs=1e-15)
    assert scoring.log_prob(model, v, "ab") == pytest.approx(math.log(41 / 84 * 11 / 21 * 17 / 42), abs=1e-12)


def reference_kn(docs, order, bos="^", eos="$"):
    """A direct, dictionary-based transcription of Chen & Goodman's interpolated
    modified Kneser-Ney with KenLM's <bos> convention, for comparison."""
    raw = [defaultdict(int) for _ in range(order + 1)]
    for d in docs:
        seq = [bos, *d, eos]
        for i in range(1, len(seq)):
            for n in range(1, order + 1):
                if i - n + 1 >= 0:
                    raw[n][tuple(seq[i - n + 1 : i + 1])] += 1
    adj = [dict() for _ in range(order + 1)]
    adj[order] = dict(raw[order])
    for n in range(1, order):
        left = defaultdict(set)
        for g in raw[n + 1]:
            left[g[1:]].add(g[0])
        for g, c in raw[n].items():
            adj[n][g] = c if g[0] == bos else len(left[g])
    discounts = [None]
    for n in range(1, order + 1):
        d, _ = estimate_discounts(np.array(list(adj[n].values()), dtype=np.float64))
        discounts.append(d)
    vocab = sorted({c for d in docs for c in d}) + [eos]

    def prob(w, h):
        if len(h) == 0:
            p_lower = 1.0 / len(vocab)
        else:
            p_lower = prob(w, h[1:])
        n = len(h) + 1
        kids = {g[-1]: c for g, c in adj[n].items() if g[:-1] == h}
        total = sum(kids.values())
        if total == 0:
            return p_lower
        D = discounts[n]
        disc = lambda c: D[min(c, 3) - 1]
        gamma = sum(disc(c) for c in kids.values()) / total
        c = kids.get(w, 0)
        return max(c - disc(c), 0) / total + gamma * p_lower if c else gamma * p_lower

    def log_prob(text):
        seq = [bos, *text, eos]
        return sum(math.log(prob(seq[i], tuple(seq[max(0, i - order + 1) : i]))) for i in range(1, len(seq)))

    return log_prob


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_matches_reference_implementation(order):
    docs = names_docs(400)
    model, v = fit(docs, order)
    ref = reference_kn(docs, order)
    for text in ["emma", "zyx", "", "annabelle", "qqq", docs[7]]:
        assert scoring.log_prob(model, v, text) == pytest.approx(ref(text), abs=1e-10), text


def test_fallback_corpus_still_normalises():
    with pytest.warns(UserWarning, match="out of range"):
        model, v = fit(["aaaa", "aaaa", "aaaa"], 3)
    assert model.config.fallback_orders
    probs = torch.exp(model.logits(torch.tensor([[v.bos_id, 0, 0, 0, 0, 0]])))
    assert torch.allclose(probs.sum(-1), torch.ones(1, 6, dtype=torch.float64), atol=1e-12)


def test_discount_estimate_formula():
    counts = np.array([1] * 100 + [2] * 40 + [3] * 20 + [4] * 10 + [9] * 5)
    d, ok = estimate_discounts(counts)
    y = 100 / (100 + 80)
    assert ok and d == pytest.approx([1 - 2 * y * 40 / 100, 2 - 3 * y * 20 / 40, 3 - 4 * y * 10 / 20])


def test_dense_and_sparse_paths_agree():
    model, v = fit(names_docs(1000), 5)
    ids = torch.tensor([v.bos_id, *v.encode("christopherzzyxemma"), v.eos_id])
    sparse = model.sequence_log_probs(ids)
    dense = torch.log_softmax(model.logits(ids[None, :-1])[0], -1).gather(1, ids[1:, None])[:, 0]
    assert torch.allclose(sparse, dense, atol=1e-12)


def test_order_out_of_range_is_an_error():
    v = CharVocab.train(["ab"])
    with pytest.raises(ArlmError, match="order"):
        NGramModel.fit(NGramConfig(v.vocab_size, v.bos_id, v.eos_id, order=11), encode_documents(v, ["ab"]))


def test_tinyshakespeare_order5_beats_bar():
    """A quick end-to-end figure on real text (full figures: bench/ngram.py)."""
    from conftest import SHAKESPEARE

    text = SHAKESPEARE.read_text(encoding="utf-8")
    n = int(0.9 * len(text))
    model, v = fit([text[:n]], 5)
    m = scoring.evaluate(model, v, text[n:], "file")
    assert m["bits_per_char"] <= 2.27
    assert m["n_tokens"] == len(text) - n + 1


def test_order_one_fallback_of_a_char_vocab_is_not_a_warning():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, _ = fit(names_docs(), 5)
    assert model.config.fallback_orders == [1]  # 27 characters, each seen hundreds of times: no n1..n4
    assert not [w for w in caught if "Kneser-Ney" in str(w.message)]
    with pytest.warns(UserWarning, match=r"order\(s\) \[2\]"):
        fit(["ab", "abb", "ba"], 2)
