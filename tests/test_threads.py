"""Thread counts: the user's cap is respected everywhere; the training governor follows the load."""

from __future__ import annotations

import pytest
import torch

from arlm import threads
from arlm import training as T
from arlm.device import resolve_device
from arlm.errors import ArlmError


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    threads._fixed_by_user = None


def test_explicit_threads_order(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert threads.explicit_threads(3) == 3
    with pytest.raises(ArlmError, match="--threads must be >= 1"):
        threads.explicit_threads(0)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.explicit_threads() == 1 and threads.explicit_threads(2) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")
    assert threads.explicit_threads() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert threads.explicit_threads() is None or torch.get_num_threads() != threads._TORCH_THREADS_AT_IMPORT


def test_inference_respects_the_environment_and_torch(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.set_inference_threads() == 1 and torch.get_num_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    n = threads.set_inference_threads()  # arlm's own choice is not mistaken for the user's
    assert n == threads.default_threads() or n >= 1
    assert threads.explicit_threads() is None
    m = max(n, threads._TORCH_THREADS_AT_IMPORT) + 1
    torch.set_num_threads(m)  # the user's torch.set_num_threads
    assert threads.explicit_threads() == m
    assert threads.set_inference_threads() == m


def test_cli_inference_commands_keep_the_users_cap(monkeypatch, tmp_path):
    from arlm import cli
    from arlm.lm import LM
    from arlm.vocab import CharVocab
    from conftest import make_ngram

    v = CharVocab.train(["ab", "ba"])
    LM(make_ngram(v, ["ab", "ba"], 2), v, "lines").save(tmp_path / "m")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(2)
    assert cli.main(["score", str(tmp_path / "m"), "ab"]) == 0 and torch.get_num_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    assert cli.main(["sample", str(tmp_path / "m"), "--threads", "1", "--max-new-tokens", "3"]) == 0
    assert torch.get_num_threads() == 1


def test_training_with_omp_num_threads_keeps_it_fixed(monkeypatch, tmp_path):
    from test_train import make, settings

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    model, vocab, train, val = make("gpt", "file")
    s = settings("file", threads=None, max_steps=8)
    T.run_training(model, vocab, train, val, s, tmp_path / "r", progress=False)
    import json

    recs = [json.loads(x) for x in (tmp_path / "r" / T.LOG_FILE).read_text().splitlines()]
    assert [r["threads"] for r in recs if "threads" in r] == [1, 1]


def test_device_is_checked_in_one_place():
    assert resolve_device("cpu").type == "cpu" and resolve_device(None).type in ("cpu", "cuda", "mps")
    for bad in ("tpu", "gpu", "cuda:x", "cpu:1"):
        with pytest.raises(ArlmError, match="device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ArlmError, match="CUDA is not available"):
            resolve_device("cuda")
    else:
        with pytest.raises(ArlmError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


# -- the governor -----------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def run(g, clock, seconds_per_token, steps, step_seconds=0.05, idle=None):
    """Feed ``steps`` steps; ``seconds_per_token(threads)`` gives each step's time per token."""
    counts = []
    for _ in range(steps):
        clock.t += step_seconds
        g.record(seconds_per_token(g.current))
        counts.append(g.current)
    return counts


def test_governor_stays_at_all_cores_on_a_quiet_machine():
    clock = Clock()
    g = threads.ThreadGovernor(2, 2, clock=clock, idle_cores=lambda: 0.0)
    counts = run(g, clock, lambda n: 1.0 if n == 2 else 1.5, 2000)
    assert set(counts) == {2} and g.switches == 0


def test_governor_recovers_promptly_when_a_disturbance_ends():
    clock = Clock()
    load = {"busy": False}
    idle = lambda: 0.05 if load["busy"] else 1.0  # noqa: E731  the other core, as /proc/stat sees it
    g = threads.ThreadGovernor(2, 2, clock=clock, idle_cores=idle)
    quiet = lambda n: 1.0 if n == 2 else 1.5  # noqa: E731
    busy = lambda n: 20.0 if n == 2 else 2.0  # noqa: E731  spin-waiting threads collapse
    run(g, clock, quiet, 100)
    load["busy"] = True
    counts = run(g, clock, busy, 200)  # 10 s of load
    assert counts[-1] == 1 and counts[:10].count(2) <= 6  # dropped within a few steps
    probes_under_load = sum(1 for a, b in zip(counts, counts[1:]) if a == 1 and b == 2)
    assert probes_under_load <= 2  # the idle check keeps probes rare while the other core is busy
    load["busy"] = False
    counts = run(g, clock, quiet, 100)  # 5 s after the load ended
    assert counts.index(2) * 0.05 <= 2.5 and counts[-1] == 2  # back to all cores within ~2 s


def test_governor_backs_off_under_a_lasting_load_even_without_proc_stat():
    clock = Clock()
    g = threads.ThreadGovernor(2, 2, clock=clock, idle_cores=lambda: None)
    run(g, clock, lambda n: 1.0 if n == 2 else 1.5, 50)
    counts = run(g, clock, lambda n: 20.0 if n == 2 else 2.0, 2400)  # 120 s of load
    probes = sum(1 for a, b in zip(counts, counts[1:]) if a == 1 and b == 2)
    assert 2 <= probes <= 5  # 10, 20, 40, 60 s back-off
    assert counts.count(2) <= 2 * probes + 10


def test_governor_first_step_after_a_switch_is_not_judged():
    clock = Clock()
    g = threads.ThreadGovernor(1, 2, clock=clock, idle_cores=lambda: 1.0)
    run(g, clock, lambda n: 1.5, 3)
    clock.t += 1.1
    g.record(1.5)  # the other core is idle: probe all cores
    assert g.current == 2 and g.probing is not None
    g.record(5.0)  # the thread pool wakes up: a slow first step is forgiven
    assert g.current == 2
    for _ in range(3):
        g.record(1.0)
    assert g.current == 2 and g.probing is None


def test_governor_starts_low_then_checks_soon():
    for idle, within in ((lambda: 1.0, 1.5), (lambda: None, 10.5)):  # with and without /proc/stat
        clock = Clock()
        g = threads.ThreadGovernor(1, 2, clock=clock, idle_cores=idle)  # a busy moment at launch
        counts = run(g, clock, lambda n: 1.0 if n == 2 else 1.5, 400)
        assert counts.index(2) * 0.05 <= within and counts[-1] == 2


def test_governor_steps_down_one_thread_on_big_machines():
    clock = Clock()
    g = threads.ThreadGovernor(8, 8, clock=clock, idle_cores=lambda: 0.0)
    run(g, clock, lambda n: 1.0, 20)
    run(g, clock, lambda n: 10.0 if n == 8 else 1.2, 10)
    assert g.current == 7


def test_disabled_governor_keeps_the_count():
    g = threads.ThreadGovernor(1, 2, enabled=False)
    for _ in range(50):
        g.record(100.0)
    assert g.current == 1 and torch.get_num_threads() == 1
