"""The surprisal heat map of a text, offline: ``arlm heatmap DIR FILE --out out.html|out.png``.

Each token of the text is coloured by its probability under the model, with
the same scale as the playground (``GET /``): red for improbable, through
yellow, to green for probable, on a log scale from p = 1e-4 to 1. The caption
gives the total in bits per character of log p(text) without ``<eos>`` (the
prefix probability of DESIGN.md §3): ``bits_per_char = -log p(text) / (ln 2 ·
n_chars)``, the figure the playground's Score mode shows.
"""

from __future__ import annotations

import colorsys
import html
import math
from pathlib import Path

from ..errors import ArlmError
from ..io import atomic_path, atomic_write_text
from ..units import LN2



def token_surprisals(lm, text: str) -> tuple[list[str], list[float]]:
    """The tokens of ``text`` and their log-probabilities (nats), ``<eos>`` excluded. Raises ArlmError."""
    if not text:
        raise ArlmError("nothing to score: the text is empty")
    pairs = lm.token_logprobs(text, eos=False)
    ids = lm.vocab.encode(text)
    tokens = [lm.vocab.decode([t]) for t in ids]
    return tokens, [lp for _, lp in pairs]


def colour(p: float) -> tuple[float, float, float]:
    """RGB in [0, 1] for a probability: the playground's scale (hue 0 -> 120 over log10 p in [-4, 0])."""
    x = min(1.0, max(0.0, math.log10(max(p, 1e-4)) / 4 + 1))
    hue = 120 * x / 360
    sat = 0.60 if x > 0.5 else 0.85
    light = (80 + 2 * x) / 100
    return colorsys.hls_to_rgb(hue, light, sat)


def _hex(rgb) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb)


def write_heatmap(lm, text: str, out: str | Path) -> dict:
    """Write the heat map of ``text`` to ``out`` (``.html`` or ``.png``), atomically.

    Returns ``{"bits_per_char", "n_chars", "n_tokens", "nll"}`` (nll in nats).
    Raises ArlmError for an unknown extension, an empty text or text outside the vocab.
    """
    out = Path(out)
    kind = out.suffix.lower()
    if kind not in (".html", ".png"):
        raise ArlmError(f"--out {out}: the heat map is written as .html or .png, not {kind or 'no extension'!r}")
    tokens, lps = token_surprisals(lm, text)
    nll = -sum(lps)
    bpc = nll / (LN2 * len(text))
    caption = (f"{bpc:.4f} bits per char ({nll / LN2:.1f} bits over {len(text)} chars, {len(tokens)} tokens; "
               f"log p(text) without <eos>) · model {lm.info.get('family', lm.model.family)}")
    try:
        if kind == ".html":
            atomic_write_text(out, _html(tokens, lps, caption))
        else:
            _png(tokens, lps, caption, out)
    except OSError as e:
        raise ArlmError(f"cannot write {out}: {e.strerror or e}") from None
    return {"bits_per_char": bpc, "n_chars": len(text), "n_tokens": len(tokens), "nll": nll}


def _html(tokens: list[str], lps: list[float], caption: str) -> str:
    spans = []
    for tok, lp in zip(tokens, lps):
        p = math.exp(lp)
        title = f"p = {p:.4f} · {-lp / LN2:.2f} bits"
        shown = html.escape(tok) if tok != "\n" else "<span class=nl>↵</span>\n"
        spans.append(f'<span style="background:{_hex(colour(p))}" title="{html.escape(title)}">{shown}</span>')
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>arlm surprisal heat map</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;margin:1.2rem;color:#1d2330}}
pre{{white-space:pre-wrap;word-break:break-word;font:15px/1.75 ui-monospace,Menlo,Consolas,monospace}}
.nl{{color:#9aa3b5}} figcaption{{color:#5b6475;margin-bottom:.6rem}}</style></head>
<body><figure><figcaption>{html.escape(caption)}</figcaption><pre>{''.join(spans)}</pre></figure></body></html>
"""


def _png(tokens: list[str], lps: list[float], caption: str, out: Path, width_chars: int = 100) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # lay the tokens out on a character grid (monospace), wrapping at newlines and at width_chars
    cells = []  # (row, col, text, p)
    row = col = 0
    for tok, lp in zip(tokens, lps):
        shown = tok.replace("\n", "↵")
        if col + len(shown) > width_chars and col > 0:
            row, col = row + 1, 0
        cells.append((row, col, shown, math.exp(lp)))
        col += len(shown)
        if tok.endswith("\n"):
            row, col = row + 1, 0
    n_rows = row + 1
    cw, rh = 0.075, 0.26  # inches per char, per row
    fig = plt.figure(figsize=(max(4.0, width_chars * cw + 0.4), n_rows * rh + 0.8), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, fig.get_figwidth())
    ax.set_ylim(fig.get_figheight(), 0)
    ax.axis("off")
    ax.text(0.2, 0.35, caption, fontsize=9, color="#5b6475", va="center")
    for r, c, s, p in cells:
        x, y = 0.2 + c * cw, 0.7 + r * rh
        ax.add_patch(plt.Rectangle((x, y), max(len(s), 1) * cw, rh * 0.92, color=colour(p), lw=0))
        ax.text(x, y + rh * 0.5, s, fontsize=9, family="monospace", va="center")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
