"""Atomic file writes: write to a temporary name in the same directory, fsync, rename.

A write that fails (disk full, a file-size limit, a read-only directory) raises
an :class:`~arlm.errors.ArlmError` naming the path and the operating system's
reason, and leaves the file that was there before untouched.

The temporary file is created with mode 0o666 and the process umask applied,
as ``open()`` would create it (``tempfile.mkstemp`` would leave every output
``-rw-------``), or with an explicit ``mode``.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path

from .errors import ArlmError


def os_reason(e: BaseException) -> str:
    """The operating system's words for a failed read or write, on one line.

    ``OSError.strerror``, or, for libraries that wrap the OS error in their own
    exception (safetensors: ``I/O error: File too large (os error 27)``, or
    ``IoError(Os { code: 28, ... })`` in older versions), the strerror of
    the errno inside it.
    """
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    m = re.search(r"\(os error (\d+)\)|Os \{ code: (\d+)", str(e))
    if m:
        return os.strerror(int(m.group(1) or m.group(2)))
    return " ".join(str(e).split()) or type(e).__name__


def is_write_failure(e: BaseException) -> bool:
    """An OSError, or a library's wrapping of one (safetensors' ``SafetensorError`` with an ``IoError``)."""
    return isinstance(e, OSError) or type(e).__name__ == "SafetensorError" or "os error" in str(e).lower()


def write_error(path: str | Path, e: BaseException) -> ArlmError:
    """``ArlmError("cannot write PATH: REASON ...")`` for a failed write of ``path``."""
    return ArlmError(f"cannot write {path}: {os_reason(e)} (the previous file, if any, is unchanged)")


def _create_temp(path: Path, mode: int | None) -> tuple[Path, int]:
    """Create an empty, new temporary file beside ``path``; returns it and its permission bits."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            bits = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        return tmp, bits
    raise FileExistsError(f"no free temporary name beside {path}")


@contextmanager
def atomic_path(path: str | Path, mode: int | None = None):
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    ``mode`` None: the file gets 0o666 less the umask (like any new file);
    otherwise exactly ``mode`` (e.g. ``arlm split`` copies its input's mode).
    On an exception the temporary file is removed and ``path`` is untouched.

    Raises:
        ArlmError: the write failed at the OS level (``ENOSPC``, ``EFBIG``,
            ``EACCES``, ...), naming ``path`` and the reason.
    """
    path = Path(path)
    try:
        tmp, bits = _create_temp(path, mode)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
            if stat.S_IMODE(os.fstat(f.fileno()).st_mode) != bits:  # writers like safetensors replace the file (0600)
                os.chmod(tmp, bits)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if not isinstance(e, ArlmError) and isinstance(e, Exception) and is_write_failure(e):
            raise write_error(path, e) from None
        raise


def atomic_write_text(path: str | Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; ``mode`` as in :func:`atomic_path`.
    Raises ArlmError on a failed write."""
    with atomic_path(path, mode) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _same_file(a: Path, b: Path) -> bool:
    """The same file: equal resolved paths (symbolic links followed), or, for
    files that exist, the same inode (hard links, bind mounts)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_distinct_files(inputs: list[tuple[str, str | Path]], outputs: list[tuple[str, str | Path]]) -> None:
    """Refuse, before anything is written, an output file that is an input or another output.

    ``inputs`` and ``outputs`` are ``(label, path)`` pairs (the label names the
    option, e.g. ``--train-out``); ``None`` paths are skipped.

    Raises:
        ArlmError: one line naming both options and the file.
    """
    ins = [(label, Path(p)) for label, p in inputs if p is not None]
    outs = [(label, Path(p)) for label, p in outputs if p is not None]
    for i, (label, path) in enumerate(outs):
        if path.is_dir():
            raise ArlmError(f"{label} {path} is a directory, not a file")
        for other_label, other in ins:
            if _same_file(path, other):
                raise ArlmError(f"{label} {path} is the input {other_label} ({other}): writing it would destroy "
                                "the input; choose another file")
        for other_label, other in outs[:i]:
            if _same_file(path, other):
                raise ArlmError(f"{other_label} and {label} are the same file ({path}): one would overwrite "
                                "the other; choose two files")
