"""The ``arlm`` command line: train, eval, score, sample, demo (and later mix, compare).

It only composes the modules below it. Bad input ends with one line on stderr
(``arlm: error: …``) and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import stat
import sys
import time
import warnings
from pathlib import Path

from .errors import ArlmError

LN2 = math.log(2.0)
NEURAL = ("gpt", "lstm")


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _fmt_metrics(m: dict) -> str:
    return (
        f"bits_per_char {m['bits_per_char']:.4f}  bits_per_byte {m['bits_per_byte']:.4f}  "
        f"mean_nll {m['mean_nll']:.4f} nats/token  perplexity {m['perplexity']:.3f}  "
        f"(nll {m['nll']:.1f} nats over {m['n_tokens']} tokens, {m['n_chars']} chars, {m['n_documents']} documents)"
    )


# -- commands ---------------------------------------------------------------------------
def cmd_train(args) -> None:
    from . import checkpoint
    from .pipeline import load_split, split_meta, train_ngram
    from .vocab import train_vocab

    if args.resume is not None:
        from .train import cli_resume

        out = Path(args.resume)
        cli_resume(args, out)
        cfg = checkpoint.read_config(out)
        sp = cfg.get("split", {})
        split = load_split(cfg.get("data_path"), cfg.get("documents", "file"), sp.get("val_file"),
                           sp.get("val_fraction", 0.1), sp.get("seed", 1337))
        _report_training(out, split, args)
        return
    split = load_split(args.data, args.documents, args.val_file, args.val_fraction, args.seed)
    out = Path(args.out or f"runs/{args.model}-{args.vocab}")
    meta = split_meta(split, args.val_file, args.val_fraction, args.seed)
    meta["data_path"] = None if args.data is None else str(Path(args.data).resolve())
    if args.val_file is not None:
        meta["split"]["val_file"] = str(Path(args.val_file).resolve())
    t0 = time.time()
    val_metrics = None
    if args.model == "ngram":
        _, val_metrics = train_ngram(split, out, order=args.order, vocab=args.vocab, vocab_size=args.vocab_size,
                                     meta=meta, refit=not args.no_refit)
    elif args.model == "cache":
        from .pipeline import make_cache

        _, val_metrics = make_cache(split, out, order=args.order, vocab=args.vocab, vocab_size=args.vocab_size, meta=meta)
    elif args.model in NEURAL:
        from .train import cli_train

        checkpoint.prepare_dir(out)
        vocab = train_vocab(args.vocab, split.train_docs, args.vocab_size)
        cli_train(args, args.model, vocab, split.train_docs, split.val_docs, split.documents, out, meta)
    else:
        from .models.registry import get_family

        get_family(args.model)
        raise ArlmError(f"`arlm train` cannot train a {args.model!r} model; use `arlm mix` for mixtures")
    if not args.json and args.model not in NEURAL:
        print(f"trained {args.model} in {time.time() - t0:.1f} s -> {out}", file=sys.stderr)
    _report_training(out, split, args, val_metrics)


def _report_training(out: Path, split, args, val_metrics: dict | None = None) -> None:
    from .lm import LM

    lm = LM.load(out)
    result = {"model_dir": str(out), "family": lm.model.family, "vocab": lm.vocab.kind,
              "num_parameters": lm.model.num_parameters(), "refit_on_val": bool(lm.info.get("refit_on_val"))}
    if val_metrics is not None:
        result["val"] = val_metrics
    elif split is not None and split.val_docs:
        result["val"] = lm.evaluate(split.val_text, split.documents)
    if args.json:
        _print_json(result)
    elif "val" in result:
        print(f"val: {_fmt_metrics(result['val'])}")
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


def cmd_eval(args) -> None:
    from .corpus import read_text
    from .lm import LM

    lm = LM.load(args.model_dir)
    text = read_text(args.file)
    m = lm.evaluate(text, args.documents, stride=args.stride)
    if args.json:
        _print_json(m)
    else:
        print(_fmt_metrics(m))


def cmd_score(args) -> None:
    from .lm import LM

    lm = LM.load(args.model_dir)
    result: dict = {"text": args.text}
    if args.given is not None:
        lp = lm.conditional_log_prob(args.text, given=args.given)
        result.update(given=args.given, conditional=True)
    else:
        lp = lm.log_prob(args.text, eos=not args.no_eos)
        result.update(eos=not args.no_eos)
    result.update(log_prob=lp, log2_prob=lp / LN2)
    if args.per_token:
        if args.given is not None:
            raise ArlmError("--per-token cannot be combined with --given")
        result["token_logprobs"] = [{"token": t, "logprob": v} for t, v in lm.token_logprobs(args.text, eos=not args.no_eos)]
    if args.json:
        _print_json(result)
        return
    what = f"log p({args.text!r} | {args.given!r})" if args.given is not None else f"log p({args.text!r}{'' if args.no_eos else ' <eos>'})"
    print(f"{what} = {lp:.6f} nats = {lp / LN2:.6f} bits")
    for row in result.get("token_logprobs", []):
        print(f"  {row['token']!r:>10}  {row['logprob']:10.6f}")


def cmd_sample(args) -> None:
    from .lm import LM

    lm = LM.load(args.model_dir)
    if args.device:
        lm.to(_device(args.device))
    stop = [_unescape(x) for x in args.stop] if args.stop else None
    samples = lm.generate(args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=stop,
                          num_samples=args.num_samples)
    samples = samples if isinstance(samples, list) else [samples]
    if args.json:
        _print_json([{"prompt": args.prompt, "completion": s.text, "text": args.prompt + s.text,
                      "finish_reason": s.finish_reason, "n_tokens": len(s.token_ids)} for s in samples])
        return
    for i, s in enumerate(samples):
        print(_sample_header(i, len(samples), s))
        print(args.prompt + s.text)


def _sample_header(i: int, n: int, s) -> str:
    """``--- sample 1 of 3 (stop, 37 new tokens) ---``: the line above each sample's text."""
    k = len(s.token_ids)
    return f"--- sample {i + 1} of {n} ({s.finish_reason}, {k} new token{'' if k == 1 else 's'}) ---"


