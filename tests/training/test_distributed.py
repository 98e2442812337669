"""DDP through the real torchrun on 127.0.0.1 (gloo, one thread per rank): the run does not depend on the ranks.

Every run trains the same tiny GPT (1 layer, n_embd 32, block 16, global batch 8; the default optimiser, Muon) for
20 steps on names.txt and is compared with one process: every weight within 1e-5 and the loss of every step within
1e-5. The runs use ``--precision fp32``: under bf16 autocast the rounding of activations depends on how a batch is
split into matmuls, so a split batch is only equal to float rounding amplified by bf16, not within 1e-5.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_arlm
from arlm import checkpoint
from arlm.errors import ArlmError
from arlm.training import STATE_FILE, read_state
from arlm.training.distributed import Dist

DATA = Path(__file__).resolve().parents[1] / "data"
TRAIN = ["train", str(DATA / "names.txt"), "--model", "gpt", "--documents", "lines", "--n-layer", "1",
         "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "8", "--max-steps", "20",
         "--eval-interval", "5", "--eval-iters", "2", "--threads", "1", "--dropout", "0", "--precision", "fp32"]


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ARLM_TEST_")}
    e.update(OMP_NUM_THREADS="1", ARLM_DDP_TIMEOUT="60", **extra)
    return e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def arlm(*argv, timeout=120, **extra) -> subprocess.CompletedProcess:
    return run_arlm(*argv, check=False, env=env(**extra), timeout=timeout)

def torchrun(*launcher, argv, timeout=120, **extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "arlm", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(**extra))


def finish(*procs, timeout=120) -> list[tuple[int, str]]:
    """Wait for every process (killing all of them if one hangs); returns (exit status, stderr)."""
    out = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=timeout)
            out.append((p.returncode, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
            if "loss" in r]


def weights(out: Path) -> dict[str, torch.Tensor]:
    tensors, _ = read_state(out / STATE_FILE)
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "best."))}


def assert_matches_one_process(run: Path, single: Path) -> None:
    a, b = losses(single), losses(run)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, 21))
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b)) < 1e-5
    wa, wb = weights(single), weights(run)
    assert wa.keys() == wb.keys()
    for k in wa:
        diff = (wa[k] - wb[k]).abs()
        assert float(diff.max()) < 1e-5, (k, float(diff.max()))


def test_two_ranks_match_one_process_a_dead_rank_stops_the_other_and_the_run_resumes(tmp_path):
    single, ddp, broken = tmp_path / "single", tmp_path / "ddp", tmp_path / "broken"
    r = arlm(*TRAIN, "--out", str(single))
    assert r.returncode == 0, r.stderr
    # arlm train --nproc 2 starts torchrun (--standalone) for the user
    r = arlm(*TRAIN, "--out", str(ddp), "--nproc", "2")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("trained gpt") == 1  # rank 0 alone reports, and says how many ranks and which backend
    assert "tokens/s on 2 ranks (gloo);" in r.stderr, r.stderr
    for run, processes in ((ddp, {"world_size": 2, "backend": "gloo"}), (single, {"world_size": 1, "backend": None})):
        training = json.loads((run / "config.json").read_text())["training"]
        assert {k: training[k] for k in processes} == processes
        logged = [rec for rec in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if "tokens_per_s" in rec]
        assert logged and all({k: rec[k] for k in processes} == processes for rec in logged)
    assert_matches_one_process(ddp, single)

    # rank 1 dies before step 14: rank 0 stops with one line, the checkpoint of step 10 stays intact
    # (--monitor-interval 1: torchrun ends the other ranks a second after one fails, not at once)
    ((rc, err),) = finish(torchrun("--standalone", "--nproc-per-node", "2", "--monitor-interval", "1",
                                   argv=[*TRAIN, "--out", str(broken)],
                                   ARLM_TEST_EXIT_AT="1:13"))
    assert rc != 0
    lines = [x for x in err.splitlines() if x.startswith("arlm: error:")]
    assert len(lines) == 1, err
    assert "rank 0 of 2" in lines[0] and "another rank" in lines[0] and "checkpoint of step 10" in lines[0]
    assert "--resume" in lines[0]
    _, st = read_state(broken / STATE_FILE)
    assert st["step"] == 10
    checkpoint.load(broken)
    # ... and resumes under torchrun exactly: the same as the uninterrupted two-rank run, bit for bit
    ((rc, err),) = finish(torchrun("--standalone", "--nproc-per-node", "2", argv=["train", "--resume", str(broken)]))
    assert rc == 0, err
    assert losses(broken) == losses(ddp)
    wa, wb = weights(ddp), weights(broken)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


#: issue 24's options, model and loop, all on
EVERY_OPTION = ["--documents", "file", "--n-layer", "2", "--qk-norm", "--mlp-act", "relu2", "--zero-init",
                "--no-tie-word-embeddings", "--logit-softcap", "15", "--value-residual", "--unet-skips",
                "--optimizer", "muon", "--muon-weight-decay", "0.5", "--muon-momentum-warmup", "5",
                "--ema-decay", "0.9", "--batch-order", "epochs"]


def test_two_ranks_match_one_process_with_every_option(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    for out, extra in ((single, []), (ddp, ["--nproc", "2"])):
        r = arlm(*TRAIN, *EVERY_OPTION, "--out", str(out), *extra)
        assert r.returncode == 0, r.stderr
    assert_matches_one_process(ddp, single)
    ta, _ = read_state(single / STATE_FILE)
    tb, _ = read_state(ddp / STATE_FILE)
    ema = [k for k in ta if k.startswith("ema.")]
    assert ema and all(float((ta[k] - tb[k]).abs().max()) < 1e-5 for k in ema)


def test_two_machines_on_one_host_match_one_process(tmp_path):
    single, nodes = tmp_path / "single", tmp_path / "nodes"
    r = arlm(*TRAIN, "--out", str(single))
    assert r.returncode == 0, r.stderr
    port = free_port()
    procs = [torchrun("--nnodes", "2", "--node-rank", str(i), "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                      "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "arlm-test", argv=[*TRAIN, "--out", str(nodes)])
             for i in (0, 1)]
    results = finish(*procs)
    assert all(rc == 0 for rc, _ in results), results
    assert sum(err.count("trained gpt") for _, err in results) == 1
    assert_matches_one_process(nodes, single)


def test_ngram_refuses_several_processes(tmp_path):
    r = arlm("train", str(DATA / "names.txt"), "--model", "ngram", "--nproc", "2", "--out", str(tmp_path / "n"))
    assert r.returncode == 2 and r.stderr.startswith("arlm: error: --nproc: only gpt and lstm"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    # as a rank of torchrun (its environment), before joining any process group
    r = arlm("train", str(DATA / "names.txt"), "--model", "ngram", "--out", str(tmp_path / "n"),
             RANK="0", WORLD_SIZE="2", LOCAL_RANK="0")
    assert r.returncode == 2 and r.stderr.startswith("arlm: error: torchrun: only gpt and lstm"), r.stderr
    assert not (tmp_path / "n").exists()


def test_a_batch_that_does_not_split_is_refused_before_anything_starts(tmp_path):
    out = tmp_path / "g"
    r = arlm(*TRAIN, "--nproc", "3", "--out", str(out))  # global batch 8 among 3 processes
    assert r.returncode == 2 and r.stderr.startswith("arlm: error: --batch-size 8 is the global batch"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()  # torchrun never started, nothing written


def test_global_batch_splits_evenly_among_ranks():
    d = Dist(rank=1, world_size=4)
    assert d.shard(8) == slice(2, 4)
    with pytest.raises(ArlmError, match="--batch-size 10 is the global batch"):
        d.shard(10)
    one = Dist()
    assert one.shard(7) == slice(0, 7) and one.all_reduce([1.5, 2.0]) == [1.5, 2.0]
    assert one.agree_stop("max_time", 3.0) == ("max_time", 3.0)


def test_a_resume_gets_every_check_of_a_fresh_run_before_anything_starts(tmp_path):
    out = tmp_path / "g"
    small = [a if a != "20" else "2" for a in TRAIN]  # a finished 2-step run to resume
    r = arlm(*small, "--out", str(out))
    assert r.returncode == 0, r.stderr
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    for extra, needle in [(["--nproc", "3"], "global batch of 8 rows"), (["--nproc", "0"], "--nproc must be >= 1"),
                          (["--nproc", "2", "--max-steps", "0"], "--max-steps must be >= 1"),
                          (["--nproc", "2", "--max-time", "soon"], "--max-time"),
                          (["--nproc", "2", "--lr", "1"], "cannot change on resume")]:
        r = arlm("train", "--resume", str(out), *extra)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, (extra, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr  # refused before torchrun started
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
