"""``arlm train`` for the neural families: its flags, and starting or resuming a run from parsed args.

``arlm.cli`` registers the flags (:func:`add_train_arguments`) and calls
:func:`cli_train` / :func:`cli_resume`; the loop itself is ``arlm.training``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from . import checkpoint
from .errors import ArlmError
from .training import distributed
from .training import (DATA_FILE, DEFAULT_MAX_TIME, DEFAULTS, STATE_FILE, STATE_VERSION, TokenData, TrainSettings,
                       lr_at, parse_duration, read_data, read_state, run_training, schedule_progress)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the neural-training flags on the ``arlm train`` subparser.

    Defaults are None where the family decides (see ``DEFAULTS``).
    """
    gd, ld = DEFAULTS["gpt"], DEFAULTS["lstm"]

    def both(name: str) -> str:
        return f"default: gpt {gd[name]}, lstm {ld[name]}"

    g = parser.add_argument_group("neural models (gpt, lstm)")
    g.add_argument("--n-layer", type=int, default=None, help=f"layers ({both('n_layer')})")
    g.add_argument("--n-head", type=int, default=None, help=f"attention heads, gpt only (default: {gd['n_head']})")
    g.add_argument("--n-embd", type=int, default=None, help=f"embedding width ({both('n_embd')})")
    g.add_argument("--n-hidden", type=int, default=None, help=f"hidden width, lstm only (default: {ld['n_hidden']})")
    g.add_argument("--block-size", type=int, default=None,
                   help=f"context window (gpt) / truncated-backprop window (lstm), in tokens ({both('block_size')})")
    g.add_argument("--pos-emb", choices=("learned", "rotary"), default=None,
                   help="gpt position scheme: learned (GPT-2) or rotary (sliding-window attention, fast generation past "
                        "--block-size) (default: learned)")
    g.add_argument("--dropout", type=float, default=None, help=f"dropout probability ({both('dropout')})")
    g.add_argument("--batch-size", type=int, default=None, help=f"sequences per optimiser step ({both('batch_size')})")
    g.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate of AdamW, decayed by --lr-schedule to {gd['min_lr_ratio']} of it ({both('lr')})")
    g.add_argument("--optimizer", choices=("adamw", "muon"), default=None,
                   help=f"adamw, or muon: Muon for hidden matrices, AdamW for embeddings, head, gains "
                        f"(default: gpt {gd['optimizer']}, lstm {ld['optimizer']})")
    g.add_argument("--muon-lr", type=float, default=None,
                   help=f"gpt/lstm with --optimizer muon: peak learning rate of Muon, on --lr's schedule (default: {gd['muon_lr']})")
    g.add_argument("--lr-schedule", choices=("cosine", "wsd"), default=None,
                   help="decay after the warm-up: cosine, or wsd (stable, then linear over the last "
                        f"--cooldown-fraction of the budget) (default: gpt {gd['lr_schedule']}, lstm {ld['lr_schedule']})")
    g.add_argument("--cooldown-fraction", type=float, default=None,
                   help=f"share of the budget over which wsd decays (default: {gd['cooldown_fraction']})")
    g.add_argument("--precision", choices=("bf16", "fp32"), default=None,
                   help="training forward in bf16 autocast where the hardware has bf16 (CUDA, AVX-512 BF16 or AMX "
                        "CPUs; fp32 elsewhere), or fp32; weights, optimiser and scoring stay fp32 "
                        f"(default: gpt {gd['precision']}, lstm bf16 on cuda, else fp32)")
    g.add_argument("--warmup-steps", type=int, default=None,
                   help=f"linear warm-up steps (default: {TrainSettings.warmup_steps}, or a tenth of a short --max-steps)")
    g.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many optimiser steps (default: no step limit, only --max-time)")
    g.add_argument("--max-time", type=str, default=None,
                   help=f"wall-clock budget, e.g. 90s, 2m, 1h (default: {DEFAULT_MAX_TIME:.0f}s when --max-steps "
                        "is not given, else none)")
    g.add_argument("--eval-interval", type=int, default=None,
                   help=f"optimiser steps between val evaluations (default: {TrainSettings.eval_interval})")
    g.add_argument("--eval-iters", type=int, default=None,
                   help=f"val batches per evaluation (default: {TrainSettings.eval_iters})")
    g.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default=None,
                   help="where to train (default: auto, the first available of cuda, mps, cpu)")
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the model before training")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads, kept fixed (default: start with the cores idle at launch and adapt to "
                        "the load while training)")
    g.add_argument("--keep-data", action=argparse.BooleanOptionalAction, default=True,
                   help=f"keep {DATA_FILE}, the encoded train/val token ids that only --resume reads")
    g.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train with N processes on this machine (DDP, started through torchrun; the --batch-size "
                        "is the global batch, split among them) (default: one process)")


