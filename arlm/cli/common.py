"""What every command module shares: the parser classes, JSON and metric printing, small argument types."""

from __future__ import annotations

import argparse
import json
import re

DOCUMENTS_HELP = "lines: each non-empty line is a document; file: the whole file is one document"
JSON_HELP = "print the result as JSON on stdout instead of text"


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
sample_seed = _seed_type(2**64 - 1)
#: Split and training seeds: 0 .. 2**32 - 1 (torch's CPU generator keeps 32 bits of a manual seed).
train_seed = _seed_type(2**32 - 1)


def on_device(lm, args):
    """``lm`` moved to the command's ``--device`` (see ``arlm.device.add_device_argument``); the CPU without it."""
    return lm.to(args.device) if getattr(args, "device", None) else lm


def print_json(obj) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    # a surrogate (an undecodable byte of an argument) has no UTF-8 form: keep it as a JSON \u escape
    print(re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", text))


def fmt_metrics(m: dict) -> str:
    return (
        f"bits_per_char {m['bits_per_char']:.4f}  bits_per_byte {m['bits_per_byte']:.4f}  "
        f"mean_nll {m['mean_nll']:.4f} nats/token  perplexity {m['perplexity']:.3f}  "
        f"(nll {m['nll']:.1f} nats over {m['n_tokens']} tokens, {m['n_chars']} chars, {m['n_documents']} documents)"
    )


def sample_header(i: int, n: int, s) -> str:
    """``--- sample 1 of 3 (stop, 37 new tokens) ---``: the line above each sample's text."""
    k = len(s.token_ids)
    return f"--- sample {i + 1} of {n} ({s.finish_reason}, {k} new token{'' if k == 1 else 's'}) ---"


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
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


class Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), like every other bad input; help with defaults."""

    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", HelpFormatter)
        super().__init__(*a, **kw)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


#: The commands that take ``--adapt`` (dynamic evaluation of a gpt or lstm while it reads).
ADAPT_COMMANDS = ("eval", "score", "sample", "serve", "heatmap", "compress")


def add_adapt_arguments(p: argparse.ArgumentParser) -> None:
    """``--adapt`` and one ``--adapt-SETTING`` flag per field of ``DynEvalConfig`` with help metadata."""
    g = p.add_argument_group("dynamic evaluation (gpt and lstm models)")
    g.add_argument("--adapt", action="store_true",
                   help="dynamic evaluation: the model keeps training on each document as it reads it (Krause et al. "
                        "2018); probabilities stay exact")
    add_adapt_settings(g, prefix="adapt-", note=" (with --adapt)")


def add_adapt_settings(p, prefix: str, note: str = "") -> None:
    """One ``--{prefix}SETTING`` flag per field of ``DynEvalConfig`` with help metadata (dest ``adapt_SETTING``,
    default None: the config's own default applies)."""
    from ..models.dyneval import DynEvalConfig
    from ..models.registry import hyperparameters

    for f in hyperparameters(DynEvalConfig):
        kind = {"int": positive_int, "float": float}.get(str(f.type).removesuffix(" | None"), str)
        default = "" if f.default is None else f" (default: {f.default})"
        p.add_argument("--" + prefix + f.name.replace("_", "-"), dest="adapt_" + f.name, type=kind, default=None,
                       choices=f.metadata.get("choices"), metavar=None if "choices" in f.metadata else f.name.upper(),
                       help=f.metadata["help"] + default + note)


def adapt_settings(args) -> dict | None:
    """The ``--adapt-*`` settings the user typed, or None without ``--adapt``.

    Raises:
        ArlmError: an ``--adapt-*`` flag without ``--adapt``.
    """
    given = {k[len("adapt_"):]: v for k, v in vars(args).items() if k.startswith("adapt_") and v is not None}
    if not getattr(args, "adapt", False):
        if given:
            from ..errors import ArlmError

            raise ArlmError(f"--adapt-{next(iter(given)).replace('_', '-')} needs --adapt")
        return None
    return given


def with_adapt(lm, args):
    """``lm`` under dynamic evaluation when the command has ``--adapt`` (see :func:`adapt_settings`)."""
    settings = adapt_settings(args)
    return lm if settings is None else lm.adapt(**settings)
