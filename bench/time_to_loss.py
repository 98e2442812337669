"""Time to quality: the val loss a GPT configuration reaches in a fixed wall-clock budget (or step count).

Usage:
    python bench/time_to_loss.py [--budget 2m | --steps N] [--rounds K] [--threads N] [CONFIG ...]
    python bench/time_to_loss.py --compare "CONFIG A" "CONFIG B" [--budget 1m] [--rounds 3]

A CONFIG is a string of ``arlm train`` flags (``""`` = the defaults), e.g.
``"--optimizer adamw --precision fp32"``. Each run is exactly what a user types:

    arlm split tinyshakespeare.txt --train-out train.txt --val-out val.txt      (once; nanoGPT's 90/10 split)
    arlm train train.txt --model gpt --max-time BUDGET --val-fraction 0 --out DIR CONFIG
    arlm eval DIR val.txt --json                                                 (all of val, sliding window)

in subprocesses, one at a time, and prints per run: val mean_nll (nats/char),
the steps reached, and the training tokens/s (from ``train_log.jsonl``). With
several configurations the runs alternate (A B A B ...), so machine noise hits
each alike; the summary gives the median per configuration and, with
``--compare``, the differences and ratios B - A / B / A of the medians.

``--steps N`` trains a fixed number of steps instead (``--max-steps N``, no time
limit): the loss per step, which does not depend on the load of the machine.
Data: ``../shared/data/tinyshakespeare.txt`` beside the repository (``--data``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARLM = [sys.executable, "-m", "arlm"]


def run_one(train: Path, val: Path, config: str, budget: str | None, steps: int | None, threads: int | None,
            work: Path) -> dict:
    out = work / "run"
    cmd = [*ARLM, "train", str(train), "--model", "gpt", "--val-fraction", "0", "--out", str(out), "--force",
           "--no-keep-data"]
    cmd += ["--max-steps", str(steps)] if steps else ["--max-time", budget]
    if threads:
        cmd += ["--threads", str(threads)]
    cmd += shlex.split(config)
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ev = json.loads(subprocess.run([*ARLM, "eval", str(out), str(val), "--json"], check=True, cwd=REPO,
                                   capture_output=True, text=True).stdout)
    step, tok_s, elapsed = 0, [], 0.0
    for line in (out / "train_log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        step = max(step, rec.get("step", 0))
        if "tokens_per_s" in rec:
            tok_s.append(rec["tokens_per_s"])
            elapsed = rec.get("elapsed_s", elapsed)
    return {"mean_nll": ev["mean_nll"], "steps": step, "tokens_per_s": statistics.median(tok_s) if tok_s else 0.0,
            "elapsed_s": elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("configs", nargs="*", default=[""], help="arlm train flag strings, one per configuration")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two configurations to alternate and compare")
    ap.add_argument("--budget", default="2m", help="wall-clock budget per run (arlm train --max-time)")
    ap.add_argument("--steps", type=int, help="train this many steps instead of a time budget")
    ap.add_argument("--rounds", type=int, default=1, help="runs per configuration (alternating)")
    ap.add_argument("--threads", type=int, help="fixed thread count (default: arlm's governor)")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "tinyshakespeare.txt"),
                    help="the corpus to split 90/10")
    args = ap.parse_args()
    configs = list(args.compare) if args.compare else args.configs
    results: dict[int, list[dict]] = {i: [] for i in range(len(configs))}
    with tempfile.TemporaryDirectory(prefix="time_to_loss_") as tmp:
        work = Path(tmp)
        train, val = work / "train.txt", work / "val.txt"
        subprocess.run([*ARLM, "split", args.data, "--train-out", str(train), "--val-out", str(val)], check=True,
                       cwd=REPO, stdout=subprocess.DEVNULL)
        what = f"{args.steps} steps" if args.steps else f"budget {args.budget}"
        print(f"# {what}, {args.rounds} round(s), threads {args.threads or 'auto'}", flush=True)
        for r in range(args.rounds):
            for i, config in enumerate(configs):
                res = run_one(train, val, config, args.budget, args.steps, args.threads, work)
                results[i].append(res)
                print(f"round {r + 1} [{i}] {config or '(defaults)'}: val mean_nll {res['mean_nll']:.4f}  "
                      f"steps {res['steps']}  tokens/s {res['tokens_per_s']:.0f}", flush=True)
    med = {}
    for i, config in enumerate(configs):
        rs = results[i]
        med[i] = {k: statistics.median(x[k] for x in rs) for k in ("mean_nll", "steps", "tokens_per_s")}
        print(f"median [{i}] {config or '(defaults)'}: val mean_nll {med[i]['mean_nll']:.4f}  "
              f"steps {med[i]['steps']:.0f}  tokens/s {med[i]['tokens_per_s']:.0f}")
    if len(configs) == 2:
        a, b = med[0], med[1]
        print(f"B - A: val mean_nll {b['mean_nll'] - a['mean_nll']:+.4f}; B / A: steps "
              f"{b['steps'] / max(a['steps'], 1):.2f}, tokens/s {b['tokens_per_s'] / max(a['tokens_per_s'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
