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
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ArlmError
from .io import atomic_write_text, os_reason
from .models.base import config_from_dict, config_to_dict
from .models.registry import get_family
from .paths import CONFIG_FILE, RUN_LEFTOVERS, STATE_FILE
from .version import __version__
from .vocab import load_vocab

CONFIG = CONFIG_FILE  # the name other modules have used


def arlm_version() -> str:
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


# -- output directories: never a mix of two runs ---------------------------------------

def _describe(d: Path) -> tuple[str, dict | None]:
    """What a non-empty directory holds, in words, and its config when it is an arlm model."""
    try:
        cfg = read_config(d)
    except ArlmError:
        names = sorted(p.name for p in d.iterdir())
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        return f"files that are not an arlm model ({shown})", None
    return f"{a_family(cfg.get('family'))} model ({cfg.get('vocab')} vocab)", cfg


def a_family(family) -> str:
    """``"an ngram"``, ``"a gpt"``: a family name with its article, for messages."""
    family = str(family)
    return f"{'an' if family[:1] in 'aeiou' or family == 'ngram' else 'a'} {family}"


def _unfinished_run(d: Path) -> str | None:
    """``"step N"`` when ``d`` holds a neural run that was interrupted (resumable), else None."""
    f = d / STATE_FILE
    if not f.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(f), framework="pt") as h:
            st = json.loads((h.metadata() or {})["arlm_training_state"])
    except Exception:  # an unreadable state resumes nothing
        return None
    return f"step {st.get('step')}" if st.get("stopped") in (None, "interrupted") else None


def _inside(path: Path, directory: Path) -> bool:
    p, d = Path(path).resolve(), Path(directory).resolve()
    return p == d or d in p.parents


def check_output_dir(out: str | Path, force: bool = False, family: str | None = None, vocab: str | None = None,
                     inputs: list[tuple[str, str | Path]] = (), flag: str = "--out") -> bool:
    """Decide whether a command may write a new model into ``out``, before it writes anything.

    ``out`` may be absent or empty. A directory that holds a model of the same
    ``family`` and ``vocab`` (a rerun of the same command) is replaced as a
    whole, unless it holds an interrupted run that ``--resume`` could continue.
    Anything else (another family or vocab, files that are not a model) is
    refused unless ``force``. A replaced directory never keeps a file of the
    old run: see :func:`new_model_dir` and :func:`clear_dir`.

    Args:
        inputs: ``(label, path)`` of the files and directories the command
            reads; none may be ``out`` or lie inside it.

    Returns:
        True when ``out`` holds something that must be replaced, False when it is absent or empty.

    Raises:
        ArlmError: one line naming ``out``, what it holds, and ``--force``.
    """
    d = Path(out)
    for label, path in inputs:
        if path is not None and _inside(Path(path), d):
            raise ArlmError(f"{label} {path} is {'' if Path(path).resolve() == d.resolve() else 'inside '}"
                            f"{flag} {d}, which this command writes: choose another {flag}")
    if not d.exists():
        return False
    if not d.is_dir():
        raise ArlmError(f"{flag} {d} is a file, not a directory")
    try:
        empty = not any(d.iterdir())
    except OSError as e:
        raise ArlmError(f"cannot read output directory {d}: {os_reason(e)}") from None
    if empty:
        return False
    if force:
        return True
    names = [p.name for p in d.iterdir()]
    if all(n in RUN_LEFTOVERS or (n.startswith(".") and n.endswith(".tmp")) for n in names):
        return True  # a run killed before its first checkpoint: no model, nothing to resume
    what, cfg = _describe(d)
    if cfg is not None and family is not None and cfg.get("family") == family and cfg.get("vocab") == vocab:
        unfinished = _unfinished_run(d)
        if unfinished is None:
            return True
        raise ArlmError(f"{flag} {d} holds an interrupted {family} run ({unfinished}): continue it with "
                        f"`arlm train --resume {d}`, or pass --force to start over (its files are removed)")
    raise ArlmError(f"{flag} {d} already holds {what}; pass --force to replace it (its files are removed), "
                    f"or choose another {flag}")


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def _trash_name(d: Path) -> Path:
    return d.parent / f".{d.name}.arlm-old-{os.getpid()}"


def clear_dir(out: str | Path) -> Path:
    """Empty ``out`` for a new run in one rename (crash-safe: the old files are
    moved aside whole, never mixed with new ones), then delete them.

    Raises:
        ArlmError: the directory cannot be moved or created.
    """
    d = Path(out)
    trash = _trash_name(d)
    try:
        os.rename(d, trash)
        d.mkdir()
    except OSError as e:
        raise ArlmError(f"cannot clear output directory {d}: {os_reason(e)}") from None
    shutil.rmtree(trash, ignore_errors=True)
    return d


