"""The real `arlm` commands, run in a subprocess on the fixtures in tests/data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import NAMES, SHAKESPEARE, run_arlm


arlm = run_arlm  # the shared helper (conftest), named as these tests call it

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
    g = arlm("sample", names_model, "--prompt", "jo", "--temperature", "0", "--max-new-tokens", "5")
    assert g.stderr.strip() == "--- sample 1 of 1 (length, 5 new tokens) ---" and g.stdout.startswith("jo")


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


def test_sample_text_and_json_agree_and_show_the_finish_reason(names_model):
    common = ("sample", names_model, "--prompt", "jo", "--max-new-tokens", "4", "--seed", "3")
    (js,) = json.loads(arlm(*common, "--json").stdout)
    assert set(js) >= {"prompt", "completion", "text", "finish_reason"}
    assert js["prompt"] == "jo" and js["text"] == js["prompt"] + js["completion"]
    one = arlm(*common)
    header, body = one.stderr.strip(), one.stdout
    assert header == f"--- sample 1 of 1 ({js['finish_reason']}, {js['n_tokens']} new token{'s' * (js['n_tokens'] != 1)}) ---"
    assert body == js["text"] + "\n"
    many = arlm("sample", names_model, "--num-samples", "2", "--max-new-tokens", "3").stdout
    assert many.count("--- sample ") == 2 and "--- sample 2 of 2 (" in many


def test_mix_names_its_components_and_refers_to_them(names_model, tmp_path):
    (tmp_path / "fit.txt").write_text("\n".join(NAMES.read_text().split()[-300:]) + "\n")
    other = tmp_path / "models" / "names2"
    arlm("train", NAMES, "--order", "2", "--documents", "lines", "--out", other)
    res = arlm("mix", names_model, other, "--fit-on", tmp_path / "fit.txt", "--out", tmp_path / "mix")
    rows = {line.split()[-1]: line.split() for line in res.stdout.splitlines()[2:-1]}
    assert set(rows) == {str(names_model), str(other), str(tmp_path / "mix")}
    w = [float(rows[str(d)][0]) for d in (names_model, other)]
    assert sum(w) == pytest.approx(1.0, abs=2e-4) and rows[str(other)][1] == "ngram"
    assert rows[str(tmp_path / "mix")][0] == "mixture"  # no weight of its own
    assert float(rows[str(tmp_path / "mix")][1]) <= min(float(rows[str(d)][2]) for d in (names_model, other)) + 1e-4
    assert not (tmp_path / "mix" / "component0").exists()  # referenced, not copied
    js = json.loads(arlm("mix", names_model, other, "--fit-on", tmp_path / "fit.txt", "--out", tmp_path / "mix2",
                         "--embed", "--json").stdout)
    assert [c["model_dir"] for c in js["components"]] == [str(names_model), str(other)]
    assert [c["family"] for c in js["components"]] == ["ngram", "ngram"] and js["embedded"]
    assert all(c["fit_mean_nll"] > 0 for c in js["components"])
    assert (tmp_path / "mix2" / "component1" / "config.json").exists()


def test_warnings_are_one_arlm_line_said_once(tmp_path):
    import random

    r = random.Random(0)
    data = tmp_path / "rep.txt"  # so repetitive that orders 2 and 3 have no usable counts of counts
    data.write_text("\n".join(r.choice(["ab", "abb", "ba", "bab"]) for _ in range(200)) + "\n")
    res = arlm("compare", data, "--documents", "lines", "--models", "ngram:3", "--vocab", "char,byte",
               "--out", tmp_path / "cmp")
    warns = [line for line in res.stderr.splitlines() if "warning:" in line.lower()]
    assert len(warns) == 1 and warns[0].startswith("arlm: warning: Kneser-Ney") and "[2, 3]" in warns[0]
    assert "UserWarning" not in res.stderr and "warnings.warn" not in res.stderr
    # the expected order-1 fallback of a char vocab says nothing
    quiet = arlm("train", NAMES, "--order", "4", "--documents", "lines", "--out", tmp_path / "n4")
    assert "arlm: warning" not in quiet.stderr


def test_neural_run_output_files_and_no_keep_data(tmp_path):
    import os
    import stat

    out = tmp_path / "l"
    env = {**os.environ, "ARLM_PROGRESS_INTERVAL": "0"}
    res = subprocess.run([sys.executable, "-m", "arlm", "train", str(NAMES), "--documents", "lines", "--model", "lstm",
                          "--max-steps", "3", "--eval-interval", "2", "--out", str(out), "--no-keep-data"],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stderr and "training: step 3/3" in res.stderr  # plain lines when stderr is a pipe
    last = res.stdout.splitlines()[-1]
    assert last.startswith(f"model in {out}: val bits_per_char ") and "300 held-out documents" in last
    assert "estimated on" in res.stderr and f"-> {out}" in res.stderr
    umask = os.umask(0)
    os.umask(umask)
    files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert "training_data.safetensors" not in files and "training_state.safetensors" in files
    assert set(files.values()) == {0o666 & ~umask}, files
    bad = arlm("train", "--resume", out, "--max-steps", "4", check=False)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "--no-keep-data" in bad.stderr


def test_sample_seeds_fresh_by_default_reproducible_with_seed_refused_out_of_range(names_model):
    runs = {arlm("sample", names_model, "--max-new-tokens", "30", "--num-samples", "3").stdout for _ in range(2)}
    assert len(runs) == 2  # unseeded: a fresh seed each run
    big = ["sample", names_model, "--max-new-tokens", "30", "--seed", str(2**64 - 1)]
    assert arlm(*big).stdout == arlm(*big).stdout
    for bad in (str(2**64), "-1", "1.5"):
        res = arlm("sample", names_model, "--seed", bad, check=False)
        assert res.returncode == 2 and "--seed" in res.stderr and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) <= 2  # argparse's usage line + the one error line
    res = arlm("train", NAMES, "--order", "2", "--seed", str(2**32), "--out", names_model.parent / "x", check=False)
    assert res.returncode == 2 and "--seed" in res.stderr and not (names_model.parent / "x").exists()
