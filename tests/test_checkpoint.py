from __future__ import annotations

import json

import pytest

from arlm import checkpoint
from arlm.errors import ArlmError
from arlm.lm import LM

from conftest import build_case, names_docs


@pytest.fixture
def saved(tmp_path):
    model, vocab = build_case("ngram3-char", names_docs(300))
    d = tmp_path / "m"
    LM(model, vocab, "lines").save(d)
    return d


def test_directory_layout_has_no_pickle(saved):
    names = sorted(p.name for p in saved.iterdir())
    assert names == ["config.json", "model.safetensors", "vocab.json"]
    cfg = json.loads((saved / "config.json").read_text())
    assert cfg["family"] == "ngram" and cfg["vocab"] == "char" and cfg["documents"] == "lines"
    assert "arlm_version" in cfg and cfg["config"]["order"] == 3


def test_missing_truncated_and_wrong_family(saved, tmp_path):
    with pytest.raises(ArlmError, match="no model directory"):
        checkpoint.load(tmp_path / "absent")
    with pytest.raises(ArlmError, match="holds an ngram model"):
        checkpoint.load(saved, expect_family="gpt")
    w = saved / "model.safetensors"
    w.write_bytes(w.read_bytes()[: len(w.read_bytes()) // 2])
    with pytest.raises(ArlmError, match="cannot load"):
        checkpoint.load(saved)
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ArlmError, match="corrupt"):
        checkpoint.load(saved)
    (saved / "config.json").unlink()
    with pytest.raises(ArlmError, match="config.json is missing"):
        checkpoint.load(saved)


def test_failed_save_leaves_previous_files(saved, monkeypatch):
    before = (saved / "model.safetensors").read_bytes()
    lm = LM.load(saved)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("safetensors.numpy.save_file", boom)
    with pytest.raises(RuntimeError):
        lm.save(saved)
    assert (saved / "model.safetensors").read_bytes() == before
    assert not [p for p in saved.iterdir() if p.name.endswith(".tmp")]
    assert LM.load(saved).log_prob("emma") == lm.log_prob("emma")
