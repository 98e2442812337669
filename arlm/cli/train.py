"""``arlm train``: its flags (the family table's, :mod:`.flags`), then :func:`arlm.train` or a resume,
and the report of the val metrics."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import ArlmError
from . import flags
from .common import DOCUMENTS_HELP, JSON_HELP, fmt_metrics, positive_int, print_json, train_seed
from .launch import start_distributed


def add_parser(sub, only: str | None = None) -> None:
    """``only``: list the flags of that family alone (``arlm train --model X --help``)."""
    t = sub.add_parser("train", help="train a model on a text file (the built-in corpus when DATA is omitted)",
                       description="Train a model on a text file and report its val metrics.")
    t.add_argument("data", nargs="?", metavar="DATA",
                   help="UTF-8 text file, or a token directory from arlm tokenize, to train on "
                        "(default: the built-in corpus, Python's pydoc topics)")
    t.add_argument("--model", default="ngram",
                   help="ngram | lstm | gpt | cache (an n-gram of the document read so far; for mixtures) | cm "
                        "(context mixing, PAQ-style: adaptive, for compression)")
    t.add_argument("--vocab", default="char", choices=["char", "byte", "bpe", "word"],
                   help="vocabulary: the characters of the text, the 256 bytes, byte-level BPE, or whitespace-separated "
                        "words with <unk> (n-grams; probabilities over word sequences, not exact strings)")
    t.add_argument("--vocab-size", type=positive_int, default=None,
                   help="BPE vocabulary size, specials included (default: 1024); word: keep the most frequent words "
                        "(default: all)")
    t.add_argument("--documents", default="file", choices=["lines", "file"], help=DOCUMENTS_HELP)
    t.add_argument("--val-file", default=None, metavar="FILE",
                   help="val text (default: split off the last --val-fraction of DATA)")
    t.add_argument("--val-fraction", type=float, default=None,
                   help="share of DATA held out as val when no --val-file (default: 0.1)")
    t.add_argument("--seed", type=train_seed, default=1337,
                   help="seed of the train/val split and of training (0 .. 2**32-1)")
    t.add_argument("--out", default=None, metavar="DIR", help="model directory to write (default: runs/MODEL-VOCAB)")
    t.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the interrupted neural run in DIR (default: start a new run)")
    t.add_argument("--json", action="store_true", help=JSON_HELP)
    flags.add_family_flags(t, only)
    t.add_argument("--keep-data", action=argparse.BooleanOptionalAction, default=True,
                   help="keep training_data.safetensors, the encoded train/val token ids that only --resume reads")
    t.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train with N processes on this machine (DDP, started through torchrun; the --batch-size "
                        "is the global batch, split among them) (default: one process)")
    t.set_defaults(func=run)


def run(args) -> None:
    if args.resume is not None and getattr(args, "given_flags", None) is not None:
        check_resume_flags(args.given_flags, Path(args.resume), args.out)  # before --nproc launches anything
    main_rank = start_distributed(args).is_main  # --nproc: runs torchrun; under torchrun: joins the process group
    if args.resume is not None:
        _resume(args, main_rank)
        return
    flags.check_apply(args)
    from ..models.registry import family
    from ..pipeline import train

    fam = family(args.model)
    t0 = time.time()
    lm = train(args.data, args.model, args.vocab, args.out, documents=args.documents, val_file=args.val_file,
               val_fraction=args.val_fraction, seed=args.seed, vocab_size=args.vocab_size, force=args.force,
               keep_data=args.keep_data, progress=not args.json, cli_names=True, **flags.given(args, fam))
    if lm is None:  # a DDP process other than rank 0
        return
    done = lm.trained
    if done.token_dir:
        if fam.trains == "gradient":
            _report_token_training(done.out, args)
        else:
            _report_token_ngram(lm, done, args)
        return
    if not args.json and fam.trains != "gradient":
        print(f"trained {args.model} in {time.time() - t0:.1f} s -> {done.out}", file=sys.stderr)
    _report_training(done.out, done.split, args, done.val)


#: Flags that may come with ``--resume`` besides the training settings marked ``resume``.
_RESUME_CLI = ("resume", "json", "nproc")


def check_resume_flags(typed, out_dir: Path, out: str | None = None) -> None:
    """Refuse flags typed with ``--resume`` that would change the run (data, model, vocab, optimiser...).

    Raises:
        ArlmError: one line naming every refused flag.
    """
    from ..training.run import RESUMABLE

    refused = set(typed) - set(RESUMABLE) - set(_RESUME_CLI)
    if "out" in refused and out is not None and Path(out).resolve() == Path(out_dir).resolve():
        refused.discard("out")
    if refused:
        names = sorted("DATA" if d == "data" else flags.flag(d) for d in refused)
        may = ", ".join(flags.flag(n) for n in (*RESUMABLE, "nproc"))
        raise ArlmError(
            f"--resume continues the run in {out_dir} with its own data and settings; {', '.join(names)} cannot "
            f"change on resume (only {may} may): drop {'it' if len(names) == 1 else 'them'}, or train a new run into "
            "another --out"
        )


def _resume(args, main_rank: bool) -> None:
    from .. import checkpoint
    from ..pipeline import load_split
    from ..training.run import RESUMABLE, resume

    out = Path(args.resume)
    if getattr(args, "given_flags", None) is not None:
        check_resume_flags(args.given_flags, out, args.out)
    resume(out, **{n: getattr(args, n) for n in RESUMABLE if getattr(args, n, None) is not None})
    if not main_rank:
        return
    cfg = checkpoint.read_config(out)
    if cfg.get("token_dir"):
        _report_token_training(out, args)
        return
    sp = cfg.get("split", {})
    split = load_split(cfg.get("data_path"), cfg.get("documents", "file"), sp.get("val_file"),
                       sp.get("val_fraction", 0.1), sp.get("seed", 1337))
    _report_training(out, split, args)


def _report_training(out: Path, split, args, val_metrics: dict | None = None) -> None:
    from ..lm import LM

    lm = LM.load(out)
    result = {"model_dir": str(out), "family": lm.model.family, "vocab": lm.vocab.kind,
              "num_parameters": lm.model.num_parameters(), "refit_on_val": bool(lm.info.get("refit_on_val"))}
    if val_metrics is not None:
        result["val"] = val_metrics
    elif split is not None and split.val_docs:
        result["val"] = lm.evaluate(split.val_text, split.documents)
    if args.json:
        print_json(result)
    elif "val" in result:
        print(f"val: {fmt_metrics(result['val'])}")
        where = f"val bits_per_char {result['val']['bits_per_char']:.4f} on {_val_description(split)}"
        if result["refit_on_val"]:
            print(f"model in {out}, refitted on train and val together (--no-refit keeps val out): {where}, "
                  "scored before the refit")
        else:
            print(f"model in {out}: {where}")
    else:
        print(f"model in {out}; no val text (val fraction 0): nothing to report")


def _val_description(split) -> str:
    """What the val figure was measured on, in words."""
    n = len(split.val_text)
    if split.val_is_file:
        return f"the --val-file text ({n:,} characters)"
    if split.documents == "file":
        return f"the held-out end of {split.source} ({n:,} characters)"
    return f"{len(split.val_docs):,} held-out documents of {split.source} ({n:,} characters)"


def _report_token_training(out: Path, args) -> None:
    """After training from a token directory: the loop's val estimate (the val text is not held as text)."""
    from .. import checkpoint

    cfg = checkpoint.read_config(out)
    best = (cfg.get("training") or {}).get("best_val_loss")
    if args.json:
        print_json({"model_dir": str(out), "family": cfg["family"], "vocab": cfg.get("vocab"),
                     "best_val_loss": best, "training": cfg.get("training")})
    elif best is not None:
        print(f"val: mean_nll {best:.4f} nats/token (estimated over --eval-iters batches; "
              f"`arlm eval {out} FILE` scores a text exactly)")
    else:
        print("no val tokens (val fraction 0): nothing to report")


def _report_token_ngram(lm, done, args) -> None:
    """After counting an n-gram from a token directory (or within ``--memory``)."""
    stats = done.counting or {}
    if not args.json:
        runs = f", {max(stats['runs'])} sorted runs per order spilled" if stats.get("runs") else ""
        print(f"trained ngram in {done.seconds:.1f} s{runs} -> {done.out}", file=sys.stderr)
    result = {"model_dir": str(done.out), "family": "ngram", "vocab": lm.vocab.kind,
              "num_parameters": lm.model.num_parameters(), "counting": done.counting}
    if done.val is not None:
        result["val"] = done.val
    if args.json:
        print_json(result)
    elif done.val is not None:
        print(f"val: {fmt_metrics(done.val)}")
    else:
        print("fitted on all of DATA; no val text (give --val-file to score one)")
