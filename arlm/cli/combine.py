"""``arlm mix``, ``arlm mixer``, ``arlm dyneval``, ``arlm compare``: models made of other models, and
several models trained and scored side by side."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import ArlmError
from .common import DOCUMENTS_HELP, JSON_HELP, add_adapt_settings, on_device, positive_int, print_json, train_seed


def add_parser(sub) -> None:
    _add_mix(sub)
    _add_compare(sub)
    _add_mixer_parser(sub)
    _add_dyneval_parser(sub)


def run(args) -> None:
    {"mix": cmd_mix, "compare": cmd_compare, "mixer": _cmd_mixer, "dyneval": _cmd_dyneval}[args.command](args)


def _add_mix(sub) -> None:
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
    x.set_defaults(func=run)


def _add_compare(sub) -> None:
    c = sub.add_parser("compare", help="train several models on one split and budget; table, JSON and plot",
                       description="Train several models on one split with one time budget, score them on the "
                                   "same val text, and write compare.json, compare.md and compare.png.")
    c.add_argument("data", nargs="?", metavar="DATA",
                   help="UTF-8 text file (default: the built-in corpus, Python's pydoc topics)")
    c.add_argument("--models", default="ngram:7,lstm,gpt", help="comma list of ngram:ORDER, cache:ORDER, lstm, gpt")
    c.add_argument("--vocab", default="char", help="comma list of char, byte, bpe")
    c.add_argument("--vocab-size", type=positive_int, default=None,
                   help="BPE vocabulary size, specials included (default: 1024)")
    c.add_argument("--max-time", default="2m", help="training budget per neural model (e.g. 90s, 2m)")
    c.add_argument("--mix", action="store_true", help="also fit a mixture of the models on a dev part of train")
    c.add_argument("--documents", default="file", choices=["lines", "file"], help=DOCUMENTS_HELP)
    c.add_argument("--val-file", default=None, metavar="FILE",
                   help="val text (default: split off the last --val-fraction of DATA)")
    c.add_argument("--val-fraction", type=float, default=None,
                   help="share of DATA held out as val when no --val-file (default: 0.1)")
    c.add_argument("--seed", type=train_seed, default=1337, help="seed of the split and of training (0 .. 2**32-1)")
    c.add_argument("--out", default="runs/compare", metavar="DIR", help="directory for the models and the results")
    c.add_argument("--json", action="store_true", help=JSON_HELP)
    c.set_defaults(func=run)


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
    m.set_defaults(func=run)


def _add_dyneval_parser(sub) -> None:
    v = sub.add_parser("dyneval", help="wrap a neural model with dynamic evaluation (it keeps training on what it reads)")
    v.add_argument("model_dir", metavar="DIR", help="trained lstm or gpt model directory")
    v.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    add_adapt_settings(v, prefix="")
    v.set_defaults(func=run)


def cmd_mix(args) -> None:
    from ..corpus import read_text
    from ..lm import LM
    from ..pipeline import build_mixture

    from .. import checkpoint

    if (args.fit_on is None) == (args.weights_from is None):
        raise ArlmError("give exactly one of --fit-on FILE (fit the weights by EM) and --weights-from DIR")
    lms = [on_device(LM.load(d), args) for d in args.model_dirs]
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
        from ..pipeline import reuse_weights

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
        print_json(result)
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
    from ..compare import parse_model_specs, run_compare, terminal_table
    from ..training import parse_duration

    specs = parse_model_specs(args.models)
    vocabs = [v.strip() for v in args.vocab.split(",") if v.strip()]
    for v in vocabs:
        if v not in ("char", "byte", "bpe"):
            raise ArlmError(f"unknown vocab {v!r} in --vocab: choose from char, byte, bpe")
    from .. import checkpoint

    log = (lambda *a: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    out = Path(args.out)
    inputs = [("DATA", args.data), ("--val-file", args.val_file)]
    if (out / "compare.json").is_file():  # the results of an earlier compare: replaced as a whole
        replace = checkpoint.check_output_dir(out, True, inputs=inputs)
    else:
        replace = checkpoint.check_output_dir(out, args.force, inputs=inputs)
    budget = parse_duration(args.max_time, "--max-time")
    from ..pipeline import val_share

    val_fraction = val_share(args.val_file, args.val_fraction, cli_names=True)
    with checkpoint.new_model_dir(out, replace) as where:
        result = run_compare(args.data, specs, vocabs, budget, where, args.documents, args.val_file,
                             val_fraction, args.seed, args.mix, args.vocab_size, log=log, report_dir=out)
    if args.json:
        print_json(result)
        return
    print(terminal_table(result["rows"]))
    print()
    print((Path(args.out) / "compare.md").read_text(), end="")
    print(f"wrote {args.out}/compare.json, compare.md, compare.png")


def _cmd_mixer(args) -> None:
    from ..corpus import read_text
    from ..lm import LM
    from ..pipeline import build_mixer

    from .. import checkpoint

    lms = [on_device(LM.load(d), args) for d in args.model_dirs]
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


def _cmd_dyneval(args) -> None:
    from ..lm import LM
    from ..models.dyneval import DynEvalConfig, DynEvalModel

    lm = LM.load(args.model_dir)
    v = lm.vocab
    settings = {k[len("adapt_"):]: x for k, x in vars(args).items() if k.startswith("adapt_") and x is not None}
    cfg = DynEvalConfig(v.vocab_size, v.bos_id, v.eos_id, lm.model.family, **settings)
    from .. import checkpoint

    replace = checkpoint.check_output_dir(args.out, args.force, family="dyneval", vocab=v.kind,
                                          inputs=[("DIR", args.model_dir)])
    with checkpoint.new_model_dir(args.out, replace) as where:
        LM(DynEvalModel(cfg, lm.model).eval(), v, lm.documents).save(where, {"base_source": str(args.model_dir)})
    print(f"dynamic evaluation of {args.model_dir} -> {args.out}")
