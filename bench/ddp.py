"""DDP on this machine: two gloo ranks (``arlm train --nproc 2``, one thread each) against one process (its
threads as ``arlm train`` chooses them: adapted to the load, or ``--threads N``), at the same global batch, in
alternating trials.

Usage: python bench/ddp.py [--data FILE] [--steps 60] [--trials 3] [--threads N] [--batch-size 32]

Each trial trains the default GPT (``arlm train --model gpt``) for ``--steps`` steps on ``--data``
(default ../shared/data/tinyshakespeare.txt, char vocab) with no evaluation inside the timed stretch; its
figure is the loop's own tokens/s over all its steps (``train_log.jsonl``: training steps only, start-up,
evaluation and checkpoints excluded). The script prints every trial, the medians of both set-ups and the
ratio two ranks / one process, and the gap between their last losses: the same global batches, so only float
rounding (thread counts, the gradient all-reduce), amplified over the steps, separates them.

On a 2-core CPU this is not about speed (two ranks share the cores one process already uses, and add a
gradient all-reduce per step): it shows the path to several GPUs and machines works and what it costs here.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


def trial(data: str, out: Path, steps: int, batch: int, threads: int | None, nproc: int) -> dict:
    argv = [sys.executable, "-m", "arlm", "train", data, "--model", "gpt", "--max-steps", str(steps),
            "--eval-interval", str(10 * steps), "--eval-iters", "1", "--batch-size", str(batch),
            "--out", str(out), "--force"]
    if nproc > 1:
        argv += ["--nproc", str(nproc), "--threads", "1"]
    elif threads is not None:
        argv += ["--threads", str(threads)]
    t = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"training failed: {' '.join(argv)}\n{res.stderr[-2000:]}")
    recs = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    tok_s = [r["tokens_per_s"] for r in recs if "tokens_per_s" in r][-1]
    loss = [r["loss"] for r in recs if "loss" in r][-1]
    return {"tokens_per_s": tok_s, "wall_s": wall, "loss": loss}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="text file to train on")
    p.add_argument("--steps", type=int, default=60, help="training steps per trial")
    p.add_argument("--trials", type=int, default=3, help="trials per set-up (alternating)")
    p.add_argument("--threads", type=int, default=None,
                   help="fixed threads of the single process (default: arlm's choice, adapted to the load; "
                        "the ranks get 1 each)")
    p.add_argument("--batch-size", type=int, default=32, help="the global batch of both set-ups")
    args = p.parse_args(argv)
    if not Path(args.data).is_file():
        raise SystemExit(f"no {args.data}: give --data FILE")
    print(f"default GPT, global batch {args.batch_size}, {args.steps} steps per trial, {Path(args.data).name}; "
          f"one process ({args.threads or 'load-adapted'} threads) vs 2 gloo ranks x 1 thread (arlm train --nproc 2)")
    res: dict[str, list[dict]] = {"one process": [], "2 ranks": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.trials):
            order = ("one process", "2 ranks") if k % 2 == 0 else ("2 ranks", "one process")
            for name in order:
                r = trial(args.data, Path(tmp) / name.replace(" ", "-"), args.steps, args.batch_size, args.threads,
                          2 if name == "2 ranks" else 1)
                res[name].append(r)
                print(f"  trial {k + 1} {name:11s}: {r['tokens_per_s']:9,.0f} tokens/s (wall {r['wall_s']:.1f} s with "
                      f"start-up; last loss {r['loss']:.4f})", flush=True)
    med = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in res.items()}
    for k, v in med.items():
        print(f"  median {k:11s}: {v:9,.0f} tokens/s")
    print(f"  ratio 2 ranks / one process: {med['2 ranks'] / med['one process']:.2f}x")
    gap = max(abs(a["loss"] - b["loss"]) for a, b in zip(res["one process"], res["2 ranks"]))
    print(f"  same global batches: last losses differ by at most {gap:.2e} nats (float rounding, amplified over "
          f"{args.steps} steps)")
    print("  (figures from a shared, busy machine: compare the ratio, not the absolute figures)")


if __name__ == "__main__":
    main()
