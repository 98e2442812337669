"""The family table: each model family's config dataclass, model class, how it trains and what it supports.

Imports are lazy: a family's module is imported only when that family is used.
``arlm train`` builds its flags from the fields of these config dataclasses (see :func:`hyperparameters`).
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field

from ..errors import ArlmError

#: How a family trains: ``"count"`` (counts, one pass), ``"adaptive"`` (reads the training text once, in
#: order, adapting as it goes), ``"gradient"`` (the training loop of ``arlm.training``), ``"none"`` (nothing
#: to fit: it learns from the document it is reading); None: not trained by ``arlm train`` (composites).
TRAINING_KINDS = ("count", "adaptive", "gradient", "none")


@dataclass(frozen=True)
class Family:
    """One row of the table.

    ``module``, ``config`` and ``model`` name the family's module and its two classes. ``trains`` is one of
    :data:`TRAINING_KINDS` or None; ``resumes``: an interrupted run continues with ``--resume``;
    ``commands``: the commands besides ``train``/``eval``/``score``/``sample`` that take it (``compare``,
    ``dyneval``); ``formats``: the ``arlm export`` formats; ``defaults``: values that override a default of
    its config dataclass or of the training-loop settings (:class:`arlm.training.TrainSettings`) for it.
    """

    name: str
    module: str
    config: str
    model: str
    trains: str | None = None
    resumes: bool = False
    commands: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()
    defaults: dict = field(default_factory=dict)

    def classes(self) -> tuple[type, type]:
        mod = importlib.import_module(self.module)
        return getattr(mod, self.config), getattr(mod, self.model)

    def config_class(self) -> type:
        return self.classes()[0]


#: Defaults tuned for a 2-minute run on a 2-core CPU (tinyshakespeare, char vocab): at that budget the
#: number of optimiser steps limits the result, so small, shallow models with a high learning rate win.
_GRADIENT = dict(batch_size=32, min_lr_ratio=0.01)

FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("ngram", "arlm.models.ngram", "NGramConfig", "NGramModel", trains="count", commands=("compare",),
           formats=("arpa",)),
    # GPT: Muon for the hidden matrices and a bf16 training forward (issue 14); epoch batch order, and weight
    # decay with an EMA for runs of many passes over train (issue 24; bench/README.md)
    Family("gpt", "arlm.models.gpt", "GPTConfig", "GPTModel", trains="gradient", resumes=True,
           commands=("compare", "dyneval"), formats=("hf",),
           defaults=dict(_GRADIENT, lr=6e-3, precision="bf16", optimizer="muon", muon_lr=0.03,
                         batch_order="epochs", muon_weight_decay=None, ema_decay=None)),
    Family("lstm", "arlm.models.lstm", "LSTMConfig", "LSTMModel", trains="gradient", resumes=True,
           commands=("compare", "dyneval"), defaults=dict(_GRADIENT, lr=4e-2, block_size=64)),
    Family("cache", "arlm.models.cache", "CacheConfig", "CacheModel", trains="none", commands=("compare",),
           defaults=dict(order=5)),
    Family("cm", "arlm.models.cm", "CMConfig", "CMModel", trains="adaptive"),
    Family("mixture", "arlm.models.mixture", "MixtureConfig", "MixtureModel"),
    Family("backoff", "arlm.models.backoff", "BackoffConfig", "BackoffNGramModel", formats=("arpa",)),
    Family("mixer", "arlm.models.mixer", "MixerConfig", "MixerModel"),
    Family("dyneval", "arlm.models.dyneval", "DynEvalConfig", "DynEvalModel"),
)}


def family(name: str) -> Family:
    """The table's row for ``name``.

    Raises:
        ArlmError: unknown family.
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise ArlmError(f"unknown model family {name!r}: choose one of {', '.join(FAMILIES)}") from None


def get_family(name: str):
    """Return (ConfigClass, ModelClass) for a family name.

    Raises:
        ArlmError: unknown family.
    """
    return family(name).classes()


def trainable() -> list[Family]:
    """The families ``arlm train`` trains, in table order."""
    return [f for f in FAMILIES.values() if f.trains is not None]


def hyperparameters(cls: type) -> list[dataclasses.Field]:
    """The fields of a config (or settings) dataclass that a user sets: those with ``metadata["help"]``.

    Each becomes an ``arlm train`` flag (``n_layer`` -> ``--n-layer``) and a keyword of ``arlm.train``.
    Metadata keys: ``help``; ``choices``; ``flag_type`` (what the flag reads when it is not the field's
    type, e.g. ``str`` for a duration); ``metavar``; ``any_model`` (the flag applies to every family).
    """
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def default_of(fam: Family, f: dataclasses.Field):
    """``f``'s default for family ``fam``: the table's override, else the dataclass's."""
    return fam.defaults[f.name] if f.name in fam.defaults else field_default(f)