def _topmost_missing(d: Path) -> Path | None:
    """The outermost of ``d`` and its parents that does not exist (what ``mkdir(parents=True)`` creates)."""
    top = None
    for p in [d, *d.absolute().parents]:
        if p.exists():
            break
        top = p
    return top


def _undo_new_dir(d: Path, created: Path | None) -> None:
    """Remove what a failed command wrote into ``d``: the directories it created, or the files of an empty ``d``."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
        return
    try:
        for p in d.iterdir():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    except OSError:
        pass


@contextmanager
def new_model_dir(out: str | Path, replace: bool):
    """Yield the directory to write a new model into; ``out`` itself unless ``replace``.

    Without ``replace`` (``out`` absent or empty) a block that fails or is
    interrupted leaves ``out`` as it found it: absent (with any parents this
    created) or empty. With ``replace`` the model is built in a hidden sibling directory and
    swapped in only when the block succeeds (two renames), so a failed command
    (a full disk, a bad input found late) leaves the old model as it was, and a
    crash leaves the old or the new model under ``out``, never a mix.

    Raises:
        ArlmError: ``out`` cannot be written.
    """
    d = Path(out)
    if not replace:  # ``out`` is absent or empty: a failure leaves it so (no directory this command created)
        created = _topmost_missing(d)
        where = prepare_dir(d)
        try:
            yield where
        except BaseException:
            _undo_new_dir(d, created)
            raise
        return
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}.arlm-new-", dir=d.parent))
        os.chmod(tmp, _umask_mode())
    except OSError as e:
        raise ArlmError(f"cannot write to output directory {d}: {os_reason(e)}") from None
    try:
        yield tmp
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, ArlmError) and str(tmp) in str(e):  # name the directory the user knows
            raise ArlmError(str(e).replace(str(tmp), str(d))) from None
        raise
    trash = _trash_name(d)
    try:
        os.rename(d, trash)
        os.rename(tmp, d)
    except OSError as e:
        raise ArlmError(f"cannot replace output directory {d}: {os_reason(e)}") from None
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def new_run_dir(out: str | Path, write: bool = True, replace: bool = False):
    """Create the directory of a neural run, which writes it as it goes (to resume); yield it.

    With ``replace`` the old directory is moved aside in one rename and deleted
    only once the new run has its first checkpoint: a run that fails or is
    stopped before then (a refused setting, too little data, Ctrl-C or SIGTERM
    while encoding) puts the old directory back, or, when there was none, leaves
    no directory this created. ``write=False`` (a DDP rank other than 0) creates
    nothing.

    Raises:
        ArlmError: the old directory cannot be moved aside.
    """
    d = Path(out)
    if not write:
        yield d
        return
    trash = None
    if replace and d.exists():
        trash = _trash_name(d)
        try:
            os.rename(d, trash)
        except OSError as e:
            raise ArlmError(f"cannot clear output directory {d}: {os_reason(e)}") from None
    created = _topmost_missing(d)
    prepare_dir(d)
    try:
        yield d
    except BaseException:
        if not (d / STATE_FILE).exists():
            if trash is not None:  # nothing new worth keeping: the old directory comes back
                shutil.rmtree(d, ignore_errors=True)
                os.rename(trash, d)
                trash = None
            elif created is not None:
                shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)


def save(directory: str | Path, model, vocab, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` and ``vocab`` into ``directory``; ``meta`` adds JSON fields to config.json."""
    d = prepare_dir(directory)
    for rel, component in model.components_to_save(d):  # a composite's components, each a model directory
        save(d / rel, component, vocab)
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


def holds_arlm_files(directory: str | Path) -> bool:
    """Whether ``directory`` is an arlm model or token directory (its ``config.json`` names a family, or it
    holds ``tokens.json``)."""
    d = Path(directory)
    if (d / "tokens.json").is_file():
        return True
    try:
        cfg = json.loads((d / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "family" in cfg


def refuse_model_files(path: str | Path, option: str) -> None:
    """Refuse an output file or directory that would replace files of an arlm model or token directory.

    Raises:
        ArlmError: ``path`` is such a directory, or a file inside one (one line naming both).
    """
    p = Path(path)
    for d in (p, p.parent):
        if d.is_dir() and holds_arlm_files(d):
            raise ArlmError(f"{option} {p} would write into {d}, which holds an arlm model or tokens; "
                            "choose a path outside it")


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
        raise ArlmError(f"{d} holds {a_family(family)} model, not {a_family(expect_family)} model")
    config_cls, model_cls = get_family(family)
    try:
        config = config_from_dict(config_cls, cfg["config"])
        vocab = load_vocab(cfg.get("vocab", "char"), d)
        component_dirs = model_cls.component_dirs(config, d)
        if component_dirs:
            model = model_cls.load_weights(config, d, [load(c)[0] for c in component_dirs])
        else:
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
