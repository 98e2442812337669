"""``arlm eval``, ``arlm score``, ``arlm sample``: what a model says about a text, and what it writes."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ArlmError
from .common import (DOCUMENTS_HELP, JSON_HELP, fmt_metrics, on_device, positive_int, print_json, sample_header,
                     sample_seed, with_adapt)

from ..units import LN2
STREAM_EVAL_BYTES = 256 << 20


def add_parser(sub) -> None:
    _add_eval(sub)
    _add_score(sub)
    _add_sample(sub)


def run(args) -> None:
    {"eval": cmd_eval, "score": cmd_score, "sample": cmd_sample}[args.command](args)


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", help="NLL, bits per char and perplexity of a text file",
                       description="Score a whole text file: nll, mean_nll, bits per char and byte, perplexity.")
    e.add_argument("model_dir", metavar="DIR", help="model directory (written by arlm train or arlm mix)")
    e.add_argument("file", metavar="FILE", help="UTF-8 text file to score (over 256 MB: read in pieces where the model allows)")
    e.add_argument("--documents", default=None, choices=["lines", "file"],
                   help=DOCUMENTS_HELP + " (default: the mode the model was trained with)")
    e.add_argument("--stride", type=positive_int, default=None,
                   help="sliding-window stride in tokens for models with a block_size (default: half the window)")
    e.add_argument("--json", action="store_true", help=JSON_HELP)
    e.set_defaults(func=run)


def _add_score(sub) -> None:
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
    s.set_defaults(func=run)


def _add_sample(sub) -> None:
    g = sub.add_parser("sample", help="draw samples, unconditionally or as completions of --prompt",
                       description="Draw samples. Text output prints each sample as PROMPT followed by the "
                                   "completion, under a header line with its finish reason (stop: <eos> or a stop "
                                   "string; length: --max-new-tokens); for a single sample that line goes to "
                                   "stderr, so stdout holds only the text. --json gives prompt, completion, text "
                                   "(prompt + completion) and finish_reason as separate fields.")
    g.add_argument("model_dir", metavar="DIR", help="model directory (written by arlm train or arlm mix)")
    g.add_argument("--prompt", default="", help="text the samples continue (empty: unconditional samples)")
    g.add_argument("--num-samples", type=positive_int, default=1, help="number of samples, drawn one after another")
    g.add_argument("--max-new-tokens", type=int, default=200, help="stop a sample after this many new tokens")
    g.add_argument("--temperature", type=float, default=1.0, help="divide the logits by this; 0 is greedy argmax")
    g.add_argument("--top-k", type=int, default=None,
                   help="keep only the k most probable tokens (default: off, every token is kept)")
    g.add_argument("--top-p", type=float, default=1.0,
                   help="keep the smallest set of most probable tokens with mass >= p (1.0: off)")
    g.add_argument("--seed", type=sample_seed, default=None,
                   help="seed of the sampler (0 .. 2**64-1): the same seed gives the same samples (default: a "
                        "fresh seed each run, so samples differ from run to run)")
    g.add_argument("--stop", action="append", default=None, metavar="STR",
                   help="stop string, repeatable; \\n, \\t, \\r are read as newline, tab, return (default: none)")
    g.add_argument("--json", action="store_true", help=JSON_HELP)
    g.set_defaults(func=run)


def cmd_eval(args) -> None:
    from ..corpus import read_text
    from ..lm import LM

    lm = on_device(with_adapt(LM.load(args.model_dir), args), args)
    documents = args.documents or lm.documents
    if _stream_eval(lm, args.file, documents):
        from ..scoring import evaluate_file

        m = evaluate_file(lm.model, lm.vocab, args.file, documents)
    else:
        m = lm.evaluate(read_text(args.file), args.documents, stride=args.stride)
    if args.json:
        print_json(m)
    else:
        print(fmt_metrics(m))


def _stream_eval(lm, path, documents: str) -> bool:
    """Evaluate a file this big piece by piece (``scoring.evaluate_file``) where the model allows it."""
    p = Path(path)
    big = p.is_file() and p.stat().st_size > STREAM_EVAL_BYTES
    return big and (documents == "lines" or lm.model.family == "ngram")


def cmd_score(args) -> None:
    from ..lm import LM

    lm = on_device(with_adapt(LM.load(args.model_dir), args), args)
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
        print_json(result)
        return
    what = f"log p({args.text!r} | {args.given!r})" if args.given is not None else f"log p({args.text!r}{'' if args.no_eos else ' <eos>'})"
    print(f"{what} = {lp:.6f} nats = {lp / LN2:.6f} bits")
    for row in result.get("token_logprobs", []):
        print(f"  {row['token']!r:>10}  {row['logprob']:10.6f}")


def cmd_sample(args) -> None:
    from ..lm import LM

    lm = on_device(with_adapt(LM.load(args.model_dir), args), args)
    stop = [_unescape(x) for x in args.stop] if args.stop else None
    samples = lm.generate(args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, seed=args.seed, stop=stop,
                          num_samples=args.num_samples)
    samples = samples if isinstance(samples, list) else [samples]
    if args.json:
        print_json([{"prompt": args.prompt, "completion": s.text, "text": args.prompt + s.text,
                      "finish_reason": s.finish_reason, "n_tokens": len(s.token_ids)} for s in samples])
        return
    for i, s in enumerate(samples):
        # one sample: stdout holds only the text (for pipes), its header goes to stderr
        print(sample_header(i, len(samples), s), file=sys.stderr if len(samples) == 1 else sys.stdout, flush=True)
        print(args.prompt + s.text, flush=True)


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
