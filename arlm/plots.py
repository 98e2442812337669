"""Plots of a training run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

from .io import atomic_path


def read_log(log_path: str | Path) -> list[dict]:
    """The records of a ``train_log.jsonl`` (one JSON object per line); unparsable lines are skipped."""
    out = []
    p = Path(log_path)
    if not p.is_file():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def plot_loss(log_path: str | Path, png_path: str | Path, title: str | None = None) -> Path:
    """Draw train loss (per step, and a moving average) and val loss against the step.

    Both losses are ``mean_nll`` in nats per token. Reads ``log_path``
    (``train_log.jsonl``) and writes ``png_path`` atomically; returns it.
    ``title`` names the run and model (default: "training loss").
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    if train:
        steps, losses = zip(*train)
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (per step)")
        w = max(1, len(losses) // 50)
        if w > 1:
            avg = [sum(losses[max(0, i - w + 1) : i + 1]) / (i + 1 - max(0, i - w + 1)) for i in range(len(losses))]
            ax.plot(steps, avg, color="tab:blue", linewidth=1.5, label=f"train (mean of {w})")
    if val:
        vs, vl = zip(*val)
        ax.plot(vs, vl, "o-", color="tab:orange", markersize=3, label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("mean_nll (nats/token)")
    ax.set_title(title or "training loss", fontsize=10)
    ax.grid(alpha=0.3)
    if train or val:
        ax.legend()
    fig.tight_layout()
    png_path = Path(png_path)
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return png_path
