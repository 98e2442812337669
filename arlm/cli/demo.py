"""``arlm demo``: a char n-gram trained on the built-in corpus, its val bits per char and samples."""

from __future__ import annotations

import time
from pathlib import Path

from .common import fmt_metrics, sample_header, sample_seed


def add_parser(sub) -> None:
    d = sub.add_parser("demo", help="train on the built-in corpus, print val bits per char and samples",
                       description="Train a char n-gram on the built-in corpus, print val bits per char and samples.")
    d.add_argument("--out", default="runs/demo", metavar="DIR", help="model directory to write")
    d.add_argument("--order", type=int, default=6, help="n-gram order, 1..10")
    d.add_argument("--seed", type=sample_seed, default=0, help="seed of the samples (0 .. 2**64-1)")
    d.set_defaults(func=run)


def run(args) -> None:
    from ..pipeline import load_split, split_meta, train_ngram

    from .. import checkpoint

    t0 = time.time()
    out = Path(args.out)
    replace = checkpoint.check_output_dir(out, args.force, family="ngram", vocab="char")
    split = load_split(None, "file", None, 0.1, 1337)
    print(f"built-in corpus: Python's pydoc topics, {sum(map(len, split.train_docs)):,} train / "
          f"{len(split.val_text):,} val characters")
    with checkpoint.new_model_dir(out, replace) as where:
        lm, m = train_ngram(split, where, order=args.order, vocab="char", meta=split_meta(split, None, 0.1, 1337),
                            refit=False)
    print(f"trained a char {args.order}-gram (interpolated modified Kneser-Ney) in {time.time() - t0:.1f} s -> {out}")
    print(f"val: {fmt_metrics(m)}")
    for i, s in enumerate(lm.generate("", max_new_tokens=240, temperature=0.8, seed=args.seed, num_samples=3)):
        print(sample_header(i, 3, s))
        print(s.text)
    print(f"--- next: .venv/bin/arlm sample {out} --prompt 'The ' ; .venv/bin/arlm score {out} 'import os' ---")
