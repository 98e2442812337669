"""Training-step time of the default GPT with each issue-24 option on, alternated in one process.

Usage: python bench/option_step_time.py [--threads N] [--steps S] [--rounds K]

For each configuration (the defaults, then one GPTConfig option or training-loop option on) it times whole
training steps of the default GPT (batch 32, block 64: forward under bf16 autocast where native, fp32 loss,
backward, gradient clipping, Muon/AdamW step, the weight EMA where on) on random tokens, alternating the
configurations round by round, and prints each one's fastest step (the figure least disturbed on a shared
machine) and its ratio of tokens/s to the first.
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
from arlm.training.ema import WeightEMA  # noqa: E402
from arlm.training.muon import MuonAdamW, hidden_matrices  # noqa: E402
from arlm.training.optimizer import native_bf16  # noqa: E402

CONFIGS = {
    "defaults": {},
    "qk_norm": dict(qk_norm=True),
    "relu2": dict(mlp_act="relu2"),
    "zero_init": dict(zero_init=True),
    "value_residual": dict(value_residual=True),
    "unet_skips": dict(unet_skips=True),
    "untied + soft-cap 15": dict(tie_word_embeddings=False, logit_softcap=15.0),
    "ema 0.999": dict(ema=0.999),
}


def make(options: dict):
    options = dict(options)
    ema = options.pop("ema", 0.0)
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=67, bos_id=65, eos_id=66, n_layer=2, n_head=4, n_embd=128,
                               block_size=64, **options)).train()
    hidden = {id(p) for p in hidden_matrices(model)}
    opt = MuonAdamW([{"params": [p for p in model.parameters() if id(p) in hidden], "use_muon": True},
                     {"params": [p for p in model.parameters() if id(p) not in hidden]}], lr=6e-3, lr_ratio=5.0,
                    ns_dtype="bfloat16" if native_bf16(torch.device("cpu")) else "float32")
    return model, opt, WeightEMA(model, ema) if ema else None


def time_steps(model, opt, ema, steps: int) -> float:
    bf16 = native_bf16(torch.device("cpu"))
    x = torch.randint(0, 65, (32, 64))
    y = torch.randint(0, 65, (32, 64))
    best = float("inf")
    for i in range(steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if ema is not None:
            ema.update(i)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    built = {name: make(opts) for name, opts in CONFIGS.items()}
    best = {name: float("inf") for name in CONFIGS}
    for _ in range(args.rounds):
        for name, (model, opt, ema) in built.items():
            best[name] = min(best[name], time_steps(model, opt, ema, args.steps))
    base = best["defaults"]
    for name, t in best.items():
        print(f"{name:24s} fastest step {t * 1e3:7.2f} ms   tokens/s ratio {base / t:.2f}")


if __name__ == "__main__":
    main()