def cmd_split(args) -> None:
    from .corpus import read_text, train_val_split
    from .io import atomic_write_text

    text = read_text(args.data)
    train, val = train_val_split(text, args.documents, args.val_fraction, args.seed)
    if args.documents == "file":
        train_text, val_text = train[0], (val[0] if val else "")
    else:
        train_text, val_text = "".join(d + "\n" for d in train), "".join(d + "\n" for d in val)
    for path in (args.train_out, args.val_out):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(Path(args.data).stat().st_mode)  # the outputs are readable by whoever reads the input
    atomic_write_text(args.train_out, train_text, mode=mode)
    atomic_write_text(args.val_out, val_text, mode=mode)
    print(f"{args.train_out}: {len(train_text):,} characters; {args.val_out}: {len(val_text):,} characters")


def cmd_mix(args) -> None:
    from .corpus import read_text
    from .lm import LM
    from .models.mixture import build_mixture

    lms = [LM.load(d) for d in args.model_dirs]
    documents = args.documents or lms[0].documents
    t0 = time.time()
    if (args.fit_on is None) == (args.weights_from is None):
        raise ArlmError("give exactly one of --fit-on FILE (fit the weights by EM) and --weights-from DIR")
    if args.fit_on is not None:
        lm, history = build_mixture(lms, read_text(args.fit_on), documents, bucketed=args.bucketed)
        source = {"fit_on": str(args.fit_on)}
    else:
        from .models.mixture import reuse_weights

        lm, history = reuse_weights(lms, LM.load(args.weights_from), documents)
        source = {"weights_from": str(args.weights_from)}
        args.bucketed = bool(lm.model.config.bucket_components)
    lm.model.embed_components = args.embed
    lm.save(args.out, {"mixture_fit_nll_history": history, **source,
                       "component_sources": [str(d) for d in args.model_dirs]})
    w = lm.model.weights
    mean_w = w.mean(0).tolist()
    fit_nll = getattr(lm.model, "fit_component_mean_nll", None)
    components = [{"model_dir": str(d), "family": c.model.family, "weight": mean_w[k],
                   **({"fit_mean_nll": fit_nll[k]} if fit_nll else {})}
                  for k, (d, c) in enumerate(zip(args.model_dirs, lms))]
    result = {"model_dir": str(args.out), "components": components,
              "weights": w.tolist() if args.bucketed else w[0].tolist(),
              "embedded": bool(args.embed), "em_iterations": max(len(history) - 1, 0), "seconds": time.time() - t0}
    if history:
        result.update(fit_mean_nll_before=-history[0], fit_mean_nll_after=-history[-1])
    if args.json:
        _print_json(result)
        return
    stored = "copied into it" if args.embed else "referenced by relative path; keep them beside it"
    print(f"mixture of {len(lms)} models -> {args.out} (components {stored}; "
          f"{result['em_iterations']} EM iterations, {result['seconds']:.1f} s)")
    wname = f"mean weight over {w.shape[0]} buckets" if args.bucketed else "weight"
    score = f"mean_nll on {args.fit_on} (nats/token)" if fit_nll else ""
    rows = [[wname, "family", score, "model directory"]]
    rows += [[f"{c['weight']:.4f}", c["family"], f"{c['fit_mean_nll']:.4f}" if fit_nll else "", c["model_dir"]]
             for c in components]
    if history:
        rows.append(["", "mixture", f"{result['fit_mean_nll_after']:.4f}", str(args.out)])
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  " + "  ".join(x.ljust(n) if i % 2 else x.rjust(n) for i, (x, n) in enumerate(zip(r, widths))).rstrip())
    if history:
        print(f"(uniform weights: {result['fit_mean_nll_before']:.4f} nats/token on the same text)")
    else:
        print(f"weights copied from {args.weights_from}")


