"""Sampling semantics (DESIGN.md §4)."""

from __future__ import annotations

import math

import pytest
import torch

from arlm.errors import ArlmError
from arlm.sampling import filter_logits, generate, sample_next

from conftest import build_case, names_docs


def kept(lp):
    return set(torch.nonzero(torch.isfinite(lp[0])).flatten().tolist())


def test_powers_of_two_top_p_boundary():
    logits = torch.log(torch.tensor([[1 / 8, 1 / 2, 1 / 16, 1 / 4, 1 / 16]], dtype=torch.float64))
    # sorted: 1/2 (id 1), 1/4 (id 3), 1/8 (id 0), 1/16, 1/16
    assert kept(filter_logits(logits, top_p=0.5)) == {1}
    assert kept(filter_logits(logits, top_p=0.5000001)) == {1, 3}
    assert kept(filter_logits(logits, top_p=0.75)) == {1, 3}
    assert kept(filter_logits(logits, top_p=0.875)) == {1, 3, 0}
    assert kept(filter_logits(logits, top_p=0.9)) == {1, 3, 0, 2}  # tie: lowest id first
    assert kept(filter_logits(logits, top_p=0.0)) == {1}  # never empty: greedy
    lp = filter_logits(logits, top_p=0.75)
    assert lp.exp().sum().item() == pytest.approx(1.0)
    assert lp[0, 1].exp().item() == pytest.approx(2 / 3)


def test_top_k_exact_and_ties_by_lowest_id():
    logits = torch.tensor([[0.0, 1.0, 1.0, 1.0, -1.0]])
    assert kept(filter_logits(logits, top_k=2)) == {1, 2}
    assert kept(filter_logits(logits, top_k=4)) == {0, 1, 2, 3}


def test_knobs_that_are_off_change_nothing():
    logits = torch.randn(3, 11, generator=torch.Generator().manual_seed(0))
    base = torch.log_softmax(logits.double(), -1)
    assert torch.allclose(filter_logits(logits, top_k=11), base)
    assert torch.allclose(filter_logits(logits, top_k=50), base)
    assert torch.allclose(filter_logits(logits, top_p=1.0), base)
    assert torch.allclose(filter_logits(logits, temperature=2.0), torch.log_softmax(logits.double() / 2, -1))


@pytest.mark.parametrize("kw", [dict(temperature=0.0), dict(top_k=1), dict(top_p=0.0)])
def test_greedy_equivalents(kw):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 20, generator=g)
    assert torch.equal(sample_next(logits, g, **kw), logits.argmax(-1))


def test_temperature_zero_generation_is_argmax_decoding():
    model, vocab = build_case("ngram3-char", names_docs(500))
    out = generate(model, vocab, "em", max_new_tokens=10, temperature=0.0, seed=1)
    # decode greedily by hand
    ids = [vocab.bos_id, *vocab.encode("em")]
    want = []
    for _ in range(10):
        nxt = int(model.logits(torch.tensor([ids]))[0, -1].argmax())
        if nxt == vocab.eos_id:
            break
        want.append(nxt)
        ids.append(nxt)
    assert out.token_ids == want
    assert generate(model, vocab, "em", max_new_tokens=10, top_k=1, seed=5).token_ids == want


@pytest.mark.parametrize("kw,msg", [
    (dict(temperature=-0.5), "temperature"), (dict(temperature=math.nan), "temperature"),
    (dict(top_p=1.5), "top_p"), (dict(top_p=-0.1), "top_p"), (dict(top_k=0), "top_k"),
])
def test_out_of_range_knobs(kw, msg):
    with pytest.raises(ValueError, match=msg):
        filter_logits(torch.zeros(1, 4), **kw)


def test_non_finite_logits_are_an_error():
    with pytest.raises(ArlmError, match="non-finite"):
        filter_logits(torch.tensor([[0.0, math.nan, 1.0]]))
    with pytest.raises(ArlmError, match="zero"):
        filter_logits(torch.full((1, 3), -math.inf))


def test_stop_reasons_and_stop_strings():
    model, vocab = build_case("ngram3-char", names_docs(500))
    s = generate(model, vocab, "", max_new_tokens=3, seed=0, temperature=0.0)
    assert s.finish_reason == "length" and len(s.token_ids) == 3
    long = generate(model, vocab, "", max_new_tokens=200, seed=0)
    assert long.finish_reason == "stop" and "<eos>" not in long.text
    a = generate(model, vocab, "", max_new_tokens=200, seed=3)
    stop = a.text[2:4]
    b = generate(model, vocab, "", max_new_tokens=200, seed=3, stop=[stop])
    assert b.finish_reason == "stop" and b.text == a.text[: a.text.find(stop)]


