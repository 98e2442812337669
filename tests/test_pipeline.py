"""``arlm.train``: the one training entry point (Python and ``arlm train``), and the flags the family table makes."""

from __future__ import annotations

import json

import pytest

import arlm
from arlm.errors import ArlmError
from conftest import NAMES, run_arlm


def test_train_gpt_from_python(tmp_path):
    lm = arlm.train(NAMES, model="gpt", documents="lines", max_steps=50, out=tmp_path / "gpt", threads=1)
    assert lm.model.family == "gpt" and lm.documents == "lines"
    steps = [json.loads(r)["step"] for r in (tmp_path / "gpt" / "train_log.jsonl").read_text().splitlines()]
    assert max(steps) == 50
    assert lm.model.config.n_layer == arlm.load(tmp_path / "gpt").model.config.n_layer == 2  # the table's default


def test_train_ngram_and_fit_agree(tmp_path):
    a = arlm.train(NAMES, model="ngram", order=3, documents="lines", out=tmp_path / "a")
    b = arlm.fit(NAMES, order=3, documents="lines", out=tmp_path / "b")
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert a.trained.val["n_documents"] > 0 and a.log_prob("anna") == b.log_prob("anna")


def test_unknown_or_inapplicable_hyperparameters_are_named(tmp_path):
    with pytest.raises(ArlmError, match="unknown hyperparameter n_layers"):
        arlm.train(NAMES, model="gpt", n_layers=2, out=tmp_path / "x")
    with pytest.raises(ArlmError, match="lr, n_embd do not apply to --model ngram"):
        arlm.train(NAMES, model="ngram", lr=0.1, n_embd=8, out=tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_every_config_hyperparameter_is_a_flag_with_its_default():
    from arlm.cli import build_parser
    from arlm.models.registry import default_of, family, hyperparameters

    train = next(a for a in build_parser()._actions if a.dest == "command").choices["train"]
    by_dest = {a.dest: a for a in train._actions}
    for name in ("gpt", "lstm", "cm"):
        fam = family(name)
        for f in hyperparameters(fam.config_class()):
            a = by_dest["no_" + f.name if f.default is True and not f.metadata.get("optional_bool") else f.name]
            assert f.metadata["help"] in a.help
            if not isinstance(f.default, bool):
                shown = default_of(fam, f)
                shown = ",".join(map(str, shown)) if isinstance(shown, list) else str(shown)
                assert shown in a.help, (name, f.name, a.help)


def test_train_help_of_one_family():
    out = run_arlm("train", "--model", "lstm", "--help").stdout
    assert "--n-hidden" in out and "--lr" in out and "--n-head" not in out and "--table-bits" not in out


def test_train_names_an_option_of_the_wrong_type(tmp_path):
    import arlm
    from arlm.errors import ArlmError

    data = tmp_path / "d.txt"
    data.write_text("emma\nava\n", encoding="utf-8")
    for kw, msg in [(dict(model="ngram", order="3"), "order must be an int, got '3'"),
                    (dict(model="gpt", max_steps="3"), "max_steps must be an int"),
                    (dict(model="gpt", lr=True), "lr must be a float or int, got True")]:
        with pytest.raises(ArlmError, match=msg):
            arlm.train(data, out=tmp_path / "m", **kw)
    assert not (tmp_path / "m").exists()


def test_a_val_file_and_a_val_fraction_together_are_refused(tmp_path):
    from conftest import run_arlm

    data = tmp_path / "d.txt"
    data.write_text("emma\nava\n" * 20, encoding="utf-8")
    r = run_arlm("train", data, "--model", "ngram", "--val-file", data, "--val-fraction", "0.2", "--out",
                 tmp_path / "m", check=False)
    assert r.returncode != 0 and "give --val-file or --val-fraction, not both" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "m").exists()


@pytest.mark.parametrize("model,extra", [("ngram", {"order": 3}), ("gpt", {"max_steps": 5, "threads": 1}),
                                         ("cache", {}), ("cm", {})])
def test_a_character_only_the_held_out_val_holds_is_scored_not_refused(tmp_path, model, extra):
    """A char vocab covers the text given, val's share included: a character that only the last 10% holds
    gets a probability (finite nll), train succeeds, and the saved model scores it too."""
    text = "abcab cabba " * 60 + "x\\y abc " * 5  # '\\', 'x' and 'y' only in the held-out end
    data = tmp_path / "data.txt"
    data.write_text(text, encoding="utf-8")
    lm = arlm.train(data, model=model, out=tmp_path / model, **extra)
    assert {"x", "\\", "y"} <= set(lm.vocab.chars)
    lp = lm.log_prob("x\\y")
    assert -float("inf") < lp < 0
    assert -float("inf") < arlm.LM.load(tmp_path / model).log_prob("x\\y") < 0
