"""What a run does to the machine it runs on: thread counts and malloc behaviour."""

from __future__ import annotations

import torch

from ..threads import ThreadGovernor, cpu_count, default_threads, explicit_threads


class RunThreads:
    """The CPU thread count for a run, restored by :meth:`close`.

    A count the user fixed (``--threads``, ``OMP_NUM_THREADS``, ...) is kept;
    otherwise, on a CPU, :class:`arlm.threads.ThreadGovernor` adapts it to the load.
    Under DDP (``dist`` with several ranks) the count is fixed: ``--threads`` or
    the CPUs divided among the ranks on this machine (``cores // LOCAL_WORLD_SIZE``),
    so that no rank's speed or float reductions drift from the others'.
    ``record(seconds_per_token)`` after every step; ``current`` is the count now.
    """

    def __init__(self, requested: int | None, device: torch.device, dist=None):
        self.before = torch.get_num_threads()
        if dist is not None and dist.enabled:
            if requested is not None and requested < 1:
                explicit_threads(requested)  # the one error message for a bad --threads
            fixed = requested or max(1, cpu_count() // max(1, dist.local_world_size))
        else:
            fixed = explicit_threads(requested)  # --threads, OMP_NUM_THREADS or torch.set_num_threads
        self.governor = ThreadGovernor(fixed or default_threads(), cpu_count(),
                                       enabled=fixed is None and device.type == "cpu")

    @property
    def current(self) -> int:
        return self.governor.current

    def record(self, seconds_per_token: float) -> None:
        self.governor.record(seconds_per_token)

    def close(self) -> None:
        torch.set_num_threads(self.before)


def keep_freed_memory():
    """Let glibc's malloc keep freed memory for reuse while training on CPU; returns the undo.

    A training step allocates and frees the same activation buffers (MB each)
    over and over. glibc hands big freed blocks back to the kernel (``mmap``
    threshold, heap trimming), so every step page-faults them in again: about
    a thousand page faults a step at the default size, each one costlier in a
    virtual machine. Raising the two thresholds keeps the memory in the
    process. A no-op where ``mallopt`` is not available (not glibc).
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return lambda: None
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    if not mallopt(M_MMAP_THRESHOLD, 32 << 20) or not mallopt(M_TRIM_THRESHOLD, 1 << 30):
        return lambda: None
    # glibc's default trim threshold; the mmap threshold stays (glibc raises it
    # by itself as big blocks are freed, up to the same 32 MiB)
    return lambda: mallopt(M_TRIM_THRESHOLD, 128 * 1024)
