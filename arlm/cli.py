"""The ``arlm`` command line: train, eval, score, sample, demo (and later mix, compare).

It only composes the modules below it. Bad input ends with one line on stderr
(``arlm: error: …``) and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import stat
import sys
import time
import warnings
from pathlib import Path

from .errors import ArlmError

LN2 = math.log(2.0)
NEURAL = ("gpt", "lstm")


def _print_json(obj) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    # a surrogate (an undecodable byte of an argument) has no UTF-8 form: keep it as a JSON \u escape
    print(re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", text))


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
    from .cli_train import start_distributed

    main_rank = start_distributed(args).is_main  # --nproc: runs torchrun; under torchrun: joins the process group
    if _cmd_train_from_disk(args):
        return
    if args.resume is not None:
        from .cli_train import cli_resume

        out = Path(args.resume)
        cli_resume(args, out)  # refuses flags that would change the run
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
        return
    _check_train_flags_apply(args)
    out = Path(args.out or f"runs/{args.model}-{args.vocab}")
    replace = checkpoint.check_output_dir(out, args.force, family=args.model, vocab=args.vocab,
                                          inputs=[("DATA", args.data), ("--val-file", args.val_file)])
    split = load_split(args.data, args.documents, args.val_file, args.val_fraction, args.seed)
    meta = split_meta(split, args.val_file, args.val_fraction, args.seed)
    meta["data_path"] = None if args.data is None else str(Path(args.data).resolve())
    if args.val_file is not None:
        meta["split"]["val_file"] = str(Path(args.val_file).resolve())
    t0 = time.time()
    val_metrics = None
    if args.model == "ngram":
        with checkpoint.new_model_dir(out, replace) as where:
            _, val_metrics = train_ngram(split, where, order=args.order, vocab=args.vocab, vocab_size=args.vocab_size,
                                         meta=meta, refit=not args.no_refit)
    elif args.model == "cache":
        from .pipeline import make_cache

        with checkpoint.new_model_dir(out, replace) as where:
            _, val_metrics = make_cache(split, where, order=args.order, vocab=args.vocab, vocab_size=args.vocab_size,
                                        meta=meta)
    elif args.model == "cm":
        from .pipeline import make_cm

        with checkpoint.new_model_dir(out, replace) as where:
            _, val_metrics = make_cm(split, where, vocab=args.vocab, vocab_size=args.vocab_size, meta=meta,
                                     **_cm_config(args))
    elif args.model in NEURAL:
        from .cli_train import cli_train

        vocab = train_vocab(args.vocab, split.train_docs, args.vocab_size)
        if replace and main_rank:  # a run writes its directory as it goes (to resume): empty it first, in one rename
            checkpoint.clear_dir(out)
        with checkpoint.new_run_dir(out, write=main_rank):  # under DDP rank 0 alone writes
            cli_train(args, args.model, vocab, split.train_docs, split.val_docs, split.documents, out, meta)
        if not main_rank:
            return
    else:
        from .models.registry import get_family

        get_family(args.model)
        raise ArlmError(f"`arlm train` cannot train a {args.model!r} model; use `arlm mix` for mixtures")
    if not args.json and args.model not in NEURAL:
        print(f"trained {args.model} in {time.time() - t0:.1f} s -> {out}", file=sys.stderr)
    _report_training(out, split, args, val_metrics)


#: ``arlm train`` flags that only some models or vocabs use: given elsewhere they are refused, not ignored.
_NEURAL_ONLY = ("n_layer", "n_embd", "block_size", "dropout", "batch_size", "lr", "warmup_steps", "max_steps",
                "max_time", "eval_interval", "eval_iters", "compile", "optimizer", "muon_lr", "precision",
                "lr_schedule", "cooldown_fraction")
_FLAG_FAMILIES = {**{f: NEURAL for f in _NEURAL_ONLY}, "n_head": ("gpt",), "n_hidden": ("lstm",),
                  "order": ("ngram", "cache"), "no_refit": ("ngram",)}
_CM_FLAGS = ("orders", "table_bits", "count_limit", "mixer_lr", "apm_rate", "match_min", "match_bits",
             "no_word_contexts")
_FLAG_FAMILIES.update({f: ("cm",) for f in _CM_FLAGS})


def _check_train_flags_apply(args) -> None:
    """Refuse a typed flag that the chosen model or vocab would ignore (one line naming it)."""
    given = getattr(args, "given_flags", None) or set()
    unused = sorted(f"--{f.replace('_', '-')}" for f, fams in _FLAG_FAMILIES.items()
                    if f in given and args.model not in fams)
    if unused:
        raise ArlmError(f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to --model "
                        f"{args.model}: drop {'it' if len(unused) == 1 else 'them'}")
    if "vocab_size" in given and args.vocab != "bpe":
        raise ArlmError(f"--vocab-size applies to --vocab bpe only, not --vocab {args.vocab}")


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
    documents = args.documents or lm.documents
    if _stream_eval(lm, args.file, documents):
        from .scoring import evaluate_file

        m = evaluate_file(lm.model, lm.vocab, args.file, documents)
    else:
        m = lm.evaluate(read_text(args.file), args.documents, stride=args.stride)
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
        from .device import resolve_device

        lm.to(resolve_device(args.device))
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
        # one sample: stdout holds only the text (for pipes), its header goes to stderr
        print(_sample_header(i, len(samples), s), file=sys.stderr if len(samples) == 1 else sys.stdout, flush=True)
        print(args.prompt + s.text, flush=True)


def _sample_header(i: int, n: int, s) -> str:
    """``--- sample 1 of 3 (stop, 37 new tokens) ---``: the line above each sample's text."""
    k = len(s.token_ids)
    return f"--- sample {i + 1} of {n} ({s.finish_reason}, {k} new token{'' if k == 1 else 's'}) ---"


