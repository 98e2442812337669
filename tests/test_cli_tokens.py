"""`arlm tokenize` and `arlm train` on a token directory / with --memory.

One real subprocess checks the command line end to end; the rest call
``arlm.cli.main`` in this process (the same code, without a second torch import).
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import NAMES, SHAKESPEARE, run_arlm

TINY_GPT = ["--model", "gpt", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
            "--batch-size", "4", "--max-steps", "8", "--eval-interval", "4", "--eval-iters", "2", "--threads", "1"]


arlm = run_arlm

def run(capsys, *args, check=True):
    """``arlm ARGS`` in this process: (exit status, stdout, stderr)."""
    from arlm.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    if check and rc != 0:
        raise AssertionError(f"arlm {' '.join(map(str, args))} failed ({rc}):\n{err}")
    return rc, out, err


def _log(path):
    skip = ("elapsed_s", "tokens_per_s", "threads")
    return [{k: v for k, v in json.loads(line).items() if k not in skip} for line in path.read_text().splitlines()]


def test_training_from_tokenize_output_equals_training_from_text(tmp_path, capsys):
    for documents, data in (("file", SHAKESPEARE), ("lines", NAMES)):
        tok = tmp_path / f"tok-{documents}"
        if documents == "file":  # the real command line once
            r = json.loads(arlm("tokenize", data, "--documents", documents, "--out", tok, "--json").stdout)
        else:
            r = json.loads(run(capsys, "tokenize", data, "--documents", documents, "--out", tok, "--json")[1])
        assert r["dtype"] == "uint16" and r["mb_per_s"] > 0
        a, b = tmp_path / f"a-{documents}", tmp_path / f"b-{documents}"
        run(capsys, "train", tok, *TINY_GPT, "--out", a)
        run(capsys, "train", data, "--documents", documents, *TINY_GPT, "--out", b)
        # same seed, same batches, same val estimates: the same weights, byte for byte
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
        assert _log(a / "train_log.jsonl") == _log(b / "train_log.jsonl")
        # the run directory refers to the token file instead of copying it
        assert (a / "training_data.safetensors").stat().st_size < 1000


def test_ngram_memory_budget_gives_the_in_memory_model(tmp_path, capsys):
    run(capsys, "train", SHAKESPEARE, "--order", "5", "--out", tmp_path / "ram")
    out = run(capsys, "train", SHAKESPEARE, "--order", "5", "--memory", "200K", "--out", tmp_path / "disk", "--json")[1]
    stats = json.loads(out)["counting"]
    assert min(stats["runs"]) >= 8
    assert (tmp_path / "ram" / "model.safetensors").read_bytes() == (tmp_path / "disk" / "model.safetensors").read_bytes()
    run(capsys, "tokenize", SHAKESPEARE, "--out", tmp_path / "tok")
    run(capsys, "train", tmp_path / "tok", "--order", "5", "--memory", "200K", "--out", tmp_path / "tokdisk")
    assert (tmp_path / "ram" / "model.safetensors").read_bytes() == (tmp_path / "tokdisk" / "model.safetensors").read_bytes()
    assert "nats" in run(capsys, "score", tmp_path / "tokdisk", "To be")[1]


def test_token_errors_are_one_line(tmp_path, capsys):
    run(capsys, "tokenize", NAMES, "--documents", "lines", "--out", tmp_path / "tok")
    cases = [
        (["tokenize", SHAKESPEARE, "--vocab-from", tmp_path / "tok", "--out", tmp_path / "x"], "U+"),
        (["tokenize", SHAKESPEARE, "--vocab", "bpe", "--out", tmp_path / "x"], "--vocab-from"),
        (["tokenize", tmp_path / "missing.txt", "--out", tmp_path / "x"], "no such file"),
        (["train", tmp_path / "tok", "--model", "gpt", "--memory", "1G"], "--memory"),
        (["train", tmp_path / "tok", "--model", "cache"], "text file"),
        (["train", NAMES, "--memory", "lots"], "memory size"),
        (["train", NAMES, "--memory", "1G", "--no-refit"], "--no-refit"),
    ]
    for args, needle in cases:
        rc, _, err = run(capsys, *args, check=False)
        lines = err.strip().splitlines()
        assert rc != 0 and len(lines) == 1 and needle in lines[0], (args, err)


def test_eval_reads_a_big_file_in_pieces(tmp_path, capsys, monkeypatch):
    import arlm.cli.score

    run(capsys, "train", NAMES, "--documents", "lines", "--order", "3", "--out", tmp_path / "m")
    whole = json.loads(run(capsys, "eval", tmp_path / "m", NAMES, "--json")[1])
    monkeypatch.setattr(arlm.cli.score, "STREAM_EVAL_BYTES", 0)  # every file counts as big
    pieces = json.loads(run(capsys, "eval", tmp_path / "m", NAMES, "--json")[1])
    assert pieces == whole


def test_tokenize_never_clobbers_a_model_and_resume_refuses_retokenized_data(tmp_path, capsys):
    names, text = tmp_path / "names.txt", tmp_path / "text.txt"
    names.write_text(NAMES.read_text()[:3000])
    text.write_text(SHAKESPEARE.read_text()[:3000])
    model = tmp_path / "ng"
    run(capsys, "train", names, "--order", "2", "--val-fraction", "0", "--out", model)
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    rc, _, err = run(capsys, "tokenize", names, "--out", model, check=False)
    assert rc == 2 and "already holds an ngram model" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before  # nothing written
    tok, run_dir = tmp_path / "tok", tmp_path / "gpt"
    run(capsys, "tokenize", names, "--out", tok)
    run(capsys, "tokenize", names, "--out", tok)  # a rerun replaces a token directory without --force
    rc, _, err = run(capsys, "tokenize", names, "--out", tok, "--vocab", "byte", check=False)
    assert rc == 2 and "holds tokens of a char vocab" in err and len(err.strip().splitlines()) == 1  # another vocab
    rc, _, err = run(capsys, "tokenize", names, "--out", tok, "--documents", "lines", check=False)
    assert rc == 2 and "--force" in err  # another document mode
    run(capsys, "train", tok, *TINY_GPT, "--out", run_dir)
    run(capsys, "tokenize", text, "--out", tok)  # other text, other vocab
    rc, _, err = run(capsys, "train", "--resume", run_dir, "--max-steps", "12", check=False)
    assert rc == 2 and "re-tokenized" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run(capsys, "train", "--resume", model, check=False)  # an n-gram is not trained step by step
    assert rc == 2 and "holds a model of family ngram; only gpt and lstm runs" in err, err


def test_refused_commands_name_the_typed_option_and_leave_no_directory(tmp_path, capsys):
    (tmp_path / "bad.txt").write_bytes(b"ab\xffc\n")
    (tmp_path / "odd.txt").write_text("zz\u20ac\n")
    run(capsys, "train", NAMES, "--documents", "lines", "--order", "2", "--out", tmp_path / "m")
    new = tmp_path / "new" / "dir"
    cases = [
        (["tokenize", NAMES, "--chunk-size", "1K", "--out", new], "--chunk-size must be at least 64K"),
        (["tokenize", NAMES, "--chunk-size", "lots", "--out", new], "--chunk-size"),
        (["tokenize", tmp_path / "bad.txt", "--out", new], "UTF-8"),
        (["train", NAMES, "--memory", "1K", "--out", new], "--memory must be at least 64K"),
        (["train", NAMES, *TINY_GPT[:8], "--max-time", "0", "--out", new], "--max-time must be a positive"),
        (["train", NAMES, "--model", "gpt", "--n-head", "3", "--n-embd", "16", "--out", new], "n_head"),
        (["mix", tmp_path / "m", tmp_path / "m", "--fit-on", tmp_path / "odd.txt", "--out", new], "U+20AC"),
        (["compare", NAMES, "--max-time", "0", "--out", new], "--max-time"),
    ]
    for args, needle in cases:
        rc, _, err = run(capsys, *args, check=False)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and needle in lines[0], (args, err)
        assert not (tmp_path / "new").exists(), args  # nor the parent it would have created
    new.mkdir(parents=True)  # an empty directory given as --out stays, empty
    rc, _, _ = run(capsys, "tokenize", tmp_path / "bad.txt", "--out", new, check=False)
    assert rc == 2 and new.is_dir() and not any(new.iterdir())


def _terminate_when(cmd, ready, tmp_path, timeout=60.0):
    """Start ``arlm CMD`` with TMPDIR in tmp_path, send SIGTERM once ``ready()`` holds; (rc, stderr, tmpdir)."""
    import os
    import signal
    import time

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "arlm", *map(str, cmd)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp)})
    t0 = time.time()
    while not ready(tmp) and proc.poll() is None and time.time() - t0 < timeout:
        time.sleep(0.01)
    assert proc.poll() is None, "the command ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err, tmp


def test_sigterm_cleans_up_like_ctrl_c_and_exits_143(tmp_path):
    import random

    rng = random.Random(0)
    big = tmp_path / "big.txt"
    big.write_text("".join(rng.choice("abcdefgh \n") for _ in range(300_000)))
    # n-gram counting under --memory: stopped once it has spilled its first sorted run
    rc, err, tmp = _terminate_when(["train", big, "--order", "7", "--memory", "64K", "--out", tmp_path / "o"],
                                   lambda t: any(t.glob("arlm-ngram-*/*.npy")), tmp_path)
    assert rc == 143 and err.strip() == "arlm: terminated by SIGTERM", err
    assert list(tmp.iterdir()) == [] and not (tmp_path / "o").exists()
