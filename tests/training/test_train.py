"""The neural training loop: schedule, batches, exact resume, crash safety, NaN handling."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from arlm import checkpoint
from arlm.cli.flags import add_family_flags
from arlm.training import run as C
from arlm import threads
from arlm import training as T
from arlm.errors import ArlmError
from arlm.vocab import CharVocab

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"


def names(n: int = 400) -> list[str]:
    return (DATA / "names.txt").read_text(encoding="utf-8").split("\n")[:n]


def shakespeare(n: int = 20000) -> str:
    return (DATA / "shakespeare.txt").read_text(encoding="utf-8")[:n]


def make(family: str, documents: str, dropout: float = 0.1):
    if documents == "lines":
        docs = names()
        train_docs, val_docs = docs[:-40], docs[-40:]
    else:
        text = shakespeare()
        train_docs, val_docs = [text[:18000]], [text[18000:]]
    vocab = CharVocab.train(train_docs + val_docs)
    hyper = dict(n_layer=1, n_head=2, n_embd=16, n_hidden=24, block_size=16, dropout=dropout)
    torch.manual_seed(0)
    model, block = C.build_model(family, vocab, **hyper)
    train = T.TokenData.from_documents(vocab, train_docs)
    val = T.TokenData.from_documents(vocab, val_docs)
    return model, vocab, train, val


def settings(documents: str, **kw) -> T.TrainSettings:
    s = dict(batch_size=8, block_size=16, lr=1e-2, max_steps=12, warmup_steps=3, eval_interval=4, eval_iters=2,
             threads=1, device="cpu", documents=documents, seed=5)
    s.update(kw)
    return T.TrainSettings(**s)


def losses(out: Path) -> list[tuple[int, float]]:
    recs = [json.loads(line) for line in (out / T.LOG_FILE).read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in recs if "loss" in r]


def current_weights(out: Path) -> dict[str, torch.Tensor]:
    tensors, _ = T.read_state(out / T.STATE_FILE)
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "optim."))}


# -- small pieces ----------------------------------------------------------------


def test_parse_duration():
    assert T.parse_duration("90s") == 90
    assert T.parse_duration("2m") == 120
    assert T.parse_duration("1h30m") == 5400
    assert T.parse_duration("1.5") == 1.5
    for bad in ("", "abc", "-3", "0", "2x"):
        with pytest.raises(ArlmError):
            T.parse_duration(bad)


def test_lr_schedule_warmup_cosine_floor():
    s = settings("file", lr=1.0, max_steps=110, warmup_steps=10)
    lrs = [T.lr_at(s, i, 0.0) for i in range(111)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.55)  # halfway: midpoint of peak and floor
    assert lrs[110] == pytest.approx(0.1)  # the floor, lr * min_lr_ratio
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    # a time budget: progress is the time fraction
    st = settings("file", lr=1.0, max_steps=None, max_time=100.0, warmup_steps=0)
    assert T.lr_at(st, 5, 50.0) == pytest.approx(0.55)
    assert T.lr_at(st, 5, 200.0) == pytest.approx(0.1)


def test_lr_schedule_wsd_stable_then_linear_to_the_floor(tmp_path):
    s = settings("file", lr=1.0, max_steps=110, warmup_steps=10, lr_schedule="wsd", cooldown_fraction=0.4)
    lrs = [T.lr_at(s, i, 0.0) for i in range(111)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(x == pytest.approx(1.0) for x in lrs[10:71])  # stable until progress 0.6 (step 10 + 60)
    assert lrs[90] == pytest.approx(1.0 - 0.9 * 0.5)  # halfway through the cool-down
    assert lrs[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert [T.schedule_progress(s, i, 0.0) for i in (0, 10, 60, 110)] == pytest.approx([0.0, 0.0, 0.5, 1.0])
    with pytest.raises(ArlmError, match="--lr-schedule"):
        T.run_training(*make("gpt", "file")[:4], settings("file", lr_schedule="step"), tmp_path / "o",
                       progress=False)


def test_lines_batches_mask_padding():
    vocab = CharVocab.train(["ab", "abcdefghij"])
    data = T.TokenData.from_documents(vocab, ["ab", "abcdefghij"])
    x, y = T.get_batch(data, "lines", 16, 4, torch.Generator().manual_seed(0))
    assert x.shape == y.shape and x.shape[0] == 16
    for row_x, row_y in zip(x, y):
        n = int((row_y != T.IGNORE).sum())
        assert n in (3, 4)  # "ab" predicts a, b, <eos>; the long document a window of 4
        if n == 3:
            assert row_x[0] == vocab.bos_id and row_y[:3].tolist() == [*vocab.encode("ab"), vocab.eos_id]
        assert (row_y[n:] == T.IGNORE).all()


def test_file_batches_are_windows():
    vocab = CharVocab.train(["hello world"])
    data = T.TokenData.from_documents(vocab, ["hello world"])
    x, y = T.get_batch(data, "file", 4, 5, torch.Generator().manual_seed(0))
    assert x.shape == (4, 5)
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_default_threads_and_arguments():
    assert threads.default_threads() >= 1
    p = argparse.ArgumentParser()
    add_family_flags(p)
    a = p.parse_args(["--n-layer", "2", "--max-time", "90s", "--device", "cpu", "--compile"])
    assert a.n_layer == 2 and a.max_time == "90s" and a.compile and a.lr is None


# -- whole runs -----------------------------------------------------------------


@pytest.mark.parametrize("family,documents", [("gpt", "lines"), ("lstm", "file")])
def test_resume_is_exact(tmp_path, family, documents):
    model, vocab, train, val = make(family, documents)
    a = tmp_path / "a"
    T.run_training(model, vocab, train, val, settings(documents), a, progress=False)

    model, vocab, train, val = make(family, documents)
    b = tmp_path / "b"
    summary = T.run_training(model, vocab, train, val, settings(documents), b, stop_after_steps=6, progress=False)
    assert summary["step"] == 6 and summary["stopped"] == "interrupted"
    C.resume(b)

    assert [s for s, _ in losses(a)] == list(range(1, 13))
    assert losses(a) == losses(b)  # identical floats at every step
    wa, wb = current_weights(a), current_weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    for out in (a, b):
        assert (out / T.PLOT_FILE).stat().st_size > 0


def test_model_dir_holds_best_weights(tmp_path):
    model, vocab, train, val = make("gpt", "lines", dropout=0.0)
    out = tmp_path / "run"
    summary = T.run_training(model, vocab, train, val, settings("lines", lr=3e-2), out, progress=False)
    recs = [json.loads(line) for line in (out / T.LOG_FILE).read_text().splitlines()]
    vals = [(r["val_loss"], r["step"]) for r in recs if "val_loss" in r]
    best_val, best_step = min(vals)
    assert summary["best_step"] == best_step and summary["best_val_loss"] == pytest.approx(best_val)
    loaded, _, cfg = checkpoint.load(out)
    assert cfg["documents"] == "lines" and cfg["training"]["best_step"] == best_step
    tensors, _ = T.read_state(out / T.STATE_FILE)
    for n, p in loaded.named_parameters():
        assert torch.equal(p, tensors[f"best.{n}"])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    model, vocab, train, val = make("lstm", "lines")
    out = tmp_path / "run"
    monkeypatch.setenv("ARLM_TEST_NAN_AT_STEP", "6")  # the loss of the 7th update is NaN
    with pytest.raises(ArlmError, match=r"step 7.*nan.*diverged"):
        T.run_training(model, vocab, train, val, settings("lines"), out, progress=False)
    _, st = T.read_state(out / T.STATE_FILE)
    assert st["step"] == 4  # the last checkpoint before the NaN
    loaded, _, _ = checkpoint.load(out)
    assert all(torch.isfinite(p).all() for p in loaded.parameters())
    monkeypatch.delenv("ARLM_TEST_NAN_AT_STEP")
    C.resume(out)
    assert [s for s, _ in losses(out)] == list(range(1, 13))


def test_resume_without_state_is_a_clear_error(tmp_path):
    with pytest.raises(ArlmError, match="cannot resume"):
        C.resume(tmp_path)


KILL_SCRIPT = """
import argparse, sys
sys.path.insert(0, sys.argv[2])
import torch
from arlm import training as T
from arlm.training.run import build_model
from arlm.vocab import CharVocab
docs = open(sys.argv[3], encoding="utf-8").read().split("\\n")[:400]
vocab = CharVocab.train(docs)
torch.manual_seed(0)
model, _ = build_model("gpt", vocab, n_layer=1, n_head=2, n_embd=16, block_size=16, dropout=0.1)
s = T.TrainSettings(batch_size=8, block_size=16, lr=1e-2, max_steps=20, warmup_steps=3, eval_interval=5,
                    eval_iters=2, threads=1, device="cpu", documents="lines")
