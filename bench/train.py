"""Training throughput: tokens/s of a training step and the fraction of this machine's matmul throughput it uses.

Usage: python bench/train.py [--model gpt|lstm] [--threads N] [--seconds S] [--batch-size B] [--block-size T]

For each model (default: both, with the defaults of ``arlm train``) it times
full training steps (forward, backward, clipping, AdamW update) on random
tokens, and in the same run the throughput of a large fp32 matrix multiply
with the same thread count. Step FLOPs are estimated as 6 x (matmul
parameters) x tokens plus the attention scores (12 x n_layer x n_embd x T per
token for the GPT; Kaplan et al. 2020's approximation), so

    matmul fraction = step FLOPs / step time / reference matmul FLOP/s.

Figures are medians over repeated measurements (the machine may be shared).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from arlm import train as T  # noqa: E402


def matmul_gflops(seconds: float, n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    rates = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        rates.append(4 * 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


class _Vocab:
    def __init__(self, v: int):
        self.vocab_size, self.bos_id, self.eos_id = v, v - 2, v - 1


def step_flops(model, tokens: int, block: int) -> float:
    """~FLOPs of one training step: 6 per matmul weight per token (forward 2, backward 4) + attention."""
    if model.family == "gpt":
        # wte is counted once, as the tied output head; position embeddings are lookups
        n = sum(p.numel() for name, p in model.named_parameters() if p.dim() >= 2 and name != "wpe.weight")
        attn = 12 * model.config.n_layer * model.config.n_embd * block
    else:
        n = sum(p.numel() for name, p in model.named_parameters() if p.dim() >= 2 and name != "embedding.weight")
        attn = 0
    return (6 * n + attn) * tokens


def bench_model(family: str, args) -> dict:
    d = T.DEFAULTS[family]
    ns = argparse.Namespace(block_size=args.block_size, batch_size=args.batch_size)
    torch.manual_seed(0)
    model, block = T.build_model(family, _Vocab(67), ns)
    batch = args.batch_size or d["batch_size"]
    model.train()
    s = T.TrainSettings(batch_size=batch, block_size=block, lr=1e-3)
    opt = T.make_optimizer(model, s, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 65, (batch, block), generator=g)
    y = torch.randint(0, 65, (batch, block), generator=g)

    def step():
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(3):
        step()
    times = []
    end = time.perf_counter() + args.seconds
    while time.perf_counter() < end or len(times) < 5:
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    dt = statistics.median(times)
    tokens = batch * block
    return {
        "family": family,
        "params": model.num_parameters(),
        "batch": batch,
        "block": block,
        "tokens_per_s": tokens / dt,
        "gflops": step_flops(model, tokens, block) / dt / 1e9,
        "steps": len(times),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("gpt", "lstm", "both"), default="both")
    p.add_argument("--threads", type=int, default=None, help="default: arlm.train.default_threads()")
    p.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--block-size", type=int, default=None)
    args = p.parse_args(argv)
    threads = args.threads or T.default_threads()
    torch.set_num_threads(threads)
    ref = matmul_gflops(args.seconds / 2)
    print(f"threads: {threads}; reference fp32 matmul 1024x1024: {ref:.1f} GFLOP/s")
    for fam in (("gpt", "lstm") if args.model == "both" else (args.model,)):
        r = bench_model(fam, args)
        ref2 = matmul_gflops(args.seconds / 2)  # re-measured beside each model: the machine may be shared
        ref_med = statistics.median([ref, ref2])
        print(
            f"{fam}: {r['params']:,} params, batch {r['batch']} x {r['block']}: "
            f"{r['tokens_per_s']:,.0f} training tokens/s, {r['gflops']:.1f} GFLOP/s = "
            f"{r['gflops'] / ref_med:.0%} of matmul throughput ({ref_med:.1f} GFLOP/s)"
        )


if __name__ == "__main__":
    main()
