"""The ``--device`` of every command, checked in one place.

``auto`` picks cuda if available, else mps, else cpu; a device that was asked
for by name must exist on this machine, or the command stops with one line
naming it (never a PyTorch traceback from deep inside a model).
"""

from __future__ import annotations

import re

from .errors import ArlmError

DEVICE_NAMES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def resolve_device(name: str | None):
    """``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``; None means auto) -> a ``torch.device``.

    Raises:
        ArlmError: an unknown name, or a device this machine does not have.
    """
    import torch

    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    m = re.fullmatch(r"(cpu|cuda|mps)(?::(\d+))?", name)
    if not m:
        raise ArlmError(f"unknown device {name!r}: choose {', '.join(DEVICE_NAMES)} (or cuda:N)")
    kind, index = m.group(1), m.group(2)
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ArlmError(f"--device {name} requested but CUDA is not available on this machine (use cpu or auto)")
        if index is not None and int(index) >= torch.cuda.device_count():
            raise ArlmError(f"--device {name} requested but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif kind == "mps" and not _mps_available():
        raise ArlmError(f"--device {name} requested but MPS is not available on this machine (use cpu or auto)")
    elif kind == "cpu" and index is not None:
        raise ArlmError(f"unknown device {name!r}: the CPU takes no index")
    return torch.device(name)


#: the families whose parameters run on a chosen device; every other family computes on the CPU
NEURAL_FAMILIES = ("gpt", "lstm", "dyneval")


def add_device_argument(parser, default: str = "cpu") -> None:
    """Add ``--device`` (checked by :func:`resolve_device` before the command runs) to an argparse ``parser``.

    ``default`` is what the command does without the option, in words for the help.
    """
    parser.add_argument("--device", default=None, metavar="DEVICE",
                        help=f"where neural models run: auto | cpu | cuda[:N] | mps (default: {default}; auto: cuda "
                             "when present, else mps, else cpu); n-gram and context-mixing models stay on the CPU")


def place(model, device) -> None:
    """Move the neural parts of ``model`` (a model, or a composite with ``components``) to ``device``; the rest stays.

    Composites compute their mixing on the CPU and move each component's inputs
    to that component's device, so a mixture of an n-gram and a GPT puts only the GPT on the GPU.
    """
    if model.family in NEURAL_FAMILIES:
        model.to(device)
    for c in getattr(model, "components", None) or []:
        place(c, device)


def neural_device(model):
    """The device of ``model``'s first neural part (itself or a component, as :func:`place` puts them); the CPU
    when it has none."""
    import torch

    if model.family in NEURAL_FAMILIES:
        return model.device
    for c in getattr(model, "components", None) or []:
        d = neural_device(c)
        if d.type != "cpu":
            return d
    return torch.device("cpu")
