"""Side by side on one GPU: nanoGPT's shakespeare_char recipe and arlm's, same size, data and wall budget.

Usage: python bench/gpu_check.py --nanogpt DIR [--data FILE] [--cap 150] [--smoke] [--arlm-flags "..."]

``DIR`` is a checkout of nanoGPT (https://github.com/karpathy/nanoGPT; its ``train.py``, ``model.py``,
``configurator.py`` and ``config/train_shakespeare_char.py`` are used where they are, never copied here).
On a machine without network, carry a copy of it with the checkout (e.g. an ignored ``.gpu/nanogpt``).
One command, under 8 minutes on one H200:

1. splits the text as nanoGPT's ``data/shakespeare_char/prepare.py`` does (first 90% train, chars as
   tokens), writing nanoGPT's ``train.bin``/``val.bin``/``meta.pkl`` into a temporary data folder
   (nanoGPT's input format) and arlm's ``train.txt``/``val.txt``;
2. runs nanoGPT's ``train.py config/train_shakespeare_char.py`` (its recipe: AdamW, ``torch.compile``,
   6 layers x 6 heads x 384, block 256, batch 64, dropout 0.2, 5,000 iterations) and times its lines;
3. runs ``arlm train --model gpt`` at the same size and dropout with arlm's defaults (Muon, bf16)
   and ``--compile`` for the wall time nanoGPT spent after its first iteration (capped by ``--cap``
   seconds); compiling is outside both budgets and shown apart;
4. scores both best checkpoints with one evaluator: every token of val, sliding windows of the block
   size with stride half of it, each target scored once (mean nats per char, fp32);
5. prints the GPU's bf16 matmul peak, whether SDPA's flash kernel runs, pinned and pageable copy
   bandwidth, then one row per recipe: training tokens/s (median over logged intervals, evaluation excluded),
   compile seconds (nanoGPT's: from its start to the end of its iteration 0, which holds its compile and
   first evaluation), training seconds, seconds of training to the best checkpoint, each recipe's own val
   estimate there, the full-val mean_nll.

``--smoke`` (default without CUDA): the same steps with tiny models on the CPU, a check of the script.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SIZE = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, dropout=0.2)
SMOKE_SIZE = dict(n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=8, dropout=0.2)


def cuda_features() -> dict:
    """What the GPU offers the loop: bf16 matmul peak (TFLOP/s, 8192^3), SDPA's flash kernel, host copy GB/s."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        a @ a
    torch.cuda.synchronize()
    out = {"bf16_matmul_tflops": round(2 * 8192**3 * 10 / (time.perf_counter() - t) / 1e12)}
    q = torch.randn(4, 6, 256, 64, device="cuda", dtype=torch.bfloat16)
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
        out["flash_sdpa"] = True
    except RuntimeError:
        out["flash_sdpa"] = False
    for pinned in (True, False):
        x = torch.empty(64 << 18, pin_memory=pinned)
        x.to("cuda", non_blocking=pinned)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            x.to("cuda", non_blocking=pinned)
        torch.cuda.synchronize()
        out["pinned_copy_gb_s" if pinned else "pageable_copy_gb_s"] = round(5 * 0.25 / (time.perf_counter() - t), 1)
    return out


def default_data() -> Path:
    for root in (REPO, *REPO.parents[:2]):
        p = root / "shared/data/tinyshakespeare.txt"
        if p.is_file():
            return p
    return REPO / "tests/data/shakespeare.txt"


def prepare(text: str, work: Path, nanogpt: Path | None) -> dict:
    """Split and write both recipes' inputs; a nanoGPT run folder linking to the checkout's code."""
    n = int(len(text) * 0.9)
    (work / "train.txt").write_text(text[:n], encoding="utf-8")
    (work / "val.txt").write_text(text[n:], encoding="utf-8")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    if nanogpt is not None:
        run = work / "nanogpt"
        data = run / "data/shakespeare_char"
        data.mkdir(parents=True)
        # nanoGPT's own prepare.py writes its inputs (train.bin, val.bin and the vocab file it reads) from
        # input.txt, with the same 90/10 split and sorted-character ids; arlm writes no pickle of its own
        (data / "input.txt").write_text(text, encoding="utf-8")
        shutil.copy(nanogpt / "data/shakespeare_char/prepare.py", data / "prepare.py")
        subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, stdout=subprocess.DEVNULL)
        for name in ("train.py", "model.py", "configurator.py", "config"):
            (run / name).symlink_to(nanogpt.resolve() / name)
    return {"train_chars": n, "val_chars": len(text) - n, "stoi": stoi}


