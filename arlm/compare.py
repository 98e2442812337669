"""``arlm compare``: train several models on one split with one budget, score all
on the same val text, optionally mix them, and tabulate.

The split: val is ``--val-file`` or the usual ``--val-fraction`` of DATA; a dev
part (the last ``dev_fraction`` of the training characters in ``file`` mode,
of the shuffled training documents in ``lines`` mode) is held out of every
model's training. Neural models select their best checkpoint on dev, and a
mixture fits its weights on dev; val is used for nothing but the table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .errors import ArlmError
from .io import atomic_write_text
from .models.registry import FAMILIES
from .pipeline import Split, load_split, train

def parse_model_specs(text: str) -> list[tuple[str, dict]]:
    """``"ngram:7,lstm,gpt"`` -> ``[("ngram", {"order": 7}), ("lstm", {}), ("gpt", {})]``.

    Raises:
        ArlmError: an unknown family or a malformed option.
    """
    specs = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        family, _, opt = part.partition(":")
        fam = FAMILIES.get(family)
        if fam is None or "compare" not in fam.commands:
            raise ArlmError(f"unknown model {family!r} in --models: choose from ngram:ORDER, cache:ORDER, lstm, gpt")
        if fam.trains in ("count", "none"):
            try:
                specs.append((family, {"order": int(opt) if opt else (5 if family == "ngram" else 7)}))
            except ValueError:
                raise ArlmError(f"bad model spec {part!r}: use {family}:ORDER, e.g. {family}:7") from None
        else:
            if opt:
                raise ArlmError(f"bad model spec {part!r}: {family} takes no option here (use arlm train for more)")
            specs.append((family, {}))
    if not specs:
        raise ArlmError("--models names no model")
    return specs


def carve_dev(split: Split, dev_fraction: float) -> tuple[list[str], list[str], str]:
    """(train documents without dev, dev documents, dev text)."""
    if split.documents == "file":
        text = split.train_docs[0]
        n = int((1.0 - dev_fraction) * len(text))
        return [text[:n]], [text[n:]], text[n:]
    n_dev = max(1, round(dev_fraction * len(split.train_docs)))
    if n_dev >= len(split.train_docs):
        raise ArlmError("too few training documents to hold out a dev part")
    dev = split.train_docs[-n_dev:]
    return split.train_docs[:-n_dev], dev, "".join(d + "\n" for d in dev)


def run_compare(data, specs, vocabs, max_time: float, out: Path, documents="file", val_file=None,
                val_fraction=0.1, seed=1337, mix=False, vocab_size=None, dev_fraction=0.05,
                log=print, report_dir: Path | None = None) -> dict:
    """Train, evaluate and (optionally) mix; write compare.json, compare.md, compare.png into ``out``.

    Returns the JSON-ready result: ``{"setup": {...}, "rows": [...]}``; each row has
    ``model``, ``vocab``, ``parameters``, ``train_seconds``, ``mean_nll`` (nats per
    token of that vocab), ``bits_per_char``, ``bits_per_byte``, ``model_dir``
    (under ``report_dir``, default ``out``: the CLI builds in a temporary
    directory that replaces ``report_dir`` at the end).
    """
    from . import checkpoint
    from .pipeline import build_mixture

    out = checkpoint.prepare_dir(out)
    report_dir = Path(report_dir) if report_dir is not None else out
    split = load_split(data, documents, val_file, val_fraction, seed)
    if not split.val_docs:
        raise ArlmError("compare needs val text: give --val-file or a --val-fraction above 0")
    train_docs, dev_docs, dev_text = carve_dev(split, dev_fraction)
    setup = {
        "data": split.source, "val_file": str(val_file) if val_file else None, "val_fraction": val_fraction,
        "documents": documents, "seed": seed, "max_time_s": max_time, "dev_fraction": dev_fraction,
        "train_chars": sum(map(len, train_docs)), "dev_chars": len(dev_text), "val_chars": len(split.val_text),
        "vocabs": vocabs, "models": [f"{f}:{o['order']}" if "order" in o else f for f, o in specs], "mix": mix,
    }
    log(f"split: {setup['train_chars']:,} train / {setup['dev_chars']:,} dev / {setup['val_chars']:,} val characters "
        f"({documents} mode, seed {seed}); budget {max_time:.0f}s per neural model")
    rows = []
    sub = Split(train_docs, dev_docs, dev_text, documents, split.source)
    for vocab_kind in vocabs:
        lms = []
        for family, opt in specs:
            name = f"{family}:{opt['order']}" if "order" in opt else family
            mdir = out / f"{name.replace(':', '')}-{vocab_kind}"
            t0 = time.time()
            opts = {"order": opt["order"], "refit": False} if family == "ngram" else dict(opt)
            if FAMILIES[family].trains == "gradient":
                opts["max_time"] = str(max_time)
            lm = train(sub, family, vocab_kind, mdir, val_fraction=dev_fraction, seed=seed, vocab_size=vocab_size,
                       **opts)
            seconds = time.time() - t0
            lm.model.source_dir = mdir.resolve()  # the mixture refers to this directory instead of copying it
            rows.append(_row(name, vocab_kind, lm, seconds, split, report_dir / mdir.name))
            lms.append(lm)
            log(_line(rows[-1]))
        if mix and len(lms) >= 2:
            t0 = time.time()
            bucketed = any(lm.model.family in ("ngram", "cache") for lm in lms)
            mlm, history = build_mixture(lms, dev_text, documents, bucketed=bucketed)
            mdir = out / f"mixture-{vocab_kind}"
            mlm.save(mdir, {"mixture_fit_nll_history": history})
            row = _row("mixture", vocab_kind, mlm, time.time() - t0 + sum(r["train_seconds"] for r in rows[-len(lms):]),
                       split, report_dir / mdir.name)
            row["weights"] = mlm.model.weights.mean(0).tolist()
            rows.append(row)
            log(_line(row))
    result = {"setup": setup, "rows": rows}
    atomic_write_text(out / "compare.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "compare.md", markdown_table(rows, setup))
    plot_compare(rows, out / "compare.png")
    return result


def _row(name, vocab_kind, lm, seconds, split, mdir) -> dict:
    m = lm.evaluate(split.val_text, split.documents)
    return {"model": name, "vocab": vocab_kind, "parameters": lm.model.num_parameters(),
            "train_seconds": round(seconds, 2), "mean_nll": m["mean_nll"], "bits_per_char": m["bits_per_char"],
            "bits_per_byte": m["bits_per_byte"], "n_tokens": m["n_tokens"], "model_dir": str(mdir)}


def _line(r: dict) -> str:
    return (f"{r['model']:>10} {r['vocab']:>5}  {r['parameters']:>10,}  {r['train_seconds']:>8.1f}s  "
            f"mean_nll {r['mean_nll']:.4f}  bits/char {r['bits_per_char']:.4f}  bits/byte {r['bits_per_byte']:.4f}")


HEADER = ["model", "vocab", "parameters", "train s", "val mean_nll (nats/token)", "val bits/char", "val bits/byte"]


def _cells(r: dict) -> list[str]:
    return [r["model"], r["vocab"], f"{r['parameters']:,}", f"{r['train_seconds']:.1f}", f"{r['mean_nll']:.4f}",
            f"{r['bits_per_char']:.4f}", f"{r['bits_per_byte']:.4f}"]


def terminal_table(rows: list[dict]) -> str:
    cells = [HEADER] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[dict], setup: dict) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] * len(HEADER)) + "|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    lines.append("")
    lines.append(f"Split and budget: {json.dumps(setup)}")
    return "\n".join(lines) + "\n"


def plot_compare(rows: list[dict], path: Path) -> None:
    """Val bits per char against training time, one point per model, the mixture marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_path

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in rows:
        mixed = r["model"] == "mixture"
        ax.scatter(max(r["train_seconds"], 0.01), r["bits_per_char"], marker="*" if mixed else "o",
                   s=160 if mixed else 50, color="crimson" if mixed else "tab:blue", zorder=3)
        ax.annotate(f"{r['model']} ({r['vocab']})", (max(r["train_seconds"], 0.01), r["bits_per_char"]),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("training time (s, log scale); a mixture's: the sum of its components' + its fit")
    ax.set_ylabel("val bits per character")
    ax.set_title("arlm compare: val bits/char vs training time")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)

