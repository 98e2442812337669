"""The model contract (DESIGN.md §2, §3), checked against every family."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arlm import scoring
from arlm.data import encode_document
from arlm.lm import LM
from arlm.vocab import CharVocab

from conftest import FAMILY_CASES, build_case, names_docs

PROBES = ["", "a", "emma", "olivia", "zzzzqx", "annamarialee", "x" * 40]


def _encode(vocab, text):
    return torch.tensor([encode_document(vocab, text)])


def test_distributions_sum_to_one_and_bos_has_no_mass(family_case):
    name, model, vocab = family_case
    for text in PROBES:
        ids = _encode(vocab, text)[:, : (model.block_size or 10**9) if model.windowed else None]
        with torch.no_grad():
            log_probs = torch.log_softmax(model.logits(ids).double(), dim=-1)  # [1, T, V]
        probs = log_probs.exp()
        assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:2], dtype=torch.float64), atol=1e-9), name
        assert probs[..., vocab.bos_id].max().item() == 0.0, name


def test_log_prob_is_sum_of_token_logprobs(family_case):
    name, model, vocab = family_case
    for text in PROBES:
        total = scoring.log_prob(model, vocab, text)
        per_token = scoring.token_logprobs(model, vocab, text)
        assert len(per_token) == len(vocab.encode(text)) + 1
        assert per_token[-1][0] == "<eos>"
        assert total == pytest.approx(sum(v for _, v in per_token), abs=1e-9)
        assert total < 0


def test_step_agrees_with_logits(family_case):
    name, model, vocab = family_case
    text = "christopheralexander"  # longer than the tiny GPT's block: the cache must slide
    ids = _encode(vocab, text)[0]
    with torch.no_grad():
        state = None
        for t in range(len(ids)):
            out, state = model.step(ids[t : t + 1], state)
            lo = max(0, t + 1 - model.block_size) if model.windowed else 0
            ref = model.logits(ids[None, lo : t + 1])[0, -1]
            a = torch.log_softmax(out[0].double(), -1)
            b = torch.log_softmax(ref.double(), -1)
            finite = torch.isfinite(b)
            assert torch.equal(finite, torch.isfinite(a)), (name, t)
            assert torch.allclose(a[finite], b[finite], atol=1e-5), (name, t)


def test_windowed_scoring_predicts_every_token_once(family_case):
    name, model, vocab = family_case
    text = "abcdefghijklmnopqrstuvwxyz" * 3
    ids = torch.tensor(encode_document(vocab, text))
    lp = model.sequence_log_probs(ids)
    assert lp.shape == (len(ids) - 1,)
    # left-to-right consistency: scores of a prefix do not depend on what follows
    lp_prefix = model.sequence_log_probs(ids[:30])
    assert torch.allclose(lp[:29], lp_prefix, atol=1e-9)
    # batched documents give the same scores as one at a time
    docs = [torch.tensor(encode_document(vocab, t)) for t in PROBES]
    batched = model.documents_log_probs(docs)
    for d, b in zip(docs, batched):
        assert torch.allclose(model.sequence_log_probs(d), b, atol=1e-6)


def test_conditional_equals_difference_of_prefix_probabilities(char_or_byte_case):
    # exact only for char and byte vocabularies; BPE's boundary policy is tested in tests/test_scoring.py
    name, model, vocab = char_or_byte_case
    for prefix, completion in [("em", "ma"), ("", "ava"), ("olivia", ""), ("a" * 12, "bcdefg")]:
        cond = scoring.conditional_log_prob(model, vocab, completion, given=prefix)
        diff = scoring.log_prob(model, vocab, prefix + completion, eos=False) - scoring.log_prob(model, vocab, prefix, eos=False)
        assert cond == pytest.approx(diff, abs=1e-9)


def test_save_then_load_scores_identically(family_case, tmp_path):
    name, model, vocab = family_case
    LM(model, vocab, "lines").save(tmp_path / "m")
    lm = LM.load(tmp_path / "m")
    assert lm.model.family == model.family
    for text in PROBES:
        assert lm.log_prob(text) == scoring.log_prob(model, vocab, text)


def test_total_probability_of_all_short_strings_is_one():
    """On a two-symbol vocab: Σ_{|x|≤6} p(x) + Σ_{|x|=7} p(x as a prefix) = 1."""
    docs = ["ab", "ba", "aab", "abba", "b", "bbbab", "a"]
    for name in sorted(FAMILY_CASES):
        if FAMILY_CASES[name][0] != "char":
            continue
        model, vocab = build_case(name, docs)
        assert vocab.chars == ["a", "b"]
        total = 0.0
        for n in range(7):
            for chars in itertools.product("ab", repeat=n):
                total += math.exp(scoring.log_prob(model, vocab, "".join(chars)))
        for chars in itertools.product("ab", repeat=7):
            total += math.exp(scoring.log_prob(model, vocab, "".join(chars), eos=False))
        assert total == pytest.approx(1.0, abs=1e-9), name


SAMPLE_SCRIPT = """
import json, sys
import arlm
out = {}
for d in sys.argv[1:]:
    lm = arlm.load(d)
    out[d] = [s.text for s in lm.generate("", max_new_tokens=30, temperature=0.9, top_k=10, top_p=0.95, seed=7, num_samples=3)]
