"""Thread governor vs the best fixed --threads: GPT training throughput, alternating in one run.

Each round trains the same GPT (``arlm train DATA --model gpt --max-time T
--val-fraction 0``) once with the governor (no ``--threads``) and once with
every fixed count in ``--threads-list``, in a rotated order, so slow drifts of
the machine hit every setting alike. Throughput is the run's tokens per second
over its whole budget (``tokens_seen / elapsed_s`` from the training state:
evaluations, checkpoints and any thread switches included). With ``--load``
each round also trains with ``python -c 'while 1: pass'`` running beside it
(the governor, and the best fixed count of the quiet rounds).

Prints every trial, the medians, and the ratios the issue asks for:
governor / best fixed (quiet; goal >= 0.95) and governor under load /
governor quiet (goal >= 0.50).

    python bench/threads.py --max-time 2m --rounds 3 --load      # the measurement (about 30 min)
    python bench/threads.py --max-time 10s --rounds 1 --load      # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


def trial(data: str, max_time: str, out: Path, threads: int | None) -> dict:
    """One training run; returns tokens/s and the thread counts the log saw."""
    from arlm import training as T

    argv = [sys.executable, "-m", "arlm", "train", data, "--model", "gpt", "--max-time", max_time,
            "--val-fraction", "0", "--out", str(out), "--force"]
    if threads is not None:
        argv += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    res = subprocess.run(argv, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"training failed: {' '.join(argv)}\n{res.stderr[-2000:]}")
    _, st = T.read_state(out / T.STATE_FILE)
    recs = [json.loads(x) for x in (out / T.LOG_FILE).read_text().splitlines()]
    seen = [r["threads"] for r in recs if "threads" in r]
    return {"tokens_per_s": st["tokens_seen"] / st["elapsed_s"], "steps": st["step"], "threads_seen": seen}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="training text")
    ap.add_argument("--max-time", default="2m", help="training budget of each run")
    ap.add_argument("--rounds", type=int, default=2, help="rounds (each runs every setting once)")
    ap.add_argument("--threads-list", default=None, help="fixed counts to compare (default 1..CPU count)")
    ap.add_argument("--load", action="store_true", help="also train beside a busy-looping process")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from arlm.threads import cpu_count

    fixed = [int(x) for x in args.threads_list.split(",")] if args.threads_list else list(range(1, cpu_count() + 1))
    settings = [None, *fixed]
    name = lambda t: "governor" if t is None else f"--threads {t}"  # noqa: E731
    results: dict[str, list[float]] = {}
    print(f"data {args.data}, --max-time {args.max_time}, {args.rounds} round(s), {cpu_count()} CPUs, "
          f"settings: {', '.join(map(name, settings))}{' (+ under load)' if args.load else ''}", flush=True)
    with tempfile.TemporaryDirectory(prefix="arlm-threads-") as work:
        out = Path(work) / "run"
        for r in range(args.rounds):
            order = settings[r % len(settings):] + settings[:r % len(settings)]
            for t in order:
                res = trial(args.data, args.max_time, out, t)
                results.setdefault(name(t), []).append(res["tokens_per_s"])
                print(f"round {r + 1} {name(t):>12}: {res['tokens_per_s']:8.0f} tokens/s, {res['steps']} steps, "
                      f"threads at evals {res['threads_seen']}", flush=True)
            if args.load:
                best = max(fixed, key=lambda t: statistics.median(results[name(t)]))
                hog = subprocess.Popen([sys.executable, "-c", "while 1: pass"])
                try:
                    time.sleep(1.0)
                    for t in ((None, best) if r % 2 == 0 else (best, None)):
                        res = trial(args.data, args.max_time, out, t)
                        key = f"{name(t)} + load"
                        results.setdefault(key, []).append(res["tokens_per_s"])
                        print(f"round {r + 1} {key:>19}: {res['tokens_per_s']:8.0f} tokens/s, {res['steps']} steps, "
                              f"threads at evals {res['threads_seen']}", flush=True)
                finally:
                    hog.kill()
                    hog.wait()
    med = {k: statistics.median(v) for k, v in results.items()}
    print("\nmedian tokens/s:")
    for k, v in med.items():
        print(f"  {k:>22}: {v:8.0f}  ({len(results[k])} runs)")
    best = max(fixed, key=lambda t: med[name(t)])
    ratio = med["governor"] / med[name(best)]
    print(f"governor / best fixed (--threads {best}), quiet: {ratio:.3f}  (goal >= 0.95)")
    if args.load:
        print(f"governor under load / governor quiet: {med['governor + load'] / med['governor']:.3f}  (goal >= 0.50)")
        print(f"--threads {best} under load / quiet: {med[name(best) + ' + load'] / med[name(best)]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
