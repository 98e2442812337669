"""Save and load a model directory (DESIGN.md §6).

A model directory holds ``config.json`` (family, hyperparameters, vocab kind,
document mode, arlm version), ``model.safetensors`` (weights or n-gram tables)
and the vocab file (``vocab.json`` or ``tokenizer.json``). No pickle: tensors go
through safetensors, everything else through JSON. Every file is written to a
temporary name and renamed into place, and ``config.json`` is written last, so
an interrupted save never leaves a directory that loads as a different model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ArlmError
from .io import atomic_write_text
from .models.base import config_from_dict, config_to_dict
from .models.registry import get_family
from .vocab import load_vocab

CONFIG = "config.json"


def arlm_version() -> str:
    from . import __version__

    return __version__


def prepare_dir(directory: str | Path) -> Path:
    """Create ``directory`` if needed and check that it is writable.

    Raises:
        ArlmError: it cannot be created or written.
    """
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / ".arlm-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ArlmError(f"cannot write to output directory {d}: {e.strerror or e}") from None
    return d


def save(directory: str | Path, model, vocab, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` and ``vocab`` into ``directory``; ``meta`` adds JSON fields to config.json."""
    d = prepare_dir(directory)
    model.save_weights(d, vocab)
    vocab.save(d)
    cfg = {
        "family": model.family,
        "arlm_version": arlm_version(),
        "vocab": vocab.kind,
        "config": config_to_dict(model.config),
        **(meta or {}),
    }
    atomic_write_text(d / CONFIG, json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    return d


def read_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a model directory.

    Raises:
        ArlmError: missing directory or config, or config that is not valid JSON.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ArlmError(f"no model directory at {d}")
    f = d / CONFIG
    if not f.is_file():
        raise ArlmError(f"{d} is not an arlm model directory: {CONFIG} is missing")
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArlmError(f"{f} is corrupt: {e}") from None
    if not isinstance(cfg, dict) or "family" not in cfg or "config" not in cfg:
        raise ArlmError(f"{f} is not an arlm config (no 'family' or 'config')")
    return cfg


def load(directory: str | Path, expect_family: str | None = None):
    """Load ``(model, vocab, cfg)`` from a model directory; the model is in eval mode on CPU.

    Raises:
        ArlmError: the directory is missing, truncated, corrupt, or holds
            another family than ``expect_family``.
    """
    d = Path(directory)
    cfg = read_config(d)
    family = cfg["family"]
    if expect_family is not None and family != expect_family:
        raise ArlmError(f"{d} holds a {family} model, not a {expect_family} model")
    config_cls, model_cls = get_family(family)
    try:
        config = config_from_dict(config_cls, cfg["config"])
        vocab = load_vocab(cfg.get("vocab", "char"), d)
        model = model_cls.load_weights(config, d)
    except ArlmError:
        raise
    except FileNotFoundError as e:
        raise ArlmError(f"{d} is incomplete: {Path(e.filename).name if e.filename else e} is missing") from None
    except Exception as e:  # safetensors / json raise many types for truncated files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ArlmError(f"cannot load the model in {d}: {msg}") from None
    if vocab.vocab_size != config.vocab_size:
        raise ArlmError(f"{d}: the vocab has {vocab.vocab_size} tokens but the model expects {config.vocab_size}")
    model.source_dir = d.resolve()  # a mixture saved later refers to this directory instead of copying it
    return model, vocab, cfg