def _arg(args, name: str):
    return getattr(args, name, None)


def build_model(family: str, vocab, args) -> tuple[Any, int]:
    """A freshly initialised model of ``family`` from CLI args (None -> family default).

    Returns (model, training window length).

    Raises:
        ArlmError: unknown family or invalid hyperparameters.
    """
    if family not in DEFAULTS:
        raise ArlmError(f"arlm.training trains gpt and lstm models, not {family!r}")
    d = DEFAULTS[family]

    def pick(name):
        v = _arg(args, name)
        return d[name] if v is None else v

    block = pick("block_size")
    try:
        if family == "gpt":
            from .models.gpt import GPTConfig, GPTModel

            cfg = GPTConfig(vocab_size=vocab.vocab_size, bos_id=vocab.bos_id, eos_id=vocab.eos_id,
                            n_layer=pick("n_layer"), n_head=pick("n_head"), n_embd=pick("n_embd"),
                            block_size=block, dropout=pick("dropout"), bias=True,
                            pos_emb=_arg(args, "pos_emb") or "learned")
            return GPTModel(cfg), block
        if _arg(args, "pos_emb") is not None:
            raise ArlmError(f"--pos-emb applies to gpt models, not {family}")
        from .models.lstm import LSTMConfig, LSTMModel

        cfg = LSTMConfig(vocab_size=vocab.vocab_size, bos_id=vocab.bos_id, eos_id=vocab.eos_id,
                         n_layer=pick("n_layer"), n_embd=pick("n_embd"), n_hidden=pick("n_hidden"),
                         dropout=pick("dropout"))
        return LSTMModel(cfg), block
    except ValueError as e:
        raise ArlmError(str(e)) from None


