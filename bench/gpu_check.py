"""One prepared run for a lent GPU (under 5 minutes): is arlm's CUDA path fast and correct?

Usage: python bench/gpu_check.py [--steps 300] [--data ../shared/data/tinyshakespeare.txt] [--cpu-steps 20]

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
  is item 2 of issue 12, not yet in arlm.

Without CUDA it runs the same training loop on the CPU with a tiny GPT for
``--cpu-steps`` steps (a smoke test of the script) and exits 0.
"""

from __future__ import annotations

import argparse
import json
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


def train_run(docs_train, docs_val, vocab, cfg: dict, steps: int, device: str) -> dict:
    torch.manual_seed(1337)
    model = GPTModel(GPTConfig(vocab_size=vocab.vocab_size, bos_id=vocab.bos_id, eos_id=vocab.eos_id, bias=False,
                               dropout=0.0, **{k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "block_size")}))
    s = T.TrainSettings(batch_size=cfg["batch_size"], block_size=cfg["block_size"], lr=cfg["lr"], max_steps=steps,
                        warmup_steps=max(1, steps // 10), eval_interval=steps, eval_iters=cfg["eval_iters"],
                        device=device, threads=None if device == "cuda" else 1)
    train = T.TokenData.from_documents(vocab, docs_train)
    val = T.TokenData.from_documents(vocab, docs_val)
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        summary = T.run_training(model, vocab, train, val, s, out, progress=False)
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
    if not torch.cuda.is_available():
        cfg = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=8, lr=3e-3, eval_iters=2)
        result["device"] = "cpu (no CUDA: fallback smoke test)"
        result["train"] = train_run(train_docs, val_docs, vocab, cfg, a.cpu_steps, "cpu")
        print(f"no CUDA device: CPU fallback, tiny GPT {a.cpu_steps} steps: {result['train']['tokens_per_s']} tokens/s, "
              f"val loss {result['train']['val_loss']:.4f}")
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
    r = train_run(train_docs, val_docs, vocab, cfg, a.steps, "cuda")
    r["matmul_peak_tflops"] = round(peak, 1)
    r["peak_fraction"] = round(r["model_tflops"] / peak, 3)
    result["train"] = r
    result["ddp_nccl"] = (f"{result['n_gpus']} GPUs; DDP (issue 12 item 2) is not in arlm yet: not started"
                          if result["n_gpus"] > 1 else "one GPU: nothing to check")
    result["total_s"] = round(time.perf_counter() - t0, 1)
    print(f"{result['device']}: bf16 matmul peak {peak:.0f} TFLOP/s; GPT {r['steps']} steps {r['tokens_per_s']:,} tokens/s, "
          f"{r['model_tflops']:.1f} TFLOP/s = {r['peak_fraction']:.1%} of peak; val loss {r['val_loss']:.4f}; "
          f"features {result['features']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
