"""arlm: autoregressive language models with exact probabilities.

Public API::

    lm = arlm.load("runs/ngram")              # an LM (model + vocab)
    lm.log_prob("hello")                      # log p(x) in nats, <eos> included
    lm.conditional_log_prob("lo", given="hel")
    lm.evaluate(open("val.txt").read())       # nll, mean_nll, bits_per_char, perplexity
    lm.generate("ROMEO:", max_new_tokens=100, temperature=0.8, top_k=40, seed=1)

    lm = arlm.fit("names.txt", model="ngram", order=5, documents="lines", out="runs/names")
"""

from __future__ import annotations

__version__ = "0.1.0"

from pathlib import Path

from .errors import ArlmError
from .lm import LM
from .sampling import Sample


def load(path: str | Path) -> LM:
    """Load a model directory written by ``arlm train`` or ``LM.save``. Raises ArlmError."""
    return LM.load(path)


def fit(data: str | Path | None = None, model: str = "ngram", out: str | Path = "runs/model", *,
          order: int = 5, vocab: str = "char", vocab_size: int | None = None, documents: str = "file",
          val_file: str | Path | None = None, val_fraction: float = 0.1, seed: int = 1337,
          force: bool = False) -> LM:
    """Train a model on the text file ``data`` (the built-in corpus when None) and save it to ``out``.

    Named ``fit`` rather than ``train`` because ``arlm.training`` is the neural
    training-loop module. This entry point covers the n-gram family; neural
    families train through ``arlm train --model gpt|lstm``.

    ``out`` may be absent, empty, or hold an n-gram model of the same vocab
    (replaced as a whole); anything else needs ``force=True``, as with
    ``arlm train --force``.

    Raises:
        ArlmError: bad input (see ``arlm train --help`` for the options; ``seed``
            is an integer in 0 .. 2**32 - 1), or an
            ``out`` that holds another model.
    """
    from . import checkpoint
    from .pipeline import load_split, split_meta, train_ngram
    from .sampling import check_seed

    check_seed(seed, "seed", 2**32 - 1)  # the split's shuffle seed, as `arlm train --seed`
    if model != "ngram":
        raise ArlmError(f"arlm.fit() fits n-gram models; train {model!r} with `arlm train --model {model}`")
    replace = checkpoint.check_output_dir(out, force, family="ngram", vocab=vocab,
                                          inputs=[("data", data), ("val_file", val_file)], flag="out")
    split = load_split(data, documents, val_file, val_fraction, seed)
    with checkpoint.new_model_dir(out, replace) as where:
        lm, _ = train_ngram(split, where, order=order, vocab=vocab, vocab_size=vocab_size,
                            meta=split_meta(split, val_file, val_fraction, seed))
    return lm


__all__ = ["ArlmError", "LM", "Sample", "load", "fit", "__version__"]