T.run_training(model, vocab, T.TokenData.from_documents(vocab, docs[:-40]),
               T.TokenData.from_documents(vocab, docs[-40:]), s, sys.argv[1], progress=False)
"""


def test_sigkill_during_checkpoint_write_resumes_from_previous(tmp_path):
    out = tmp_path / "run"
    script = tmp_path / "run_train.py"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, ARLM_TEST_CHECKPOINT_SLEEP="10:60", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), str(REPO), str(DATA / "names.txt")],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        for line in proc.stderr:
            if "ARLM_TEST: writing checkpoint of step 10" in line:
                break
        else:
            pytest.fail(f"the training process ended without reaching the checkpoint (rc={proc.wait()})")
        assert list(out.glob(f".{T.STATE_FILE}.*.tmp")), "no half-written state file"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    _, st = T.read_state(out / T.STATE_FILE)
    assert st["step"] == 5  # the previous checkpoint, intact
    checkpoint.load(out)
    C.resume(out)
    _, st = T.read_state(out / T.STATE_FILE)
    assert st["step"] == 20 and st["stopped"] == "max_steps"
    assert [s for s, _ in losses(out)] == list(range(1, 21))
    model, _, _ = checkpoint.load(out)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_cpu_training_helpers():
    undo = T.keep_freed_memory()  # glibc: raises malloc's thresholds; elsewhere a no-op
    undo()
    model, vocab, train, val = make("gpt", "file", dropout=0.0)
    opt = T.make_optimizer(model, settings("file"), torch.device("cpu"))
    assert opt.defaults.get("fused") in (True, None)  # fused where this torch has the CPU kernel


def test_lr_stays_continuous_when_a_resume_changes_the_budget():
    s = settings("file", lr=1.0, max_steps=100, warmup_steps=10)
    for k in (5, 40, 100):  # in warm-up, mid-decay, at the end
        new = settings("file", lr=1.0, max_steps=300, warmup_steps=10)
        if k >= new.warmup_steps:
            new.schedule_anchor = [k, 0.0, T.schedule_progress(s, k, 0.0)]
        assert T.lr_at(new, k, 0.0) == pytest.approx(T.lr_at(s, k, 0.0), rel=1e-9)
        lrs = [T.lr_at(new, i, 0.0) for i in range(max(k, 10), 301)]
        assert all(a >= b - 1e-12 for a, b in zip(lrs, lrs[1:]))  # decays from where it was, no jump up
        assert lrs[-1] == pytest.approx(0.1)  # the floor at the end of the new budget
    # time budgets too
    s = settings("file", lr=1.0, max_steps=None, max_time=100.0, warmup_steps=0)
    new = settings("file", lr=1.0, max_steps=None, max_time=200.0, warmup_steps=0)
    new.schedule_anchor = [50, 60.0, T.schedule_progress(s, 50, 60.0)]
    assert T.lr_at(new, 50, 60.0) == pytest.approx(T.lr_at(s, 50, 60.0))
    assert T.lr_at(new, 90, 200.0) == pytest.approx(0.1)


def test_cli_trains_rotary_gpt_that_generates_past_its_window(tmp_path):
    # arlm train --model gpt --pos-emb rotary: trains on the CPU training path, saves, loads, generates and scores
    # far past block_size (sliding-window attention), and resumes with its position scheme
    out = tmp_path / "rot"
    cmd = [sys.executable, "-m", "arlm", "train", str(DATA / "names.txt"), "--model", "gpt", "--pos-emb", "rotary",
           "--documents", "lines", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8",
           "--batch-size", "8", "--max-steps", "6", "--eval-interval", "3", "--eval-iters", "1", "--threads", "1",
           "--device", "cpu", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    import arlm

    lm = arlm.load(out)
    assert lm.model.config.pos_emb == "rotary" and not lm.model.windowed and "wpe.weight" not in lm.model.state_dict()
    samples = lm.generate("", max_new_tokens=40, temperature=1.0, seed=3, num_samples=2)
    assert len(samples) == 2 and all(len(s.token_ids) <= 40 for s in samples)
    text = "abcdefghij" * 3  # 31 predicted tokens through a window of 8
    assert lm.log_prob(text) == pytest.approx(sum(v for _, v in lm.token_logprobs(text)), abs=1e-6)
    bad = subprocess.run([*cmd[:5], "--model", "lstm", "--pos-emb", "rotary", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode != 0 and "--pos-emb" in bad.stderr and "Traceback" not in bad.stderr


def test_resume_is_exact_with_muon_and_bf16(tmp_path):
    """Muon's momentum buffers and the AdamW moments travel in training_state; bf16 autocast is training-only."""
    kw = dict(optimizer="muon", muon_lr=0.02, precision="bf16")
    model, vocab, train, val = make("gpt", "file", dropout=0.0)
    a = tmp_path / "a"
    T.run_training(model, vocab, train, val, settings("file", **kw), a, progress=False)
    model, vocab, train, val = make("gpt", "file", dropout=0.0)
    b = tmp_path / "b"
    T.run_training(model, vocab, train, val, settings("file", **kw), b, stop_after_steps=6, progress=False)
    C.resume(b)
    assert losses(a) == losses(b) and len(losses(a)) == 12
    wa, wb = current_weights(a), current_weights(b)
    assert any(k.endswith(".momentum_buffer") for k in wa) and any(k.endswith(".exp_avg_sq") for k in wa)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    loaded, _, _ = checkpoint.load(a)
    assert loaded.logits(torch.tensor([[vocab.bos_id, 3, 4]])).dtype == torch.float32  # scoring stays fp32


