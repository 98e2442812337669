"""Training throughput: tokens/s of a training step, the fraction of this machine's matmul throughput it uses, and
the speed-up of the GPT training loop over a baseline commit, measured in one run.

Usage: python bench/train.py [--model gpt|lstm|both] [--threads N] [--seconds S] [--batch-size B] [--block-size T]
                             [--baseline REF|none] [--trials K] [--steps N] [--data FILE]

**Step figures.** For each model (default: both, with the defaults of ``arlm
train``) it times full training steps (forward, backward, clipping, AdamW
update) on random tokens, and in the same run the throughput of a large fp32
matrix multiply with the same thread count. Step FLOPs are estimated as 6 x
(matmul parameters) x tokens plus the attention scores (12 x n_layer x n_embd x T
per token for the GPT; Kaplan et al. 2020's approximation), so

    matmul fraction = step FLOPs / step time / reference matmul FLOP/s.

**Before/after.** For the default GPT configuration of the *current*
family table (``arlm.models.registry``; the same model and batch for both trees), it runs the
real training loop, ``arlm.training.run_training``, of two code trees in
alternating subprocesses: the working tree, and the ``arlm/`` package of the git
ref ``--baseline`` (default ``3a78434``, the commit that introduced the GPT
and the loop; extracted with ``git archive`` into a temporary directory). Each
trial trains ``--steps`` steps on ``--data`` (file mode, char vocab) with
``--threads`` threads (fixed, the same for both; no evaluation inside the
timed stretch). A step is timed from one ``optimizer.step()`` to the next (a
global optimizer hook), so it covers everything the loop does per step: the
learning-rate update, batch sampling, forward, loss, backward, clipping, the
AdamW update, zeroing the gradients, logging. A trial's figure is its tokens
over the time of its steps after the first ``--skip`` (warm-up); the run prints
every trial, the medians per tree and the ratio current / baseline.

Figures are medians over repeated measurements (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from arlm import training as T  # noqa: E402
from arlm.models.registry import default_of, family, hyperparameters  # noqa: E402
from arlm.training.run import build_model  # noqa: E402

BASELINE = "3a78434"  # "GPT (KV cache) and LSTM families, neural training loop ...": where issue 4 began


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


def defaults(name: str) -> dict:
    """The family's model hyperparameters and training settings when none is given (the family table's)."""
    fam = family(name)
    return {**{f.name: default_of(fam, f) for f in hyperparameters(fam.config_class())}, **fam.defaults}


def bench_model(name: str, args) -> dict:
    d = defaults(name)
    torch.manual_seed(0)
    model, block = build_model(name, _Vocab(67), block_size=args.block_size)
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
        "family": name,
        "params": model.num_parameters(),
        "batch": batch,
        "block": block,
        "tokens_per_s": tokens / dt,
        "gflops": step_flops(model, tokens, block) / dt / 1e9,
        "steps": len(times),
    }


# -- before/after: the real training loop of two code trees ----------------------------------------------

# Runs in a subprocess with PYTHONPATH = the tree under test; uses only API that
# exists in every tree since the baseline (run_training, TrainSettings, TokenData,
# GPTConfig/GPTModel, CharVocab).
WORKER = r'''
import json, sys, tempfile, time
spec = json.loads(sys.argv[1])
import torch
import arlm
assert arlm.__file__.startswith(spec["tree"]), (arlm.__file__, spec["tree"])
try:
    from arlm import training as T
except ImportError:  # a tree from before the training package
    from arlm import train as T
from arlm.models.gpt import GPTConfig, GPTModel
from arlm.vocab import CharVocab

from arlm.corpus import read_text
text = read_text(spec["data"])
vocab = CharVocab.train([text])
data = T.TokenData.from_documents(vocab, [text])
m = spec["model"]
torch.manual_seed(0)
model = GPTModel(GPTConfig(vocab_size=vocab.vocab_size, bos_id=vocab.bos_id, eos_id=vocab.eos_id, bias=True, **m))
s = T.TrainSettings(batch_size=spec["batch_size"], block_size=m["block_size"], lr=spec["lr"],
                    min_lr_ratio=spec["min_lr_ratio"], max_steps=spec["steps"], warmup_steps=10,
                    eval_interval=10**9, eval_iters=1, threads=spec["threads"], device="cpu", documents="file", seed=1)
stamps = []
from torch.optim.optimizer import register_optimizer_step_post_hook
hook = register_optimizer_step_post_hook(lambda opt, a, kw: stamps.append(time.perf_counter()))
with tempfile.TemporaryDirectory() as out:
    summary = T.run_training(model, vocab, data, None, s, out, progress=False)
hook.remove()
k = spec["skip"]
assert len(stamps) == spec["steps"], len(stamps)
tokens = spec["batch_size"] * m["block_size"]
dts = [b - a for a, b in zip(stamps[k:], stamps[k + 1:])]
print(json.dumps({"tokens_per_s": tokens * len(dts) / (stamps[-1] - stamps[k]),
                  "median_step_ms": 1e3 * sorted(dts)[len(dts) // 2],
                  "loop_tokens_per_s": summary["tokens_per_s"], "threads": torch.get_num_threads()}))
'''


def extract_tree(ref: str, dest: Path) -> str:
    """``git archive`` the ``arlm/`` package of ``ref`` into ``dest``; returns the full commit id."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "arlm"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return commit


