"""lm-evaluation-harness's ``hf`` model, run as the ``lm-eval`` command on an exported GPT, against ``arlm score --given``.

No network: the model is the local exported directory, the task a YAML over a
JSON file in ``tests/data/lm_eval_hf``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from arlm.formats.hf import export_hf
from arlm.lm import LM
from arlm.models.gpt import GPTConfig, GPTModel
from arlm.vocab import CharVocab

from conftest import DATA, names_docs

REPO = Path(__file__).resolve().parents[2]
TASKS = DATA / "lm_eval_hf"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_lm_eval_hf_loglikelihood_equals_arlm_score_given(tmp_path):
    vocab = CharVocab.train([" ".join(names_docs(500))])
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, n_layer=1, n_head=2, n_embd=16,
                               block_size=64))
    with torch.no_grad():  # spread-out weights, so that the log-probs differ from token to token
        for p in model.parameters():
            if p.dim() == 2:
                p.add_(torch.randn(p.shape) * 0.3)
    LM(model.eval(), vocab, "lines").save(tmp_path / "m")
    lm = LM.load(tmp_path / "m")
    export_hf(lm, tmp_path / "hf")
    env = {**os.environ, **OFFLINE, "HF_HOME": str(tmp_path / "hf_home")}
    r = subprocess.run([sys.executable, "-m", "lm_eval", "run", "--model", "hf",
                        "--model_args", f"pretrained={tmp_path / 'hf'},dtype=float32",
                        "--tasks", "arlm_hf_names", "--include_path", str(TASKS), "--device", "cpu",
                        "--batch_size", "2", "--output_path", str(tmp_path / "out"), "--log_samples"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    samples = [json.loads(line) for f in sorted((tmp_path / "out").rglob("samples_arlm_hf_names_*.jsonl"))
               for line in f.read_text().splitlines()]
    docs = [json.loads(line) for line in (TASKS / "names.jsonl").read_text().splitlines()]
    assert len(samples) == len(docs) >= 5
    for s in samples:
        args = s["arguments"]  # {"gen_args_0": {"arg_0": context, "arg_1": continuation}}
        context, continuation = args["gen_args_0"]["arg_0"], args["gen_args_0"]["arg_1"]
        ll = float(s["resps"][0][0][0])  # the samples file writes the numbers as strings
        assert (context, continuation) == (s["doc"]["context"], s["doc"]["continuation"])
        spaces = len(context) - len(context.rstrip())  # lm-eval scores a context's trailing spaces with the continuation
        context, continuation = context[: len(context) - spaces], context[len(context) - spaces :] + continuation
        assert abs(ll - lm.conditional_log_prob(continuation, given=context)) <= 1e-4, (context, continuation)
    # and the command itself, on the request whose context ends in a space: log p(" ann" | "jo")
    r = subprocess.run([sys.executable, "-m", "arlm", "score", str(tmp_path / "m"), " ann", "--given", "jo", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    [ll] = [float(s["resps"][0][0][0]) for s in samples if s["doc"]["context"] == "jo "]
    assert abs(json.loads(r.stdout)["log_prob"] - ll) <= 1e-4
