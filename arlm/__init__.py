"""arlm: autoregressive language models with exact probabilities.

Public API::

    lm = arlm.load("runs/ngram")              # an LM (model + vocab)
    lm.log_prob("hello")                      # log p(x) in nats, <eos> included
    lm.conditional_log_prob("lo", given="hel")
    lm.evaluate(open("val.txt").read())       # nll, mean_nll, bits_per_char, perplexity
    lm.generate("ROMEO:", max_new_tokens=100, temperature=0.8, top_k=40, seed=1)

    lm = arlm.train("names.txt", model="ngram", order=5, documents="lines", out="runs/names")
    lm = arlm.train("names.txt", model="gpt", documents="lines", max_steps=50, out="runs/names-gpt")
"""

from __future__ import annotations

from .version import __version__

from pathlib import Path

from .errors import ArlmError
from .lm import LM
from .sampling import Sample


def load(path: str | Path) -> LM:
    """Load a model directory written by ``arlm train`` or ``LM.save``. Raises ArlmError."""
    return LM.load(path)


def train(data: str | Path | None = None, model: str = "gpt", vocab: str = "char", out: str | Path | None = None,
          **kwargs) -> LM | None:
    """Train a model on a text file and save it: see :func:`arlm.pipeline.train` (what ``arlm train`` calls).

    ``arlm.train("names.txt", model="gpt", documents="lines", max_steps=50, out="runs/names")``.

    Raises:
        ArlmError: bad input, an unknown hyperparameter or one the family does not use.
    """
    from .pipeline import train as _train

    return _train(data, model, vocab, out, **kwargs)


def fit(data: str | Path | None = None, model: str = "ngram", out: str | Path = "runs/model", **kwargs) -> LM:
    """:func:`train` with the n-gram family by default (kept for code written against it)."""
    return train(data, model=model, out=out, **kwargs)


__all__ = ["ArlmError", "LM", "Sample", "load", "train", "fit", "__version__"]
