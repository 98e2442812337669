"""Data-parallel training over several processes: ``torch.distributed`` + ``DistributedDataParallel``, launched by torchrun.

``torchrun --nproc-per-node N -m arlm train DATA --model gpt ...`` starts N
processes ("ranks") with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``) in their environment;
:func:`setup` joins them into one process group: NCCL when training on CUDA
(each rank on the GPU ``cuda:LOCAL_RANK``), gloo otherwise. Across machines the
same command runs on each with ``--nnodes M --node-rank I --rdzv-backend c10d
--rdzv-endpoint HOST:PORT``.

How a run stays one run (Li et al. 2020, "PyTorch Distributed: Experiences on
Accelerating Data Parallel Training", for DDP itself):

* the global batch (``--batch-size``) is drawn whole by every rank from the
  same seeded generator; rank r keeps rows ``[r*B/W, (r+1)*B/W)``. Its loss is
  its rows' summed NLL over the global batch's predicted-token count, times W,
  so that DDP's gradient average equals the gradient of the single-process
  ``mean_nll`` of the global batch: the run does not depend on the number of
  ranks (up to float rounding in the gradient sum; with ``dropout`` > 0 the
  masks differ from a single process's);
* evaluation splits the fixed val batches among the ranks and sums NLL and
  token counts across them;
* each step, the ranks agree on whether to stop (``--max-steps``; ``--max-time``
  and the elapsed time as rank 0 measures them, so the learning rate, which
  follows the time budget, is the same on every rank; a SIGINT/SIGTERM on any rank);
* rank 0 alone writes checkpoints, the log, the plot and the progress bar;
* a rank that dies makes the others' next collective fail: they stop with one
  line (:class:`~arlm.errors.ArlmError`) naming the step and the checkpoint
  kept (written atomically by rank 0, so never half-written). A rank that hangs
  is given up after ``ARLM_DDP_TIMEOUT`` seconds (default 300).
"""

from __future__ import annotations

import atexit
import datetime
import os
import sys
from dataclasses import dataclass

import torch

from ..errors import ArlmError

TIMEOUT_ENV = "ARLM_DDP_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
#: stop codes agreed on each step; the larger wins, in the single-process loop's order of precedence
STOP_CODES = {None: 0, "interrupted": 1, "max_time": 2, "max_steps": 3}


class RankFailure(ArlmError):
    """A collective failed: another rank died, hung past the timeout, or cannot be reached.

    ``printed``: the message is already on stderr (printed at once, before the
    clean-up, which torchrun may cut short with SIGTERM); the CLI does not repeat it.
    """

    printed = False

    def reported(self, more: str = "") -> "RankFailure":
        """This failure with ``more`` appended, printed now as one ``arlm: error:`` line."""
        e = RankFailure(f"{self}{more}")
        print(f"arlm: error: {e}", file=sys.stderr, flush=True)
        e.printed = True
        return e


def launched_by_torchrun() -> bool:
    """True when the environment holds torchrun's ``RANK`` and ``WORLD_SIZE``."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


@dataclass
class Dist:
    """This process's place in the run; ``world_size`` 1 (the default) is a single process, no collectives."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device | None = None  # where collective tensors live (cuda:LOCAL_RANK under NCCL)
    backend: str | None = None  # the process group's backend ("gloo", "nccl"); None in a single process

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def label(self) -> str:
        return f"rank {self.rank} of {self.world_size}"

    def record(self) -> dict:
        """``{"world_size", "backend"}``: what a run's summary, log and ``config.json`` say about its processes."""
        return {"world_size": self.world_size, "backend": self.backend}

    # -- collectives (each one names the failure of another rank as one line) --

    def _fail(self, e: BaseException, what: str) -> RankFailure:
        first = _first_sentence(e)
        return RankFailure(f"{self.label()}: {what}: another rank of the run stopped or cannot be reached "
                           f"({first[:160]})")

    def barrier(self, what: str = "waiting for the other ranks") -> None:
        if not self.enabled:
            return
        import torch.distributed as dist

        try:
            dist.barrier()
        except RuntimeError as e:  # DistBackendError and gloo's plain RuntimeErrors
            raise self._fail(e, what) from None

    def all_reduce(self, values: list[float], op: str = "sum", what: str = "exchanging figures") -> list[float]:
        """Sum (or max) ``values`` element-wise over the ranks, in float64."""
        if not self.enabled:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        try:
            dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        except RuntimeError as e:
            raise self._fail(e, what) from None
        return t.tolist()

    def agree_stop(self, reason: str | None, elapsed: float) -> tuple[str | None, float]:
        """The stop reason and elapsed seconds all ranks use this step: the strongest reason, rank 0's time."""
        if not self.enabled:
            return reason, elapsed
        code, t = self.all_reduce([STOP_CODES[reason], elapsed if self.is_main else -1.0], op="max",
                                  what="agreeing on the next step")
        return {v: k for k, v in STOP_CODES.items()}[int(code)], t

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """``model`` in ``DistributedDataParallel`` (one process group, gradients averaged on backward)."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        try:
            return DistributedDataParallel(model, device_ids=ids)
        except RuntimeError as e:
            raise self._fail(e, "starting DistributedDataParallel") from None

    def shard(self, rows: int) -> slice:
        """This rank's rows of a global batch of ``rows``.

        Raises:
            ArlmError: ``rows`` does not divide evenly among the ranks.
        """
        check_batch_split(rows, self.world_size)
        per = rows // self.world_size
        return slice(self.rank * per, (self.rank + 1) * per)


def check_batch_split(rows: int, world_size: int) -> None:
    """Refuse a global batch of ``rows`` that does not divide evenly among ``world_size`` ranks.

    Raises:
        ArlmError: one line, with the nearest batch size that divides.
    """
    if rows % world_size:
        raise ArlmError(f"--batch-size {rows} is the global batch: it must divide evenly among the "
                        f"{world_size} ranks (try {max(world_size, rows // world_size * world_size)})")


def _first_sentence(e: BaseException) -> str:
    """The gist of a backend error: its first line, without gloo's source-file prefix, up to the first full stop."""
    import re

    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    first = re.sub(r"^\[[^\]]*\]\s*", "", first)
    return first.split(". ")[0][:160]


_current = Dist()


def current() -> Dist:
    """The process group joined by :func:`setup`, or a single process."""
    return _current


def setup(device_name: str | None = None) -> Dist:
    """Join the process group that torchrun's environment describes (a no-op outside torchrun; idempotent).

    NCCL when ``device_name`` resolves to CUDA (each rank takes ``cuda:LOCAL_RANK``), gloo otherwise.

    Raises:
        ArlmError: the environment is incomplete, or the group cannot be formed.
    """
    global _current
    if _current.enabled or not launched_by_torchrun():
        return _current
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError:
        raise ArlmError("RANK, WORLD_SIZE, LOCAL_RANK must be integers (set by torchrun)") from None
    if world <= 1:
        return _current
    import torch.distributed as dist

    from ..device import resolve_device

    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    try:
        timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    except ValueError:
        raise ArlmError(f"{TIMEOUT_ENV} must be a number of seconds, got {os.environ[TIMEOUT_ENV]!r}") from None
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    except (RuntimeError, ValueError) as e:
        first = _first_sentence(e)
        raise ArlmError(f"rank {rank} of {world}: cannot join the {backend} process group ({first[:200]})") from None
    atexit.register(shutdown)
    _current = Dist(rank, world, local_rank, local_world, device, backend)
    return _current


def shutdown() -> None:
    """Leave the process group (at exit)."""
    global _current
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _current = Dist()
