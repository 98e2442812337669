"""Atomic file writes: write to a temporary name in the same directory, fsync, rename.

The temporary file is created with mode 0o666 and the process umask applied,
as ``open()`` would create it (``tempfile.mkstemp`` would leave every output
``-rw-------``), or with an explicit ``mode``.
"""

from __future__ import annotations

import os
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path


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
    """
    path = Path(path)
    tmp, bits = _create_temp(path, mode)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
            if stat.S_IMODE(os.fstat(f.fileno()).st_mode) != bits:  # writers like safetensors replace the file (0600)
                os.chmod(tmp, bits)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; ``mode`` as in :func:`atomic_path`."""
    with atomic_path(path, mode) as tmp:
        tmp.write_text(text, encoding="utf-8")