def test_old_settings_mean_adamw_and_fp32_on_cpu():
    s = settings("file")  # a saved run's settings without the new fields
    assert (s.optimizer, s.precision) == ("adamw", "auto")
    model, *_ = make("gpt", "file")
    assert type(T.make_optimizer(model, s, torch.device("cpu"))) is torch.optim.AdamW


def test_bf16_only_where_native(monkeypatch):
    cpu = torch.device("cpu")
    assert T.uses_bf16(settings("file", precision="fp32"), cpu) is False
    assert T.uses_bf16(settings("file", precision="auto"), cpu) is False  # old runs: fp32 on CPU
    from arlm.training import optimizer as O

    monkeypatch.setattr(O, "native_bf16", lambda device: False)  # a CPU without AVX-512 BF16 / AMX
    assert T.uses_bf16(settings("file", precision="bf16"), cpu) is False
    monkeypatch.setattr(O, "native_bf16", lambda device: True)
    assert T.uses_bf16(settings("file", precision="bf16"), cpu) is True
    with pytest.raises(ArlmError, match="--precision"):
        T.uses_bf16(settings("file", precision="fp16"), cpu)


def test_training_steps_read_the_device_once_per_log_interval(tmp_path, monkeypatch):
    """The step leaves loss and gradient norm on the device: every read (item, float, bool, ...) waits for it."""
    model, vocab, train, val = make("gpt", "file")
    reads: list[str] = []
    for name in ("item", "tolist", "numpy", "__float__", "__int__", "__index__", "__bool__"):
        def counted(self, *a, _orig=getattr(torch.Tensor, name), _name=name, **k):
            reads.append(_name)
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    after_step: list[int] = []  # reads so far, after each step
    step = T.Trainer.train_step

    def counting_step(self, *a, **k):
        result = step(self, *a, **k)
        after_step.append(len(reads))
        return result
    monkeypatch.setattr(T.Trainer, "train_step", counting_step)
    n = T.LOG_INTERVAL
    s = settings("file", optimizer="muon", precision="bf16", max_steps=4 * n + 1, eval_interval=1000)
    T.run_training(model, vocab, train, val, s, tmp_path / "run", progress=False)
    assert len(after_step) == 4 * n + 1
    assert after_step[4 * n - 1] - after_step[n - 1] <= 3, reads[after_step[n - 1]:after_step[4 * n - 1]][:12]
    assert [s for s, _ in losses(tmp_path / "run")] == list(range(1, 4 * n + 2))  # every step's loss is logged


