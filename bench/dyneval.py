"""Dynamic evaluation settings against static evaluation: nats/char on a text and the seconds each takes.

Usage:
    python bench/dyneval.py MODEL_DIR val.txt [--limit CHARS] [--threads N] [SETTINGS_JSON ...]

Each SETTINGS_JSON holds ``LM.adapt`` keywords, e.g. ``'{"chunk_size": 32, "optimizer": "rms"}'``;
``'{}'`` is the defaults. The first row is the static model (its sliding window, stride block/2).
Rows are measured one after another in this process: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from arlm.lm import LM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("text")
    ap.add_argument("--limit", type=int, default=0, help="score only the first CHARS characters")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("settings", nargs="*", default=["{}"])
    args = ap.parse_intermixed_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = LM.load(args.model_dir)
    text = open(args.text, encoding="utf-8").read()
    text = text[: args.limit] if args.limit else text
    print(f"{args.model_dir} on {args.text} ({len(text):,} chars), {torch.get_num_threads()} threads")
    print(f"| {'settings':60s} | nats/char | seconds |")
    print(f"|{'-' * 62}|-----------|---------|")
    for spec in [None, *args.settings]:
        t0 = time.time()
        m = (lm if spec is None else lm.adapt(**json.loads(spec))).evaluate(text, documents="file")
        name = "static" if spec is None else spec
        print(f"| {name:60s} | {m['nll'] / len(text):9.4f} | {time.time() - t0:7.1f} |", flush=True)


if __name__ == "__main__":
    main()
