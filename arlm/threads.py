"""How many CPU threads arlm uses, and when it must leave the count alone.

A thread count the user fixed is respected everywhere, training and inference:
``--threads N``, then ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` in the
environment, then a ``torch.set_num_threads`` call made after ``arlm`` was
imported (one made before cannot be told from PyTorch's default). Only when
none is given does arlm choose: the idle cores (:func:`default_threads`) for
inference, and the load-adaptive governor (``arlm.train.ThreadGovernor``) for
training.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import ArlmError

_TORCH_THREADS_AT_IMPORT = torch.get_num_threads()
_set_by_arlm: int | None = None  # the last count arlm chose by itself (not the user's)
_fixed_by_user: int | None = None  # a --threads of an inference command, kept for training in the same process
ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_threads() -> int:
    """The cores that are idle now: the CPU count (affinity) minus the other
    runnable processes (``/proc/loadavg``), at least 1."""
    busy = 0
    try:
        # field 4 is "running/total"; running counts this process too
        running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        busy = max(0, running - 1)
    except (OSError, ValueError, IndexError):
        pass
    return max(1, cpu_count() - busy)


def explicit_threads(requested: int | None = None) -> int | None:
    """The thread count the user fixed, or None when arlm may choose.

    ``requested`` (a ``--threads`` value) wins; then ``OMP_NUM_THREADS`` or
    ``MKL_NUM_THREADS`` (the first number of a nested list such as ``4,2``);
    then a ``torch.set_num_threads`` made since ``arlm`` was imported.

    Raises:
        ArlmError: ``requested`` below 1.
    """
    if requested is not None:
        if requested < 1:
            raise ArlmError(f"--threads must be >= 1, got {requested}")
        return int(requested)
    if _fixed_by_user is not None:
        return _fixed_by_user
    for var in ENV_VARS:
        value = os.environ.get(var, "").split(",")[0].strip()
        if value.isdigit() and int(value) >= 1:
            return int(value)
    if torch.get_num_threads() not in (_TORCH_THREADS_AT_IMPORT, _set_by_arlm):
        return torch.get_num_threads()
    return None


def set_inference_threads(requested: int | None = None) -> int:
    """Set the thread count for scoring and sampling and return it: the user's
    (:func:`explicit_threads`) when given, else the idle cores. PyTorch's
    one-thread-per-core default collapses when another process keeps a core
    busy (its threads spin-wait for each other)."""
    global _set_by_arlm, _fixed_by_user
    n = explicit_threads(requested)
    if requested is not None:
        _fixed_by_user = n
    else:
        n = _set_by_arlm = n or default_threads()
    torch.set_num_threads(n)
    return n
