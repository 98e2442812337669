"""The adaptive families: the online mixer (arlm.models.mixer) and dynamic evaluation (arlm.models.dyneval)."""

from __future__ import annotations

import pytest
import torch

from arlm.data import encode_document
from arlm.errors import ArlmError
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
        return DynEvalModel(DynEvalConfig(v.vocab_size, v.bos_id, v.eos_id, "lstm", 10, lr, optimizer="sgd"), base).eval()

    static = base.sequence_log_probs(ids)
    assert torch.allclose(dyneval(0.0).sequence_log_probs(ids), static, atol=1e-12)
    adapted = dyneval(0.5).sequence_log_probs(ids)
    assert adapted[:11].tolist() == static[:11].tolist()  # nothing learnt before the first chunk is complete
    assert adapted[-100:].sum() > static[-100:].sum() + 10.0  # it has learnt the repeats
    # the wrapped model itself is never changed: every document starts from the trained weights
    assert torch.equal(base.sequence_log_probs(ids), static)


def _gpt_dyneval(v, **settings):
    from conftest import make_gpt

    base = make_gpt(v, block_size=8)
    return base, DynEvalModel(DynEvalConfig(v.vocab_size, v.bos_id, v.eos_id, "gpt", **settings), base).eval()


@pytest.mark.parametrize("chunk", [1, 2, 4, 8])
def test_gpt_chunks_at_zero_rate_are_the_static_sliding_window(chunk):
    """Chunk k is predicted from the window ending at its last token: with no update, the static sliding window
    whose stride is the chunk size (every token sees at least block_size - chunk tokens of context)."""
    v = _vocab()
    ids = torch.tensor(encode_document(v, TEXT[:100]))
    base, model = _gpt_dyneval(v, chunk_size=chunk, learning_rate=0.0)
    static = base.sequence_log_probs(ids, stride=chunk)
    assert torch.allclose(model.sequence_log_probs(ids), static, atol=1e-10)
    assert torch.allclose(model.stepwise_log_probs(ids, normalise=True), static, atol=1e-10)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.5), ("rms", 0.01), ("rms-relative", 0.3)])
def test_gpt_dynamic_evaluation_learns_the_repeats_and_leaves_the_base_alone(optimizer, lr):
    v = _vocab()
    ids = torch.tensor(encode_document(v, TEXT))
    base, model = _gpt_dyneval(v, chunk_size=4, learning_rate=lr, optimizer=optimizer, decay=0.001)
    static = base.sequence_log_probs(ids, stride=4)
    adapted = model.sequence_log_probs(ids)
    assert torch.equal(adapted[:4], static[:4])  # the first chunk is predicted before any update
    assert adapted[-100:].sum() > static[-100:].sum() + 10.0
    assert torch.equal(base.sequence_log_probs(ids, stride=4), static)
    # step (compress, sample, serve) agrees with the batched pass up to float rounding
    assert torch.allclose(model.stepwise_log_probs(ids, normalise=True), adapted, atol=1e-9)


def test_rms_relative_steps_are_rms_steps_times_each_trained_tensors_rms():
    v = _vocab()
    ids = torch.tensor(encode_document(v, TEXT[:40]))
    moved = {}
    for rule in ("rms", "rms-relative"):
        base, model = _gpt_dyneval(v, chunk_size=4, learning_rate=1e-3, optimizer=rule, decay=0.0)
        st = model._new_state()
        model._update(st, ids[None, :8], ids[5:9], 4)
        moved[rule] = [(p - p0).double() for p, p0 in zip(st.model.parameters(), base.parameters())]
    scales = [p.detach().double().pow(2).mean().sqrt() for p in base.parameters()]
    for a, r, c in zip(moved["rms"], moved["rms-relative"], scales):
        assert torch.allclose(r, a * c, rtol=1e-4, atol=1e-12)
    assert any(float(c) > 2 * float(min(scales)) for c in scales)  # the tensors' scales differ


def test_bad_settings_are_one_line_errors():
    from arlm.lm import LM

    v = _vocab()
    for bad in [dict(chunk_size=0), dict(chunk_size=9), dict(steps=0), dict(learning_rate=-1.0),
                dict(decay=float("nan")), dict(optimizer="adam")]:
        with pytest.raises(ArlmError):
            _gpt_dyneval(v, **bad)
    with pytest.raises(ArlmError, match="unknown dynamic evaluation setting 'lr'"):
        LM(make_lstm(v), v).adapt(lr=0.1)
    with pytest.raises(ArlmError, match="needs a neural model"):
        LM(make_ngram(v, names_docs(50), 2), v).adapt()


def test_adapt_on_a_dyneval_model_replaces_its_settings():
    from arlm.lm import LM

    v = _vocab()
    base, model = _gpt_dyneval(v, chunk_size=2, learning_rate=0.5)
    again = LM(model, v).adapt(chunk_size=4, optimizer="rms")
    assert again.model.base is base and again.model.settings() == {
        "chunk_size": 4, "learning_rate": 3e-4, "decay": 0.001, "steps": 1, "optimizer": "rms"}
    assert LM(base, v).adapt().model.settings()["chunk_size"] == 4  # half the block by default
    assert LM(base, v).adapt().model.settings()["optimizer"] == "rms-relative"
    assert LM(base, v).adapt().model.settings()["learning_rate"] == 1e-3
