"""Corpora bigger than memory: tokenize throughput, GPT training from a token file, budgeted n-gram counting.

Usage: python bench/scale.py [--size 1G] [--ngram-size 200M] [--workdir /tmp/arlm-scale] [--keep]

1. Generates a synthetic corpus of ``--size`` bytes (words drawn with their
   frequencies in tests/data/shakespeare.txt, 1 line in 10 ends a line; seeded).
2. ``arlm tokenize`` it with the char vocab (two streaming passes: characters, then ids):
   MB/s overall and for the encoding pass, peak RSS.
3. ``arlm train TOKENS --model gpt --max-steps 200`` (default GPT, batches read
   from the uint16 token file with np.memmap): tokens/s and peak RSS (bar: < 1.5 GB).
4. ``arlm train TEXT --model ngram --order 5 --memory 1G`` on the first
   ``--ngram-size`` bytes of the corpus: seconds, sorted runs, peak RSS (bar: < 1.5 GB).

Peak RSS is each command's own (``ru_maxrss`` of a wrapper's children), so
the steps do not mask each other. Files go to ``--workdir`` (removed at the
end unless ``--keep``); it needs about 4x ``--size`` of free disk.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RSS_BAR_MB = 1500


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d*)?)([kmg]?)", text.lower())
    if not m:
        raise SystemExit(f"cannot parse size {text!r}")
    return int(float(m.group(1)) * 1000 ** " kmg".index(m.group(2) or " "))


def generate(path: Path, size: int, seed: int = 0) -> float:
    """Write ``size`` bytes of words drawn by frequency from the fixture; returns seconds."""
    t0 = time.perf_counter()
    words, counts = np.unique(np.array((REPO / "tests/data/shakespeare.txt").read_text().split()), return_counts=True)
    enc = [w.encode() for w in words.tolist()]
    width = max(map(len, enc)) + 1
    table = np.array([w + b" " for w in enc] + [w + b"\n" for w in enc], dtype=f"S{width}")
    p = counts / counts.sum()
    rng = np.random.default_rng(seed)
    written = 0
    with open(path, "wb") as f:
        while written < size:
            idx = rng.choice(len(enc), size=1 << 20, p=p) + len(enc) * (rng.random(1 << 20) < 0.1)
            raw = np.frombuffer(table[idx].tobytes(), dtype=np.uint8)
            chunk = raw[raw != 0].tobytes()[: size - written]
            f.write(chunk)
            written += len(chunk)
    return time.perf_counter() - t0


def measured(args: list[str]) -> tuple[float, int, str, str]:
    """Run ``arlm ARGS`` in a wrapper; returns (seconds, peak RSS in MB, stdout, stderr)."""
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); "
               "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
               "sys.exit(r.returncode)")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "arlm", *args],
                       capture_output=True, text=True, cwd=REPO)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"arlm {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    kb = int(re.search(r"PEAK_RSS_KB (\d+)", r.stderr).group(1))
    return dt, kb // 1024, r.stdout, r.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1G", help="generated corpus size (bytes; k/m/g = powers of 1000)")
    ap.add_argument("--ngram-size", default="200M", help="text the order-5 n-gram is counted on")
    ap.add_argument("--memory", default="1G", help="--memory of the n-gram run")
    ap.add_argument("--steps", type=int, default=200, help="GPT optimiser steps")
    ap.add_argument("--workdir", default="/tmp/arlm-scale", help="where the corpus and outputs go")
    ap.add_argument("--keep", action="store_true", help="keep the workdir")
    a = ap.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    size, ngram_size = parse_size(a.size), parse_size(a.ngram_size)
    corpus = work / "corpus.txt"
    results: dict = {}
    try:
        if not corpus.is_file() or corpus.stat().st_size != size:
            results["generate_s"] = round(generate(corpus, size), 1)
        print(f"corpus: {corpus} {size / 1e6:.0f} MB", flush=True)

        dt, rss, out, _ = measured(["tokenize", str(corpus), "--out", str(work / "tok"), "--json"])
        r = json.loads(out)
        results["tokenize"] = {"seconds": round(dt, 1), "mb_per_s": r["mb_per_s"],
                               "encode_mb_per_s": r["encode_mb_per_s"], "n_tokens": r["n_tokens"],
                               "dtype": r["dtype"], "peak_rss_mb": rss}
        print(f"tokenize (char): {r['mb_per_s']:.1f} MB/s overall, {r['encode_mb_per_s']:.1f} MB/s encoding pass; "
              f"{r['n_tokens']:,} tokens ({r['dtype']}); peak RSS {rss} MB", flush=True)

        dt, rss, _, err = measured(["train", str(work / "tok"), "--model", "gpt", "--max-steps", str(a.steps),
                                    "--eval-interval", str(a.steps), "--eval-iters", "2", "--out", str(work / "gpt")])
        tok_s = float(re.search(r"([\d.]+) tokens/s", err).group(1))
        results["gpt"] = {"seconds": round(dt, 1), "steps": a.steps, "tokens_per_s": tok_s, "peak_rss_mb": rss,
                          "rss_ok": rss < RSS_BAR_MB}
        print(f"gpt from token file: {a.steps} steps in {dt:.0f} s, {tok_s:.0f} tokens/s; peak RSS {rss} MB "
              f"({'<' if rss < RSS_BAR_MB else '>='} {RSS_BAR_MB} MB)", flush=True)

        small = work / "ngram.txt"
        with open(corpus, "rb") as src, open(small, "wb") as dst:
            data = src.read(ngram_size)
            dst.write(data[: data.rfind(b"\n") + 1])
        dt, rss, out, _ = measured(["train", str(small), "--model", "ngram", "--order", "5", "--memory", a.memory,
                                    "--out", str(work / "ngram"), "--json"])
        counting = json.loads(out)["counting"]
        n_params = json.loads(out)["num_parameters"]
        results["ngram"] = {"seconds": round(dt, 1), "text_mb": round(small.stat().st_size / 1e6, 1),
                            "runs": counting["runs"], "n_ngrams": n_params, "peak_rss_mb": rss, "rss_ok": rss < RSS_BAR_MB}
        print(f"order-5 char n-gram, --memory {a.memory}, {small.stat().st_size / 1e6:.0f} MB text: {dt:.0f} s, "
              f"{max(counting['runs'])} sorted runs per order, {n_params:,} n-grams; peak RSS {rss} MB "
              f"({'<' if rss < RSS_BAR_MB else '>='} {RSS_BAR_MB} MB)", flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
