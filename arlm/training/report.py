"""What a run tells the user: ``train_log.jsonl`` (one JSON record per line), ``loss.png``, divergence errors."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ArlmError
from ..io import atomic_path, write_error
from ..paths import LOG_FILE, PLOT_FILE


class RunLog:
    """``train_log.jsonl``, appended to record by record (``fresh``: emptied first).

    Records: ``{"step", "loss", "lr"}`` after every step, ``{"step",
    "tokens_per_s", "elapsed_s", ...}`` every ``eval_interval`` steps,
    ``{"step", "val_loss", "elapsed_s"}`` at every evaluation (nats per token),
    ``{"step", "error"}`` when the run diverged. ``enabled`` False (a DDP rank
    other than 0) writes nothing.

    Raises:
        ArlmError: the file cannot be written (names the path).
    """

    def __init__(self, out_dir: Path, fresh: bool, enabled: bool = True):
        self.path = Path(out_dir) / LOG_FILE
        self.f = None
        if not enabled:
            return
        try:
            if fresh:
                self.path.write_text("", encoding="utf-8")
            self.f = open(self.path, "a", encoding="utf-8")
        except OSError as e:
            raise write_error(self.path, e) from None

    def __call__(self, record: dict) -> None:
        if self.f is None:
            return
        try:
            self.f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise write_error(self.path, e) from None

    def flush(self) -> None:
        if self.f is None:
            return
        try:
            self.f.flush()
        except OSError as e:
            raise write_error(self.path, e) from None

    def close(self) -> None:
        if self.f is None:
            return
        try:
            self.f.close()
        except OSError:  # a full disk: the error that stopped the run is the one to report
            pass


def truncate_log(path: Path, step: int) -> None:
    """Drop log records after ``step`` (written after the checkpoint we resume from)."""
    from ..plots import read_log

    keep = [r for r in read_log(path) if r.get("step", 0) <= step and "error" not in r]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")


def plot_run(out_dir: Path, model, vocab) -> None:
    """Draw ``loss.png`` from the log; a failure is a warning (a plot is never worth losing a run)."""
    try:
        from ..plots import plot_loss

        plot_loss(out_dir / LOG_FILE, out_dir / PLOT_FILE,
                  title=f"{out_dir}: {model.family}, {model.num_parameters():,} parameters, {vocab.kind} vocab "
                        f"- mean_nll per step")
    except Exception as e:
        import warnings

        warnings.warn(f"could not draw {PLOT_FILE}: {e}", stacklevel=1)


def diverged(step: int, value: float, best_step: int, out_dir: Path, log: RunLog, what: str = "loss") -> None:
    """Log and raise the error of a non-finite loss or gradient norm at update ``step + 1``.

    Raises:
        ArlmError: always; names the step and that the last good checkpoint is kept.
    """
    log({"step": step + 1, "error": f"non-finite {what}"})
    raise ArlmError(
        f"training stopped at step {step + 1}: the {what} is {value} (diverged); "
        f"{out_dir} keeps the best checkpoint (step {best_step}) and the last good training state; "
        "try a lower --lr"
    )
