"""Train or resume a gradient-loop family (gpt, lstm): build the model and the loop's settings from
hyperparameters (the family table's defaults for the rest), run :func:`arlm.training.run_training`.

``arlm.train`` (:mod:`arlm.pipeline`) calls :func:`train_gradient`; ``arlm train --resume`` calls :func:`resume`.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from .. import checkpoint
from ..errors import ArlmError
from ..models.registry import default_of, family, hyperparameters
from . import distributed
from .batches import TokenData
from .loop import run_training
from .schedule import lr_at, schedule_progress
from .settings import TrainSettings, parse_duration
from .state import STATE_FILE, STATE_VERSION, read_data, read_state


def build_model(name: str, vocab, **hyper) -> tuple[Any, int]:
    """A freshly initialised model of the gradient family ``name``; ``hyper`` holds fields of its config
    dataclass and ``block_size`` (a missing one takes the family's default).

    Returns (model, training window length in tokens).

    Raises:
        ArlmError: not a gradient family, or invalid hyperparameters.
    """
    fam = family(name)
    if fam.trains != "gradient":
        raise ArlmError(f"arlm.training trains gpt and lstm models, not {name!r}")
    config_cls, model_cls = fam.classes()
    kw = {f.name: hyper[f.name] if hyper.get(f.name) is not None else default_of(fam, f)
          for f in hyperparameters(config_cls)}
    block = kw.get("block_size", hyper.get("block_size") or fam.defaults.get("block_size"))
    try:
        return model_cls(config_cls(vocab_size=vocab.vocab_size, bos_id=vocab.bos_id, eos_id=vocab.eos_id, **kw)), block
    except ValueError as e:
        raise ArlmError(str(e)) from None


def make_settings(name: str, window: int, documents: str, seed: int = 1337, **hyper) -> TrainSettings:
    """The loop's :class:`TrainSettings` for family ``name``: ``hyper``'s values (None: not given), else the
    family table's default, else the dataclass's. ``max_time`` may be a duration string (``"90s"``).

    Raises:
        ArlmError: ``max_steps`` below 1 or an unparsable ``max_time``.
    """
    fam = family(name)
    kw = {}
    for f in hyperparameters(TrainSettings):
        if hyper.get(f.name) is not None:
            kw[f.name] = hyper[f.name]
        elif f.name in fam.defaults:
            kw[f.name] = fam.defaults[f.name]
    for f in dataclasses.fields(TrainSettings):  # settings that are not flags but differ per family
        if f.name in fam.defaults and f.name not in kw:
            kw[f.name] = fam.defaults[f.name]
    if kw.get("max_time") is not None:
        kw["max_time"] = parse_duration(kw["max_time"], "--max-time")
    kw.update(block_size=window, documents=documents, seed=seed, compile=kw.get("compile"))
    s = TrainSettings(**kw)
    if s.max_steps is not None and s.max_steps < 1:
        raise ArlmError(f"--max-steps must be >= 1, got {s.max_steps}")
    if s.max_steps is not None and s.warmup_steps > s.max_steps // 2 and hyper.get("warmup_steps") is None:
        s.warmup_steps = max(1, s.max_steps // 10)
    return s


def train_gradient(name: str, vocab, train_docs: list[str], val_docs: list[str], documents: str,
                   out_dir: Path, meta: dict, seed: int = 1337, keep_data: bool = True,
                   token_data: tuple | None = None, **hyper) -> None:
    """Train a gpt or lstm into the model directory ``out_dir`` (which exists and is empty).

    Writes the ``arlm.checkpoint`` model directory (best weights) plus
    ``training_state.safetensors``, ``training_data.safetensors``,
    ``train_log.jsonl`` and ``loss.png``. Prints a one-line summary to stderr.

    Raises:
        ArlmError: bad hyperparameters, too little data, or a diverged (non-finite) loss.
        Interrupted: SIGINT or SIGTERM stopped the run after it saved its checkpoint.
    """
    torch.manual_seed(seed)
    model, block = build_model(name, vocab, **hyper)
    s = make_settings(name, block, documents, seed, **hyper)
    if token_data is not None:  # already encoded (a token directory): (train, val or None)
        train_data, val_data = token_data
    else:
        train_data = TokenData.from_documents(vocab, train_docs)
        val_data = TokenData.from_documents(vocab, val_docs) if val_docs else None
    summary = run_training(model, vocab, train_data, val_data, s, out_dir, meta, keep_data=keep_data)
    if distributed.current().is_main:
        _print_summary(summary, model, out_dir)
    _raise_if_interrupted(summary, out_dir)


#: The settings that may change when a run is resumed (``metadata["resume"]``): its budget and where it runs.
RESUMABLE = tuple(f.name for f in hyperparameters(TrainSettings) if f.metadata.get("resume"))


def check_resume(out_dir: str | Path, world_size: int = 1, **changes) -> tuple[dict, dict]:
    """The checks of a resume that need no model: the settings that may change, the training state, the budget,
    the batch split among ``world_size`` ranks. Run by ``--nproc N`` before torchrun is launched (as a fresh
    run's checks are) and again by :func:`resume`. Returns ``read_state``'s (tensors, state).

    Raises:
        ArlmError: one line: a setting that cannot change on resume, a missing or corrupt state,
            ``--max-steps`` < 1, an unparsable ``--max-time``, or a global batch that does not divide
            among ``world_size`` ranks.
    """
    out_dir = Path(out_dir)
    bad = sorted(set(changes) - set(RESUMABLE))
    if bad:
        raise ArlmError(f"{', '.join(bad)} cannot change on resume (only {', '.join(RESUMABLE)} may)")
    tensors, st = read_state(out_dir / STATE_FILE)
    if st.get("version") != STATE_VERSION:
        raise ArlmError(f"cannot resume: {out_dir / STATE_FILE} has state version {st.get('version')}")
    if changes.get("max_steps") is not None and changes["max_steps"] < 1:
        raise ArlmError(f"--max-steps must be >= 1, got {changes['max_steps']}")
    if changes.get("max_time") is not None:
        parse_duration(changes["max_time"], "--max-time")
    rows = (st.get("settings") or {}).get("batch_size")
    if world_size > 1 and rows and rows % world_size:
        ok = [n for n in range(2, min(rows, 64) + 1) if rows % n == 0]
        raise ArlmError(f"--nproc {world_size}: the run in {out_dir} has a global batch of {rows} rows (fixed when "
                        f"it started), which does not divide evenly among {world_size} ranks; resume with an "
                        f"--nproc that divides {rows}" + (f" ({', '.join(map(str, ok[:6]))})" if ok else ""))
    return tensors, st


def resume(out_dir: str | Path, **changes) -> None:
    """Continue the interrupted run in ``out_dir`` from its last checkpoint.

    ``changes`` may hold new ``max_steps`` / ``max_time`` (totals for the whole run, counted from its
    start), ``device``, ``threads``, ``compile`` (:data:`RESUMABLE`; None: unchanged). A changed budget
    keeps the learning rate continuous: the cosine continues from the rate reached so far down to the
    floor at the end of the new budget (said on stderr). On CPU the continuation with an unchanged
    budget is exact: the same losses and final weights as an uninterrupted run with the same limits and
    a fixed thread count (time limits are not deterministic).

    Raises:
        ArlmError: no or corrupt training state in ``out_dir``, a model directory whose model is not
            the run's, or a setting that cannot change on resume.
        Interrupted: SIGINT or SIGTERM stopped the run again after it saved.
    """
    out_dir = Path(out_dir)
    tensors, st = check_resume(out_dir, distributed.current().world_size, **changes)
    for stale in out_dir.glob(".*.tmp") if distributed.current().is_main else ():
        stale.unlink(missing_ok=True)  # half-written files of a killed process (never renamed into place)
    if (out_dir / checkpoint.CONFIG).is_file():
        cfg = checkpoint.read_config(out_dir)
        if cfg.get("family") != st["family"] or cfg.get("vocab") != st["vocab"]:
            raise ArlmError(
                f"cannot resume: {out_dir} holds {checkpoint.a_family(cfg.get('family'))} model ({cfg.get('vocab')} "
                f"vocab) but the training state of a {st['family']} run ({st['vocab']} vocab); resuming would "
                "replace that model"
            )
    from ..vocab import load_vocab

    config_cls, model_cls = family(st["family"]).classes()
    model = model_cls(config_cls(**st["model_config"]))
    vocab = load_vocab(st["vocab"], out_dir)
    train_data, val_data = read_data(out_dir)
    s = TrainSettings(**st["settings"])
    old = dataclasses.replace(s)
    if changes.get("max_steps") is not None:
        s.max_steps = changes["max_steps"]
        if s.max_steps < 1:
            raise ArlmError(f"--max-steps must be >= 1, got {s.max_steps}")
    if changes.get("max_time") is not None:
        s.max_time = parse_duration(changes["max_time"], "--max-time")
    for name in ("device", "threads"):
        if changes.get(name) is not None:
            setattr(s, name, changes[name])
    if changes.get("compile") is not None:
        s.compile = changes["compile"]
    step, elapsed = st["step"], st["elapsed_s"]
    if (s.max_steps, s.max_time) != (old.max_steps, old.max_time):
        _continue_schedule(old, s, step, elapsed)
    summary = run_training(model, vocab, train_data, val_data, s, out_dir, st["meta"], resume_state=(tensors, st))
    if distributed.current().is_main:
        _print_summary(summary, model, out_dir)
    _raise_if_interrupted(summary, out_dir)


def _continue_schedule(old: TrainSettings, new: TrainSettings, step: int, elapsed: float) -> None:
    """Anchor ``new``'s cosine at the point ``old`` had reached, and say so on stderr."""
    def budget(x: TrainSettings) -> str:
        parts = ([f"{x.max_steps} steps"] if x.max_steps is not None else []) + (
            [f"{x.max_time:g} s"] if x.max_time is not None else [])
        return " / ".join(parts) or "none"

    lr_now = lr_at(old, step, elapsed)
    floor = new.lr * new.min_lr_ratio
    if step >= new.warmup_steps:
        new.schedule_anchor = [step, elapsed, schedule_progress(old, step, elapsed)]
    done = (new.max_steps is not None and step >= new.max_steps) or (new.max_time is not None and elapsed >= new.max_time)
    if done:
        if distributed.current().is_main:
            print(f"resume: the run is already at step {step}, {elapsed:.0f} s, past its budget ({budget(new)}); "
                  "nothing to train: raise --max-steps or --max-time", file=sys.stderr)
        return
    if lr_now <= floor * (1 + 1e-9):
        how = f"the run had already decayed to its floor learning rate {floor:.3g}: it continues at that rate"
    else:
        how = (f"the learning rate continues from {lr_now:.3g} at step {step} and decays to {floor:.3g} at the "
               "end of the new budget (no jump)")
    if distributed.current().is_main:
        print(f"resume: budget {budget(old)} -> {budget(new)}; {how}", file=sys.stderr)


def _raise_if_interrupted(summary: dict, out_dir: Path) -> None:
    signum = summary.get("signal")
    if summary.get("stopped") == "interrupted" and signum is not None:
        from ..errors import Interrupted

        raise Interrupted(signum, f"interrupted by {signal.Signals(signum).name} at step {summary['step']}: "
                                  f"{out_dir} holds its checkpoint; continue with: arlm train --resume {out_dir}")


def _print_summary(summary: dict, model, out_dir: Path) -> None:
    bv = summary["best_val_loss"]
    print(
        f"trained {model.family} ({model.num_parameters():,} parameters): {summary['step']} steps in "
        f"{summary['elapsed_s']:.0f}s ({summary['stopped']}), {summary['tokens_per_s']:.0f} tokens/s"
        + (f" on {summary['world_size']} ranks ({summary['backend']})" if summary.get("world_size", 1) > 1 else "")
        + "; "
        + (f"best val mean_nll {bv:.4f} nats/token (estimated on {summary.get('val_tokens', 0):,} val tokens) "
           f"at step {summary['best_step']}" if bv is not None else "no val text") + f" -> {out_dir}",
        file=sys.stderr,
    )
