"""Writes that fail name the path and the OS reason and keep the old file; outputs never clobber inputs."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from arlm import checkpoint
from arlm.errors import ArlmError
from arlm.io import atomic_path, atomic_write_text, check_distinct_files, os_reason


def test_atomic_write_disk_full_names_path_and_reason_and_keeps_old_file(tmp_path, monkeypatch):
    f = tmp_path / "out.txt"
    f.write_text("old")

    def full(self, *a, **k):  # ENOSPC, as a full disk reports it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(ArlmError, match=rf"cannot write {f}: No space left on device"):
        atomic_write_text(f, "new")
    monkeypatch.undo()
    assert f.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary left


def test_atomic_path_in_a_read_only_place_is_one_line():
    with pytest.raises(ArlmError, match="cannot write /proc/arlm-test.txt"):
        atomic_write_text("/proc/arlm-test.txt", "x")


def test_os_reason_reads_the_errno_inside_a_safetensors_error():
    class SafetensorError(Exception):
        pass

    e = SafetensorError('Error while serializing: IoError(Os { code: 27, kind: FileTooLarge, message: "File too large" })')
    assert os_reason(e) == "File too large"
    e = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert os_reason(e) == "No space left on device"
    assert os_reason(OSError(errno.ENOSPC, "No space left on device")) == "No space left on device"


def test_other_exceptions_pass_through_atomic_path(tmp_path):
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "x") as tmp:
            tmp.write_text("partial")
            raise KeyError("a bug, not a write failure")
    assert list(tmp_path.iterdir()) == []


SAVE_UNDER_LIMIT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (100 * 1024, 100 * 1024))  # ulimit -f 100
from safetensors.torch import save_file
import torch
from arlm.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    save_file({"x": torch.zeros(200_000)}, str(tmp))
"""


def test_file_size_limit_during_a_safetensors_save_is_one_line(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    res = subprocess.run([sys.executable, "-c", SAVE_UNDER_LIMIT, str(target)], capture_output=True, text=True)
    assert res.returncode != 0
    assert f"ArlmError: cannot write {target}: File too large" in res.stderr
    assert target.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1


def test_check_distinct_files(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("abc")
    with pytest.raises(ArlmError, match="--train-out and --val-out are the same file"):
        check_distinct_files([("DATA", data)], [("--train-out", tmp_path / "o.txt"), ("--val-out", tmp_path / "o.txt")])
    with pytest.raises(ArlmError, match="--train-out .* is the input DATA"):
        check_distinct_files([("DATA", data)], [("--train-out", data), ("--val-out", tmp_path / "v.txt")])
    with pytest.raises(ArlmError, match="is the input DATA"):  # the same file by another spelling
        check_distinct_files([("DATA", data)], [("--val-out", tmp_path / "sub" / ".." / "data.txt")])
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.txt").symlink_to(data)
    with pytest.raises(ArlmError, match="is the input DATA"):
        check_distinct_files([("DATA", data)], [("--val-out", tmp_path / "link.txt")])
    os.link(data, tmp_path / "hard.txt")
    with pytest.raises(ArlmError, match="is the input DATA"):
        check_distinct_files([("DATA", data)], [("--val-out", tmp_path / "hard.txt")])
    with pytest.raises(ArlmError, match="is a directory"):
        check_distinct_files([("DATA", data)], [("--val-out", tmp_path / "sub")])
    check_distinct_files([("DATA", data)], [("--train-out", tmp_path / "t.txt"), ("--val-out", tmp_path / "v.txt")])


# -- output directories -------------------------------------------------------------------


def _model(d: Path, family="ngram", vocab="char"):
    from arlm.lm import LM
    from arlm.models.ngram import NGramConfig, NGramModel
    from arlm.data import encode_documents
    from arlm.vocab import train_vocab

    v = train_vocab(vocab, ["abcab", "bca"])
    m = NGramModel.fit(NGramConfig(v.vocab_size, v.bos_id, v.eos_id, order=2), encode_documents(v, ["abcab", "bca"]))
    LM(m, v, "lines").save(d)


def test_output_dir_policy(tmp_path):
    d = tmp_path / "d"
    assert checkpoint.check_output_dir(d, family="ngram", vocab="char") is False  # absent
    d.mkdir()
    assert checkpoint.check_output_dir(d, family="ngram", vocab="char") is False  # empty
    _model(d)
    assert checkpoint.check_output_dir(d, family="ngram", vocab="char") is True  # the same kind: replaced whole
    for family, vocab in (("gpt", "char"), ("ngram", "byte"), ("mixture", "char")):
        with pytest.raises(ArlmError, match=r"already holds an ngram model \(char vocab\); pass --force"):
            checkpoint.check_output_dir(d, family=family, vocab=vocab)
        assert checkpoint.check_output_dir(d, force=True, family=family, vocab=vocab) is True
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ArlmError, match=r"files that are not an arlm model \(todo.txt\)"):
        checkpoint.check_output_dir(tmp_path / "notes", family="ngram", vocab="char")
    with pytest.raises(ArlmError, match="DATA .* is inside --out"):
        checkpoint.check_output_dir(tmp_path / "notes", force=True, inputs=[("DATA", tmp_path / "notes" / "todo.txt")])
    with pytest.raises(ArlmError, match="is a file"):
        checkpoint.check_output_dir(tmp_path / "notes" / "todo.txt")


def test_new_model_dir_replaces_whole_or_not_at_all(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "stale.txt").write_text("old run")
    with pytest.raises(RuntimeError):
        with checkpoint.new_model_dir(d, replace=True) as where:
            (where / "config.json").write_text("{}")
            raise RuntimeError("failed half-way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"] and (d / "stale.txt").read_text() == "old run"
    with checkpoint.new_model_dir(d, replace=True) as where:
        assert where != d
        (where / "config.json").write_text("{}")
    assert sorted(p.name for p in d.iterdir()) == ["config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert (d.stat().st_mode & 0o777) == (0o777 & ~_umask())
    checkpoint.clear_dir(d)
    assert d.is_dir() and not any(d.iterdir()) and sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