def test_compile_time_is_reported_apart_and_the_budget_holds(tmp_path, monkeypatch):
    """--compile: the steps that compiled are left out of the --max-time budget and reported as compile_s;
    the training time ends within one step of the budget (the eager backend keeps the test cheap)."""
    import time

    from arlm.training import loop

    monkeypatch.setattr(loop, "COMPILE_BACKEND", "eager")
    model, vocab, train, val = make("gpt", "file")
    s = settings("file", max_steps=None, max_time=1.5, compile=True, eval_interval=1000)
    t0 = time.perf_counter()
    summary = T.run_training(model, vocab, train, val, s, tmp_path / "run", progress=False)
    wall = time.perf_counter() - t0
    assert summary["stopped"] == "max_time" and summary["compile_s"] > 0 and summary["step"] > 1
    recs = [json.loads(line) for line in (tmp_path / "run" / T.LOG_FILE).read_text().splitlines()]
    # every throughput record (one per log interval: how many fit in 1.5 s depends on the machine) carries it
    reported = [r["compile_s"] for r in recs if "tokens_per_s" in r]
    assert reported and set(reported) == {round(summary["compile_s"], 3)}
    step_s = 1.5 / (summary["step"] - 1)  # a generous bound on one compiled step
    assert 1.5 <= summary["elapsed_s"] <= 1.5 + 5 * step_s + 0.5
    assert wall >= summary["compile_s"] + 1.5  # the compilation did happen, outside the budget


