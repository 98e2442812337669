"""Mixture family: EM, weights, equivalence with a component."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from arlm import scoring
from arlm.data import encode_document
from arlm.errors import ArlmError
from arlm.lm import LM
from arlm.models.mixture import MixtureConfig, MixtureModel, fit_weights
from arlm.pipeline import build_mixture

from conftest import make_gpt, make_ngram, names_docs
from arlm.vocab import CharVocab


@pytest.fixture(scope="module")
def parts():
    docs = names_docs(1500)
    v = CharVocab.train(docs)
    return v, make_ngram(v, docs[:1000], 2), make_ngram(v, docs[:1000], 4), make_gpt(v, seed=3), docs[1000:]


def test_em_never_lowers_heldout_likelihood_and_weights_sum_to_one(parts):
    v, ng2, ng4, gpt, held = parts
    for bucketed in (False, True):
        lm, history = build_mixture([LM(ng4, v, "lines"), LM(ng2, v, "lines"), LM(gpt, v, "lines")],
                                    "\n".join(held[:300]) + "\n", "lines", bucketed=bucketed)
        assert all(b >= a - 1e-12 for a, b in zip(history, history[1:])), history
        assert history[-1] > history[0]
        w = lm.model.weights
        assert torch.allclose(w.sum(-1), torch.ones(w.shape[0], dtype=torch.float64), atol=1e-12)
        assert (w >= 0).all()


def test_em_on_synthetic_data_recovers_the_better_component():
    rng = np.random.default_rng(0)
    good = torch.from_numpy(np.log(rng.uniform(0.5, 1.0, 2000)))
    bad = torch.from_numpy(np.log(rng.uniform(0.0001, 0.01, 2000)))
    w, hist = fit_weights(torch.stack([bad, good]))
    assert w[0, 1] > 0.95
    assert all(b >= a - 1e-12 for a, b in zip(hist, hist[1:]))


def test_weights_one_zero_score_as_first_component(parts):
    v, ng2, ng4, gpt, held = parts
    cfg = MixtureConfig(v.vocab_size, v.bos_id, v.eos_id, ["ngram", "gpt"])
    mix = MixtureModel(cfg, [ng4, gpt], torch.tensor([[1.0, 0.0]], dtype=torch.float64))
    for text in ["emma", "zoltan", "", "christopheralexander"]:
        assert scoring.log_prob(mix, v, text) == scoring.log_prob(ng4, v, text)
    ids = torch.tensor([encode_document(v, "olivia")])
    assert torch.allclose(mix.logits(ids), torch.log_softmax(ng4.logits(ids), -1), atol=1e-12)


def test_bad_weights_and_mismatched_vocab(parts):
    v, ng2, ng4, gpt, held = parts
    cfg = MixtureConfig(v.vocab_size, v.bos_id, v.eos_id, ["ngram", "ngram"])
    with pytest.raises(ArlmError, match="sum to 1"):
        MixtureModel(cfg, [ng2, ng4], torch.tensor([[0.7, 0.7]], dtype=torch.float64))
    other = CharVocab.train(["xyz"])
    ng_other = make_ngram(other, ["xyz"], 2)
    with pytest.raises(ArlmError, match="vocab"):
        build_mixture([LM(ng2, v), LM(ng_other, other)], "emma\n", "lines")


def test_mixture_directory_round_trip(parts, tmp_path):
    v, ng2, ng4, gpt, held = parts
    lm, _ = build_mixture([LM(ng4, v, "lines"), LM(gpt, v, "lines")], "\n".join(held[:100]) + "\n", "lines",
                          bucketed=True)
    lm.save(tmp_path / "mix")
    assert (tmp_path / "mix" / "component0" / "config.json").exists()
    back = LM.load(tmp_path / "mix")
    for text in ["emma", "noah"]:
        assert back.log_prob(text) == lm.log_prob(text)


def _saved_components(parts, root):
    """The n-gram 4 and the GPT saved as model directories under ``root``, loaded back."""
    v, ng2, ng4, gpt, held = parts
    LM(ng4, v, "lines").save(root / "models" / "ng4")
    LM(gpt, v, "lines").save(root / "models" / "gpt")
    return [LM.load(root / "models" / "ng4"), LM.load(root / "models" / "gpt")], "\n".join(held[:100]) + "\n"


def test_mixture_refers_to_loaded_components_by_relative_path(parts, tmp_path):
    import shutil

    lms, fit = _saved_components(parts, tmp_path / "a")
    lm, _ = build_mixture(lms, fit, "lines", bucketed=True)
    lm.save(tmp_path / "a" / "mixes" / "m")
    mdir = tmp_path / "a" / "mixes" / "m"
    assert lm.model.config.component_paths == ["../../models/ng4", "../../models/gpt"]
    assert not any(p.name.startswith("component") for p in mdir.iterdir())  # no copies
    expected = [lm.log_prob(t) for t in ["emma", "noah"]]
    # the mixture and its components moved together still load
    shutil.move(tmp_path / "a", tmp_path / "b")
    back = LM.load(tmp_path / "b" / "mixes" / "m")
    assert [back.log_prob(t) for t in ["emma", "noah"]] == expected
    # a missing component is one clear line naming it
    shutil.rmtree(tmp_path / "b" / "models" / "gpt")
    with pytest.raises(ArlmError, match=r"component 1 \(gpt, stored as '../../models/gpt'.*--embed") as e:
        LM.load(tmp_path / "b" / "mixes" / "m")
    assert "\n" not in str(e.value)


def test_embedded_mixture_survives_its_sources(parts, tmp_path):
    import shutil

    lms, fit = _saved_components(parts, tmp_path)
    lm, _ = build_mixture(lms, fit, "lines")
    lm.model.embed_components = True
    lm.save(tmp_path / "mix")
    assert lm.model.config.component_paths == ["component0", "component1"]
    expected = lm.log_prob("emma")
    shutil.rmtree(tmp_path / "models")
    assert LM.load(tmp_path / "mix").log_prob("emma") == expected


def test_fit_reports_each_components_score(parts):
    v, ng2, ng4, gpt, held = parts
    fit = "\n".join(held[:100]) + "\n"
    lm, history = build_mixture([LM(ng2, v, "lines"), LM(ng4, v, "lines")], fit, "lines")
    per = lm.model.fit_component_mean_nll
    assert per[0] == pytest.approx(LM(ng2, v, "lines").evaluate(fit)["mean_nll"], rel=1e-9)
    assert per[1] == pytest.approx(LM(ng4, v, "lines").evaluate(fit)["mean_nll"], rel=1e-9)
    assert -history[-1] <= min(per) + 1e-12  # EM's mixture is at least as good as its best component