def test_seed_is_private():
    model, vocab = build_case("ngram3-char", names_docs(500))
    a = generate(model, vocab, "", max_new_tokens=50, seed=11)
    torch.rand(100)
    b = generate(model, vocab, "", max_new_tokens=50, seed=11)
    assert a == b


@pytest.mark.parametrize("case", ["ngram3-char", "gpt-rotary-char", "lstm-char"])
def test_num_samples_run_as_one_batch_with_per_row_rules(case):
    from arlm.sampling import generate_many

    model, vocab = build_case(case, names_docs())
    greedy = generate(model, vocab, "em", max_new_tokens=25, temperature=0)
    assert [s.text for s in generate_many(model, vocab, "em", 3, max_new_tokens=25, temperature=0)] == [greedy.text] * 3
    calls = []
    step = model.step
    model.step = lambda ids, state: calls.append(ids.shape) or step(ids, state)
    try:
        samples = generate_many(model, vocab, "", 5, max_new_tokens=30, temperature=1.5, seed=4, stop="a")
    finally:
        del model.step
    assert calls and all(shape == (5,) for shape in calls)  # one batched step per token, all rows together
    for s in samples:
        assert "a" not in s.text and s.finish_reason in ("stop", "length")
        assert len(s.token_ids) <= 30 and vocab.eos_id not in s.token_ids
    assert samples == generate_many(model, vocab, "", 5, max_new_tokens=30, temperature=1.5, seed=4, stop="a")
    with pytest.raises(ArlmError, match="num_samples"):
        generate_many(model, vocab, "", 0)


def test_sample_rows_does_not_depend_on_the_batch():
    # The one batched sampler of LM.generate and the server: a row's token depends on its logits and its
    # generator only; a row with non-finite logits gets its error while the other rows are still sampled.
    from arlm.sampling import sample_generator, sample_rows

    logits = torch.randn(4, 37, generator=torch.Generator().manual_seed(5))
    logits[2, 3] = float("nan")
    for knobs in (dict(temperature=0.8, top_k=10, top_p=0.9), dict(temperature=1.0), dict(temperature=0.0)):
        batch = sample_rows(logits, [sample_generator(7, r) for r in range(4)], **knobs)
        alone = [sample_rows(logits[r : r + 1], [sample_generator(7, r)], **knobs)[0] for r in range(4)]
        assert isinstance(batch[2], ArlmError) and isinstance(alone[2], ArlmError)
        assert [batch[r] for r in (0, 1, 3)] == [alone[r] for r in (0, 1, 3)]
        assert all(isinstance(batch[r], int) and 0 <= batch[r] < 37 for r in (0, 1, 3))


def test_unseeded_calls_differ_and_seeded_ones_repeat():
    from arlm.lm import LM

    model, vocab = build_case("ngram3-char", names_docs(500))
    lm = LM(model, vocab, "lines")
    unseeded = {lm.generate("", max_new_tokens=40, temperature=1.0).text for _ in range(4)}
    assert len(unseeded) > 1  # a fresh seed per call, not seed 0 every time
    assert lm.generate("", max_new_tokens=40, seed=9) == lm.generate("", max_new_tokens=40, seed=9)


def test_every_64_bit_seed_has_its_own_stream_and_others_are_refused():
    from arlm.sampling import generate_many, sample_generator

    def draws(seed, index=0):
        return torch.randint(0, 2**31, (8,), generator=sample_generator(seed, index)).tolist()

    # torch keeps 32 bits of a manual seed: seed and seed + 2**32 must not share a stream
    seeds = [0, 5, 2**32 + 5, 2**33 + 5, 2**64 - 1, 2**64 - 2**32 + 5]
    streams = [draws(s, i) for s in seeds for i in range(3)]
    assert len({tuple(x) for x in streams}) == len(streams)
    assert draws(5) == torch.randint(0, 2**31, (8,), generator=torch.Generator().manual_seed(5)).tolist()
    model, vocab = build_case("ngram3-char", names_docs(500))
    a = generate(model, vocab, "", max_new_tokens=60, seed=7)
    assert a != generate(model, vocab, "", max_new_tokens=60, seed=7 + 2**32)
    assert generate(model, vocab, "", max_new_tokens=5, seed=2**64 - 1) == generate(model, vocab, "", max_new_tokens=5,
                                                                                     seed=2**64 - 1)
    for bad in (-1, 2**64, 1.5, "3", True):
        with pytest.raises(ArlmError, match="seed must be an integer from 0 to"):
            generate_many(model, vocab, "", 2, max_new_tokens=3, seed=bad)
