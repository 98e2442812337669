"""The adaptive families: the online mixer (arlm.models.mixer) and dynamic evaluation (arlm.models.dyneval)."""

from __future__ import annotations

import torch

from arlm.data import encode_document
from arlm.models.dyneval import DynEvalConfig, DynEvalModel
from arlm.models.mixer import MixerConfig, MixerModel
from arlm.vocab import CharVocab

from conftest import make_cache, make_lstm, make_ngram, names_docs

TEXT = "abracadabra " * 30


def _vocab():
    return CharVocab.train(names_docs(300) + [TEXT])


def test_mixer_learns_to_trust_the_better_component():
    v = _vocab()
    docs = names_docs(300)
    comps = [make_ngram(v, docs, 1), make_cache(v, order=4)]  # the cache wins on a repeated text
    cfg = MixerConfig(v.vocab_size, v.bos_id, v.eos_id, ["ngram", "cache"], [], learning_rate=0.01, linear_input=False)
    model = MixerModel(cfg, comps)
    ids = torch.tensor(encode_document(v, TEXT))
    state = None
    for t in range(len(ids)):
        _, state = model.step(ids[t : t + 1], state)
    beta = state.weights[0] + state.weights[1]
    assert beta[1] > 0.5 + beta[0]  # the cache's weight grew past the unigram's
    frozen = MixerModel(MixerConfig(**{**cfg.__dict__, "learning_rate": 0.0}), comps)
    assert model.sequence_log_probs(ids).sum() > frozen.sequence_log_probs(ids).sum() + 5.0


def test_dynamic_evaluation_adapts_and_is_exact_at_zero_rate():
    v = _vocab()
    base = make_lstm(v)
    ids = torch.tensor(encode_document(v, TEXT))

    def dyneval(lr):
        return DynEvalModel(DynEvalConfig(v.vocab_size, v.bos_id, v.eos_id, "lstm", 10, lr), base).eval()

    static = base.sequence_log_probs(ids)
    assert torch.allclose(dyneval(0.0).sequence_log_probs(ids), static, atol=1e-12)
    adapted = dyneval(0.5).sequence_log_probs(ids)
    assert adapted[:11].tolist() == static[:11].tolist()  # nothing learnt before the first chunk is complete
    assert adapted[-100:].sum() > static[-100:].sum() + 10.0  # it has learnt the repeats
    # the wrapped model itself is never changed: every document starts from the trained weights
    assert torch.equal(base.sequence_log_probs(ids), static)
