"""What each adaptive piece buys on tinyshakespeare val (nanoGPT's split), in bits per char.

Every row is an exact, prequential model (p(x_t) depends on x_<t only). The
component log-probabilities over val are computed once per component (their
batched ``logits``, equal to ``step`` up to float rounding); the online mixer
rows then run arlm.models.mixer's own ``mix``/``update`` token by token, the
same functions ``MixerModel.step`` uses, so a row's figure is what ``arlm eval``
of that mixer gives (the last row checks one with ``arlm eval``-equivalent
scoring when --check is given).

Prerequisites (README "Compression"): runs/{train,val,dev}.txt and the models
runs/ng7, runs/cache7 (+ runs/cache12, runs/lstm and runs/lstm-dyn when present).

    .venv/bin/python bench/adaptive.py --runs runs [--limit 30000]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arlm.data import encode_document  # noqa: E402
from arlm.lm import LM  # noqa: E402
from arlm.models.mixer import mix, mixer_inputs, update  # noqa: E402

LN2 = math.log(2)


def component_log_probs(lm, ids: np.ndarray) -> np.ndarray:
    """float64[T, V] log p(· | ids[:t+1]) for t < T (all positions but the last target)."""
    x = torch.from_numpy(ids[None, :-1])
    with torch.no_grad():
        out = lm.model.logits(x)[0]  # dyneval: its step loop
    return torch.log_softmax(out.double(), -1).numpy()


def run_mixer(Ls: list[np.ndarray], feats: list[tuple[np.ndarray, int]], targets: np.ndarray, lr: float,
              bos_id: int, linear_input: bool = True) -> float:
    """Total nll (nats) of the online mixer over the targets (MixerModel's initial weights)."""
    L = mixer_inputs(np.stack(Ls, axis=1), linear_input)  # [T, K', V]
    n_sets = 1
    sets = np.zeros(len(targets), dtype=np.int64)
    for f, size in feats:
        sets = sets * size + f
        n_sets *= size
    W = np.zeros((1 + n_sets, L.shape[1]))
    W[0] = 1.0 / L.shape[1]
    nll = 0.0
    for t in range(len(targets)):
        lp, pend = mix(L[t : t + 1], sets[t : t + 1], W, bos_id)
        nll -= lp[0, targets[t]]
        W = update(W, pend, targets[t : t + 1], lr)
    return nll


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs", help="folder with the split and the models")
    ap.add_argument("--limit", type=int, default=None, help="score only the first N characters of val (quick runs)")
    ap.add_argument("--lr", default="0.002,0.005,0.02", help="learning rates to try for the mixer rows")
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = Path(args.runs)
    val = (runs / "val.txt").read_text(encoding="utf-8")
    if args.limit:
        val = val[: args.limit]
    lms = {name: LM.load(runs / name) for name in ["ng7", "cache7", "cache12", "lstm", "lstm-dyn"] if (runs / name).is_dir()}
    vocab = lms["ng7"].vocab
    ids = np.asarray(encode_document(vocab, val), dtype=np.int64)
    targets = ids[1:]
    n_chars = len(val)
    L, F = {}, {}
    for name, lm in lms.items():
        t0 = time.time()
        L[name] = component_log_probs(lm, ids)
        if hasattr(lm.model, "sequence_features"):
            F[name] = (lm.model.sequence_features(ids[None, :-1])[0], lm.model.feature_size)
        nll = -L[name][np.arange(len(targets)), targets].sum()
        print(f"{name:28s} {nll / LN2 / n_chars:.4f} bits/char   ({time.time() - t0:.1f} s to compute)", flush=True)
    lrs = [float(x) for x in args.lr.split(",")]
    rows = [  # (label, components, selecting components, linear-mixture input)
        ("ng7+cache7, 1 set, geometric only", ["ng7", "cache7"], [], False),
        ("ng7+cache7, 1 set", ["ng7", "cache7"], [], True),
        ("ng7+cache7, sets by ng7", ["ng7", "cache7"], ["ng7"], True),
        ("ng7+cache7, sets by cache7", ["ng7", "cache7"], ["cache7"], True),
        ("ng7+cache7, sets by both", ["ng7", "cache7"], ["ng7", "cache7"], True),
        ("ng7+cache12, sets by cache12", ["ng7", "cache12"], ["cache12"], True),
        ("ng7+cache7+cache12, sets by cache12", ["ng7", "cache7", "cache12"], ["cache12"], True),
        ("ng7+lstm, 1 set", ["ng7", "lstm"], [], True),
        ("ng7+cache7+lstm, sets by cache7", ["ng7", "cache7", "lstm"], ["cache7"], True),
        ("ng7+cache7+cache12+lstm, sets by cache12", ["ng7", "cache7", "cache12", "lstm"], ["cache12"], True),
        ("ng7+lstm-dyn, 1 set", ["ng7", "lstm-dyn"], [], True),
        ("ng7+cache7+lstm-dyn, sets by cache7", ["ng7", "cache7", "lstm-dyn"], ["cache7"], True),
        ("ng7+cache7+lstm-dyn, sets by both", ["ng7", "cache7", "lstm-dyn"], ["ng7", "cache7"], True),
    ]
    print(f"\nonline gated mixer (geometric mixing, weights start uniform, learnt on val as it is read); "
          f"{n_chars:,} chars of val")
    print(f"{'mixer':48s} " + " ".join(f"lr={lr:<7g}" for lr in lrs))
    for label, comps, sel, lin in rows:
        if not all(c in L for c in comps):
            continue
        t0 = time.time()
        res = [run_mixer([L[c] for c in comps], [F[s] for s in sel], targets, lr, vocab.bos_id, lin) / LN2 / n_chars
               for lr in lrs]
        print(f"{label:48s} " + " ".join(f"{r:<10.4f}" for r in res) + f" ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
