"""Files are written with the user's umask applied, like any other file (issue 8, item 5)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from arlm.io import atomic_path, atomic_write_text

from conftest import NAMES


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_writes_apply_the_umask(tmp_path, umask, mask):
    umask(mask)
    atomic_write_text(tmp_path / "a.txt", "hello")
    assert _mode(tmp_path / "a.txt") == 0o666 & ~mask
    with atomic_path(tmp_path / "w.safetensors") as tmp:  # safetensors replaces the file it writes (0600)
        save_file({"x": torch.zeros(2)}, str(tmp))
    assert _mode(tmp_path / "w.safetensors") == 0o666 & ~mask
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_explicit_mode_and_failed_write(tmp_path, umask):
    umask(0o077)
    atomic_write_text(tmp_path / "b.txt", "x", mode=0o640)
    assert _mode(tmp_path / "b.txt") == 0o640
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert (tmp_path / "b.txt").read_text() == "x" and len(list(tmp_path.iterdir())) == 1


def test_model_directory_and_split_outputs_modes(tmp_path):
    data = tmp_path / "names.txt"
    data.write_text(NAMES.read_text(encoding="utf-8"), encoding="utf-8")
    data.chmod(0o640)
    env = dict(os.environ)
    script = (
        "import os, sys; os.umask(0o022); from arlm.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    run = lambda *a: subprocess.run([sys.executable, "-c", script, *map(str, a)], capture_output=True, text=True,
                                    env=env, check=True)
    run("split", data, "--documents", "lines", "--train-out", tmp_path / "t.txt", "--val-out", tmp_path / "v.txt")
    assert _mode(tmp_path / "t.txt") == 0o640 and _mode(tmp_path / "v.txt") == 0o640
    run("train", tmp_path / "t.txt", "--order", "3", "--documents", "lines", "--out", tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert {"config.json", "model.safetensors", "vocab.json"} <= set(files)
    assert {p.name: _mode(p) for p in (tmp_path / "m").iterdir()} == {f: 0o644 for f in files}