def cmd_split(args) -> None:
    from .corpus import read_text, train_val_split
    from .io import atomic_write_text

    from .io import check_distinct_files

    check_distinct_files([("DATA", args.data)], [("--train-out", args.train_out), ("--val-out", args.val_out)])
    text = read_text(args.data)
    train, val = train_val_split(text, args.documents, args.val_fraction, args.seed)
    if args.documents == "file":
        train_text, val_text = train[0], (val[0] if val else "")
    else:
        train_text, val_text = "".join(d + "\n" for d in train), "".join(d + "\n" for d in val)
    for path in (args.train_out, args.val_out):
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            from .io import write_error

            raise write_error(path, e) from None
    mode = stat.S_IMODE(Path(args.data).stat().st_mode)  # the outputs are readable by whoever reads the input
    atomic_write_text(args.train_out, train_text, mode=mode)
    atomic_write_text(args.val_out, val_text, mode=mode)
    print(f"{args.train_out}: {len(train_text):,} characters; {args.val_out}: {len(val_text):,} characters")


def cmd_mix(args) -> None:
    from .corpus import read_text
    from .lm import LM
    from .models.mixture import build_mixture

    from . import checkpoint

    if (args.fit_on is None) == (args.weights_from is None):
        raise ArlmError("give exactly one of --fit-on FILE (fit the weights by EM) and --weights-from DIR")
    lms = [LM.load(d) for d in args.model_dirs]
    inputs = [("model directory", d) for d in args.model_dirs] + [("--fit-on", args.fit_on),
                                                                 ("--weights-from", args.weights_from)]
    replace = checkpoint.check_output_dir(args.out, args.force, family="mixture", vocab=lms[0].vocab.kind,
                                          inputs=inputs)
    documents = args.documents or lms[0].documents
    t0 = time.time()
    if args.fit_on is not None:
        lm, history = build_mixture(lms, read_text(args.fit_on), documents, bucketed=args.bucketed)
        source = {"fit_on": str(args.fit_on)}
    else:
        from .models.mixture import reuse_weights

        lm, history = reuse_weights(lms, LM.load(args.weights_from), documents)
        source = {"weights_from": str(args.weights_from)}
        args.bucketed = bool(lm.model.config.bucket_components)
    lm.model.embed_components = args.embed
    with checkpoint.new_model_dir(args.out, replace) as where:
        lm.save(where, {"mixture_fit_nll_history": history, **source,
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
    from .training import parse_duration

    specs = parse_model_specs(args.models)
    vocabs = [v.strip() for v in args.vocab.split(",") if v.strip()]
    for v in vocabs:
        if v not in ("char", "byte", "bpe"):
            raise ArlmError(f"unknown vocab {v!r} in --vocab: choose from char, byte, bpe")
    from . import checkpoint

    log = (lambda *a: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    out = Path(args.out)
    inputs = [("DATA", args.data), ("--val-file", args.val_file)]
    if (out / "compare.json").is_file():  # the results of an earlier compare: replaced as a whole
        replace = checkpoint.check_output_dir(out, True, inputs=inputs)
    else:
        replace = checkpoint.check_output_dir(out, args.force, inputs=inputs)
    budget = parse_duration(args.max_time, "--max-time")
    with checkpoint.new_model_dir(out, replace) as where:
        result = run_compare(args.data, specs, vocabs, budget, where, args.documents, args.val_file,
                             args.val_fraction, args.seed, args.mix, args.vocab_size, log=log, report_dir=out)
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


def cmd_demo(args) -> None:
    from .pipeline import load_split, split_meta, train_ngram

    from . import checkpoint

    t0 = time.time()
    out = Path(args.out)
    replace = checkpoint.check_output_dir(out, args.force, family="ngram", vocab="char")
    split = load_split(None, "file", None, 0.1, 1337)
    print(f"built-in corpus: Python's pydoc topics, {sum(map(len, split.train_docs)):,} train / "
          f"{len(split.val_text):,} val characters")
    with checkpoint.new_model_dir(out, replace) as where:
        lm, m = train_ngram(split, where, order=args.order, vocab="char", meta=split_meta(split, None, 0.1, 1337),
                            refit=False)
    print(f"trained a char {args.order}-gram (interpolated modified Kneser-Ney) in {time.time() - t0:.1f} s -> {out}")
    print(f"val: {_fmt_metrics(m)}")
    for i, s in enumerate(lm.generate("", max_new_tokens=240, temperature=0.8, seed=args.seed, num_samples=3)):
        print(_sample_header(i, 3, s))
        print(s.text)
    print(f"--- next: .venv/bin/arlm sample {out} --prompt 'The ' ; .venv/bin/arlm score {out} 'import os' ---")


def _add_export_parser(sub) -> None:
    x = sub.add_parser("export", help="write a model in another tool's format: hf (transformers) or arpa (KenLM)")
    x.add_argument("model_dir", metavar="DIR", help="arlm model directory")
    x.add_argument("--format", required=True, choices=["hf", "arpa"],
                   help="hf: a transformers GPT2LMHeadModel directory (gpt family); "
                        "arpa: an ARPA back-off file (ngram family; gzip when OUT ends in .gz)")
    x.add_argument("--out", required=True, metavar="OUT", help="output directory (hf) or file (arpa)")
    x.add_argument("--json", action="store_true", help="print the result as JSON")
    x.set_defaults(func=_cmd_export)


def _cmd_export(args) -> None:
    from .lm import LM

    lm = LM.load(args.model_dir)
    if args.format == "hf":
        from .formats.hf import export_hf

        result = export_hf(lm, args.out)
    else:
        from .formats.arpa import export_arpa
        from .formats.hf import _refuse_family

        if lm.model.family not in ("ngram", "backoff"):
            raise _refuse_family(lm.model.family, "arpa")
        result = export_arpa(lm.model, lm.vocab, args.out, documents=lm.documents)
    if args.json:
        _print_json(result)
    else:
        print(f"{args.model_dir} -> {result['path']} ({args.format})")


def _add_import_parser(sub) -> None:
    i = sub.add_parser("import", help="turn a transformers GPT-2 directory or an ARPA file into an arlm model directory")
    i.add_argument("source", metavar="SOURCE",
                   help="Hugging Face GPT-2 checkpoint directory with GPT-2's byte-level BPE tokenizer, or an ARPA file "
                        "(.arpa or .arpa.gz)")
    i.add_argument("--out", required=True, metavar="DIR", help="arlm model directory to write")
    i.add_argument("--json", action="store_true", help="print the result as JSON")
    i.set_defaults(func=_cmd_import)


def _cmd_import(args) -> None:
    from . import checkpoint

    src = Path(args.source)
    replace = checkpoint.check_output_dir(args.out, args.force, inputs=[("SOURCE", src)])
    with checkpoint.new_model_dir(args.out, replace) as where:
        if src.is_dir():
            from .formats.hf import import_hf

            lm = import_hf(src, where)
        else:
            from .formats.arpa import import_arpa

            lm = import_arpa(src, where)
    result = {"model_dir": str(args.out), "family": lm.model.family, "vocab": lm.vocab.kind,
              "vocab_size": lm.vocab.vocab_size, "num_parameters": lm.model.num_parameters()}
    if args.json:
        _print_json(result)
    else:
        print(f"{src} -> {args.out} ({result['family']}, {result['vocab']} vocab of {result['vocab_size']} tokens)")
# -- corpora bigger than memory: token directories and budgeted n-gram counting ---------------
def _add_tokenize_parser(sub) -> None:
    k = sub.add_parser("tokenize", help="encode a text file into a token directory on disk (for corpora bigger than memory)")
    k.add_argument("data", metavar="DATA", help="UTF-8 text file to encode")
    k.add_argument("--out", required=True, help="token directory to write (tokens.bin, offsets.bin, tokens.json, vocab)")
    k.add_argument("--vocab", default=None, choices=["char", "byte", "bpe"],
                   help="vocabulary; char collects the characters in a first pass (default: char, or the vocab of --vocab-from)")
    k.add_argument("--vocab-from", default=None, metavar="DIR",
                   help="reuse the vocab of this model or token directory, needed for bpe (default: build one from DATA)")
    k.add_argument("--documents", default="file", choices=["lines", "file"],
                   help="lines: each non-empty line is a document; file: the whole file is one")
    k.add_argument("--chunk-size", default="4M", help="text read and encoded at a time (about 25 bytes of memory per byte)")
    k.add_argument("--json", action="store_true", help="print the header and the throughput as JSON")
    k.set_defaults(func=_cmd_tokenize)


STREAM_EVAL_BYTES = 256 << 20


def _stream_eval(lm, path, documents: str) -> bool:
    """Evaluate a file this big piece by piece (``scoring.evaluate_file``) where the model allows it."""
    p = Path(path)
    big = p.is_file() and p.stat().st_size > STREAM_EVAL_BYTES
    return big and (documents == "lines" or lm.model.family == "ngram")


def _add_cm_train_arguments(t) -> None:
    from .models.cm import CMConfig

    d = CMConfig(0, 0, 0)
    t.add_argument("--orders", default=",".join(map(str, d.orders)), metavar="K,K,…",
                   help="cm: context orders in tokens (0 = none), one hashed counter table each")
    t.add_argument("--table-bits", type=int, default=d.table_bits, help="cm: log2 of the slots of each context's table")
    t.add_argument("--count-limit", type=int, default=d.count_limit,
                   help="cm: counters adapt at rate 1/(n+1.5) with n capped here (smaller: faster forgetting)")
    t.add_argument("--mixer-lr", type=int, default=d.mixer_lr, help="cm: mixer learning rate, in units of 2^-14")
    t.add_argument("--apm-rate", type=int, default=d.apm_rate, help="cm: APM (SSE) update shift (larger: slower)")
    t.add_argument("--match-min", type=int, default=d.match_min,
                   help="cm: shortest repeated context (tokens) the match model follows")
    t.add_argument("--match-bits", type=int, default=d.match_bits, help="cm: log2 of the match model's index size")
    t.add_argument("--no-word-contexts", action="store_true", help="cm: leave out the word and word-pair contexts")


def _cm_config(args) -> dict:
    try:
        orders = [int(k) for k in args.orders.split(",")]
    except ValueError:
        raise ArlmError(f"--orders must be a comma list of integers, got {args.orders!r}") from None
    return dict(orders=orders, table_bits=args.table_bits, count_limit=args.count_limit, mixer_lr=args.mixer_lr,
                apm_rate=args.apm_rate, match_min=args.match_min, match_bits=args.match_bits,
                word_contexts=not args.no_word_contexts)


def _add_scale_train_arguments(t) -> None:
    t.add_argument("--memory", default=None, metavar="SIZE",
                   help="n-gram: count in chunks within SIZE bytes (e.g. 2G), spilling sorted runs to $TMPDIR; "
                        "fits on all of DATA, val only from --val-file (default: count in memory)")


def _vocab_from(directory):
    from . import checkpoint
    from .data import TokenDir, is_token_dir
    from .vocab import load_vocab

    if is_token_dir(directory):
        return TokenDir(directory).vocab()
    return load_vocab(checkpoint.read_config(directory).get("vocab", "char"), Path(directory))


def _byte_bar(total: int, desc: str, enabled: bool = True):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, desc=desc, dynamic_ncols=True,
                mininterval=0.5, file=sys.stderr, disable=None if enabled else True)


def _tokenize(data, out, kind, vocab_from, documents, chunk_bytes: int, progress: bool = True) -> dict:
    """Build or load the vocab, encode ``data`` into the token directory ``out``; returns the header plus timings."""
    from .data import collect_chars, tokenize_file
    from .vocab import ByteVocab, CharVocab

    path = Path(data)
    size = path.stat().st_size if path.is_file() else 0
    t0 = time.perf_counter()
    if vocab_from is not None:
        vocab = _vocab_from(vocab_from)
        if kind is not None and vocab.kind != kind:
            raise ArlmError(f"--vocab {kind} disagrees with the {vocab.kind} vocab of {vocab_from}")
    elif kind in (None, "char"):
        with _byte_bar(size, "characters", progress) as bar:
            vocab = CharVocab(collect_chars(path, documents, chunk_bytes, bar.update))
    elif kind == "byte":
        vocab = ByteVocab()
    else:
        raise ArlmError("--vocab bpe needs --vocab-from DIR (a model or token directory whose tokenizer to use), "
                        "e.g. one trained with `arlm train SAMPLE.txt --vocab bpe`")
    t1 = time.perf_counter()
    with _byte_bar(size, "tokenize", progress) as bar:
        header = tokenize_file(path, out, vocab, documents, chunk_bytes, bar.update)
    t2 = time.perf_counter()
    mb = size / 1e6
    return {**header, "seconds": round(t2 - t0, 3), "vocab_seconds": round(t1 - t0, 3),
            "mb_per_s": round(mb / max(t2 - t0, 1e-9), 2), "encode_mb_per_s": round(mb / max(t2 - t1, 1e-9), 2)}


def _cmd_tokenize(args) -> None:
    from .models.ngram_count import parse_memory

    from . import checkpoint
    from .data import TokenDir, is_token_dir

    chunk_size = parse_memory(args.chunk_size, "--chunk-size")
    out = Path(args.out)
    # a token directory of the same vocab kind and document mode is replaced whole by a rerun; anything else
    # (another vocab or mode, a model, other files) needs --force
    rerun = False
    if is_token_dir(out) and not args.force:
        old = TokenDir(out).header
        kind = args.vocab or ("char" if args.vocab_from is None else old["vocab"])
        if (old["vocab"], old["documents"]) != (kind, args.documents):
            raise ArlmError(f"--out {out} holds tokens of a {old['vocab']} vocab ({old['documents']} mode), not "
                            f"{kind} ({args.documents}): choose another --out, or --force to replace them")
        rerun = True
    replace = checkpoint.check_output_dir(out, args.force or rerun,
                                          inputs=[("DATA", args.data), ("--vocab-from", args.vocab_from)])
    with checkpoint.new_model_dir(out, replace) as where:
        r = _tokenize(args.data, where, args.vocab, args.vocab_from, args.documents, chunk_size,
                      progress=not args.json)
    if args.json:
        _print_json(r)
        return
    print(f"tokenized {args.data}: {r['n_tokens']:,} tokens ({r['dtype']}, {r['vocab']} vocab of {r['vocab_size']}), "
          f"{r['n_documents']:,} document{'' if r['n_documents'] == 1 else 's'}, {r['n_bytes'] / 1e6:.1f} MB in {r['seconds']:.1f} s "
          f"({r['mb_per_s']:.1f} MB/s; encoding alone {r['encode_mb_per_s']:.1f} MB/s) -> {out}")


def _cmd_train_from_disk(args) -> bool:
    """``arlm train`` on a token directory, or an n-gram with ``--memory``; False when neither applies."""
    import tempfile

    from .data import TokenDir, is_token_dir

    memory = getattr(args, "memory", None)
    from_tokens = args.data is not None and args.resume is None and is_token_dir(args.data)
    if memory is not None and args.model != "ngram":
        raise ArlmError("--memory bounds n-gram counting; neural training reads batches from a token directory "
                        "(arlm tokenize) without holding it")
    if not from_tokens and memory is None:
        return False
    if args.model in NEURAL:
        _train_neural_from_tokens(args)
        return True
    if args.model != "ngram":
        raise ArlmError(f"--model {args.model} needs a text file as DATA, not a token directory")
    if memory is not None:
        from .models.ngram_count import parse_memory

        memory = parse_memory(memory)
    if memory is not None and args.no_refit:
        raise ArlmError("--no-refit needs in-memory counting: --memory fits on all of DATA (score val with --val-file)")
    with tempfile.TemporaryDirectory(prefix="arlm-tokens-") as tmp:
        if from_tokens:
            tokens = TokenDir(args.data)
        else:
            if args.data is None:
                raise ArlmError("--memory needs DATA (a text file or a token directory)")
            if args.vocab == "bpe":
                raise ArlmError("--memory with --vocab bpe needs a token directory: arlm tokenize DATA --vocab bpe "
                                "--vocab-from DIR --out TOKENS, then arlm train TOKENS --memory ...")
            _tokenize(args.data, tmp, args.vocab, None, args.documents, 4 << 20, progress=not args.json)
            tokens = TokenDir(tmp)
        _train_ngram_from_tokens(args, tokens, memory)
    return True


def _train_ngram_from_tokens(args, tokens, memory: int | None) -> None:
    import numpy as np

    from . import checkpoint
    from .corpus import read_text
    from .lm import LM
    from .models.ngram import NGramConfig, NGramModel
    from .models.ngram_count import fit_budgeted

    vocab = tokens.vocab()
    out = Path(args.out or f"runs/ngram-{vocab.kind}")
    replace = checkpoint.check_output_dir(out, args.force, family="ngram", vocab=vocab.kind,
                                          inputs=[("DATA", args.data), ("--val-file", args.val_file)])
    config = NGramConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, order=args.order)
    t0 = time.time()
    stats: dict = {}
    if memory is not None:
        model = fit_budgeted(config, tokens.iter_chunks(1 << 20), memory, stats=stats)
        stats["memory"] = memory
    else:
        off = np.asarray(tokens.offsets)
        model = NGramModel.fit(config, [np.asarray(tokens.ids[a:b], dtype=np.int64) for a, b in zip(off[:-1], off[1:])])
    lm = LM(model, vocab, tokens.documents)
    with checkpoint.new_model_dir(out, replace) as where:
        _save_token_ngram(lm, where, args, stats)
    if not args.json:
        runs = f", {max(stats['runs'])} sorted runs per order spilled" if stats.get("runs") else ""
        print(f"trained ngram in {time.time() - t0:.1f} s{runs} -> {out}", file=sys.stderr)
    val = None
    if args.val_file is not None:
        val = lm.evaluate(read_text(args.val_file), tokens.documents)
    result = {"model_dir": str(out), "family": "ngram", "vocab": vocab.kind, "num_parameters": model.num_parameters(),
              "counting": stats or None}
    if val is not None:
        result["val"] = val
    if args.json:
        _print_json(result)
    elif val is not None:
        print(f"val: {_fmt_metrics(val)}")
    else:
        print("fitted on all of DATA; no val text (give --val-file to score one)")


def _save_token_ngram(lm, where, args, stats) -> None:
    lm.save(where, {"data": str(args.data), "data_path": str(Path(args.data).resolve()),
                    "split": {"val_file": str(Path(args.val_file).resolve()) if args.val_file else None,
                              "val_fraction": 0.0, "seed": args.seed},
                    "refit_on_val": False, "counting": stats or None})


def _train_neural_from_tokens(args) -> None:
    from . import checkpoint
    from .cli_train import cli_train
    from .training import distributed, token_data_from_dir

    if args.val_file is not None:
        raise ArlmError("--val-file takes text; with a token directory as DATA, val is its last --val-fraction")
    train, val, tokens = token_data_from_dir(args.data, args.val_fraction, args.seed)
    vocab = tokens.vocab()
    out = Path(args.out or f"runs/{args.model}-{vocab.kind}")
    main_rank = distributed.current().is_main  # under DDP rank 0 alone writes
    if checkpoint.check_output_dir(out, args.force, family=args.model, vocab=vocab.kind, inputs=[("DATA", args.data)]):
        if main_rank:
            checkpoint.clear_dir(out)  # a run writes its directory as it goes: empty it first, in one rename
    meta = {"documents": tokens.documents, "data": str(args.data), "data_path": str(Path(args.data).resolve()),
            "token_dir": True, "split": {"val_file": None, "val_fraction": args.val_fraction, "seed": args.seed}}
    with checkpoint.new_run_dir(out, write=main_rank):
        cli_train(args, args.model, vocab, [], [], tokens.documents, out, meta, token_data=(train, val))
    if main_rank:
        _report_token_training(out, args)


def _report_token_training(out: Path, args) -> None:
    """After training from a token directory: the loop's val estimate (the val text is not held as text)."""
    from . import checkpoint

    cfg = checkpoint.read_config(out)
    best = (cfg.get("training") or {}).get("best_val_loss")
    if args.json:
        _print_json({"model_dir": str(out), "family": cfg["family"], "vocab": cfg.get("vocab"),
                     "best_val_loss": best, "training": cfg.get("training")})
    elif best is not None:
        print(f"val: mean_nll {best:.4f} nats/token (estimated over --eval-iters batches; "
              f"`arlm eval {out} FILE` scores a text exactly)")
    else:
        print("no val tokens (val fraction 0): nothing to report")


CODING_THREADS_HELP = ("CPU threads for loading the model (default: OMP_NUM_THREADS if set, else the idle cores); "
                       "the coding itself runs on one thread, so that encoder and decoder compute identical "
                       "probabilities")


def _add_compress_parsers(sub) -> None:
    z = sub.add_parser("compress", help="compress a text file losslessly with a model (range coding of its probabilities)")
    z.add_argument("model_dir", metavar="DIR", help="model directory")
    z.add_argument("input", metavar="IN", help="UTF-8 text file to compress (may be empty)")
    z.add_argument("output", metavar="OUT", help="compressed file to write")
    z.add_argument("--documents", default=None, choices=["lines", "file"],
                   help="document mode (default: the one the model was trained with)")
    z.add_argument("--no-progress", action="store_true", help="hide the progress bar (shown only on a terminal)")
    z.add_argument("--json", action="store_true", help="print the result as JSON")
    z.add_argument("--threads", type=int, default=None, help=CODING_THREADS_HELP)
    z.set_defaults(func=_cmd_compress)
    u = sub.add_parser("decompress", help="restore a file made by `arlm compress` (needs the same model)")
    u.add_argument("model_dir", metavar="DIR", help="model directory the file was compressed with")
    u.add_argument("input", metavar="IN", help="compressed file")
    u.add_argument("output", metavar="OUT", help="text file to write")
    u.add_argument("--no-progress", action="store_true", help="hide the progress bar (shown only on a terminal)")
    u.add_argument("--json", action="store_true", help="print the result as JSON")
    u.add_argument("--threads", type=int, default=None, help=CODING_THREADS_HELP)
    u.set_defaults(func=_cmd_decompress)


def _cmd_compress(args) -> None:
    from .coding import compress_file

    st = compress_file(args.model_dir, args.input, args.output, args.documents, progress=not args.no_progress and sys.stderr.isatty())
    if args.json:
        _print_json(st)
        return
    ideal = math.ceil(st["nll_bits"] / 8)
    print(f"{args.input}: {st['n_bytes']:,} bytes -> {args.output}: {st['compressed_bytes']:,} bytes "
          f"({st['bits_per_char']:.4f} bits/char; model -log2 p = {st['nll_bits']:.1f} bits = {ideal:,} bytes; "
          f"{st['n_bytes'] / 1024 / max(st['seconds'], 1e-9):.1f} KB/s)")


def _cmd_decompress(args) -> None:
    from .coding import decompress_file

    st = decompress_file(args.model_dir, args.input, args.output, progress=not args.no_progress and sys.stderr.isatty())
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
                   help="held-out text the mixer reads once to learn its initial weights, never your test text "
                        "(default: start from equal weights)")
    m.add_argument("--documents", default=None, choices=["lines", "file"],
                   help="document mode (default: the first model's)")
    m.set_defaults(func=_cmd_mixer)


