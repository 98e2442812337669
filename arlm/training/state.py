"""The files that make a run resumable, and what goes into them.

``training_state.safetensors`` holds the current and best weights, the
optimiser state, the step, elapsed time and every RNG state (as uint8
tensors), with the JSON metadata in its header, in one file written
atomically: a crash mid-write leaves the previous checkpoint intact. The
encoded train/val data is stored once in ``training_data.safetensors`` (or,
for a token directory, where that directory is).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import checkpoint
from ..errors import ArlmError
from ..io import atomic_path
from ..paths import CONFIG_FILE, DATA_FILE, STATE_FILE
from .batches import TokenData, token_data_from_dir

STATE_VERSION = 1


@dataclass
class RunState:
    """Where a run stands: what the state file records besides tensors.

    ``elapsed`` is seconds of wall-clock time in the loop (all sessions of the
    run); ``best_val`` is nats per token (``math.inf`` before any evaluation);
    ``best_weights`` the parameters at ``best_step`` (on the CPU).
    """

    step: int = 0
    elapsed: float = 0.0
    tokens_seen: int = 0
    best_val: float = math.inf
    best_step: int = -1
    best_weights: dict[str, torch.Tensor] | None = None


# -- the state file ----------------------------------------------------------------


def write_state(path: Path, tensors: dict[str, torch.Tensor], meta: dict, _hook=None) -> None:
    """Write ``tensors`` + JSON ``meta`` (in the header) as one safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"arlm_training_state": json.dumps(meta)})
        if _hook is not None:
            _hook()


def read_state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`write_state`.

    Raises:
        ArlmError: missing or corrupt.
    """
    from safetensors import safe_open

    if not path.is_file():
        try:
            family = json.loads((path.parent / CONFIG_FILE).read_text(encoding="utf-8")).get("family")
        except (OSError, ValueError, AttributeError):
            family = None
        from ..models.registry import FAMILIES

        resumable = [f.name for f in FAMILIES.values() if f.resumes]
        if family is not None and family not in resumable:
            raise ArlmError(f"cannot resume: {path.parent} holds a model of family {family}; only "
                            f"{' and '.join(resumable)} runs are "
                            "trained step by step and resume")
        raise ArlmError(f"cannot resume: {path} is missing (every gpt or lstm run of arlm train "
                        "writes it; a model directory copied without it cannot resume)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = json.loads((f.metadata() or {})["arlm_training_state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for a bad file
        raise ArlmError(f"cannot resume: {path} is corrupt ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return tensors, meta


def save_state(out_dir: Path, model, optimizer, gen: torch.Generator, vocab, meta: dict, settings, run: RunState,
               stopped: str | None = None, extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``training_state.safetensors``: weights, best weights, optimiser, RNGs, and where the run stands
    (and ``extra`` tensors, e.g. the weights' moving average ``ema.NAME``)."""
    tensors = {f"model.{n}": p for n, p in model.named_parameters()}
    tensors.update(extra or {})
    tensors.update({f"best.{n}": t for n, t in (run.best_weights or snapshot(model)).items()})
    sd = optimizer.state_dict()
    keys = []
    for idx, st_ in sd["state"].items():
        for name, t in st_.items():
            keys.append(f"{idx}.{name}")
            tensors[f"optim.{idx}.{name}"] = t if t.dim() else t.reshape(())
    tensors.update(_rng_tensors(gen))
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    st = {
        "version": STATE_VERSION,
        "family": model.family,
        "model_config": dataclasses.asdict(model.config),
        "vocab": vocab.kind,
        "meta": meta,
        "settings": dataclasses.asdict(settings),
        "step": run.step,
        "elapsed_s": run.elapsed,
        "tokens_seen": run.tokens_seen,
        "best_val_loss": run.best_val if math.isfinite(run.best_val) else None,
        "best_step": run.best_step,
        "stopped": stopped,
        "optimizer": {"param_groups": groups, "keys": keys},
    }
    write_state(out_dir / STATE_FILE, tensors, st, _hook=lambda: _checkpoint_write_hook(run.step))


