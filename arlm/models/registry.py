"""Family name -> (config dataclass, model class). Imports are lazy so that
using one family does not import the others."""

from __future__ import annotations

import importlib

from ..errors import ArlmError

FAMILIES = {
    "ngram": ("arlm.models.ngram", "NGramConfig", "NGramModel"),
    "lstm": ("arlm.models.lstm", "LSTMConfig", "LSTMModel"),
    "gpt": ("arlm.models.gpt", "GPTConfig", "GPTModel"),
    "cache": ("arlm.models.cache", "CacheConfig", "CacheModel"),
    "mixture": ("arlm.models.mixture", "MixtureConfig", "MixtureModel"),
    "backoff": ("arlm.models.backoff", "BackoffConfig", "BackoffNGramModel"),
    "mixer": ("arlm.models.mixer", "MixerConfig", "MixerModel"),
    "dyneval": ("arlm.models.dyneval", "DynEvalConfig", "DynEvalModel"),
    "cm": ("arlm.models.cm", "CMConfig", "CMModel"),
}


def get_family(name: str):
    """Return (ConfigClass, ModelClass) for a family name.

    Raises:
        ArlmError: unknown family.
    """
    try:
        module, cfg, model = FAMILIES[name]
    except KeyError:
        raise ArlmError(f"unknown model family {name!r}: choose one of {', '.join(FAMILIES)}") from None
    mod = importlib.import_module(module)
    return getattr(mod, cfg), getattr(mod, model)
