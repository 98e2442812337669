"""Benchmark: build and evaluate character n-gram models on tinyshakespeare.

Usage: python bench/ngram.py [--orders 5 7] [--repeats 3] [--data PATH]

Prints, for each order, the median build time of the model from the 1 MB
training text (nanoGPT's split: first 90% of characters), the median `evaluate`
throughput on val in characters per second, and val bits per character. A
reference figure measured in the same run (numpy sorting the same number of
int64 keys) is printed so ratios can be compared across noisy runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from arlm import scoring
from arlm.data import encode_documents
from arlm.corpus import read_text
from arlm.models.ngram import NGramConfig, NGramModel
from arlm.vocab import CharVocab

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare.txt"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--orders", type=int, nargs="+", default=[5, 7])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    text = read_text(args.data)  # strict UTF-8, one leading BOM dropped, like arlm train
    n = int(0.9 * len(text))
    train, val = text[:n], text[n:]
    vocab = CharVocab.train([train])
    warnings.simplefilter("ignore")

    keys = np.random.default_rng(0).integers(0, 2**40, size=len(train))
    ref = statistics.median(_timed(lambda: np.unique(keys, return_inverse=True)) for _ in range(args.repeats))
    print(f"reference: np.unique of {len(train):,} int64 keys: {ref * 1e3:.1f} ms (median of {args.repeats})")
    print(f"{'order':>5} {'build s':>8} {'build/ref':>9} {'eval chars/s':>13} {'val bpc':>8}")
    for order in args.orders:
        cfg = NGramConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, order=order)
        builds, evals = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model = NGramModel.fit(cfg, encode_documents(vocab, [train]))
            builds.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            m = scoring.evaluate(model, vocab, val, "file")
            evals.append(time.perf_counter() - t0)
        b, e = statistics.median(builds), statistics.median(evals)
        print(f"{order:>5} {b:>8.2f} {b / ref:>9.1f} {len(val) / e:>13,.0f} {m['bits_per_char']:>8.4f}")
    return 0


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
