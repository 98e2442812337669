"""Training-step time of the GPT, fp32 against bf16 autocast (and AdamW against Muon), alternated in one process;
or two checkouts' training loops compared.

Usage: python bench/step_time.py [--threads N] [--steps S] [--rounds K]
       python bench/step_time.py --compare OLD_CHECKOUT NEW_CHECKOUT [--threads N] [--steps S] [--rounds K]

For each model size (the default GPT, and n_layer 4 / n_embd 256 / block 128) it times full training steps
(forward under ``torch.autocast("cpu", bfloat16)`` or not, fp32 loss, backward, optimiser step) on random
tokens, alternating the configurations round by round, and prints each one's *fastest* step (on a shared
machine the minimum is the figure least disturbed by other processes) and the ratio to the first.

``--compare``: each checkout's own ``arlm.training.run_training`` (the whole loop: batches, step, logging)
trains the default GPT (``DEFAULTS["gpt"]``: Muon, bf16 where native) for ``--steps`` steps on
``tests/data/shakespeare.txt`` in a fresh process, the two checkouts alternating for ``--rounds``
rounds; it prints each one's best tokens/s (evaluation excluded) and the ratio new / old.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from arlm.models.gpt import GPTConfig, GPTModel  # noqa: E402
from arlm.training.muon import MuonAdamW, hidden_matrices  # noqa: E402


def step_time(cfg: dict, batch: int, bf16: bool, muon: bool, steps: int) -> float:
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=67, bos_id=65, eos_id=66, **cfg)).train()
    if muon:
        hidden = {id(p) for p in hidden_matrices(model)}
        opt = MuonAdamW([{"params": [p for p in model.parameters() if id(p) in hidden], "use_muon": True},
                         {"params": [p for p in model.parameters() if id(p) not in hidden]}], lr=1e-3,
                        ns_dtype="bfloat16" if bf16 else "float32")
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    T = model.config.block_size
    x, y = torch.randint(0, 65, (batch, T)), torch.randint(0, 65, (batch, T))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)  # [B, T, V]
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return min(times[3:])


def loop_tokens_per_s(checkout: str, steps: int, threads: int) -> float:
    """Tokens/s of ``checkout``'s training loop on the default GPT (run in a process of its own)."""
    import subprocess

    code = f"""
import sys, tempfile
sys.path.insert(0, {checkout!r})
import torch
from arlm import training as T
from arlm.models.gpt import GPTConfig, GPTModel
from arlm.vocab import CharVocab
text = open({checkout!r} + "/tests/data/shakespeare.txt", encoding="utf-8").read()
vocab = CharVocab.train([text])
try:
    d = T.DEFAULTS["gpt"]
except AttributeError:  # the family table (checkouts after the redesign)
    import dataclasses
    from arlm.models.registry import FAMILIES
    d = {{f.name: f.default for c in (T.TrainSettings, GPTConfig) for f in dataclasses.fields(c)}}
    d.update(FAMILIES["gpt"].defaults)
torch.manual_seed(0)
model = GPTModel(GPTConfig(vocab_size=vocab.vocab_size, bos_id=vocab.bos_id, eos_id=vocab.eos_id,
                           **{{k: d[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "dropout")}}))
s = T.TrainSettings(batch_size=d["batch_size"], block_size=d["block_size"], lr=d["lr"], min_lr_ratio=d["min_lr_ratio"],
                    precision=d["precision"], optimizer=d["optimizer"], muon_lr=d["muon_lr"], max_steps={steps},
                    eval_interval={steps} + 1, eval_iters=1, threads={threads}, device="cpu")
data = T.TokenData.from_documents(vocab, [text])
with tempfile.TemporaryDirectory() as out:
    summary = T.run_training(model, vocab, data, None, s, out, progress=False, keep_data=False)
print(summary["tokens_per_s"])
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{checkout}: {r.stderr.strip().splitlines()[-1:]}")
    return float(r.stdout.strip().splitlines()[-1])


def compare(old: str, new: str, steps: int, rounds: int, threads: int) -> None:
    best = {old: 0.0, new: 0.0}
    for _ in range(rounds):
        for checkout in (old, new):
            best[checkout] = max(best[checkout], loop_tokens_per_s(checkout, steps, threads))
    for checkout, tok in best.items():
        print(f"{checkout}: {tok:.0f} tokens/s (best of {rounds}, {steps} steps, {threads} threads)")
    print(f"ratio new / old: {best[new] / best[old]:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--steps", type=int, default=25, help="steps per measurement")
    ap.add_argument("--rounds", type=int, default=2, help="alternations")
    ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="two arlm checkouts: their training loops")
    args = ap.parse_args()
    if args.compare:
        compare(*(str(Path(c).resolve()) for c in args.compare), args.steps, args.rounds, args.threads)
        return
    torch.set_num_threads(args.threads)
    variants = [("fp32 adamw", False, False), ("bf16 adamw", True, False), ("bf16 muon", True, True)]
    for cfg, batch in [({}, 32), (dict(n_layer=4, n_embd=256, n_head=4, block_size=128), 32)]:
        best = {name: float("inf") for name, *_ in variants}
        for _ in range(args.rounds):
            for name, bf16, muon in variants:
                best[name] = min(best[name], step_time(cfg, batch, bf16, muon, args.steps))
        base = best[variants[0][0]]
        tokens = batch * (cfg.get("block_size", 64))
        print(f"{cfg or 'default GPT'}, batch {batch}, {args.threads} threads:")
        for name in best:
            print(f"  {name}: {best[name] * 1e3:.1f} ms/step, {tokens / best[name]:.0f} tokens/s, "
                  f"speed x{base / best[name]:.2f}")


if __name__ == "__main__":
    main()
