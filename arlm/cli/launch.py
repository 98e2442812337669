"""``arlm train --nproc N``: the same command as N DDP processes started through torchrun, and joining
the process group when started by it."""

from __future__ import annotations

import os
import signal
import sys

from ..errors import ArlmError
from ..models.registry import FAMILIES
from ..training import distributed


def start_distributed(args):
    """``arlm train``'s set-up for DDP; returns the :class:`arlm.training.distributed.Dist` of this process.

    With ``--nproc N`` (outside torchrun) it runs ``python -m torch.distributed.run
    --standalone --nproc-per-node N -m arlm train ...`` (the same arguments) and
    exits with its status. Under torchrun it joins the process group (gloo, or
    NCCL on CUDA). Only gpt and lstm train under DDP.

    Raises:
        ArlmError: ``--nproc`` below 1, an n-gram family under torchrun / ``--nproc``, or a
            ``--batch-size`` that does not divide among the processes (checked before any is started).
        SystemExit: after the launched torchrun ends (its exit status).
    """
    nproc = args.nproc
    fam = FAMILIES.get(args.model)
    neural = args.resume is not None or (fam is not None and fam.trains == "gradient")
    if nproc is not None and nproc < 1:
        raise ArlmError(f"--nproc must be >= 1, got {nproc}")
    torchrun = distributed.launched_by_torchrun() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if not neural and (torchrun or nproc is not None):
        how = "torchrun" if torchrun else "--nproc"
        raise ArlmError(f"{how}: only gpt and lstm train with several processes; {args.model} models are "
                        "counted in one process: run arlm train without " + how)
    world = int(os.environ.get("WORLD_SIZE", "1")) if torchrun else (nproc or 1)
    if world > 1:  # before anything is launched or written
        if args.resume is None:
            distributed.check_batch_split(args.batch_size or fam.defaults["batch_size"], world)
        elif not torchrun:  # the checks every rank would make on resuming
            from pathlib import Path

            from ..training.run import check_resume

            check_resume(Path(args.resume), world, max_steps=args.max_steps, max_time=args.max_time)
    if torchrun:
        return distributed.setup(args.device)
    if nproc is not None and nproc > 1:
        argv = _without_nproc(getattr(args, "argv", None) or sys.argv[1:])
        raise SystemExit(launch_torchrun(nproc, argv, args.threads))
    return distributed.current()


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less ``--nproc N`` / ``--nproc=N`` (torchrun's parser would take ``--nproc`` for its own options)."""
    out, skip = [], False
    for a in argv:
        name = a.split("=", 1)[0]
        if skip:
            skip = False
        elif len(name) >= 4 and "--nproc".startswith(name):  # argparse also accepts a prefix such as --npr
            skip = "=" not in a
        else:
            out.append(a)
    return out


def launch_torchrun(nproc: int, argv: list[str], threads: int | None = None) -> int:
    """Run ``arlm <argv>`` as ``nproc`` DDP processes on this machine through torchrun; returns its exit status.

    Each process gets ``OMP_NUM_THREADS`` = ``threads`` or the CPUs divided among them.
    """
    import subprocess

    from ..threads import cpu_count

    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads or max(1, cpu_count() // nproc))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "arlm", *argv]
    proc = subprocess.Popen(cmd, env=env)
    old = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))  # torchrun passes it on
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # the ranks got the Ctrl-C too: they checkpoint and stop; wait for them
                continue
    finally:
        signal.signal(signal.SIGTERM, old)
