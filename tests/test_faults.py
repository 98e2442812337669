"""Issue 9's faults, rerun as a new user would: each reproduction and its siblings.

Most commands run in-process through ``arlm.cli.main`` (the same code as the
``arlm`` executable, minus the interpreter start); the ones that are about the
process itself (undecodable argv bytes, signals, ``ulimit -f``, one line on
stderr) run ``python -m arlm`` in a subprocess.
"""

from __future__ import annotations

import functools
import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from arlm import cli
from arlm import training as T
from arlm.models.registry import FAMILIES
from arlm.training.run import build_model
from arlm.lm import LM

from conftest import NAMES, SHAKESPEARE, run_arlm

GPT = ["--model", "gpt", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
       "--batch-size", "4", "--warmup-steps", "2", "--eval-interval", "5", "--eval-iters", "2", "--threads", "1"]


arlm_proc = functools.partial(run_arlm, check=False, text=False)  # args may be bytes

def main(*args) -> int:
    return cli.main([str(a) for a in args])


def one_line(stderr: str) -> str:
    lines = [x for x in stderr.strip().splitlines() if not x.startswith("arlm: warning")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture
def text20k(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    return f


@pytest.fixture(autouse=True)
def keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# -- 1. undecodable bytes and lone surrogates ---------------------------------------------


def test_1_byte_model_scores_undecodable_arguments(tmp_path):
    t = tmp_path / "t.txt"
    t.write_text("it is ok\n" * 6)
    mb, mc = tmp_path / "mb", tmp_path / "mc"
    assert main("train", t, "--model", "ngram", "--order", "3", "--vocab", "byte", "--val-fraction", "0", "--out", mb) == 0
    assert main("train", t, "--model", "ngram", "--order", "3", "--val-fraction", "0", "--out", mc) == 0
    res = arlm_proc(b"score", bytes(mb), b"it\x92s", b"--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    lm = LM.load(mb)
    expected = float(lm.model.sequence_log_probs(torch.tensor([256, *b"it\x92s", 257])).double().sum())
    assert out["log_prob"] == pytest.approx(expected) and out["text"] == "it\udc92s"
    res = arlm_proc(b"sample", bytes(mb), b"--prompt", b"caf\xc3", b"--max-new-tokens", b"5", b"--seed", b"1")
    assert res.returncode == 0 and res.stdout.startswith(b"caf\xc3"), res.stderr
    res = arlm_proc(b"score", bytes(mc), b"it\x92s")  # the char model: one line pointing to the byte vocab
    assert res.returncode == 2 and "byte 0x92 at position 2" in one_line(res.stderr.decode())
    assert "--vocab byte" in res.stderr.decode()
    for d in (mb, mc):  # a lone surrogate from Python: one typed error from every vocab
        with pytest.raises(cli.ArlmError, match="U\\+D83D at position 1 is a lone surrogate"):
            LM.load(d).log_prob("a\ud83db")


# -- 2. byte-order marks -----------------------------------------------------------------------


def test_2_utf8_bom_is_not_text(tmp_path, text20k):
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + text20k.read_bytes())
    for src, out in ((text20k, "plain"), (bom, "bom")):
        assert main("train", src, "--order", "5", "--out", tmp_path / out, "--json") == 0
    plain, withbom = LM.load(tmp_path / "plain"), LM.load(tmp_path / "bom")
    assert "\ufeff" not in withbom.vocab.chars
    assert withbom.log_prob("First Citizen:", eos=False) == pytest.approx(plain.log_prob("First Citizen:", eos=False))
    assert main("eval", tmp_path / "plain", bom) == 0  # a BOM file on a model trained without one
    names_bom = tmp_path / "names.txt"
    names_bom.write_bytes(b"\xef\xbb\xbf" + NAMES.read_bytes())
    assert main("split", names_bom, "--documents", "lines", "--train-out", tmp_path / "t.txt",
                "--val-out", tmp_path / "v.txt") == 0
    assert not (tmp_path / "t.txt").read_bytes().startswith(b"\xef\xbb\xbf")
    assert main("train", names_bom, "--documents", "lines", "--order", "3", "--val-fraction", "0",
                "--out", tmp_path / "n") == 0
    assert "\ufeff" not in LM.load(tmp_path / "n").vocab.chars
    assert main("mix", tmp_path / "n", tmp_path / "n", "--fit-on", names_bom, "--out", tmp_path / "mix") == 0


# -- 3. an output directory that held another model ----------------------------------------


def files(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def test_3_output_dir_of_another_model_is_refused_or_replaced_whole(tmp_path, text20k, capsys):
    d = tmp_path / "d"
    assert main("train", text20k, *GPT, "--max-steps", "2", "--out", d) == 0
    gpt_files = files(d)
    assert {T.STATE_FILE, T.LOG_FILE, T.PLOT_FILE} <= gpt_files
    capsys.readouterr()
    assert main("train", text20k, "--model", "ngram", "--order", "3", "--out", d) == 2
    err = capsys.readouterr().err
    assert "already holds a gpt model (char vocab); pass --force" in err and len(err.strip().splitlines()) == 1
    assert files(d) == gpt_files and LM.load(d).model.family == "gpt"
    assert main("train", text20k, "--model", "ngram", "--order", "3", "--out", d, "--force") == 0
    assert files(d) == {"config.json", "model.safetensors", "vocab.json"}  # nothing of the GPT run is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "s.txt"]  # no temporary directories either
    capsys.readouterr()
    assert main("train", "--resume", d, "--max-steps", "40") == 2  # cannot turn d back into the old GPT
    assert "cannot resume" in capsys.readouterr().err and LM.load(d).model.family == "ngram"
    assert main("train", text20k, "--model", "ngram", "--order", "2", "--out", d) == 0  # a rerun: replaced whole
    assert LM.load(d).model.config.order == 2
    # a GPT over an n-gram with --force: cleared first, then the run
    assert main("train", text20k, *GPT, "--max-steps", "2", "--out", d, "--force") == 0
    assert files(d) == gpt_files
    # an interrupted run is not thrown away by a rerun without --resume
    model, vocab, train, val = _tiny_run_parts(text20k)
    T.run_training(model, vocab, train, val, _tiny_settings(), d, stop_after_steps=2, progress=False)
    capsys.readouterr()
    assert main("train", text20k, *GPT, "--max-steps", "2", "--out", d) == 2
    assert "interrupted gpt run (step 2)" in capsys.readouterr().err
    # inputs inside the directory a command would replace
    inner = d / "data.txt"
    inner.write_text(text20k.read_text())
    assert main("train", inner, "--model", "ngram", "--out", d, "--force") == 2
    assert inner.exists() and "DATA" in capsys.readouterr().err
    # mix and compare write model directories too
    n2 = tmp_path / "n2"
    assert main("train", text20k, "--order", "2", "--out", n2) == 0
    assert main("mix", n2, n2, "--fit-on", text20k, "--out", n2) == 2
    assert "is --out" in capsys.readouterr().err
    assert main("mix", n2, n2, "--fit-on", text20k, "--out", d) == 2
    assert "already holds" in capsys.readouterr().err
    own = tmp_path / "mine"
    own.mkdir()
    (own / "notes.txt").write_text("keep")
    assert main("compare", text20k, "--models", "ngram:2", "--out", own) == 2
    assert "files that are not an arlm model (notes.txt)" in capsys.readouterr().err
    assert (own / "notes.txt").read_text() == "keep"


def _tiny_run_parts(text_file):
    from arlm.vocab import CharVocab

    text = text_file.read_text()
    vocab = CharVocab.train([text])
    torch.manual_seed(0)
    model, _ = build_model("gpt", vocab, n_layer=1, n_head=2, n_embd=16, block_size=16, dropout=0.0)
    return model, vocab, T.TokenData.from_documents(vocab, [text[:18000]]), T.TokenData.from_documents(vocab, [text[18000:]])


def _tiny_settings():
    return T.TrainSettings(batch_size=4, block_size=16, lr=1e-2, max_steps=8, warmup_steps=2, eval_interval=4,
                           eval_iters=2, threads=1, device="cpu")


# -- 4. flags given with --resume ----------------------------------------------------------------


def test_4_resume_refuses_flags_it_would_ignore_and_keeps_the_lr_continuous(tmp_path, text20k, capsys):
    d = tmp_path / "d"
    assert main("train", text20k, *GPT, "--max-steps", "10", "--out", d) == 0
    capsys.readouterr()
    before = (d / T.STATE_FILE).read_bytes()
    assert main("train", tmp_path / "other.txt", "--resume", d, "--max-steps", "40", "--n-embd", "64", "--lr", "0.5") == 2
    err = one_line(capsys.readouterr().err)
    assert "--lr, --n-embd, DATA cannot change on resume" in err
    for flag in (["--block-size", "8"], ["--vocab", "byte"], ["--model", "lstm"], ["--seed", "3"], ["--vocab", "char"]):
        assert main("train", "--resume", d, *flag) == 2
        assert flag[0] in capsys.readouterr().err
    assert (d / T.STATE_FILE).read_bytes() == before  # nothing was touched
    assert main("train", "--resume", d, "--max-steps", "20", "--threads", "1", "--device", "cpu") == 0
    err = capsys.readouterr().err
    assert "resume: budget 10 steps -> 20 steps" in err
    lrs = [r["lr"] for r in map(json.loads, (d / T.LOG_FILE).read_text().splitlines()) if "lr" in r]
    assert len(lrs) == 20
    assert all(b <= a * 1.0001 for a, b in zip(lrs[2:], lrs[3:]))  # after warm-up it never jumps up
    # the old schedule had reached its floor at step 10 (lr * 0.01): the extension goes on from there
    assert lrs[10] == pytest.approx(FAMILIES["gpt"].defaults["lr"] * 0.01) and lrs[-1] == pytest.approx(lrs[10])


# -- 5. devices ---------------------------------------------------------------------------------


def test_5_device_is_checked_for_every_command(tmp_path, text20k, capsys):
    m = tmp_path / "m"
    assert main("train", text20k, "--order", "2", "--out", m) == 0
    for device in ("tpu", "cuda", "mps"):
        available = device == "cuda" and torch.cuda.is_available() or (
            device == "mps" and torch.backends.mps.is_available())
        capsys.readouterr()
        rc = main("sample", m, "--device", device, "--max-new-tokens", "3")
        if available:
            assert rc == 0
        else:
            assert rc == 2 and device in one_line(capsys.readouterr().err)
    if not torch.cuda.is_available():
        assert main("train", text20k, *GPT, "--max-steps", "2", "--device", "cuda", "--out", tmp_path / "g") == 2
        assert "CUDA is not available" in capsys.readouterr().err and not (tmp_path / "g").exists()


# -- 6. a full disk or a file-size limit while saving -----------------------------------------


def _limit_file_size(kib: int):
    def f():
        resource.setrlimit(resource.RLIMIT_FSIZE, (kib * 1024, kib * 1024))  # ulimit -f KIB
    return f


def test_6_write_failure_is_one_line_and_keeps_the_old_model(tmp_path):
    d = tmp_path / "d"
    assert main("train", SHAKESPEARE, "--order", "2", "--out", d) == 0
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    res = arlm_proc("train", SHAKESPEARE, "--order", "6", "--out", d, "--force", preexec_fn=_limit_file_size(100))
    err = one_line(res.stderr.decode())
    assert res.returncode == 2 and f"cannot write {d}" in err and "File too large" in err
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before and LM.load(d).model.config.order == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    g = tmp_path / "g"  # a neural run: the first file over the limit
    res = arlm_proc("train", SHAKESPEARE, *GPT, "--max-steps", "2", "--out", g, preexec_fn=_limit_file_size(50))
    err = one_line(res.stderr.decode())
    assert res.returncode == 2 and "File too large" in err and str(g) in err


# -- 7. outputs that are inputs ------------------------------------------------------------------


def test_7_split_never_clobbers_its_input_or_its_other_output(tmp_path, text20k, capsys):
    data = text20k.read_bytes()
    o = tmp_path / "o.txt"
    assert main("split", text20k, "--train-out", o, "--val-out", o) == 2
    assert "--train-out and --val-out are the same file" in capsys.readouterr().err and not o.exists()
    assert main("split", text20k, "--train-out", text20k, "--val-out", tmp_path / "v.txt") == 2
    assert "is the input DATA" in capsys.readouterr().err
    (tmp_path / "link.txt").symlink_to(text20k)
    assert main("split", text20k, "--train-out", tmp_path / "t.txt", "--val-out", tmp_path / "link.txt") == 2
    assert text20k.read_bytes() == data and not (tmp_path / "t.txt").exists() and not (tmp_path / "v.txt").exists()


# -- 8. an interrupted run exits 130 / 143 ------------------------------------------------------


def _wait_for_steps(d: Path, proc, n: int, timeout: float = 120.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stderr.read()}")
        log = d / T.LOG_FILE
        if (d / T.STATE_FILE).exists() and log.exists() and log.read_text().count('"loss"') >= n:
            return
        time.sleep(0.1)
    raise AssertionError("training made no progress")


def test_8_interrupted_training_saves_then_exits_130_or_143(tmp_path, text20k):
    d = tmp_path / "d"
    argv = [sys.executable, "-m", "arlm", "train", str(text20k), *GPT, "--max-time", "5m", "--out", str(d)]
    for sig, code, argv in ((signal.SIGINT, 130, argv),
                            (signal.SIGTERM, 143, [sys.executable, "-m", "arlm", "train", "--resume", str(d)])):
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        try:
            done = T.read_state(d / T.STATE_FILE)[1]["step"] if sig == signal.SIGTERM else 0
            _wait_for_steps(d, proc, done + 3)
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        assert proc.returncode == code, err
        assert f"interrupted by {sig.name}" in err and f"arlm train --resume {d}" in err
        _, st = T.read_state(d / T.STATE_FILE)
        assert st["stopped"] == "interrupted"
        LM.load(d)
    res = subprocess.run(f"{sys.executable} -m arlm train --resume {d} --max-steps {st['step']} && echo next",
                         shell=True, capture_output=True, text=True)
    assert res.returncode == 0 and "next" in res.stdout  # a finished resume still chains


def test_4_sibling_flags_the_chosen_model_would_ignore_are_refused(tmp_path, text20k, capsys):
    for argv, needle in ((["--model", "ngram", "--lr", "0.5", "--n-embd", "64"], "--lr, --n-embd do not apply to --model ngram"),
                         (["--model", "gpt", "--order", "3"], "--order does not apply to --model gpt"),
                         (["--model", "lstm", "--n-head", "2"], "--n-head does not apply to --model lstm"),
                         (["--model", "gpt", "--n-hidden", "8"], "--n-hidden does not apply"),
                         (["--model", "cache", "--no-refit"], "--no-refit does not apply"),
                         (["--vocab", "byte", "--vocab-size", "300"], "--vocab-size applies to --vocab bpe only")):
        assert main("train", text20k, *argv, "--out", tmp_path / "x") == 2
        assert needle in one_line(capsys.readouterr().err)
        assert not (tmp_path / "x").exists()