def run_worker(tree: Path, script: Path, spec: dict) -> dict:
    spec = dict(spec, tree=str(tree.resolve()))
    env = dict(os.environ, PYTHONPATH=str(tree.resolve()))
    p = subprocess.run([sys.executable, str(script), json.dumps(spec)], env=env, cwd=str(script.parent),
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"worker failed in {tree}:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def before_after(args, threads: int, ref_gflops: float) -> None:
    d = defaults("gpt")
    model_cfg = {k: d[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "dropout")}
    if args.block_size:
        model_cfg["block_size"] = args.block_size
    batch = args.batch_size or d["batch_size"]
    spec = {"model": model_cfg, "batch_size": batch, "lr": d["lr"], "min_lr_ratio": d["min_lr_ratio"],
            "steps": args.steps, "skip": args.skip, "threads": threads, "data": str(Path(args.data).resolve())}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base_tree = tmp / "baseline"
        base_tree.mkdir()
        commit = extract_tree(args.baseline, base_tree)
        script = tmp / "worker.py"
        script.write_text(WORKER, encoding="utf-8")
        print(f"\nbefore/after, the training loop (run_training) of the GPT {model_cfg}, batch {batch}, "
              f"{args.steps} steps per trial (first {args.skip} not timed), {threads} threads, {Path(args.data).name}:")
        print(f"  baseline = {args.baseline} ({commit[:10]}), current = working tree {REPO}")
        res: dict[str, list[dict]] = {"baseline": [], "current": []}
        for trial in range(args.trials):
            order = ("baseline", "current") if trial % 2 == 0 else ("current", "baseline")
            for name in order:
                r = run_worker(base_tree if name == "baseline" else REPO, script, spec)
                res[name].append(r)
                print(f"  trial {trial + 1} {name:8s}: {r['tokens_per_s']:9,.0f} tokens/s "
                      f"(median step {r['median_step_ms']:.2f} ms; the loop's own figure {r['loop_tokens_per_s']:,.0f})",
                      flush=True)
    med = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in res.items()}
    torch.manual_seed(0)
    probe, block = build_model("gpt", _Vocab(67), block_size=args.block_size)
    per_token = step_flops(probe, 1, block)  # vocab 67 ~ tinyshakespeare's 65 + <bos>, <eos>
    for k in ("baseline", "current"):
        print(f"  median {k:8s}: {med[k]:9,.0f} tokens/s = {med[k] * per_token / 1e9 / ref_gflops:.0%} of matmul throughput")
    pairs = ", ".join(f"{c['tokens_per_s'] / b['tokens_per_s']:.2f}" for b, c in zip(res["baseline"], res["current"]))
    print(f"  ratio current / baseline: {med['current'] / med['baseline']:.2f}x (per-trial ratios: {pairs})")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("gpt", "lstm", "both"), default="both")
    p.add_argument("--threads", type=int, default=2, help="CPU threads, the same for every measurement (default 2)")
    p.add_argument("--seconds", type=float, default=5.0, help="time per step measurement")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--block-size", type=int, default=None)
    p.add_argument("--baseline", default=BASELINE, help=f"git ref to compare the GPT training loop with (default {BASELINE}); 'none' skips")
    p.add_argument("--trials", type=int, default=5, help="before/after trials per tree, alternating (default 5)")
    p.add_argument("--steps", type=int, default=150, help="training steps per trial (default 150)")
    p.add_argument("--skip", type=int, default=10, help="warm-up steps not timed (default 10)")
    p.add_argument("--data", default=str(REPO / ".." / "shared" / "data" / "tinyshakespeare.txt"),
                   help="training text for before/after (default ../shared/data/tinyshakespeare.txt)")
    args = p.parse_args(argv)
    if args.steps < args.skip + 2:
        p.error("--steps must exceed --skip by at least 2")
    threads = args.threads
    torch.set_num_threads(threads)
    ref = matmul_gflops(args.seconds / 2)
    print(f"threads: {threads}; reference fp32 matmul 1024x1024: {ref:.1f} GFLOP/s")
    ref_meds = [ref]
    for fam in (("gpt", "lstm") if args.model == "both" else (args.model,)):
        r = bench_model(fam, args)
        ref2 = matmul_gflops(args.seconds / 2)  # re-measured beside each model: the machine may be shared
        ref_meds.append(ref2)
        ref_med = statistics.median([ref, ref2])
        print(
            f"{fam}: {r['params']:,} params, batch {r['batch']} x {r['block']}: "
            f"{r['tokens_per_s']:,.0f} training tokens/s, {r['gflops']:.1f} GFLOP/s = "
            f"{r['gflops'] / ref_med:.0%} of matmul throughput ({ref_med:.1f} GFLOP/s)"
        )
    if args.baseline.lower() != "none" and args.model in ("gpt", "both"):
        before_after(args, threads, statistics.median(ref_meds))


if __name__ == "__main__":
    main()
