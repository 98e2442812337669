from __future__ import annotations

import json
from pathlib import Path

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


def test_a_replaced_run_directory_comes_back_when_the_new_run_fails_before_its_first_checkpoint(tmp_path):
    from arlm import checkpoint
    from arlm.paths import STATE_FILE

    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"family": "ngram"}')
    with pytest.raises(KeyboardInterrupt):
        with checkpoint.new_run_dir(out, replace=True) as d:
            (d / "half.txt").write_text("x")
            raise KeyboardInterrupt  # Ctrl-C or SIGTERM before anything worth keeping
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    assert not [p for p in tmp_path.iterdir() if p.name != "run"]  # no trash left beside it
    with pytest.raises(KeyboardInterrupt):
        with checkpoint.new_run_dir(out, replace=True) as d:
            (d / STATE_FILE).write_text("state")
            raise KeyboardInterrupt  # after the first checkpoint: the new run stays, to be resumed
    assert sorted(p.name for p in out.iterdir()) == [STATE_FILE]
    assert not [p for p in tmp_path.iterdir() if p.name != "run"]


def test_no_output_file_replaces_a_model_s_files(tmp_path, capsys):
    from arlm.cli import main

    names = Path(__file__).parent / "data" / "names.txt"
    m = tmp_path / "m"
    assert main(["train", str(names), "--order", "3", "--documents", "lines", "--out", str(m)]) == 0
    before = {p.name: p.read_bytes() for p in m.iterdir()}
    for argv in (["compress", str(m), str(names), str(m / "model.safetensors")],
                 ["export", str(m), "--format", "arpa", "--out", str(m / "config.json")],
                 ["heatmap", str(m), str(names), "--out", str(m / "vocab.json")]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "holds an arlm model" in err[0], err
    assert {p.name: p.read_bytes() for p in m.iterdir()} == before