def settings_from_args(args, family: str, block_size: int, documents: str) -> TrainSettings:
    d = DEFAULTS[family]
    max_time = _arg(args, "max_time")
    s = TrainSettings(
        batch_size=_arg(args, "batch_size") or d["batch_size"],
        block_size=block_size,
        lr=_arg(args, "lr") or d["lr"],
        min_lr_ratio=d["min_lr_ratio"],
        max_steps=_arg(args, "max_steps"),
        max_time=parse_duration(max_time, "--max-time") if max_time is not None else None,
        seed=_arg(args, "seed") if _arg(args, "seed") is not None else 1337,
        documents=documents,
        device=_arg(args, "device") or "auto",
        compile=bool(_arg(args, "compile")),
        threads=_arg(args, "threads"),
        precision=_arg(args, "precision") or d["precision"],
        optimizer=_arg(args, "optimizer") or d["optimizer"],
        muon_lr=_arg(args, "muon_lr") or d["muon_lr"],
        lr_schedule=_arg(args, "lr_schedule") or d["lr_schedule"],
        cooldown_fraction=_arg(args, "cooldown_fraction") or d["cooldown_fraction"],
    )
    for name in ("warmup_steps", "eval_interval", "eval_iters"):
        if _arg(args, name) is not None:
            setattr(s, name, _arg(args, name))
    if s.max_steps is not None and s.max_steps < 1:
        raise ArlmError(f"--max-steps must be >= 1, got {s.max_steps}")
    if s.max_steps is not None and s.warmup_steps > s.max_steps // 2 and _arg(args, "warmup_steps") is None:
        s.warmup_steps = max(1, s.max_steps // 10)
    return s


def cli_train(args, family: str, vocab, train_docs: list[str], val_docs: list[str], documents: str,
              out_dir: Path, meta: dict, token_data: tuple | None = None) -> None:
    """Train a gpt or lstm from parsed ``arlm train`` args into the model directory ``out_dir``.

    Writes the ``arlm.checkpoint`` model directory (best weights) plus
    ``training_state.safetensors``, ``training_data.safetensors``,
    ``train_log.jsonl`` and ``loss.png``. Prints a one-line summary to stderr.

    Raises:
        ArlmError: bad flags, too little data, or a diverged (non-finite) loss.
        Interrupted: SIGINT or SIGTERM stopped the run after it saved its checkpoint.
    """
    seed = _arg(args, "seed") if _arg(args, "seed") is not None else 1337
    torch.manual_seed(seed)
    model, block = build_model(family, vocab, args)
    s = settings_from_args(args, family, block, documents)
    if token_data is not None:  # already encoded (a token directory): (train, val or None)
        train_data, val_data = token_data
    else:
        train_data = TokenData.from_documents(vocab, train_docs)
        val_data = TokenData.from_documents(vocab, val_docs) if val_docs else None
    summary = run_training(model, vocab, train_data, val_data, s, out_dir, meta,
                           keep_data=_arg(args, "keep_data") is not False)
    if distributed.current().is_main:
        _print_summary(summary, model, out_dir)
    _raise_if_interrupted(summary, out_dir)


#: What may change when a run is resumed: its budget and where it runs (and how
#: the result is printed). Every other flag defines the run and is refused.
RESUME_FLAGS = frozenset({"resume", "max_steps", "max_time", "device", "threads", "compile", "json", "nproc"})


def check_resume_flags(given, out_dir: Path, out: str | None = None) -> None:
    """Refuse flags given with ``--resume`` that would change the run (data, model, vocab, optimiser...).

    ``given`` holds the argparse dests the user typed (``arlm.cli`` finds them);
    ``data`` is the DATA positional.

    Raises:
        ArlmError: one line naming every refused flag.
    """
    refused = set(given) - RESUME_FLAGS
    if "out" in refused and out is not None and Path(out).resolve() == Path(out_dir).resolve():
        refused.discard("out")
    if refused:
        names = sorted("DATA" if d == "data" else "--" + d.replace("_", "-") for d in refused)
        raise ArlmError(
            f"--resume continues the run in {out_dir} with its own data and settings; {', '.join(names)} cannot "
            "change on resume (only --max-steps, --max-time, --device, --threads, --compile, --nproc may): "
            "drop them, or train a new run into another --out"
        )


def check_resume(args, out_dir: Path, world_size: int = 1) -> tuple[dict, dict]:
    """The checks of a resume that need no model: flags, training state, budget, the batch split among ranks.

    Run by ``--nproc N`` before torchrun is launched (as a fresh run's checks are)
    and again by :func:`cli_resume`. Returns ``read_state``'s (tensors, state).

    Raises:
        ArlmError: one line: a flag that cannot change on resume, a missing or
            corrupt state, ``--max-steps`` < 1, an unparsable ``--max-time``, or a
            run whose global batch does not divide among ``world_size`` ranks.
    """
    given = getattr(args, "given_flags", None)
    if given is not None:
        check_resume_flags(given, out_dir, _arg(args, "out"))
    tensors, st = read_state(out_dir / STATE_FILE)
    if st.get("version") != STATE_VERSION:
        raise ArlmError(f"cannot resume: {out_dir / STATE_FILE} has state version {st.get('version')}")
    if _arg(args, "max_steps") is not None and _arg(args, "max_steps") < 1:
        raise ArlmError(f"--max-steps must be >= 1, got {_arg(args, 'max_steps')}")
    if _arg(args, "max_time") is not None:
        parse_duration(_arg(args, "max_time"), "--max-time")
    rows = (st.get("settings") or {}).get("batch_size")
    if world_size > 1 and rows and rows % world_size:
        ok = [n for n in range(2, min(rows, 64) + 1) if rows % n == 0]
        raise ArlmError(f"--nproc {world_size}: the run in {out_dir} has a global batch of {rows} rows (fixed when "
                        f"it started), which does not divide evenly among {world_size} ranks; resume with an "
                        f"--nproc that divides {rows}" + (f" ({', '.join(map(str, ok[:6]))})" if ok else ""))
    return tensors, st


def cli_resume(args, out_dir: Path) -> None:
    """Continue the interrupted run in ``out_dir`` from its last checkpoint.

    ``args`` may carry new ``--max-steps`` / ``--max-time`` (totals for the
    whole run, counted from its start), ``--device``, ``--threads``, ``--compile``;
    any other flag the user typed (``args.given_flags``, filled by the CLI) is
    refused. A changed budget keeps the learning rate continuous: the cosine
    continues from the rate reached so far down to the floor at the end of the
    new budget (said on stderr). On CPU the continuation with an unchanged
    budget is exact: the same losses and final weights as an uninterrupted run
    with the same limits and a fixed thread count (time limits are not deterministic).

    Raises:
        ArlmError: no or corrupt training state in ``out_dir``, a model directory
            whose model is not the run's, or a flag that cannot change on resume.
        Interrupted: SIGINT or SIGTERM stopped the run again after it saved.
    """
    out_dir = Path(out_dir)
    tensors, st = check_resume(args, out_dir, distributed.current().world_size)
    for stale in out_dir.glob(".*.tmp") if distributed.current().is_main else ():
        stale.unlink(missing_ok=True)  # half-written files of a killed process (never renamed into place)
    if (out_dir / checkpoint.CONFIG).is_file():
        cfg = checkpoint.read_config(out_dir)
        if cfg.get("family") != st["family"] or cfg.get("vocab") != st["vocab"]:
            raise ArlmError(
                f"cannot resume: {out_dir} holds {checkpoint.a_family(cfg.get('family'))} model ({cfg.get('vocab')} vocab) but the "
                f"training state of a {st['family']} run ({st['vocab']} vocab); resuming would replace that model"
            )
    from .models.registry import get_family
    from .vocab import load_vocab

    config_cls, model_cls = get_family(st["family"])
    model = model_cls(config_cls(**st["model_config"]))
    vocab = load_vocab(st["vocab"], out_dir)
    train_data, val_data = read_data(out_dir)
    s = TrainSettings(**st["settings"])
    old = dataclasses.replace(s)
    if _arg(args, "max_steps") is not None:
        s.max_steps = _arg(args, "max_steps")
    if _arg(args, "max_time") is not None:
        s.max_time = parse_duration(_arg(args, "max_time"), "--max-time")
    for name in ("device", "threads"):
        if _arg(args, name) is not None:
            setattr(s, name, _arg(args, name))
    if _arg(args, "compile"):
        s.compile = True
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
        from .errors import Interrupted

        raise Interrupted(signum, f"interrupted by {signal.Signals(signum).name} at step {summary['step']}: "
                                  f"{out_dir} holds its checkpoint; continue with: arlm train --resume {out_dir}")


def _print_summary(summary: dict, model, out_dir: Path) -> None:
    bv = summary["best_val_loss"]
    print(
        f"trained {model.family} ({model.num_parameters():,} parameters): {summary['step']} steps in "
        f"{summary['elapsed_s']:.0f}s ({summary['stopped']}), {summary['tokens_per_s']:.0f} tokens/s; "
        + (f"best val mean_nll {bv:.4f} nats/token (estimated on {summary.get('val_tokens', 0):,} val tokens) "
           f"at step {summary['best_step']}" if bv is not None else "no val text") + f" -> {out_dir}",
        file=sys.stderr,
    )


# -- several processes (DDP through torchrun) ----------------------------------------------


def start_distributed(args):
    """``arlm train``'s set-up for DDP; returns the :class:`arlm.training.distributed.Dist` of this process.

    With ``--nproc N`` (outside torchrun) it runs ``python -m torch.distributed.run
    --standalone --nproc-per-node N -m arlm train ...`` (the same arguments) and
    exits with its status. Under torchrun it joins the process group (gloo, or
    NCCL on CUDA). Only gpt and lstm train under DDP.

    Raises:
        ArlmError: ``--nproc`` below 1, an n-gram family under torchrun / ``--nproc``, a
            ``--batch-size`` (or a resumed run's batch) that does not divide among the processes, or
            any other check of :func:`check_resume` (all before any process is started).
        SystemExit: after the launched torchrun ends (its exit status).
    """
    nproc = _arg(args, "nproc")
    neural = _arg(args, "resume") is not None or _arg(args, "model") in DEFAULTS
    if nproc is not None and nproc < 1:
        raise ArlmError(f"--nproc must be >= 1, got {nproc}")
    torchrun = distributed.launched_by_torchrun() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not neural and (torchrun or nproc is not None):
        how = "torchrun" if torchrun else "--nproc"
        raise ArlmError(f"{how}: only gpt and lstm train with several processes; {_arg(args, 'model')} models are "
                        "counted in one process: run arlm train without " + how)
    world = int(os.environ.get("WORLD_SIZE", "1")) if torchrun else (nproc or 1)
    if world > 1:  # before anything is launched or written
        if _arg(args, "resume") is None:
            distributed.check_batch_split(_arg(args, "batch_size") or DEFAULTS[_arg(args, "model")]["batch_size"],
                                          world)
        elif not torchrun:  # the checks every rank would make on resuming
            check_resume(args, Path(_arg(args, "resume")), world)
    if torchrun:
        return distributed.setup(_arg(args, "device"))
    if nproc is not None and nproc > 1:
        argv = _without_nproc(getattr(args, "argv", None) or sys.argv[1:])
        raise SystemExit(launch_torchrun(nproc, argv, _arg(args, "threads")))
    return distributed.current()


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less ``--nproc N`` / ``--nproc=N`` (torchrun's parser would take ``--nproc`` for its own options)."""
    out, skip = [], False
    for a in argv:
        name = a.split("=", 1)[0]
        if skip:
            skip = False
        elif len(name) >= 4 and "--nproc".startswith(name):  # argparse also accepts a prefix such as --npr
            skip = "=" not in a
        else:
            out.append(a)
    return out


def launch_torchrun(nproc: int, argv: list[str], threads: int | None = None) -> int:
    """Run ``arlm <argv>`` as ``nproc`` DDP processes on this machine through torchrun; returns its exit status.

    Each process gets ``OMP_NUM_THREADS`` = ``threads`` or the CPUs divided among them.
    """
    import subprocess

    from .threads import cpu_count

    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads or max(1, cpu_count() // nproc))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "arlm", *argv]
    proc = subprocess.Popen(cmd, env=env)
    old = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))  # torchrun passes it on
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # the ranks got the Ctrl-C too: they checkpoint and stop; wait for them
                continue
    finally:
        signal.signal(signal.SIGTERM, old)
