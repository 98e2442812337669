"""Generation speed of the GPT at batch 1: KV cache vs full recomputation, at a context of 256 tokens.

Usage: python bench/generate.py [--threads N] [--context 256] [--new 64] [--repeats 3]

A GPT with the default width and depth of ``arlm train`` and ``block_size`` =
``--context`` gets a prompt of ``context - new`` tokens and generates ``new``
more (greedy), so the context grows to ``--context``:

* with the KV cache: ``prefill`` once, then ``step`` per token (one position's work);
* without: ``logits`` over the whole context for every new token.

The timed part is the ``new`` tokens in both cases (the prompt's single
forward pass, the same for both, is not counted).

Prints tokens/s of each (median of ``--repeats``) and their ratio; both produce
the same tokens, which is checked.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from arlm import train as T  # noqa: E402
from arlm.models.gpt import GPTConfig, GPTModel  # noqa: E402


@torch.no_grad()
def with_cache(model, prompt, new):
    """Returns (tokens, seconds for the ``new`` tokens; the prompt's one prefill pass not counted)."""
    logits, state = model.prefill(prompt)
    t = time.perf_counter()
    out = []
    for _ in range(new):
        tok = logits.argmax(-1)  # [1]
        out.append(int(tok))
        logits, state = model.step(tok, state)
    return out, time.perf_counter() - t


@torch.no_grad()
def recompute(model, prompt, new):
    """Returns (tokens, seconds): ``logits`` over the whole context for every token."""
    logits = model.logits(prompt[:, -model.block_size :])[:, -1]
    t = time.perf_counter()
    out = []
    ctx = prompt
    for _ in range(new):
        tok = logits.argmax(-1)  # [1]
        out.append(int(tok))
        ctx = torch.cat([ctx, tok[:, None]], dim=1)
        logits = model.logits(ctx[:, -model.block_size :])[:, -1]
    return out, time.perf_counter() - t


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="default: arlm.train.default_threads() and 1")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    d = T.DEFAULTS["gpt"]
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=67, bos_id=65, eos_id=66, n_layer=d["n_layer"], n_head=d["n_head"],
                               n_embd=d["n_embd"], block_size=args.context)).eval()
    prompt = torch.randint(0, 65, (1, args.context - args.new), generator=torch.Generator().manual_seed(0))
    # Batch-1 decoding is dominated by per-operation overhead, where extra threads
    # only add synchronisation: report the default thread count and one thread.
    thread_counts = [args.threads] if args.threads else sorted({T.default_threads(), 1}, reverse=True)
    print(f"GPT {model.num_parameters():,} params, batch 1, context {args.context - args.new} -> {args.context}, "
          f"median of {args.repeats}:")
    for threads in thread_counts:
        torch.set_num_threads(threads)
        results = {}
        for name, fn in (("kv_cache", with_cache), ("recompute", recompute)):
            fn(model, prompt, 4)  # warm-up
            times, toks = [], None
            for _ in range(args.repeats):
                toks, seconds = fn(model, prompt, args.new)
                times.append(seconds)
            results[name] = (args.new / statistics.median(times), toks)
        assert results["kv_cache"][1] == results["recompute"][1], "the cache changed the generated tokens"
        kv, full = results["kv_cache"][0], results["recompute"][0]
        print(f"  threads {threads}: KV cache {kv:8.1f} tokens/s, full recomputation {full:7.1f} tokens/s, "
              f"speed-up {kv / full:5.1f}x")


if __name__ == "__main__":
    main()
