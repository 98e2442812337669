"""The document cache: hand-computed probabilities, no look-ahead, no training data."""

from __future__ import annotations

import math

import pytest
import torch

from arlm import scoring
from arlm.errors import ArlmError
from arlm.models.cache import CacheConfig, CacheModel
from arlm.vocab import CharVocab


def cache(order=2, discount=0.5):
    v = CharVocab(["a", "b", "c"])  # V = 5 with <bos>, <eos>
    return CacheModel(CacheConfig(v.vocab_size, v.bos_id, v.eos_id, order=order, discount=discount)), v


def test_hand_computed():
    m, v = cache()
    # first token: nothing seen, uniform over {a, b, c, <eos>}
    tl = scoring.token_logprobs(m, v, "aab")
    assert tl[0][1] == pytest.approx(math.log(1 / 4))
    # after "a": unigram cache {a: 1}; bigram history "a" unseen
    # p(a) = (1 - .5)/1 + .5 * 1 / 1 * 1/4
    assert tl[1][1] == pytest.approx(math.log(0.5 + 0.5 * 0.25))
    # after "aa": unigram {a: 2} -> p1(b) = .5 * 1/2 * 1/4 = 1/16; bigram "a" seen once {a: 1}:
    # p(b | a) = 0 + .5 * 1/1 * p1(b)
    assert tl[2][1] == pytest.approx(math.log(0.5 * (0.5 / 2 * 0.25)))


def test_depends_only_on_the_past_and_resets_per_document():
    m, v = cache(order=3)
    a = scoring.sequence_log_probs(m, [v.bos_id, *v.encode("abcabcab"), v.eos_id])
    b = scoring.sequence_log_probs(m, [v.bos_id, *v.encode("abcabcabcccc"), v.eos_id])
    assert torch.allclose(a[:8], b[:8])
    docs = [torch.tensor([v.bos_id, *v.encode(t), v.eos_id]) for t in ("abab", "abab")]
    x, y = m.documents_log_probs(docs)
    assert torch.equal(x, y)  # the second document does not see the first


def test_repetition_gets_cheaper():
    m, v = cache(order=4)
    text = "abcacb" * 10
    lp = scoring.token_logprobs(m, v, text)
    assert sum(x for _, x in lp[-12:-1]) > sum(x for _, x in lp[:11])


def test_bad_config():
    v = CharVocab(["a"])
    with pytest.raises(ArlmError, match="order"):
        CacheModel(CacheConfig(v.vocab_size, v.bos_id, v.eos_id, order=0))
    with pytest.raises(ArlmError, match="discount"):
        CacheModel(CacheConfig(v.vocab_size, v.bos_id, v.eos_id, discount=1.0))
