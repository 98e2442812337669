"""What each piece of the context-mixing family (``arlm.models.cm``) buys, in bits per char.

Every row trains a ``cm`` model on train.txt (one adaptive pass, what ``arlm train
--model cm`` does) and scores val.txt (or its first --limit chars) as one document
with ``sequence_log_probs`` (what ``arlm eval`` and ``arlm compress`` compute).
Prints bits/char, the training and scoring wall-clock seconds and the process
CPU seconds of each row.

    .venv/bin/python bench/cm.py --train runs/train.txt --val runs/val.txt [--limit 30000] [--rows base,no-match]

With ``--neural DIR`` (a GPT/LSTM trained on train.txt) every row also gets that network input
(``--neural-dyneval``: under dynamic evaluation); the network's vocab is used.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arlm.data import encode_document  # noqa: E402
from arlm.models.cm import CMConfig, CMModel, newline_id, word_token_ids  # noqa: E402
from arlm.vocab import ByteVocab, CharVocab  # noqa: E402

BASE: dict = {}  # CMConfig's defaults
#: name -> changes to BASE
ROWS = {
    "base": {},
    "orders 0-4": dict(orders=[0, 1, 2, 3, 4]),
    "orders 0-6": dict(orders=[0, 1, 2, 3, 4, 5, 6]),
    "orders 0-7": dict(orders=[0, 1, 2, 3, 4, 5, 6, 7]),
    "orders 0-12": dict(orders=list(range(13))),
    "no word contexts": dict(word_contexts=False),
    "no line contexts": dict(line_contexts=False),
    "neural tail 0": dict(neural_tail=0),
    "no match (min 64)": dict(match_min=64),
    "match min 6": dict(match_min=6),
    "match min 10": dict(match_min=10),
    "table_bits 20": dict(table_bits=20),
    "mixer_lr 1": dict(mixer_lr=1),
    "mixer_lr 8": dict(mixer_lr=8),
    "count_limit 30": dict(count_limit=30),
    "count_limit 127": dict(count_limit=127),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", default="runs/train.txt", help="training text (nanoGPT's train split)")
    p.add_argument("--val", default="runs/val.txt", help="text to score")
    p.add_argument("--limit", type=int, default=None, help="score only the first N chars of val")
    p.add_argument("--rows", default="base", help=f"comma list of rows, or 'all': {', '.join(ROWS)}")
    p.add_argument("--vocab", default="char", choices=["char", "byte"], help="vocabulary")
    p.add_argument("--neural", default=None, metavar="DIR", help="a network input for every row")
    p.add_argument("--neural-dyneval", action="store_true", help="the network under dynamic evaluation")
    p.add_argument("--set", default="", help="extra changes to every row, e.g. 'mixer_lr=8;orders=0,1,2'")
    args = p.parse_args()
    train = Path(args.train).read_text(encoding="utf-8")
    val = Path(args.val).read_text(encoding="utf-8")[: args.limit]
    vocab = CharVocab.train([train, val]) if args.vocab == "char" else ByteVocab()
    network = None
    if args.neural:
        from arlm import checkpoint
        from arlm.models.dyneval import DynEvalConfig, DynEvalModel

        network, vocab, _ = checkpoint.load(args.neural)
        if args.neural_dyneval:
            network = DynEvalModel(DynEvalConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, network.family,
                                                 min(50, network.block_size or 50)), network).eval()
    extra = {}
    for item in filter(None, args.set.split(";")):
        k, v = item.split("=")
        extra[k] = [int(x) for x in v.split(",")] if k == "orders" else (v == "1" if k.endswith("contexts") else int(v))
    rows = list(ROWS) if args.rows == "all" else args.rows.split(",")
    train_ids = np.array(encode_document(vocab, train))
    val_ids = torch.tensor(encode_document(vocab, val))
    print(f"| cm variant ({args.vocab}, val {len(val):,} chars) | bits/char | train s | score s | CPU s |")
    print("|---|---|---|---|---|")
    for name in rows:
        cfg = CMConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, word_token_ids=word_token_ids(vocab),
                       newline_id=newline_id(vocab), neural=args.neural, **{**BASE, **ROWS[name], **extra})
        c0, t0 = time.process_time(), time.time()
        model = CMModel(cfg, neural=network)
        model.fit([train_ids])
        t1 = time.time()
        lp = model.sequence_log_probs(val_ids)
        t2 = time.time()
        bpc = -lp.sum().item() / math.log(2) / len(val)
        print(f"| {name} | {bpc:.4f} | {t1 - t0:.1f} | {t2 - t1:.1f} | {time.process_time() - c0:.1f} |", flush=True)
        del model


if __name__ == "__main__":
    main()