def cmd_compare(args) -> None:
    from .compare import parse_model_specs, run_compare, terminal_table
    from .train import parse_duration

    specs = parse_model_specs(args.models)
    vocabs = [v.strip() for v in args.vocab.split(",") if v.strip()]
    for v in vocabs:
        if v not in ("char", "byte", "bpe"):
            raise ArlmError(f"unknown vocab {v!r} in --vocab: choose from char, byte, bpe")
    log = (lambda *a: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    result = run_compare(args.data, specs, vocabs, parse_duration(args.max_time), Path(args.out), args.documents,
                         args.val_file, args.val_fraction, args.seed, args.mix, args.vocab_size, log=log)
    if args.json:
        _print_json(result)
        return
    print(terminal_table(result["rows"]))
    print()
    print((Path(args.out) / "compare.md").read_text(), end="")
    print(f"wrote {args.out}/compare.json, compare.md, compare.png")


def _unescape(text: str) -> str:
    """``\\n``, ``\\t``, ``\\r`` and ``\\\\`` typed on a command line -> the characters."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "ntr\\":
            out.append({"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _device(name: str):
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def cmd_demo(args) -> None:
    from .pipeline import load_split, split_meta, train_ngram

    t0 = time.time()
    split = load_split(None, "file", None, 0.1, 1337)
    out = Path(args.out)
    print(f"built-in corpus: Python's pydoc topics, {sum(map(len, split.train_docs)):,} train / "
          f"{len(split.val_text):,} val characters")
    lm, m = train_ngram(split, out, order=args.order, vocab="char", meta=split_meta(split, None, 0.1, 1337),
                        refit=False)
    print(f"trained a char {args.order}-gram (interpolated modified Kneser-Ney) in {time.time() - t0:.1f} s -> {out}")
    print(f"val: {_fmt_metrics(m)}")
    for i, s in enumerate(lm.generate("", max_new_tokens=240, temperature=0.8, seed=args.seed, num_samples=3)):
        print(_sample_header(i, 3, s))
        print(s.text)
    print(f"--- next: .venv/bin/arlm sample {out} --prompt 'The ' ; .venv/bin/arlm score {out} 'import os' ---")


# -- parser ----------------------------------------------------------------------------
def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, except where there is none to show:
    flags (off unless given), required options, and None defaults, whose help
    says in words what happens without the option."""

    def _get_help_string(self, action):
        h = action.help or ""
        if (action.default is None or action.default is False or action.required
                or action.default is argparse.SUPPRESS or "default" in h):
            return h
        if action.default == "":
            return h + " (default: empty)"
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), like every other bad input; help with defaults."""

    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*a, **kw)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


DOCUMENTS_HELP = "lines: each non-empty line is a document; file: the whole file is one document"
JSON_HELP = "print the result as JSON on stdout instead of text"


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="arlm", description="Autoregressive language models with exact probabilities.")
    p.add_argument("--version", action="version", version=f"arlm {__version__}", help="print arlm's version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model on a text file (the built-in corpus when DATA is omitted)",
                       description="Train a model on a text file and report its val metrics.")
    t.add_argument("data", nargs="?", metavar="DATA",
                   help="UTF-8 text file to train on (default: the built-in corpus, Python's pydoc topics)")
    t.add_argument("--model", default="ngram",
                   help="ngram | lstm | gpt | cache (an n-gram of the document read so far; for mixtures)")
    t.add_argument("--order", type=int, default=5, help="n-gram or cache order (tokens of context + 1), 1..10")
    t.add_argument("--vocab", default="char", choices=["char", "byte", "bpe"],
                   help="vocabulary: the characters of the text, the 256 bytes, or byte-level BPE")
    t.add_argument("--vocab-size", type=_positive_int, default=None,
                   help="BPE vocabulary size, specials included (default: 1024)")
    t.add_argument("--documents", default="file", choices=["lines", "file"], help=DOCUMENTS_HELP)
    t.add_argument("--val-file", default=None, metavar="FILE",
                   help="val text (default: split off the last --val-fraction of DATA)")
    t.add_argument("--val-fraction", type=float, default=0.1, help="share of DATA held out as val when no --val-file")
    t.add_argument("--seed", type=int, default=1337, help="seed of the train/val split and of training")
    t.add_argument("--out", default=None, metavar="DIR", help="model directory to write (default: runs/MODEL-VOCAB)")
    t.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the interrupted neural run in DIR (default: start a new run)")
    t.add_argument("--no-refit", action="store_true",
                   help="n-gram: keep the val split out of the saved model (without it the model is refitted "
                        "on all of DATA after val is scored)")
    t.add_argument("--json", action="store_true", help=JSON_HELP)
    try:
        from .train import add_train_arguments
    except ImportError:  # the neural training loop is optional at import time
        add_train_arguments = None
    if add_train_arguments is not None:
        add_train_arguments(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="NLL, bits per char and perplexity of a text file",
                       description="Score a whole text file: nll, mean_nll, bits per char and byte, perplexity.")
    e.add_argument("model_dir", metavar="DIR", help="model directory (written by arlm train or arlm mix)")
    e.add_argument("file", metavar="FILE", help="UTF-8 text file to score")
    e.add_argument("--documents", default=None, choices=["lines", "file"],
                   help=DOCUMENTS_HELP + " (default: the mode the model was trained with)")
    e.add_argument("--stride", type=_positive_int, default=None,
                   help="sliding-window stride in tokens for models with a block_size (default: half the window)")
    e.add_argument("--json", action="store_true", help=JSON_HELP)
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("score", help="log p(TEXT) or log p(TEXT | PREFIX)",
                       description="Log-probability of one string, in nats and bits.")
    s.add_argument("model_dir", metavar="DIR", help="model directory (written by arlm train or arlm mix)")
    s.add_argument("text", metavar="TEXT", help="the string to score (as typed; no escapes are read)")
    s.add_argument("--given", default=None, metavar="PREFIX",
                   help="score TEXT as a completion of PREFIX (default: score TEXT as a whole document)")
    s.add_argument("--no-eos", action="store_true", help="prefix probability: leave out the <eos> term")
    s.add_argument("--per-token", action="store_true", help="list every token's log-probability")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(func=cmd_score)

    g = sub.add_parser("sample", help="draw samples, unconditionally or as completions of --prompt",
                       description="Draw samples. Text output prints each sample as PROMPT followed by the "
                                   "completion, under a header line with its finish reason (stop: <eos> or a stop "
                                   "string; length: --max-new-tokens). --json gives prompt, completion, text "
                                   "(prompt + completion) and finish_reason as separate fields.")
    g.add_argument("model_dir", metavar="DIR", help="model directory (written by arlm train or arlm mix)")
    g.add_argument("--prompt", default="", help="text the samples continue (empty: unconditional samples)")
    g.add_argument("--num-samples", type=_positive_int, default=1, help="number of samples, drawn one after another")
    g.add_argument("--max-new-tokens", type=int, default=200, help="stop a sample after this many new tokens")
    g.add_argument("--temperature", type=float, default=1.0, help="divide the logits by this; 0 is greedy argmax")
    g.add_argument("--top-k", type=int, default=None,
                   help="keep only the k most probable tokens (default: off, every token is kept)")
    g.add_argument("--top-p", type=float, default=1.0,
                   help="keep the smallest set of most probable tokens with mass >= p (1.0: off)")
    g.add_argument("--seed", type=int, default=0, help="seed of the sampler: the same seed gives the same samples")
    g.add_argument("--stop", action="append", default=None, metavar="STR",
                   help="stop string, repeatable; \\n, \\t, \\r are read as newline, tab, return (default: none)")
    g.add_argument("--device", default=None,
                   help="auto | cpu | cuda | mps (default: cpu; auto picks cuda when available)")
    g.add_argument("--json", action="store_true", help=JSON_HELP)
    g.set_defaults(func=cmd_sample)

    sp = sub.add_parser("split", help="write the train/val split that `arlm train` would make, as two files",
                        description="Write the train/val split that `arlm train` would make, as two files "
                                    "with the input file's permissions.")
    sp.add_argument("data", metavar="DATA", help="UTF-8 text file to split")
    sp.add_argument("--documents", default="file", choices=["lines", "file"], help=DOCUMENTS_HELP)
    sp.add_argument("--val-fraction", type=float, default=0.1, help="share of DATA that goes to val")
    sp.add_argument("--seed", type=int, default=1337, help="seed of the shuffle (lines mode)")
    sp.add_argument("--train-out", required=True, metavar="FILE", help="where to write the train part")
    sp.add_argument("--val-out", required=True, metavar="FILE", help="where to write the val part")
    sp.set_defaults(func=cmd_split)

    x = sub.add_parser("mix", help="interpolate models that share a vocab, weights fitted by EM on held-out text",
                       description="Interpolate models that share a vocab. The mixture directory refers to its "
                                   "components by relative path (keep them together when moving them) unless "
                                   "--embed copies them in.")
    x.add_argument("model_dirs", nargs="+", metavar="DIR", help="component model directories (same vocab)")
    x.add_argument("--fit-on", default=None, metavar="FILE",
                   help="held-out text to fit the weights on by EM, never your test text (default: none; give exactly "
                        "one of --fit-on and --weights-from)")
    x.add_argument("--weights-from", default=None, metavar="DIR",
                   help="reuse the weights of a mixture fitted before (same families and vocab), e.g. after "
                        "retraining its components on all the data (default: none)")
    x.add_argument("--out", required=True, metavar="DIR", help="mixture directory to write")
    x.add_argument("--documents", default=None, choices=["lines", "file"],
                   help=DOCUMENTS_HELP + " (default: the first model's mode)")
    x.add_argument("--bucketed", action="store_true",
                   help="context-dependent weights, bucketed by the first n-gram component's context")
    x.add_argument("--embed", action="store_true",
                   help="copy the components into the mixture directory (without it they are referenced "
                        "by relative path, using no extra disk)")
    x.add_argument("--json", action="store_true", help=JSON_HELP)
    x.set_defaults(func=cmd_mix)

    c = sub.add_parser("compare", help="train several models on one split and budget; table, JSON and plot",
                       description="Train several models on one split with one time budget, score them on the "
                                   "same val text, and write compare.json, compare.md and compare.png.")
    c.add_argument("data", nargs="?", metavar="DATA",
                   help="UTF-8 text file (default: the built-in corpus, Python's pydoc topics)")
    c.add_argument("--models", default="ngram:7,lstm,gpt", help="comma list of ngram:ORDER, cache:ORDER, lstm, gpt")
    c.add_argument("--vocab", default="char", help="comma list of char, byte, bpe")
    c.add_argument("--vocab-size", type=_positive_int, default=None,
                   help="BPE vocabulary size, specials included (default: 1024)")
    c.add_argument("--max-time", default="2m", help="training budget per neural model (e.g. 90s, 2m)")
    c.add_argument("--mix", action="store_true", help="also fit a mixture of the models on a dev part of train")
    c.add_argument("--documents", default="file", choices=["lines", "file"], help=DOCUMENTS_HELP)
    c.add_argument("--val-file", default=None, metavar="FILE",
                   help="val text (default: split off the last --val-fraction of DATA)")
    c.add_argument("--val-fraction", type=float, default=0.1, help="share of DATA held out as val when no --val-file")
    c.add_argument("--seed", type=int, default=1337, help="seed of the split and of training")
    c.add_argument("--out", default="runs/compare", metavar="DIR", help="directory for the models and the results")
    c.add_argument("--json", action="store_true", help=JSON_HELP)
    c.set_defaults(func=cmd_compare)

    d = sub.add_parser("demo", help="train on the built-in corpus, print val bits per char and samples",
                       description="Train a char n-gram on the built-in corpus, print val bits per char and samples.")
    d.add_argument("--out", default="runs/demo", metavar="DIR", help="model directory to write")
    d.add_argument("--order", type=int, default=6, help="n-gram order, 1..10")
    d.add_argument("--seed", type=int, default=0, help="seed of the samples")
    d.set_defaults(func=cmd_demo)
    return p


def _inference_threads() -> None:
    """Use only the idle cores: PyTorch's one-thread-per-core default collapses
    when another process keeps a core busy (see arlm.train.default_threads)."""
    import torch

    from .train import default_threads

    torch.set_num_threads(default_threads())


@contextlib.contextmanager
def _warnings_as_lines():
    """Python warnings raised by any command -> one ``arlm: warning: …`` line each on stderr,
    printed once (the same text from several models counts once) when the command ends."""
    with warnings.catch_warnings(record=True) as caught:
        try:
            yield
        finally:
            for text in dict.fromkeys(str(w.message) for w in caught):
                print(f"arlm: warning: {text}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "train":
        _inference_threads()
    try:
        with _warnings_as_lines():
            args.func(args)
    except ArlmError as e:
        print(f"arlm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("arlm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
