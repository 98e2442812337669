"""ARPA interchange on tinyshakespeare: KenLM scores arlm's export as arlm does; import time and memory vs KenLM.

Part 1 (correctness): nanoGPT's split of tinyshakespeare (``arlm split``), a char
order-7 and a word order-5 model trained on train.txt, exported with
``arlm export --format arpa``; KenLM (the ``kenlm`` module) scores val.txt
from the ARPA file, arlm's ``evaluate`` scores it from the model directory.
Prints both total log10 probabilities, their relative difference and both
perplexities.

Part 2 (load): a char order-10 model of the whole corpus exported to ARPA
(about 100 MB); ``kenlm.Model(path)`` and ``arlm.formats.arpa.import_arpa(path)``
each load it in a fresh process, alternating, three times; prints median
seconds, peak resident memory above the interpreter's baseline, and ratios.

Run from the repository root: ``.venv/bin/python bench/arpa.py [--skip-load]``.
Reads ../shared/data/tinyshakespeare.txt; writes under runs/bench-arpa/.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
OUT = REPO / "runs" / "bench-arpa"
ARLM = [sys.executable, "-m", "arlm"]
LN10 = math.log(10.0)


def run(cmd: list[str]) -> str:
    print("$", " ".join(str(c) for c in cmd), flush=True)
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=REPO)
    if r.returncode != 0:
        sys.exit(r.stderr)
    return r.stdout


def parity() -> None:
    import kenlm

    from arlm.formats.arpa import arpa_words
    from arlm.lm import LM

    train, val = OUT / "train.txt", OUT / "val.txt"
    if not val.exists():
        run(ARLM + ["split", DATA, "--train-out", train, "--val-out", val])
    val_text = val.read_text(encoding="utf-8")
    for name, args in [("char7", ["--order", "7"]), ("word5", ["--vocab", "word", "--order", "5"])]:
        model_dir, arpa = OUT / name, OUT / f"{name}.arpa"
        if not (model_dir / "config.json").exists():
            run(ARLM + ["train", train, *args, "--val-file", val, "--out", model_dir, "--json"])
        run(ARLM + ["export", model_dir, "--format", "arpa", "--out", arpa])
        ours = json.loads(run(ARLM + ["eval", model_dir, val, "--json"]))
        lm = LM.load(model_dir)
        km = kenlm.Model(str(arpa))
        words = arpa_words(lm.vocab, val_text)  # file mode: val is one document
        theirs_log10 = math.fsum(p for p, _, _ in km.full_scores(" ".join(words), bos=True, eos=True))
        ours_log10 = -ours["nll"] / LN10
        n = len(words) + 1  # </s> counted, as in arlm's perplexity
        print(f"{name}: arlm eval log10 p(val) = {ours_log10:.4f}, KenLM = {theirs_log10:.4f}, "
              f"relative difference {abs(ours_log10 - theirs_log10) / abs(theirs_log10):.2e}; "
              f"perplexity arlm {ours['perplexity']:.4f}, KenLM {10 ** (-theirs_log10 / n):.4f} "
              f"({n} tokens); bits_per_char arlm {ours['bits_per_char']:.5f}", flush=True)


LOADER = """
import resource, sys, time
kind, path = sys.argv[1], sys.argv[2]
if kind == "kenlm":
    import kenlm
else:
    import arlm.formats.arpa as arpa
    import arlm.models.backoff, arlm.lm, arlm.vocab
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
model = kenlm.Model(path) if kind == "kenlm" else arpa.import_arpa(path)
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(dt, (peak - base) / 1024)
"""


def load(trials: int) -> None:
    arpa = OUT / "char10-all.arpa"
    if not arpa.exists():
        model_dir = OUT / "char10-all"
        run(ARLM + ["train", DATA, "--order", "10", "--val-fraction", "0", "--out", model_dir, "--json"])
        run(ARLM + ["export", model_dir, "--format", "arpa", "--out", arpa])
    size_mb = arpa.stat().st_size / 2**20
    print(f"load: {arpa.name}, {size_mb:.1f} MiB; {trials} alternating trials, each in a fresh process", flush=True)
    res: dict[str, list[tuple[float, float]]] = {"kenlm": [], "arlm": []}
    for _ in range(trials):
        for kind in ("kenlm", "arlm"):
            r = subprocess.run([sys.executable, "-c", LOADER, kind, str(arpa)], capture_output=True, text=True, cwd=REPO)
            if r.returncode != 0:
                sys.exit(r.stderr)
            dt, mb = map(float, r.stdout.split()[-2:])
            res[kind].append((dt, mb))
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in res.items()}
    for k, (dt, mb) in med.items():
        print(f"  {k:6s} load {dt:6.2f} s (median; trials {[round(x[0], 2) for x in res[k]]}), "
              f"peak memory +{mb:.0f} MiB ({mb / size_mb:.2f} x the file)")
    print(f"  ratio arlm / KenLM: time {med['arlm'][0] / med['kenlm'][0]:.2f} x, "
          f"memory {med['arlm'][1] / med['kenlm'][1]:.2f} x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-load", action="store_true", help="only the correctness part")
    p.add_argument("--skip-parity", action="store_true", help="only the load part")
    p.add_argument("--trials", type=int, default=3, help="load trials per loader")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.skip_parity:
        parity()
    if not args.skip_load:
        load(args.trials)


if __name__ == "__main__":
    main()
