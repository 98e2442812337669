from __future__ import annotations

import math

import pytest

from arlm import scoring
from arlm.errors import ArlmError

from conftest import build_case, names_docs


def test_evaluate_metrics_and_denominators():
    model, vocab = build_case("ngram3-char", names_docs(500))
    text = "emma\nolivia\n\nava\n"
    m = scoring.evaluate(model, vocab, text, "lines")
    lps = [scoring.log_prob(model, vocab, t) for t in ("emma", "olivia", "ava")]
    assert m["n_documents"] == 3
    assert m["n_tokens"] == 4 + 6 + 3 + 3  # every character and one <eos> per document
    assert m["nll"] == pytest.approx(-sum(lps), abs=1e-9)
    assert m["mean_nll"] == pytest.approx(m["nll"] / m["n_tokens"])
    assert m["perplexity"] == pytest.approx(math.exp(m["mean_nll"]))
    assert m["n_chars"] == len(text)
    assert m["bits_per_char"] == pytest.approx(m["nll"] / math.log(2) / len(text))
    f = scoring.evaluate(model, vocab, "emma", "file")
    assert f["nll"] == pytest.approx(-lps[0]) and f["n_tokens"] == 5


def test_bits_per_byte_counts_utf8_bytes():
    model, vocab = build_case("ngram4-byte", names_docs(300))
    m = scoring.evaluate(model, vocab, "zoë", "file")
    assert m["n_chars"] == 3 and m["n_bytes"] == 4 and m["n_tokens"] == 5
    assert m["bits_per_byte"] == pytest.approx(m["bits_per_char"] * 3 / 4)


def test_empty_and_unknown_text():
    model, vocab = build_case("ngram3-char", names_docs(300))
    with pytest.raises(ArlmError):
        scoring.evaluate(model, vocab, "\n\n", "lines")
    with pytest.raises(ArlmError, match="U\\+"):
        scoring.log_prob(model, vocab, "Émile")
    assert scoring.conditional_log_prob(model, vocab, "", given="em") == 0.0


def test_next_token_distribution_has_every_token_but_bos():
    model, vocab = build_case("ngram3-char", names_docs(300))
    d = scoring.next_token_log_probs(model, vocab, "em")
    assert len(d) == vocab.vocab_size - 1 and "<eos>" in d
    assert math.fsum(math.exp(v) for v in d.values()) == pytest.approx(1.0, abs=1e-12)
    assert d["m"] == pytest.approx(scoring.conditional_log_prob(model, vocab, "m", given="em"), abs=1e-12)


def test_bpe_boundary_policy_scores_completion_over_its_own_tokens():
    from arlm.vocab.bpe import BPEVocab

    docs = ["hello world"] * 50 + ["help me", "yellow hello"] * 5
    vocab = BPEVocab.train(docs, vocab_size=300)
    assert len(vocab.encode("hello")) == 1  # the word is one token
    from conftest import make_ngram

    model = make_ngram(vocab, docs, 3)
    lp = scoring.conditional_log_prob(model, vocab, "lo", given="hel")
    assert lp < 0.0 and math.isfinite(lp)
    # whitespace at the join moves to the completion
    assert scoring.conditional_log_prob(model, vocab, "world", given="hello ") == pytest.approx(
        scoring.conditional_log_prob(model, vocab, " world", given="hello"), abs=1e-12)
    assert scoring.conditional_log_prob(model, vocab, "", given="hel") == 0.0
    # log_prob uses the canonical segmentation
    assert scoring.log_prob(model, vocab, "hello", eos=False) == pytest.approx(
        float(scoring.sequence_log_probs(model, [vocab.bos_id, *vocab.encode("hello")]).sum()))


def test_lm_methods_name_an_argument_that_is_not_text():
    from arlm.errors import ArlmError
    from arlm.lm import LM
    from arlm.vocab import CharVocab

    from conftest import make_ngram, names_docs

    v = CharVocab.train(names_docs(100))
    lm = LM(make_ngram(v, names_docs(100), 2), v)
    for call, name in [(lambda: lm.log_prob(b"emma"), "text"), (lambda: lm.token_logprobs(None), "text"),
                       (lambda: lm.conditional_log_prob("a", given=1), "given"),
                       (lambda: lm.next_token_log_probs(["e"]), "prefix"), (lambda: lm.evaluate(b"x"), "text"),
                       (lambda: lm.generate(prompt=None), "prompt")]:
        with pytest.raises(ArlmError, match=f"^{name} must be a str"):
            call()
