"""Kill -9 campaign: SIGKILL `arlm train` at random moments, resume each time, compare with an uninterrupted run.

A tiny GPT is trained on names (lines mode) with a fixed thread count. The
campaign run is killed ``--kills`` times, in turn: exactly while a checkpoint
is half-written (the test hook ``ARLM_TEST_CHECKPOINT_SLEEP`` holds the
temporary state file open), at a random moment in the first 3 s of the
process (importing, reading and encoding the data, building the model,
writing its first files), and twice at a random moment while it trains
(steps, evaluations, checkpoint writes). After every kill the model
directory must load whenever a checkpoint exists, and the next attempt
resumes (``arlm train --resume``), or starts over when no checkpoint was
written yet. At the end the final weights, best weights, optimiser state and
per-step losses must equal the uninterrupted run's bit for bit.

    python bench/kill9.py                 # 20 kills (the issue's campaign)
    python bench/kill9.py --kills 3 --steps 30   # about the small version in make test

Prints one line per kill and a verdict; exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAMES = REPO / "tests" / "data" / "names.txt"
STATE, LOG = "training_state.safetensors", "train_log.jsonl"


def train_argv(data: Path, out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "arlm", "train", str(data), "--model", "gpt", "--documents", "lines",
            "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "8",
            "--warmup-steps", "3", "--eval-interval", "5", "--eval-iters", "2", "--max-steps", str(steps),
            "--threads", "1", "--dropout", "0.1", "--out", str(out)]


def resume_argv(out: Path) -> list[str]:
    return [sys.executable, "-m", "arlm", "train", "--resume", str(out)]


def state_of(out: Path) -> dict | None:
    from arlm import training as T

    if not (out / STATE).is_file():
        return None
    return T.read_state(out / STATE)[1]


def check_loads(out: Path) -> str:
    """'loads (step N)' or 'no checkpoint yet'; raises if a checkpoint exists but the directory does not load."""
    from arlm import checkpoint

    st = state_of(out)
    if st is None:
        return "no checkpoint yet"
    model, _, _ = checkpoint.load(out)
    import torch

    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    return f"loads (checkpoint of step {st['step']})"


def _log_text(out: Path) -> str:
    try:
        return (out / LOG).read_text()
    except OSError:
        return ""


def _logged_steps(out: Path) -> int:
    return _log_text(out).count('"loss"')


def fingerprint(out: Path):
    from arlm import training as T

    tensors, st = T.read_state(out / STATE)
    weights = {k: v for k, v in tensors.items() if k.startswith(("model.", "optim.", "best."))}
    losses = [(r["step"], r["loss"]) for r in map(json.loads, (out / LOG).read_text().splitlines()) if "loss" in r]
    return weights, losses, st


def campaign(work: Path, kills: int = 20, steps: int = 60, seed: int = 0, data: Path = NAMES, log=print) -> bool:
    """Run the campaign in ``work``; True when every check passed."""
    import torch

    t_start = time.time()
    rng = random.Random(seed)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    ref, run = work / "ref", work / "run"
    res = subprocess.run(train_argv(data, ref, steps), env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"reference run failed: {res.stderr}")
    _, ref_losses, ref_state = fingerprint(ref)
    step_s = ref_state["elapsed_s"] / steps  # seconds per step, evaluations and checkpoints included
    log(f"reference run: {steps} steps, {step_s * 1e3:.0f} ms a step")
    done, loaded = 0, 0
    while True:
        st = state_of(run)
        argv = train_argv(data, run, steps) if st is None else resume_argv(run)
        if st is None and run.exists():
            argv.append("--force")  # killed before the first checkpoint: start over
        if done >= kills:
            res = subprocess.run(argv, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"final run failed: {res.stderr}")
            break
        at_step = 0 if st is None else st["step"]
        kind = ("write", "startup", "train", "train")[done % 4]
        if kind == "write" and at_step + 5 > steps - 5:
            kind = "train"
        e = dict(env)
        if kind == "write":
            target = (at_step // 5 + 1) * 5  # the next checkpoint (every --eval-interval 5 steps)
            e["ARLM_TEST_CHECKPOINT_SLEEP"] = f"{target}:60"
        before = _log_text(run)
        proc = subprocess.Popen(argv, env=e, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        try:
            if kind == "write":
                for line in proc.stderr:
                    if "ARLM_TEST: writing checkpoint" in line:
                        break
                moment = f"while writing the checkpoint of step {target}"
            elif kind == "startup":  # importing, reading data, building the model, first files
                delay = rng.uniform(0.0, 3.0)
                time.sleep(delay)
                moment = f"{delay:.2f} s after the start"
            else:  # training: a random moment before the run would end
                # wait for this process's first step (the log still holds the killed one's lines,
                # which a resume truncates to the checkpoint before it appends)
                while proc.poll() is None and (_log_text(run) == before or _logged_steps(run) <= at_step):
                    time.sleep(0.01)
                # spread the kills over the run: on average steps / kills steps further each time
                window = min(steps - at_step - 1, 2 * steps / kills)
                delay = rng.uniform(0.0, max(window, 0.0) * step_s)
                time.sleep(delay)
                moment = f"{delay:.2f} s into training from step {at_step}"
            finished = proc.poll() is not None
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        if finished:
            raise SystemExit(f"the attempt ended before the kill ({moment}): {proc.stderr.read()[-500:]}")
        done += 1
        status = check_loads(run)
        loaded += status.startswith("loads")
        log(f"kill {done:2d}/{kills} {moment}: directory {status}")
    wa, la, sa = fingerprint(ref)
    wb, lb, sb = fingerprint(run)
    same = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa) and la == lb
    from arlm import checkpoint

    ma, _, _ = checkpoint.load(ref)
    mb, _, _ = checkpoint.load(run)
    same = same and all(torch.equal(p, q) for p, q in zip(ma.parameters(), mb.parameters()))
    same = same and sb["step"] == steps and sb["stopped"] == "max_steps"
    early = f" ({done - loaded} came before the first checkpoint)" if loaded < done else ""
    log(f"kill -9 campaign: {loaded}/{done} kills left a directory that loads{early}; final weights, best "
        f"weights, optimiser state and {len(lb)} losses bit-identical to the uninterrupted run: "
        f"{'yes' if same else 'NO'} ({time.time() - t_start:.0f} s)")
    return same


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="number of SIGKILLs")
    ap.add_argument("--steps", type=int, default=60, help="optimiser steps of the run")
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--data", default=str(NAMES), help="training text (lines mode)")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="arlm-kill9-") as work:
        ok = campaign(Path(work), args.kills, args.steps, args.seed, Path(args.data))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