def _cmd_mixer(args) -> None:
    from .corpus import read_text
    from .lm import LM
    from .models.mixer import build_mixer

    from . import checkpoint

    lms = [LM.load(d) for d in args.model_dirs]
    replace = checkpoint.check_output_dir(args.out, args.force, family="mixer", vocab=lms[0].vocab.kind,
                                          inputs=[(f"DIR {d}", d) for d in args.model_dirs]
                                          + [("--prime-on", args.prime_on)])
    try:
        select = [int(x) for x in args.select.split(",") if x.strip()]
    except ValueError:
        raise ArlmError(f"--select takes comma-separated component indices, got {args.select!r}") from None
    t0 = time.time()
    documents = args.documents or lms[0].documents
    prime = read_text(args.prime_on) if args.prime_on else None
    lm = build_mixer(lms, select, args.learning_rate, prime, documents)
    with checkpoint.new_model_dir(args.out, replace) as where:
        lm.save(where, {"component_sources": [str(d) for d in args.model_dirs],
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
    from . import checkpoint

    replace = checkpoint.check_output_dir(args.out, args.force, family="dyneval", vocab=v.kind,
                                          inputs=[("DIR", args.model_dir)])
    with checkpoint.new_model_dir(args.out, replace) as where:
        LM(DynEvalModel(cfg, lm.model).eval(), v, lm.documents).save(where, {"base_source": str(args.model_dir)})
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


def _seed_type(limit: int):
    """An argparse type: an integer seed in 0 .. ``limit`` (one line naming the range otherwise)."""

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
        if not 0 <= v <= limit:
            raise argparse.ArgumentTypeError(f"expected an integer from 0 to {limit}, got {v}")
        return v

    return parse


#: Sampling seeds: 0 .. 2**64 - 1 (arlm.sampling.sample_generator gives each its own stream).
_sample_seed = _seed_type(2**64 - 1)
#: Split and training seeds: 0 .. 2**32 - 1 (torch's CPU generator keeps 32 bits of a manual seed).
_train_seed = _seed_type(2**32 - 1)


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
                   help="UTF-8 text file, or a token directory from arlm tokenize, to train on "
                        "(default: the built-in corpus, Python's pydoc topics)")
    t.add_argument("--model", default="ngram",
                   help="ngram | lstm | gpt | cache (an n-gram of the document read so far; for mixtures) | cm "
                        "(context mixing, PAQ-style: adaptive, for compression)")
    t.add_argument("--order", type=int, default=5, help="n-gram or cache order (tokens of context + 1), 1..10")
    t.add_argument("--vocab", default="char", choices=["char", "byte", "bpe", "word"],
                   help="vocabulary: the characters of the text, the 256 bytes, byte-level BPE, or whitespace-separated "
                        "words with <unk> (n-grams; probabilities over word sequences, not exact strings)")
    t.add_argument("--vocab-size", type=_positive_int, default=None,
                   help="BPE vocabulary size, specials included (default: 1024); word: keep the most frequent words "
                        "(default: all)")
    t.add_argument("--documents", default="file", choices=["lines", "file"], help=DOCUMENTS_HELP)
    t.add_argument("--val-file", default=None, metavar="FILE",
                   help="val text (default: split off the last --val-fraction of DATA)")
    t.add_argument("--val-fraction", type=float, default=0.1, help="share of DATA held out as val when no --val-file")
    t.add_argument("--seed", type=_train_seed, default=1337,
                   help="seed of the train/val split and of training (0 .. 2**32-1)")
    t.add_argument("--out", default=None, metavar="DIR", help="model directory to write (default: runs/MODEL-VOCAB)")
    t.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the interrupted neural run in DIR (default: start a new run)")
    t.add_argument("--no-refit", action="store_true",
                   help="n-gram: keep the val split out of the saved model (without it the model is refitted "
                        "on all of DATA after val is scored)")
    t.add_argument("--json", action="store_true", help=JSON_HELP)
    try:
        from .cli_train import add_train_arguments
    except ImportError:  # the neural training loop is optional at import time
        add_train_arguments = None
    if add_train_arguments is not None:
        add_train_arguments(t)
    _add_scale_train_arguments(t)
    _add_cm_train_arguments(t)
    t.set_defaults(func=cmd_train)
    _add_tokenize_parser(sub)

    e = sub.add_parser("eval", help="NLL, bits per char and perplexity of a text file",
                       description="Score a whole text file: nll, mean_nll, bits per char and byte, perplexity.")
    e.add_argument("model_dir", metavar="DIR", help="model directory (written by arlm train or arlm mix)")
    e.add_argument("file", metavar="FILE", help="UTF-8 text file to score (over 256 MB: read in pieces where the model allows)")
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
                   help="score log p(TEXT | PREFIX) of TEXT as a continuation of PREFIX, without <eos> (the text may "
                        "go on) (default: score TEXT as a whole document, <eos> included)")
    s.add_argument("--no-eos", action="store_true", help="prefix probability: leave out the <eos> term")
    s.add_argument("--per-token", action="store_true", help="list every token's log-probability")
    s.add_argument("--json", action="store_true", help=JSON_HELP)
    s.set_defaults(func=cmd_score)

    g = sub.add_parser("sample", help="draw samples, unconditionally or as completions of --prompt",
                       description="Draw samples. Text output prints each sample as PROMPT followed by the "
                                   "completion, under a header line with its finish reason (stop: <eos> or a stop "
                                   "string; length: --max-new-tokens); for a single sample that line goes to "
                                   "stderr, so stdout holds only the text. --json gives prompt, completion, text "
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
    g.add_argument("--seed", type=_sample_seed, default=None,
                   help="seed of the sampler (0 .. 2**64-1): the same seed gives the same samples (default: a "
                        "fresh seed each run, so samples differ from run to run)")
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
    sp.add_argument("--seed", type=_train_seed, default=1337, help="seed of the shuffle (lines mode; 0 .. 2**32-1)")
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
    c.add_argument("--seed", type=_train_seed, default=1337, help="seed of the split and of training (0 .. 2**32-1)")
    c.add_argument("--out", default="runs/compare", metavar="DIR", help="directory for the models and the results")
    c.add_argument("--json", action="store_true", help=JSON_HELP)
    c.set_defaults(func=cmd_compare)

    d = sub.add_parser("demo", help="train on the built-in corpus, print val bits per char and samples",
                       description="Train a char n-gram on the built-in corpus, print val bits per char and samples.")
    d.add_argument("--out", default="runs/demo", metavar="DIR", help="model directory to write")
    d.add_argument("--order", type=int, default=6, help="n-gram order, 1..10")
    d.add_argument("--seed", type=_sample_seed, default=0, help="seed of the samples (0 .. 2**64-1)")
    d.set_defaults(func=cmd_demo)
    _add_export_parser(sub)
    _add_import_parser(sub)
    _add_serve_parser(sub)
    _add_heatmap_parser(sub)
    _add_compress_parsers(sub)
    _add_mixer_parser(sub)
    _add_dyneval_parser(sub)
    _add_safety_flags(sub)
    return p


def _add_safety_flags(sub) -> None:
    """--force on the commands that write a model directory, --threads on those that run a model."""
    for name in ("train", "mix", "compare", "demo", "import", "mixer", "dyneval", "tokenize"):
        sub.choices[name].add_argument(
            "--force", action="store_true",
            help="replace an output directory that holds another model or other files (they are removed)")
    for name in ("eval", "score", "sample", "mix", "compare", "serve", "heatmap", "mixer"):
        sub.choices[name].add_argument(
            "--threads", type=int, default=None,
            help="CPU threads (default: OMP_NUM_THREADS if set, else the idle cores)")


def _add_serve_parser(sub) -> None:
    v = sub.add_parser("serve", help="serve models over an OpenAI-compatible HTTP API, with a playground page at /")
    v.add_argument("models", nargs="+", metavar="DIR",
                   help="model directory to serve (its id is the directory name), or NAME=DIR")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (only this machine by default)")
    v.add_argument("--port", type=int, default=8000, help="TCP port to listen on")
    v.add_argument("--api-key", default=None, metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on every endpoint but /health and the playground page / "
                        "(static, it asks for the key). A key on the command line is visible to every user of the "
                        "machine (ps); the environment variable ARLM_API_KEY or --api-key-file is safer "
                        "(default: ARLM_API_KEY if set, else no key needed)")
    v.add_argument("--api-key-file", default=None, metavar="FILE",
                   help="read the API key from the first line of FILE (keep it readable only by you; default: none)")
    v.add_argument("--max-tokens-limit", type=int, default=4096,
                   help="largest max_tokens a request may ask for (n x max_tokens is capped at 4x this)")
    v.set_defaults(func=_cmd_serve)


def _cmd_serve(args) -> None:
    from .serve.app import serve

    if not 0 <= args.port <= 65535:
        raise ArlmError(f"--port must be in [0, 65535], got {args.port}")
    if args.max_tokens_limit < 1:
        raise ArlmError(f"--max-tokens-limit must be >= 1, got {args.max_tokens_limit}")
    serve(args.models, host=args.host, port=args.port, api_key=_api_key(args), max_tokens_limit=args.max_tokens_limit)


def _api_key(args) -> str | None:
    """The serve key: --api-key, --api-key-file or ARLM_API_KEY (in that order); None for none.

    Raises:
        ArlmError: both flags given, an unreadable or empty file, or a key a header cannot carry.
    """
    import os

    if args.api_key is not None and args.api_key_file is not None:
        raise ArlmError("give the key once: --api-key or --api-key-file, not both")
    if args.api_key is not None:
        key, where = args.api_key, "--api-key"
    elif args.api_key_file is not None:
        try:
            lines = Path(args.api_key_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise ArlmError(f"cannot read --api-key-file {args.api_key_file}: {reason}") from None
        key, where = (lines[0].strip() if lines else ""), f"--api-key-file {args.api_key_file}"
    elif os.environ.get("ARLM_API_KEY") is not None:
        key, where = os.environ["ARLM_API_KEY"], "ARLM_API_KEY"
    else:
        return None
    if not key or not all("!" <= c <= "~" for c in key):
        raise ArlmError(f"the API key from {where} must be non-empty printable ASCII without spaces")
    return key


def _add_heatmap_parser(sub) -> None:
    h = sub.add_parser("heatmap", help="the surprisal heat map of a text: standalone HTML or a PNG")
    h.add_argument("model_dir", metavar="DIR", help="model directory")
    h.add_argument("file", metavar="FILE", help="UTF-8 text file to score")
    h.add_argument("--out", required=True, help="output file: .html (standalone page) or .png (matplotlib)")
    h.set_defaults(func=_cmd_heatmap)


def _cmd_heatmap(args) -> None:
    from .corpus import read_text
    from .lm import LM
    from .serve.heatmap import write_heatmap

    lm = LM.load(args.model_dir)
    result = write_heatmap(lm, read_text(args.file), args.out)
    print(f"bits_per_char {result['bits_per_char']:.4f} over {result['n_chars']} chars -> {args.out}")


def _given_flags(parser: argparse.ArgumentParser, argv: list[str], command: str) -> set[str]:
    """The dests of the options (and positionals) the user typed for ``command``, defaults aside."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    cmd = sub.choices[command]
    saved = [(a, a.default) for a in cmd._actions]
    saved_defaults = dict(cmd._defaults)
    try:
        for a, _ in saved:
            a.default = argparse.SUPPRESS
        cmd._defaults.clear()
        typed = vars(parser.parse_args(argv))
    finally:
        for a, default in saved:
            a.default = default
        cmd._defaults.update(saved_defaults)
    return set(typed) - {"command", "help"}


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


def _raise_terminated(signum, frame) -> None:
    from .errors import Terminated

    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run ``arlm ARGV``; returns the exit status (0, 1 for an OS error, 2 for bad input, 130/143 when stopped)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    # SIGTERM unwinds like Ctrl-C (temporary files removed, outputs left as they were), then exits 143;
    # training (a checkpoint first) and serve (a graceful shutdown) install their own handlers meanwhile
    from .errors import Terminated

    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _main(argv)
    except Terminated:  # before the command started (parsing, imports)
        print("arlm: terminated by SIGTERM", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, old)


def _main(argv: list[str] | None) -> int:
    from .errors import Interrupted, Terminated
    from .io import os_reason

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # an argument's undecodable bytes are printed back as those bytes
        sys.stdout.reconfigure(errors="surrogateescape")
    try:
        args.given_flags = _given_flags(parser, argv, args.command)
        args.argv = argv  # `arlm train --nproc N` starts the same command under torchrun
        if getattr(args, "device", None) is not None:
            from .device import resolve_device

            resolve_device(args.device)  # every command's --device, checked here before any work
        if args.command != "train":
            from .threads import set_inference_threads

            set_inference_threads(getattr(args, "threads", None))
        with _warnings_as_lines():
            args.func(args)
    except ArlmError as e:
        if not getattr(e, "printed", False):  # a DDP rank failure is printed at once, before the clean-up
            print(f"arlm: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"arlm: {e}", file=sys.stderr)
        return 128 + e.signum
    except Terminated:
        print("arlm: terminated by SIGTERM", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("arlm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # any read or write the modules did not name themselves
        where = f"{e.filename}: " if e.filename else ""
        print(f"arlm: error: {where}{os_reason(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