def run_nanogpt(work: Path, smoke: bool, device: str, timeout: float) -> dict:
    """nanoGPT's own train.py; every output line timed from the process start."""
    flags = ["--out_dir=" + str(work / "ngpt-out")]
    if smoke:
        s = SMOKE_SIZE
        flags += [f"--device={device}", "--compile=False", "--dtype=float32", "--max_iters=40", "--lr_decay_iters=40",
                  "--eval_iters=2", "--eval_interval=10", "--log_interval=1", "--warmup_iters=5"]
        flags += [f"--{k}={s[k]}" for k in ("n_layer", "n_head", "n_embd", "block_size", "batch_size")]
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "train.py", "config/train_shakespeare_char.py", *flags],
                            cwd=work / "nanogpt", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[tuple[float, str]] = []
    try:
        for line in proc.stdout:
            lines.append((time.perf_counter() - t0, line.rstrip()))
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                break
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    wall = time.perf_counter() - t0
    (work / "nanogpt.log").write_text("\n".join(f"{t:8.2f} {l}" for t, l in lines), encoding="utf-8")
    iters = [(int(m[1]), float(m[2]), t) for t, l in lines if (m := re.match(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms", l))]
    if proc.returncode != 0 or not iters:
        tail = " | ".join(l for _, l in lines[-5:])
        raise SystemExit(f"nanoGPT failed (exit {proc.returncode}); see {work / 'nanogpt.log'}: {tail}")
    evals = [(int(m[1]), float(m[2]), t) for t, l in lines if (m := re.match(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", l))]
    start = iters[0][2]  # the end of iteration 0: its compile and first evaluation are done
    best = min(evals, key=lambda e: e[1]) if evals else None
    tokens_per_iter = (SMOKE_SIZE if smoke else SIZE)["batch_size"] * (SMOKE_SIZE if smoke else SIZE)["block_size"]
    ms = statistics.median(dt for i, dt, _ in iters if i > 0)
    return {"wall_s": round(wall, 1), "compile_s": round(start, 1), "train_s": round(iters[-1][2] - start, 1),
            "iters": iters[-1][0], "tokens_per_s": round(tokens_per_iter / ms * 1e3), "ms_per_step": round(ms, 2),
            "best_own_val": best[1] if best else None, "best_step": best[0] if best else None,
            "to_best_s": round(best[2] - start, 1) if best else None, "checkpoint": work / "ngpt-out/ckpt.pt"}


def run_arlm(work: Path, budget: float, smoke: bool, device: str, extra: list[str]) -> dict:
    """``arlm train`` at nanoGPT's size for ``budget`` seconds of training (compiling not counted)."""
    s = SMOKE_SIZE if smoke else SIZE
    out = work / "arlm-out"
    cmd = [sys.executable, "-m", "arlm", "train", str(work / "train.txt"), "--model", "gpt", "--val-file",
           str(work / "val.txt"), "--out", str(out), "--device", device, "--max-time", f"{budget:.1f}s",
           "--compile" if not smoke else "--no-compile", *extra]
    for k in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "dropout"):
        cmd += ["--" + k.replace("_", "-"), str(s[k])]
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    (work / "arlm.log").write_text(r.stdout + r.stderr, encoding="utf-8")
    if r.returncode != 0:
        raise SystemExit(f"arlm train failed (exit {r.returncode}): {(r.stderr.strip().splitlines() or [''])[-1]}")
    recs = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in recs if r.get("tokens_per_s")]
    vals = [(r["val_loss"], r["step"], r["elapsed_s"]) for r in recs if "val_loss" in r]
    best = min(vals)
    compile_s = max([r.get("compile_s", 0.0) for r in recs] or [0.0])
    tok = statistics.median(speeds)
    return {"wall_s": round(wall, 1), "compile_s": round(compile_s, 1), "train_s": round(vals[-1][2], 1),
            "iters": max(r["step"] for r in recs), "tokens_per_s": round(tok),
            "ms_per_step": round(s["batch_size"] * s["block_size"] / tok * 1e3, 2), "best_own_val": best[0],
            "best_step": best[1], "to_best_s": round(best[2], 1), "checkpoint": out, "command": " ".join(cmd)}


@torch.no_grad()
def sliding_window_nll(logits_of, ids: torch.Tensor, block: int) -> tuple[float, int]:
    """Mean nats per target over all of ``ids`` (LongTensor[N]): windows of ``block`` tokens, stride
    ``block // 2``, each target after the first token scored once, by the window that sees most before it."""
    stride = max(1, block // 2)
    nll, n, start, scored_to = 0.0, 0, 0, 1  # targets before scored_to are done
    while True:
        end = min(start + block + 1, len(ids))
        x, y = ids[start:end - 1][None], ids[start + 1:end]
        lp = torch.log_softmax(logits_of(x)[0].float(), -1).gather(-1, y[:, None])[:, 0]  # [T]
        new = lp[scored_to - (start + 1):]
        nll -= new.double().sum().item()
        n += new.numel()
        scored_to = end
        if end == len(ids):
            return nll / n, n
        start += stride


def score_nanogpt(nanogpt: Path, ckpt: Path, val_text: str, stoi: dict, device: str) -> tuple[float, int]:
    sys.path.insert(0, str(nanogpt.resolve()))
    model_mod = importlib.import_module("model")
    ck = torch.load(ckpt, map_location=device, weights_only=True)  # tensors, numbers and strings only
    m = model_mod.GPT(model_mod.GPTConfig(**ck["model_args"]))
    m.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ck["model"].items()})
    m.to(device).eval()
    ids = torch.tensor([stoi[c] for c in val_text], device=device)
    return sliding_window_nll(lambda x: m(x, x)[0], ids, m.config.block_size)  # with targets: logits everywhere


def score_arlm(model_dir: Path, val_text: str, device: str) -> tuple[float, int]:
    sys.path.insert(0, str(REPO))
    from arlm import checkpoint

    model, vocab, _ = checkpoint.load(model_dir)
    model.to(device).eval()
    ids = torch.tensor(vocab.encode(val_text), device=device)
    return sliding_window_nll(model.logits, ids, model.config.block_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nanogpt", type=Path, required=True, help="a nanoGPT checkout (train.py, model.py, config/)")
    ap.add_argument("--data", type=Path, default=None, help="text (default: tinyshakespeare under shared/data)")
    ap.add_argument("--cap", type=float, default=150.0, help="most seconds of arlm training (default 150)")
    ap.add_argument("--smoke", action="store_true", help="tiny models on the CPU (the default without CUDA)")
    ap.add_argument("--arlm-flags", default="", help="more `arlm train` flags, as one string")
    ap.add_argument("--keep", type=Path, default=None, help="keep the runs in this folder (default: a temporary one)")
    a = ap.parse_args()
    if not (a.nanogpt / "train.py").is_file() or not (a.nanogpt / "config/train_shakespeare_char.py").is_file():
        raise SystemExit(f"--nanogpt {a.nanogpt}: not a nanoGPT checkout (no train.py or config/train_shakespeare_char.py)")
    smoke = a.smoke or not torch.cuda.is_available()
    device = "cpu" if smoke else "cuda"
    data = a.data or default_data()
    text = data.read_text(encoding="utf-8")
    t_start = time.perf_counter()
    head = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke)",
            "data": str(data)}
    if device == "cuda":
        head.update(cuda_features())
    print(json.dumps(head), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = a.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        prep = prepare(text, work, a.nanogpt)
        ng = run_nanogpt(work, smoke, device, timeout=60 if smoke else 270)
        print(f"nanoGPT: {ng['iters']} iterations, wall {ng['wall_s']} s", flush=True)
        budget = min(ng["train_s"], 15.0 if smoke else a.cap)
        ar = run_arlm(work, budget, smoke, device, a.arlm_flags.split())
        print(f"arlm: {ar['iters']} steps, wall {ar['wall_s']} s", flush=True)
        val_text = (work / "val.txt").read_text(encoding="utf-8")
        ng["val_mean_nll"], ng["val_targets"] = score_nanogpt(a.nanogpt, ng["checkpoint"], val_text, prep["stoi"], device)
        ar["val_mean_nll"], ar["val_targets"] = score_arlm(ar["checkpoint"], val_text, device)
    rows = ({"nanoGPT (AdamW, fp32, no compile)": ng, "arlm (Muon, bf16 where native)": ar} if smoke else
            {"nanoGPT (AdamW, bf16, torch.compile)": ng, "arlm (Muon, bf16, --compile)": ar})
    cols = ["tokens_per_s", "ms_per_step", "compile_s", "train_s", "iters", "best_step", "to_best_s", "best_own_val",
            "val_mean_nll"]
    print(f"same size ({'smoke' if smoke else '6x6x384, block 256, batch 64, dropout 0.2'}), arlm budget {budget:.1f} s "
          f"of training; val_mean_nll: all {ng['val_targets']} val chars, sliding window, nats/char")
    print("| recipe | " + " | ".join(cols) + " |")
    print("|" + " --- |" * (len(cols) + 1))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[c]:.4f}" if c in ("val_mean_nll", "best_own_val") and r[c] is not None
                                          else str(r[c]) for c in cols) + " |")
    print(json.dumps({**head, "total_s": round(time.perf_counter() - t_start, 1), "arlm_budget_s": budget,
                      "rows": {k: {c: (str(v) if isinstance(v, Path) else v) for c, v in r.items()}
                               for k, r in rows.items()}}))


if __name__ == "__main__":
    main()
