"""One prepared run for a lent GPU (under 5 minutes): is arlm's CUDA path fast and correct?

Usage: python bench/gpu_inference_check.py [--steps 300] [--data ../shared/data/tinyshakespeare.txt] [--cpu-steps 20]

On CUDA it prints:

* the GPU, torch version, and which features the training loop uses there:
  bf16 autocast (``arlm.training.run_training``), fused AdamW
  (``arlm.training.make_optimizer``), SDPA flash attention (checked by running the
  model's attention with only the flash kernel allowed), pinned-memory
  host-to-device copies (bandwidth pinned vs pageable);
* the measured bf16 matmul peak (TFLOP/s of an 8192^3 matmul);
* a GPT (6 layers, 384 wide, block 256, batch 64: nanoGPT's shakespeare-char
  size) trained for ``--steps`` steps on the char vocab: tokens/s, model
  TFLOP/s (6 N + 12 L T D FLOPs per token, PaLM appendix B) as a fraction of
  the measured matmul peak, and the val loss at the end;
* DDP with NCCL: only counted here (``torch.cuda.device_count()``): DDP itself
  is item 2 of issue 12, not yet in arlm;
* inference on the GPU through the commands themselves: ``arlm eval`` and
  ``arlm score`` of the trained model with ``--device cuda`` against
  ``--device cpu`` (the differences in bits/char and nats, float tolerance),
  and ``arlm compress --device cuda`` then ``arlm decompress`` (which must use
  the device the header records, and refuse ``--device cpu`` with one line).

Without CUDA it runs the same training loop on the CPU with a tiny GPT for
``--cpu-steps`` steps and the same command checks with ``--device auto``
(the CPU there) against ``--device cpu`` (a smoke test of the script), and exits 0.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from arlm import training as T  # noqa: E402
from arlm.corpus import read_text, train_val_split  # noqa: E402
from arlm.models.gpt import GPTConfig, GPTModel  # noqa: E402
from arlm.vocab import CharVocab  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def matmul_peak_tflops(device, n: int = 8192, reps: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def flash_attention_works(device) -> bool:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(4, 6, 256, 64, device=device, dtype=torch.bfloat16)
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=True)
        return True
    except RuntimeError:
        return False


def copy_bandwidth_gbs(device, pinned: bool, mb: int = 256) -> float:
    x = torch.empty(mb << 18, dtype=torch.float32, pin_memory=pinned)
    x.to(device, non_blocking=pinned)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(5):
        x.to(device, non_blocking=pinned)
    torch.cuda.synchronize()
    return 5 * mb / 1024 / (time.perf_counter() - t)


def arlm(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arlm", *map(str, args)], capture_output=True, text=True, cwd=REPO)


def arlm_json(*args) -> dict:
    r = arlm(*args, "--json")
    if r.returncode != 0:
        raise SystemExit(f"arlm {' '.join(map(str, args))} failed: {r.stderr.strip()}")
    return json.loads(r.stdout)


def commands_check(model_dir: Path, val_text: str, device: str, work: Path) -> dict:
    """``arlm eval``/``score`` on ``device`` against the CPU, and a compress/decompress round trip on ``device``."""
    val = work / "val.txt"
    val.write_text(val_text[:20_000], encoding="utf-8")
    text = val_text[:200]
    out: dict = {"device": device}
    t = time.perf_counter()
    e_dev = arlm_json("eval", model_dir, val, "--device", device)
    out["eval_s"] = round(time.perf_counter() - t, 2)
    e_cpu = arlm_json("eval", model_dir, val, "--device", "cpu")
    out["eval_bits_per_char"] = e_dev["bits_per_char"]
    out["eval_bits_per_char_diff_vs_cpu"] = abs(e_dev["bits_per_char"] - e_cpu["bits_per_char"])
    s_dev = arlm_json("score", model_dir, text, "--device", device, "--per-token")
    s_cpu = arlm_json("score", model_dir, text, "--device", "cpu", "--per-token")
    out["score_log_prob_diff_vs_cpu"] = abs(s_dev["log_prob"] - s_cpu["log_prob"])
    out["score_per_token_max_diff_vs_cpu"] = max(abs(a["logprob"] - b["logprob"]) for a, b in
                                                 zip(s_dev["token_logprobs"], s_cpu["token_logprobs"]))
    z, back = work / "val.arlz", work / "val.back"
    arlm_json("compress", model_dir, val, z, "--device", device, "--no-progress")
    arlm_json("decompress", model_dir, z, back, "--no-progress")  # the header's device
    out["compress_round_trip"] = back.read_bytes() == val.read_bytes()
    if device.startswith("cuda"):
        r = arlm("decompress", model_dir, z, work / "x", "--device", "cpu", "--no-progress")
        out["decompress_on_cpu_refused"] = r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    return out


def train_run(docs_train, docs_val, vocab, cfg: dict, steps: int, device: str, out: Path | None = None) -> dict:
    torch.manual_seed(1337)
    model = GPTModel(GPTConfig(vocab_size=vocab.vocab_size, bos_id=vocab.bos_id, eos_id=vocab.eos_id, bias=False,
                               dropout=0.0, **{k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "block_size")}))
    s = T.TrainSettings(batch_size=cfg["batch_size"], block_size=cfg["block_size"], lr=cfg["lr"], max_steps=steps,
                        warmup_steps=max(1, steps // 10), eval_interval=steps, eval_iters=cfg["eval_iters"],
                        device=device, threads=None if device == "cuda" else 1)
    train = T.TokenData.from_documents(vocab, docs_train)
    val = T.TokenData.from_documents(vocab, docs_val)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        summary = T.run_training(model, vocab, train, val, s, out or tmp, progress=False)
        wall = time.perf_counter() - t
    n_params = sum(p.numel() for p in model.parameters()) - model.config.vocab_size * model.config.n_embd
    flops_per_token = 6 * n_params + 12 * cfg["n_layer"] * cfg["block_size"] * cfg["n_embd"]
    return {"steps": summary["step"], "wall_s": round(wall, 1), "tokens_per_s": round(summary["tokens_per_s"]),
            "val_loss": summary["best_val_loss"], "flops_per_token": flops_per_token,
            "model_tflops": summary["tokens_per_s"] * flops_per_token / 1e12}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300, help="GPT steps on the GPU")
    ap.add_argument("--cpu-steps", type=int, default=20, help="steps of the tiny CPU fallback")
    ap.add_argument("--data", default=None, help="text (default ../shared/data/tinyshakespeare.txt, else the test fixture)")
    a = ap.parse_args()
    data = Path(a.data) if a.data else REPO.parent / "shared/data/tinyshakespeare.txt"
    if not data.is_file():
        data = REPO / "tests/data/shakespeare.txt"
    train_docs, val_docs = train_val_split(read_text(data), "file", 0.1, 1337)
    vocab = CharVocab.train(train_docs)
    result: dict = {"torch": torch.__version__, "data": str(data)}
    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    atexit.register(shutil.rmtree, work, True)
    if not torch.cuda.is_available():
        cfg = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=8, lr=3e-3, eval_iters=2)
        result["device"] = "cpu (no CUDA: fallback smoke test)"
        result["train"] = train_run(train_docs, val_docs, vocab, cfg, a.cpu_steps, "cpu", work / "model")
        result["commands"] = commands_check(work / "model", val_docs[0], "auto", work)
        print(f"no CUDA device: CPU fallback, tiny GPT {a.cpu_steps} steps: {result['train']['tokens_per_s']} tokens/s, "
              f"val loss {result['train']['val_loss']:.4f}; commands on --device auto (the CPU) {result['commands']}")
        print(json.dumps(result))
        return
    dev = torch.device("cuda")
    result["device"] = torch.cuda.get_device_name(0)
    result["n_gpus"] = torch.cuda.device_count()
    t0 = time.perf_counter()
    peak = matmul_peak_tflops(dev)
    result["features"] = {
        "bf16_autocast_in_loop": True,  # arlm.training.run_training: torch.autocast("cuda", torch.bfloat16)
        "fused_adamw": bool(T.make_optimizer(torch.nn.Linear(4, 4).to(dev), T.TrainSettings(1, 1, 1e-3), dev)
                            .defaults.get("fused")),
        "flash_sdpa": flash_attention_works(dev),
        "pinned_copy_gb_s": round(copy_bandwidth_gbs(dev, True), 1),
        "pageable_copy_gb_s": round(copy_bandwidth_gbs(dev, False), 1),
    }
    cfg = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=64, lr=1e-3, eval_iters=20)
    r = train_run(train_docs, val_docs, vocab, cfg, a.steps, "cuda", work / "model")
    r["matmul_peak_tflops"] = round(peak, 1)
    r["peak_fraction"] = round(r["model_tflops"] / peak, 3)
    result["train"] = r
    result["ddp_nccl"] = (f"{result['n_gpus']} GPUs; DDP (issue 12 item 2) is not in arlm yet: not started"
                          if result["n_gpus"] > 1 else "one GPU: nothing to check")
    result["commands"] = commands_check(work / "model", val_docs[0], "cuda", work)
    result["total_s"] = round(time.perf_counter() - t0, 1)
    print(f"{result['device']}: bf16 matmul peak {peak:.0f} TFLOP/s; GPT {r['steps']} steps {r['tokens_per_s']:,} tokens/s, "
          f"{r['model_tflops']:.1f} TFLOP/s = {r['peak_fraction']:.1%} of peak; val loss {r['val_loss']:.4f}; "
          f"features {result['features']}; commands {result['commands']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
