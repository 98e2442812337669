"""The ``arlm`` command line: one module per command group, each with ``add_parser(sub)`` and ``run(args)``.

It only composes the modules below it. Bad input ends with one line on stderr
(``arlm: error: …``) and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings

from ..errors import ArlmError
from . import combine, convert, demo, score, serve, train
from .common import HelpFormatter as _HelpFormatter  # noqa: F401  (the tests check every option's help with it)
from .common import Parser

#: The command groups, in the order ``arlm --help`` lists their commands.
GROUPS = (train, score, convert, combine, demo, serve)


def build_parser(train_family: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; ``train_family``: ``arlm train`` lists that family's flags alone."""
    from .. import __version__

    p = Parser(prog="arlm", description="Autoregressive language models with exact probabilities.")
    p.add_argument("--version", action="version", version=f"arlm {__version__}", help="print arlm's version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train.add_parser(sub, train_family)
    for group in GROUPS[1:]:
        group.add_parser(sub)
    _add_safety_flags(sub)
    return p


def _train_help_family(argv: list[str]) -> str | None:
    """``arlm train --model X --help``: X when it is a family the table trains, else None."""
    from ..models.registry import FAMILIES

    if not argv or argv[0] != "train" or not {"-h", "--help"} & set(argv):
        return None
    for i, a in enumerate(argv[:-1]):
        if a == "--model" and argv[i + 1] in FAMILIES and FAMILIES[argv[i + 1]].trains:
            return argv[i + 1]
    return None


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
    from ..device import add_device_argument

    for name in ("eval", "score", "sample", "mix", "serve", "heatmap", "mixer", "compress"):
        add_device_argument(sub.choices[name])
    add_device_argument(sub.choices["decompress"], default="the device the file was compressed on")
    from .common import ADAPT_COMMANDS, add_adapt_arguments

    for name in ADAPT_COMMANDS:
        add_adapt_arguments(sub.choices[name])


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
    from ..errors import Terminated

    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Run ``arlm ARGV``; returns the exit status (0, 1 for an OS error, 2 for bad input, 130/143 when stopped)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    # SIGTERM unwinds like Ctrl-C (temporary files removed, outputs left as they were), then exits 143;
    # training (a checkpoint first) and serve (a graceful shutdown) install their own handlers meanwhile
    from ..errors import Terminated

    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _main(argv)
    except Terminated:  # before the command started (parsing, imports)
        print("arlm: terminated by SIGTERM", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, old)


def _main(argv: list[str] | None) -> int:
    from ..errors import Interrupted, Terminated
    from ..io import os_reason

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_train_help_family(argv))
    args = parser.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # an argument's undecodable bytes are printed back as those bytes
        sys.stdout.reconfigure(errors="surrogateescape")
    try:
        args.given_flags = _given_flags(parser, argv, args.command)
        args.argv = argv  # `arlm train --nproc N` starts the same command under torchrun
        if getattr(args, "device", None) is not None:
            from ..device import resolve_device

            resolve_device(args.device)  # every command's --device, checked here before any work
        if args.command != "train":
            from ..threads import set_inference_threads

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
