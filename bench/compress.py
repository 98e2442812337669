"""arlm models as compressors, next to gzip, bzip2, xz, zstd and zpaq.

For a text (default: tinyshakespeare val, nanoGPT's split of ../shared/data)
every row gives bits per character of

* ``val``: the text compressed alone;
* ``val | train``: the cost of the text after the training text, size(train +
  val) − size(train): what an adaptive compressor pays for val once it has read
  train. An arlm model trained on train.txt is conditioned on train by its
  training, so its figure goes in this column;

and compress / decompress speed (KB of text per second, on val) and a round-trip
check (decompressed bytes == original) for every row. zpaq runs when the
``zpaq`` command is installed (Debian: ``apt-get install zpaq``).

    .venv/bin/python bench/compress.py --models runs/ng7,runs/mixer
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import lzma
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arlm.corpus import read_text, train_val_split  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def _codecs():
    out = {
        "gzip -9": (lambda b: gzip.compress(b, 9, mtime=0), gzip.decompress),
        "bzip2 -9": (lambda b: bz2.compress(b, 9), bz2.decompress),
        "xz -9e": (lambda b: lzma.compress(b, preset=9 | lzma.PRESET_EXTREME), lzma.decompress),
    }
    try:
        import zstandard

        out["zstd -19"] = (lambda b: zstandard.ZstdCompressor(level=19).compress(b),
                           lambda b: zstandard.ZstdDecompressor().decompress(b))
    except ImportError:
        print("zstandard not installed: no zstd row (pip install zstandard)", file=sys.stderr)
    if shutil.which("zpaq"):
        out["zpaq -m5"] = (_zpaq_compress, _zpaq_decompress)
    else:
        print("zpaq not installed: no zpaq row (apt-get install zpaq)", file=sys.stderr)
    return out


def _zpaq_compress(data: bytes) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "f").write_bytes(data)
        subprocess.run(["zpaq", "a", "a.zpaq", "f", "-m5"], cwd=d, check=True, capture_output=True)
        return (Path(d) / "a.zpaq").read_bytes()


def _zpaq_decompress(blob: bytes) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "a.zpaq").write_bytes(blob)
        subprocess.run(["zpaq", "x", "a.zpaq", "-to", "out"], cwd=d, check=True, capture_output=True)
        return (Path(d) / "out" / "f").read_bytes()


def _timed(fn, arg):
    t0 = time.perf_counter()
    out = fn(arg)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description="arlm models as compressors next to gzip, bzip2, xz, zstd, zpaq")
    ap.add_argument("--data", default=str(DATA), help="text split into train and val (nanoGPT's split)")
    ap.add_argument("--val-fraction", type=float, default=0.1, help="val share of --data")
    ap.add_argument("--models", default="", help="comma list of arlm model directories trained on the train part")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N characters of val (quick runs)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    text = read_text(args.data)
    (train,), (val,) = train_val_split(text, "file", args.val_fraction)
    if args.limit:
        val = val[: args.limit]
    tb, vb = train.encode("utf-8"), val.encode("utf-8")
    n_chars = len(val)
    kb = len(vb) / 1024
    print(f"{args.data}: train {len(train):,} chars, val {n_chars:,} chars; machine: "
          f"{torch.get_num_threads()} torch thread, timings noisy when the machine is busy")
    header = f"| {'compressor':34s} | val bits/char | val given train bits/char | compress KB/s | decompress KB/s | round trip |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, (comp, decomp) in _codecs().items():
        z, tc = _timed(comp, vb)
        back, td = _timed(decomp, z)
        zt = comp(tb)
        ztv = comp(tb + vb)
        ok = back == vb and decomp(ztv) == tb + vb
        alone = 8 * len(z) / n_chars
        given = 8 * (len(ztv) - len(zt)) / n_chars
        print(f"| {name:34s} | {alone:13.3f} | {given:25.3f} | {kb / tc:12.1f} | {kb / td:15.1f} | "
              f"{'ok' if ok else 'FAILED'} |", flush=True)
    from arlm.coding import compress_bytes, decompress_bytes
    from arlm.lm import LM

    for d in [m for m in args.models.split(",") if m.strip()]:
        lm = LM.load(d)
        t0 = time.perf_counter()
        blob, stats = compress_bytes(lm, d, vb, "file")
        tc = time.perf_counter() - t0
        back, dstats = decompress_bytes(LM.load(d), d, blob)
        td = dstats["seconds"]
        ok = back == vb
        ideal = stats["nll_bits"] / n_chars
        label = f"arlm {lm.model.family} {Path(d).name}"
        print(f"| {label:34s} | {'-':>13s} | {8 * len(blob) / n_chars:25.3f} | {kb / tc:12.2f} | {kb / td:15.2f} | "
              f"{'ok' if ok else 'FAILED'} |  (model nll {ideal:.4f} bits/char; {len(blob):,} bytes)", flush=True)
    print(f"(bar: ≤ 1.74 bits/char = {math.floor(1.74 * n_chars / 8):,} bytes for {n_chars:,} chars)")


if __name__ == "__main__":
    main()
