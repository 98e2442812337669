"""Every option explains itself: `--help` of every subcommand, `--version` (issue 8, item 2)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import arlm
from arlm.cli import _HelpFormatter, build_parser


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    p = build_parser()
    (sub,) = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


SUBCOMMANDS = sorted(_subparsers())


def test_every_subcommand_is_covered():
    assert {"train", "eval", "score", "sample", "split", "mix", "compare", "demo"} <= set(SUBCOMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_lists_every_option_with_meaning_and_default(command):
    parser = _subparsers()[command]
    text = parser.format_help()
    formatter = _HelpFormatter(parser.prog)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = action.option_strings[0] if action.option_strings else action.metavar or action.dest
        for opt in action.option_strings:
            assert opt in text, (command, opt)
        assert action.help and len(action.help.split()) >= 2, f"{command} {name}: no help"
        assert "see arlm." not in action.help and ".py" not in action.help, f"{command} {name} sends to the source"
        flag = isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction)) and action.default in (False, None)
        if action.option_strings and not action.required and not flag:
            # a value option says what happens without it: the formatter's "(default: X)" or the help's own words
            assert "default" in formatter._get_help_string(action), f"{command} {name}: no default shown"


def test_defaults_are_shown_in_the_help_text():
    help_text = " ".join(_subparsers()["sample"].format_help().split())
    assert "(default: 200)" in help_text  # --max-new-tokens
    assert "(default: 1.0)" in help_text  # --temperature
    assert "(default: None)" not in help_text
    train = " ".join(_subparsers()["train"].format_help().split())
    assert "--threads" in train and "idle" in train and "(default: gpt 2, lstm 1)" in train


def test_version_and_help_in_a_subprocess():
    res = subprocess.run([sys.executable, "-m", "arlm", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == f"arlm {arlm.__version__}"
    res = subprocess.run([sys.executable, "-m", "arlm", "mix", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--embed" in res.stdout and "default" in res.stdout
