"""The real `arlm` commands, run in a subprocess on the fixtures in tests/data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import NAMES, SHAKESPEARE


def arlm(*args, check=True, cwd=None):
    res = subprocess.run([sys.executable, "-m", "arlm", *map(str, args)], capture_output=True, text=True, cwd=cwd)
    if check and res.returncode != 0:
        raise AssertionError(f"arlm {' '.join(map(str, args))} failed ({res.returncode}):\n{res.stderr}")
    return res


@pytest.fixture(scope="module")
def names_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli") / "names"
    res = arlm("train", NAMES, "--model", "ngram", "--order", "4", "--documents", "lines", "--out", d, "--json")
    out = json.loads(res.stdout)
    assert out["val"]["n_documents"] == round(0.1 * len(NAMES.read_text().split()))
    assert 1.5 < out["val"]["mean_nll"] < 2.5
    return d


def test_eval_score_sample(names_model, tmp_path):
    val = tmp_path / "val.txt"
    val.write_text("emma\nolivia\n")
    m = json.loads(arlm("eval", names_model, val, "--json").stdout)
    assert m["n_documents"] == 2 and m["n_tokens"] == 12  # lines mode: the trained-with default
    s = json.loads(arlm("score", names_model, "emma", "--json", "--per-token").stdout)
    assert len(s["token_logprobs"]) == 5
    assert s["log_prob"] == pytest.approx(sum(t["logprob"] for t in s["token_logprobs"]))
    c = json.loads(arlm("score", names_model, "ma", "--given", "em", "--json").stdout)
    p = json.loads(arlm("score", names_model, "emma", "--no-eos", "--json").stdout)
    q = json.loads(arlm("score", names_model, "em", "--no-eos", "--json").stdout)
    assert c["log_prob"] == pytest.approx(p["log_prob"] - q["log_prob"], abs=1e-9)
    a = json.loads(arlm("sample", names_model, "--num-samples", "3", "--seed", "5", "--json").stdout)
    b = json.loads(arlm("sample", names_model, "--num-samples", "3", "--seed", "5", "--json").stdout)
    assert a == b and len(a) == 3 and all(x["finish_reason"] in ("stop", "length") for x in a)
    g = arlm("sample", names_model, "--prompt", "jo", "--temperature", "0", "--max-new-tokens", "5").stdout
    assert g.startswith("jo")


def test_shakespeare_file_mode(tmp_path):
    text = SHAKESPEARE.read_text()[:200_000]
    (tmp_path / "s.txt").write_text(text)
    res = arlm("train", tmp_path / "s.txt", "--order", "5", "--vocab", "byte", "--out", tmp_path / "m", "--json")
    out = json.loads(res.stdout)
    assert out["val"]["n_documents"] == 1 and out["val"]["n_chars"] == len(text) - int(0.9 * len(text))
    assert out["val"]["bits_per_char"] < 3.0
    s = arlm("sample", tmp_path / "m", "--prompt", "ROMEO:", "--max-new-tokens", "50", "--top-k", "5", "--top-p", "0.9").stdout
    assert s.startswith("ROMEO:")


@pytest.mark.parametrize("args,needle", [
    (["eval", "{m}", "{missing}"], "no such file"),
    (["eval", "{m}", "{empty}"], "empty"),
    (["eval", "{m}", "{badutf8}"], "byte offset 3"),
    (["score", "{m}", "zoë"], "U+00EB"),
    (["sample", "{m}", "--top-k", "many"], "--top-k"),
    (["sample", "{m}", "--temperature", "-1"], "temperature"),
    (["sample", "{m}", "--top-p", "1.5"], "top_p"),
    (["train", "{names}", "--order", "11", "--out", "{tmp}/x"], "order"),
    (["train", "{names}", "--order", "0", "--out", "{tmp}/x"], "order"),
    (["train", "{names}", "--out", "/proc/forbidden/x"], "output directory"),
    (["eval", "{tmp}/nomodel", "{names}"], "no model directory"),
])
def test_bad_input_is_one_line_no_traceback(names_model, tmp_path, args, needle):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "bad.txt").write_bytes(b"abc\xff")
    subs = dict(m=names_model, missing=tmp_path / "missing.txt", empty=tmp_path / "empty.txt",
                badutf8=tmp_path / "bad.txt", names=NAMES, tmp=tmp_path)
    res = arlm(*[a.format(**{k: str(v) for k, v in subs.items()}) for a in args], check=False)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert needle in lines[0]


def test_demo_runs(tmp_path):
    res = arlm("demo", "--out", tmp_path / "demo")
    assert "bits_per_char" in res.stdout and "sample 3" in res.stdout


def test_mix_and_compare(names_model, tmp_path):
    lines = NAMES.read_text().split()
    (tmp_path / "fit.txt").write_text("\n".join(lines[-500:]) + "\n")
    other = tmp_path / "names2"
    arlm("train", NAMES, "--order", "2", "--documents", "lines", "--out", other)
    r = json.loads(arlm("mix", names_model, other, "--fit-on", tmp_path / "fit.txt", "--out", tmp_path / "mix", "--json").stdout)
    assert sum(r["weights"]) == pytest.approx(1.0) and r["fit_mean_nll_after"] <= r["fit_mean_nll_before"]
    arlm("score", tmp_path / "mix", "emma")
    out = tmp_path / "cmp"
    res = arlm("compare", NAMES, "--documents", "lines", "--models", "ngram:2,ngram:4,lstm", "--max-time", "3s",
               "--mix", "--out", out)
    assert "mixture" in res.stdout and "| model |" in res.stdout
    data = json.loads((out / "compare.json").read_text())
    assert [r["model"] for r in data["rows"]] == ["ngram:2", "ngram:4", "lstm", "mixture"]
    assert (out / "compare.png").stat().st_size > 10_000
    assert data["setup"]["seed"] == 1337 and data["setup"]["max_time_s"] == 3.0


def test_split_reproduces_nanogpt_split(tmp_path):
    arlm("split", SHAKESPEARE, "--train-out", tmp_path / "t.txt", "--val-out", tmp_path / "v.txt")
    text = SHAKESPEARE.read_text()
    n = int(0.9 * len(text))
    assert (tmp_path / "t.txt").read_text() == text[:n] and (tmp_path / "v.txt").read_text() == text[n:]