def test_compile_is_default_on_cuda_for_long_budgets_only():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    s = settings("file", max_steps=None, max_time=T.loop.AUTO_COMPILE_MIN_TIME)
    assert s.compile is None and T.compiles(s, cuda) and not T.compiles(s, cpu)
    assert not T.compiles(settings("file", max_steps=None, max_time=120.0), cuda)
    assert T.compiles(settings("file", max_steps=T.loop.AUTO_COMPILE_MIN_STEPS), cuda)
    assert not T.compiles(settings("file", max_steps=1000), cuda)
    assert T.compiles(settings("file", compile=True), cpu)
    assert not T.compiles(settings("file", max_steps=None, max_time=3600.0, compile=False), cuda)


def test_batches_drawn_a_step_ahead_are_the_same_batches_and_resume_exactly(tmp_path, monkeypatch):
    """CUDA draws each batch one step ahead; a checkpoint rewinds the generator to before that draw.
    Forced on here: the losses equal those of batches drawn in turn, across an interruption and resume."""
    from arlm.training import loop

    model, vocab, train, val = make("gpt", "file")
    T.run_training(model, vocab, train, val, settings("file"), tmp_path / "plain", progress=False)
    monkeypatch.setattr(loop, "draws_ahead", lambda device, dist: True)
    model, vocab, train, val = make("gpt", "file")
    T.run_training(model, vocab, train, val, settings("file"), tmp_path / "ahead", stop_after_steps=6, progress=False)
    C.resume(tmp_path / "ahead")
    assert len(losses(tmp_path / "plain")) == 12 and losses(tmp_path / "ahead") == losses(tmp_path / "plain")
