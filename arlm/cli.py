"""The ``arlm`` command line: train, eval, score, sample, demo (and later mix, compare).

It only composes the modules below it. Bad input ends with one line on stderr
(``arlm: error: …``) and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
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
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, val_metrics = train_ngram(split, out, order=args.order, vocab=args.vocab, vocab_size=args.vocab_size,
                                         meta=meta, refit=not args.no_refit)
        for w in {str(w.message) for w in caught}:
            print(f"arlm: warning: {w}", file=sys.stderr)
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
        if result["refit_on_val"]:
            print("(val scored before the final refit: the saved n-gram model is fitted on train and val together; "
                  "--no-refit keeps val held out)")
    else:
        print("no val text (val fraction 0): nothing to report")


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
        _print_json([{"prompt": args.prompt, "text": s.text, "finish_reason": s.finish_reason,
                      "n_tokens": len(s.token_ids)} for s in samples])
        return
    for i, s in enumerate(samples):
        if len(samples) > 1:
            print(f"--- sample {i + 1} ({s.finish_reason}) ---")
        print(args.prompt + s.text)


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
    atomic_write_text(args.train_out, train_text)
    atomic_write_text(args.val_out, val_text)
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
    lm.save(args.out, {"mixture_fit_nll_history": history, **source,
                       "component_sources": [str(d) for d in args.model_dirs]})
    w = lm.model.weights
    result = {"model_dir": str(args.out), "weights": w.tolist() if args.bucketed else w[0].tolist(),
              "em_iterations": max(len(history) - 1, 0), "seconds": time.time() - t0}
    if history:
        result.update(fit_mean_nll_before=-history[0], fit_mean_nll_after=-history[-1])
    if args.json:
        _print_json(result)
        return
    print(f"mixture of {len(lms)} models -> {args.out} ({result['em_iterations']} EM iterations, {result['seconds']:.1f} s)")
    if args.bucketed:
        print(f"context-dependent weights in {w.shape[0]} buckets; mean weights {[round(x, 4) for x in w.mean(0).tolist()]}")
    else:
        print(f"weights {[round(x, 4) for x in result['weights']]}")
    if history:
        print(f"fit text mean_nll {result['fit_mean_nll_before']:.4f} (uniform weights) -> "
              f"{result['fit_mean_nll_after']:.4f} nats/token")
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm, m = train_ngram(split, out, order=args.order, vocab="char", meta=split_meta(split, None, 0.1, 1337),
                            refit=False)
    print(f"trained a char {args.order}-gram (interpolated modified Kneser-Ney) in {time.time() - t0:.1f} s -> {out}")
    print(f"val: {_fmt_metrics(m)}")
    for i, s in enumerate(lm.generate("", max_new_tokens=240, temperature=0.8, seed=args.seed, num_samples=3)):
        print(f"--- sample {i + 1} ({s.finish_reason}) ---")
        print(s.text)
    print(f"--- next: .venv/bin/arlm sample {out} --prompt 'The ' ; .venv/bin/arlm score {out} 'import os' ---")


def _add_compress_parsers(sub) -> None:
    z = sub.add_parser("compress", help="compress a text file losslessly with a model (range coding of its probabilities)")
    z.add_argument("model_dir", metavar="DIR", help="model directory")
    z.add_argument("input", metavar="IN", help="UTF-8 text file to compress (may be empty)")
    z.add_argument("output", metavar="OUT", help="compressed file to write")
    z.add_argument("--documents", default=None, choices=["lines", "file"],
                   help="document mode (default: the one the model was trained with)")
    z.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    z.add_argument("--json", action="store_true", help="print the result as JSON")
    z.set_defaults(func=_cmd_compress)
    u = sub.add_parser("decompress", help="restore a file made by `arlm compress` (needs the same model)")
    u.add_argument("model_dir", metavar="DIR", help="model directory the file was compressed with")
    u.add_argument("input", metavar="IN", help="compressed file")
    u.add_argument("output", metavar="OUT", help="text file to write")
    u.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    u.add_argument("--json", action="store_true", help="print the result as JSON")
    u.set_defaults(func=_cmd_decompress)


def _cmd_compress(args) -> None:
    from .coding import compress_file

    st = compress_file(args.model_dir, args.input, args.output, args.documents, progress=not args.no_progress)
    if args.json:
        _print_json(st)
        return
    ideal = math.ceil(st["nll_bits"] / 8)
    print(f"{args.input}: {st['n_bytes']:,} bytes -> {args.output}: {st['compressed_bytes']:,} bytes "
          f"({st['bits_per_char']:.4f} bits/char; model -log2 p = {st['nll_bits']:.1f} bits = {ideal:,} bytes; "
          f"{st['n_bytes'] / 1024 / max(st['seconds'], 1e-9):.1f} KB/s)")


def _cmd_decompress(args) -> None:
    from .coding import decompress_file

    st = decompress_file(args.model_dir, args.input, args.output, progress=not args.no_progress)
    if args.json:
        _print_json(st)
        return
    print(f"{args.input} -> {args.output}: {st['n_bytes']:,} bytes "
          f"({st['n_bytes'] / 1024 / max(st['seconds'], 1e-9):.1f} KB/s)")


def _add_mixer_parser(sub) -> None:
    m = sub.add_parser("mixer", help="combine models with an online gated mixer that keeps learning while it reads")
    m.add_argument("model_dirs", nargs="+", metavar="DIR", help="component model directories (one vocab)")
    m.add_argument("--out", required=True, metavar="DIR", help="mixer model directory to write")
    m.add_argument("--select", default="", metavar="K,...",
                   help="indices of n-gram/cache components whose context selects the weight set (empty: one set)")
    m.add_argument("--learning-rate", type=float, default=0.002, help="step size of the online weight update")
    m.add_argument("--prime-on", default=None, metavar="FILE",
                   help="held-out text the mixer reads once to learn its initial weights (never your test text)")
    m.add_argument("--documents", default=None, choices=["lines", "file"],
                   help="document mode (default: the first model's)")
    m.set_defaults(func=_cmd_mixer)


def _cmd_mixer(args) -> None:
    from .corpus import read_text
    from .lm import LM
    from .models.mixer import build_mixer

    lms = [LM.load(d) for d in args.model_dirs]
    try:
        select = [int(x) for x in args.select.split(",") if x.strip()]
    except ValueError:
        raise ArlmError(f"--select takes comma-separated component indices, got {args.select!r}") from None
    t0 = time.time()
    documents = args.documents or lms[0].documents
    prime = read_text(args.prime_on) if args.prime_on else None
    lm = build_mixer(lms, select, args.learning_rate, prime, documents)
    lm.save(args.out, {"component_sources": [str(d) for d in args.model_dirs],
                       "prime_on": None if args.prime_on is None else str(args.prime_on)})
    print(f"mixer of {len(lms)} models, {lm.model.n_sets} weight sets -> {args.out} ({time.time() - t0:.1f} s)")


def _add_dyneval_parser(sub) -> None:
    v = sub.add_parser("dyneval", help="wrap a neural model with dynamic evaluation (it keeps training on what it reads)")
    v.add_argument("model_dir", metavar="DIR", help="trained lstm or gpt model directory")
    v.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    v.add_argument("--chunk-size", type=_positive_int, default=50, help="tokens predicted between two updates")
    v.add_argument("--learning-rate", type=float, default=0.01, help="SGD step size of each update")
    v.add_argument("--decay", type=float, default=0.0, help="pull of the weights back toward the trained ones per update")
    v.add_argument("--steps", type=_positive_int, default=1, help="gradient steps per chunk")
    v.set_defaults(func=_cmd_dyneval)


def _cmd_dyneval(args) -> None:
    from .lm import LM
    from .models.dyneval import DynEvalConfig, DynEvalModel

    lm = LM.load(args.model_dir)
    v = lm.vocab
    cfg = DynEvalConfig(v.vocab_size, v.bos_id, v.eos_id, lm.model.family, args.chunk_size, args.learning_rate,
                        args.decay, args.steps)
    LM(DynEvalModel(cfg, lm.model).eval(), v, lm.documents).save(args.out, {"base_source": str(args.model_dir)})
    print(f"dynamic evaluation of {args.model_dir} -> {args.out}")


# -- parser ----------------------------------------------------------------------------
def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="arlm", description="Autoregressive language models with exact probabilities.")
    p.add_argument("--version", action="version", version=f"arlm {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model on a text file (the built-in corpus when DATA is omitted)")
    t.add_argument("data", nargs="?", metavar="DATA", help="UTF-8 text file (default: the built-in corpus)")
    t.add_argument("--model", default="ngram",
                   help="ngram | lstm | gpt | cache (an n-gram of the document read so far; for mixtures)")
    t.add_argument("--order", type=int, default=5, help="n-gram or cache order, 1..10 (default 5)")
    t.add_argument("--vocab", default="char", choices=["char", "byte", "bpe"], help="vocabulary (default char)")
    t.add_argument("--vocab-size", type=_positive_int, default=None, help="BPE vocabulary size")
    t.add_argument("--documents", default="file", choices=["lines", "file"],
                   help="lines: each non-empty line is a document; file: the whole file is one (default)")
    t.add_argument("--val-file", default=None, help="val text (default: split off --val-fraction of DATA)")
    t.add_argument("--val-fraction", type=float, default=0.1, help="val share when no --val-file (default 0.1)")
    t.add_argument("--seed", type=int, default=1337, help="seed of the split and of training")
    t.add_argument("--out", default=None, help="model directory (default runs/MODEL-VOCAB)")
    t.add_argument("--resume", default=None, metavar="DIR", help="continue an interrupted neural run in DIR")
    t.add_argument("--no-refit", action="store_true",
                   help="n-gram: keep the val split out of the saved model (default: refit on all of DATA after scoring val)")
    t.add_argument("--json", action="store_true", help="print the result as JSON")
    try:
        from .train import add_train_arguments
    except ImportError:  # the neural training loop is optional at import time
        add_train_arguments = None
    if add_train_arguments is not None:
        add_train_arguments(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="NLL, bits per char and perplexity of a text file")
    e.add_argument("model_dir", metavar="DIR")
    e.add_argument("file", metavar="FILE")
    e.add_argument("--documents", default=None, choices=["lines", "file"],
                   help="document mode (default: the one the model was trained with)")
    e.add_argument("--stride", type=_positive_int, default=None, help="sliding-window stride for windowed models")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("score", help="log p(TEXT) or log p(TEXT | PREFIX)")
    s.add_argument("model_dir", metavar="DIR")
    s.add_argument("text", metavar="TEXT")
    s.add_argument("--given", default=None, metavar="PREFIX", help="score TEXT as a completion of PREFIX")
    s.add_argument("--no-eos", action="store_true", help="prefix probability: leave out the <eos> term")
    s.add_argument("--per-token", action="store_true", help="list every token's log-probability")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_score)

    g = sub.add_parser("sample", help="draw samples, unconditionally or as completions of --prompt")
    g.add_argument("model_dir", metavar="DIR")
    g.add_argument("--prompt", default="")
    g.add_argument("--num-samples", type=_positive_int, default=1)
    g.add_argument("--max-new-tokens", type=int, default=200)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--stop", action="append", default=None, metavar="STR", help="stop string (repeatable); \\n, \\t, \\r are read as newline, tab, return")
    g.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=cmd_sample)

    sp = sub.add_parser("split", help="write the train/val split that `arlm train` would make, as two files")
    sp.add_argument("data", metavar="DATA")
    sp.add_argument("--documents", default="file", choices=["lines", "file"])
    sp.add_argument("--val-fraction", type=float, default=0.1)
    sp.add_argument("--seed", type=int, default=1337)
    sp.add_argument("--train-out", required=True, metavar="FILE")
    sp.add_argument("--val-out", required=True, metavar="FILE")
    sp.set_defaults(func=cmd_split)

    x = sub.add_parser("mix", help="interpolate models that share a vocab, weights fitted by EM on held-out text")
    x.add_argument("model_dirs", nargs="+", metavar="DIR")
    x.add_argument("--fit-on", default=None, metavar="FILE", help="held-out text for the weights (never your test text)")
    x.add_argument("--weights-from", default=None, metavar="DIR",
                   help="reuse the weights of a mixture fitted before (same families and vocab), e.g. after "
                        "retraining its components on all the data")
    x.add_argument("--out", required=True, metavar="DIR")
    x.add_argument("--documents", default=None, choices=["lines", "file"])
    x.add_argument("--bucketed", action="store_true",
                   help="context-dependent weights, bucketed by the first n-gram component's context")
    x.add_argument("--json", action="store_true")
    x.set_defaults(func=cmd_mix)

    c = sub.add_parser("compare", help="train several models on one split and budget; table, JSON and plot")
    c.add_argument("data", nargs="?", metavar="DATA")
    c.add_argument("--models", default="ngram:7,lstm,gpt", help="comma list of ngram:ORDER, cache:ORDER, lstm, gpt")
    c.add_argument("--vocab", default="char", help="comma list of char, byte, bpe")
    c.add_argument("--vocab-size", type=_positive_int, default=None, help="BPE vocabulary size")
    c.add_argument("--max-time", default="2m", help="training budget per neural model (e.g. 90s, 2m)")
    c.add_argument("--mix", action="store_true", help="also fit a mixture of the models on a dev part of train")
    c.add_argument("--documents", default="file", choices=["lines", "file"])
    c.add_argument("--val-file", default=None)
    c.add_argument("--val-fraction", type=float, default=0.1)
    c.add_argument("--seed", type=int, default=1337)
    c.add_argument("--out", default="runs/compare")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_compare)

    d = sub.add_parser("demo", help="train on the built-in corpus, print val bits per char and samples")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--order", type=int, default=6)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)
    _add_compress_parsers(sub)
    _add_mixer_parser(sub)
    _add_dyneval_parser(sub)
    return p


def _inference_threads() -> None:
    """Use only the idle cores: PyTorch's one-thread-per-core default collapses
    when another process keeps a core busy (see arlm.train.default_threads)."""
    import torch

    from .train import default_threads

    torch.set_num_threads(default_threads())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "train":
        _inference_threads()
    try:
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