def restore_state(model, optimizer, gen: torch.Generator, tensors: dict[str, torch.Tensor], st: dict) -> RunState:
    """Load what :func:`save_state` wrote into ``model``, ``optimizer``, ``gen`` and torch's RNGs; returns the run's place."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(tensors[f"model.{n}"])
    opt_sd = {"state": {}, "param_groups": st["optimizer"]["param_groups"]}
    for key in st["optimizer"]["keys"]:
        idx, name = key.split(".", 1)
        opt_sd["state"].setdefault(int(idx), {})[name] = tensors[f"optim.{key}"]
    for g in opt_sd["param_groups"]:
        g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict(opt_sd)
    gen.set_state(tensors["rng.data"])
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    return RunState(
        step=st["step"], elapsed=st["elapsed_s"], tokens_seen=st["tokens_seen"],
        best_val=st["best_val_loss"] if st["best_val_loss"] is not None else math.inf,
        best_step=st["best_step"],
        best_weights={n: tensors[f"best.{n}"] for n, _ in model.named_parameters()},
    )


def snapshot(model) -> dict[str, torch.Tensor]:
    """A CPU copy of ``model``'s parameters."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}


def _rng_tensors(gen: torch.Generator) -> dict[str, torch.Tensor]:
    out = {"rng.data": gen.get_state(), "rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, st in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = st
    return out


def _checkpoint_write_hook(step: int) -> None:
    # Test hook: ARLM_TEST_CHECKPOINT_SLEEP="STEP:SECONDS" holds the half-written
    # temporary state file of step STEP for SECONDS, so a test can SIGKILL the
    # process in the middle of a checkpoint write.
    spec = os.environ.get("ARLM_TEST_CHECKPOINT_SLEEP")
    if spec:
        at, _, seconds = spec.partition(":")
        if int(at) == step:
            print(f"ARLM_TEST: writing checkpoint of step {step}", file=sys.stderr, flush=True)
            time.sleep(float(seconds))


# -- the model directory -----------------------------------------------------------------


def save_model_dir(model, vocab, out_dir, meta, weights, best_step, best_val, processes: dict | None = None) -> None:
    """Write the model directory with ``weights`` (the best so far) without touching ``model``.

    ``config.json``'s ``training`` record holds ``best_step``, ``best_val_loss``
    (nats/token), ``world_size`` and ``backend`` (``processes``, see ``Dist.record``; 1 and None without DDP).
    """
    family = type(model)
    with torch.random.fork_rng(devices=[]):  # building a model draws from the RNG; training must not notice
        cpu_model = family(model.config)
    with torch.no_grad():
        for n, p in cpu_model.named_parameters():
            p.copy_(weights[n])
    cpu_model.eval()
    m = dict(meta)
    m["training"] = {"best_step": best_step, "best_val_loss": best_val if math.isfinite(best_val) else None,
                     **(processes or {"world_size": 1, "backend": None})}
    checkpoint.save(out_dir, cpu_model, vocab, m)


# -- the training data file ----------------------------------------------------------------


def write_data(out_dir: Path, train: TokenData, val: TokenData | None) -> None:
    """Store the encoded train/val ids (or, for a token directory, where it is) for a resume."""
    if train.source is not None:  # a token directory on disk: store where it is, not the data
        write_state(out_dir / DATA_FILE, {}, {"version": STATE_VERSION, "token_dir": train.source})
        return
    t = {"train.ids": train.ids.int(), "train.offsets": train.offsets}
    if val is not None:
        t.update({"val.ids": val.ids.int(), "val.offsets": val.offsets})
    write_state(out_dir / DATA_FILE, t, {"version": STATE_VERSION})


def read_data(out_dir: Path) -> tuple[TokenData, TokenData | None]:
    """The train and val data a run was started with (see :func:`write_data`).

    Raises:
        ArlmError: the data file is missing or corrupt, or its token directory changed.
    """
    if not (out_dir / DATA_FILE).is_file():
        raise ArlmError(f"cannot resume {out_dir}: {DATA_FILE} (the training token ids) is missing; the run was "
                        "trained with --no-keep-data or the file was deleted: start a new run instead")
    t, meta = read_state(out_dir / DATA_FILE)
    if "token_dir" in meta:
        return token_data_from_dir(**meta["token_dir"])[:2]
    train = TokenData(t["train.ids"], t["train.offsets"])
    val = TokenData(t["val.ids"], t["val.offsets"]) if "val.ids" in t else None
    return train, val