print(json.dumps(out))
"""


def test_seeded_samples_identical_across_processes(tmp_path):
    dirs = []
    expected = {}
    for name in sorted(FAMILY_CASES):
        model, vocab = build_case(name, names_docs(500))
        d = str(tmp_path / name)
        LM(model, vocab, "lines").save(d)
        dirs.append(d)
        lm = LM.load(d)
        torch.manual_seed(123)  # global RNG state must not matter
        expected[d] = [s.text for s in lm.generate("", max_new_tokens=30, temperature=0.9, top_k=10, top_p=0.95, seed=7, num_samples=3)]
        other = lm.generate("", max_new_tokens=30, temperature=0.9, top_k=10, top_p=0.95, seed=8, num_samples=3)
        assert [s.text for s in other] != expected[d] or name.startswith("ngram1")
    res = subprocess.run([sys.executable, "-c", SAMPLE_SCRIPT, *dirs], capture_output=True, text=True, check=True)
    assert json.loads(res.stdout) == expected


@settings(max_examples=40, deadline=None)
@given(prefix=st.text(alphabet="abcdeilmnoz", max_size=12), completion=st.text(alphabet="abcdeilmnoz", max_size=12))
def test_laws_of_probability_ngram(prefix, completion):
    model, vocab = _cached_ngram()
    lp_prefix = scoring.log_prob(model, vocab, prefix, eos=False)
    lp_joint = scoring.log_prob(model, vocab, prefix + completion, eos=False)
    lp_full = scoring.log_prob(model, vocab, prefix + completion)
    # a longer prefix is never more probable; ending is a further event
    assert lp_joint <= lp_prefix + 1e-12
    assert lp_full <= lp_joint + 1e-12
    assert lp_prefix <= 0.0
    # chain rule
    cond = scoring.conditional_log_prob(model, vocab, completion, given=prefix)
    assert cond == pytest.approx(lp_joint - lp_prefix, abs=1e-9)
    # the next-token distribution sums to one and gives <eos> its log_prob
    dist = scoring.next_token_log_probs(model, vocab, prefix)
    assert math.fsum(math.exp(v) for v in dist.values()) == pytest.approx(1.0, abs=1e-12)
    assert "<bos>" not in dist


_CACHE = {}


def _cached_ngram():
    if "m" not in _CACHE:
        _CACHE["m"] = build_case("ngram5-char", names_docs())
    return _CACHE["m"]


def test_char_vocab_probe_roundtrip():
    v = CharVocab.train(names_docs())
    assert v.decode(v.encode("emma")) == "emma"
