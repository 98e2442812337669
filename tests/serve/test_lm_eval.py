"""lm-evaluation-harness's ``local-completions`` against a real ``arlm serve``, with the remote tokenizer.

No tokenizer files and no network: lm-eval tokenizes through the server's
``/tokenize`` and scores with ``echo=true`` completions; every loglikelihood
it computes must equal ``conditional_log_prob`` and every rolling one ``log_prob``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TASKS = Path(__file__).resolve().parent / "lm_eval_tasks"

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.parametrize("name", ["ngram", "gpt"])
def test_local_completions_equals_the_library(server, lms, name, monkeypatch, tmp_path):
    for k, v in OFFLINE.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached from elsewhere, nothing left behind
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    monkeypatch.chdir(REPO)  # the task's data_files path is relative to the repository
    import lm_eval
    from lm_eval.tasks import TaskManager

    results = lm_eval.simple_evaluate(
        model="local-completions",
        model_args={"model": name, "base_url": server.url + "/v1/completions", "auth_token": server.api_key,
                    "tokenizer_backend": "remote", "max_retries": 1},
        tasks=["arlm_names_mc", "arlm_names_rolling"],
        task_manager=TaskManager(include_path=str(TASKS), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
    )
    lm = lms[name]
    tol = 1e-9 if name == "ngram" else 1e-5
    docs = [json.loads(line) for line in (TASKS / "names_mc.jsonl").read_text().splitlines()]
    assert len(docs) >= 20

    samples = results["samples"]["arlm_names_mc"]
    assert len(samples) == len(docs)
    correct = 0
    for s in samples:
        doc = s["doc"]
        lls = [r[0][0] for r in s["resps"]]
        for (context, continuation), ll in zip(s["arguments"], lls):
            assert (context, continuation) == (doc["context"], continuation)
            assert abs(ll - lm.conditional_log_prob(continuation, given=context)) <= tol
        direct = [lm.conditional_log_prob(c, given=doc["context"]) for c in doc["choices"]]
        correct += int(max(range(len(direct)), key=direct.__getitem__) == doc["label"])
    acc = results["results"]["arlm_names_mc"]["acc,none"]
    assert acc == pytest.approx(correct / len(docs), abs=1e-12)

    rolling = results["samples"]["arlm_names_rolling"]
    assert len(rolling) == len(docs)
    for s in rolling:
        ll = s["resps"][0][0]
        ll = ll[0] if isinstance(ll, (list, tuple)) else ll
        assert abs(ll - lm.log_prob(s["doc"]["name"], eos=False)) <= 20 * tol


def test_generate_until_through_local_completions(server, lms, monkeypatch, tmp_path):
    """lm-eval's generate_until requests (greedy, with a stop sequence) give ``LM.generate``'s text."""
    for k, v in OFFLINE.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    model = LocalCompletionsAPI(model="ngram", base_url=server.url + "/v1/completions",
                                tokenizer_backend="remote", auth_token=server.api_key, max_retries=1)
    reqs = [Instance("generate_until", {}, (ctx, {"until": ["\n"], "max_gen_toks": 12, "temperature": 0}), i)
            for i, ctx in enumerate(["al", "jo", "mar"])]
    out = model.generate_until(reqs)
    want = [lms["ngram"].generate(ctx, max_new_tokens=12, temperature=0, stop=["\n"]).text for ctx in ["al", "jo", "mar"]]
    assert out == want
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_the_readme_recipe_on_the_command_line_with_two_vocabs(model_dirs, lms, tmp_path):
    """The README's lm_eval line, run as written by the real ``lm_eval`` command against a server holding
    two models of different vocabs (so the bare ``/tokenize`` cannot know which one lm-eval means)."""
    import re
    import shlex
    import subprocess
    import sys

    from arlm.data import encode_documents
    from arlm.lm import LM
    from arlm.models.ngram import NGramConfig, NGramModel
    from arlm.vocab.byte import ByteVocab

    from .conftest import Server

    docs = (REPO / "tests" / "data" / "names.txt").read_text(encoding="utf-8").split()[:2000]
    byte = ByteVocab.train(docs)
    shakes = NGramModel.fit(NGramConfig(byte.vocab_size, byte.bos_id, byte.eos_id, order=3),
                            encode_documents(byte, docs))
    LM(shakes, byte, "lines").save(tmp_path / "shakes")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (line,) = [ln for ln in readme.splitlines() if ln.startswith("lm_eval ")]
    srv = Server([f"gpt={model_dirs['gpt']}", f"shakes={tmp_path / 'shakes'}"], api_key=None)
    try:
        assert httpx_status(srv.url + "/tokenize") == 400  # the bare route cannot tell which vocab
        cmd = shlex.split(line.replace("http://127.0.0.1:8000", srv.url).replace("--tasks ...", "--tasks arlm_names_mc"))
        cmd += ["--include_path", str(TASKS), "--limit", "6", "--log_samples", "--output_path", str(tmp_path / "out")]
        assert cmd[0] == "lm_eval"
        r = subprocess.run([str(Path(sys.executable).parent / "lm_eval"), *cmd[1:]], cwd=REPO, capture_output=True,
                           text=True, timeout=300, env={**os.environ, **OFFLINE, "HF_HOME": str(tmp_path / "hf")})
        assert r.returncode == 0, r.stderr[-3000:]
    finally:
        srv.stop()
    (samples,) = list((tmp_path / "out").rglob("samples_arlm_names_mc_*.jsonl"))
    rows = [json.loads(x) for x in samples.read_text().splitlines()]
    assert len(rows) == 6
    for s in rows:
        args = s["arguments"]  # {"gen_args_0": {"arg_0": context, "arg_1": continuation}, ...} in the file
        pairs = [(a["arg_0"], a["arg_1"]) for a in args.values()] if isinstance(args, dict) else args
        assert len(pairs) == len(s["doc"]["choices"])
        for (context, continuation), resp in zip(pairs, s["resps"]):
            want = lms["gpt"].conditional_log_prob(continuation, given=context)
            assert abs(float(resp[0][0]) - want) <= 1e-5
    assert re.search(r"/models/gpt/v1/completions", line)


def httpx_status(url: str) -> int:
    import httpx

    return httpx.post(url, json={"prompt": "emma"}).status_code
