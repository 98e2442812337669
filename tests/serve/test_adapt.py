"""``arlm serve --adapt``: the real server scores and generates under dynamic evaluation, as ``LM.adapt`` does."""

from __future__ import annotations

import httpx

from .conftest import Server

SETTINGS = ["--adapt", "--adapt-chunk-size", "4", "--adapt-optimizer", "sgd", "--adapt-learning-rate", "0.5"]


def test_echo_logprobs_are_the_adapted_models(model_dirs, lms):
    text = "emmaolivianoahliamavaemmaolivia"  # past the GPT's block of 16: the chunk windows slide
    adapted = lms["gpt"].adapt(chunk_size=4, optimizer="sgd", learning_rate=0.5)
    want = adapted.token_logprobs(text, eos=False)
    static = lms["gpt"].token_logprobs(text, eos=False)
    assert max(abs(a - b) for (_, a), (_, b) in zip(want, static)) > 1e-3  # the adaptation changes the scores
    srv = Server([f"gpt={model_dirs['gpt']}"], extra=SETTINGS)
    try:
        body = {"model": "gpt", "prompt": text, "max_tokens": 0, "echo": True, "logprobs": 1}
        r = httpx.post(srv.url + "/v1/completions", json=body, headers=srv.headers(), timeout=60)
        assert r.status_code == 200, r.text
        got = r.json()["choices"][0]["logprobs"]["token_logprobs"]
        assert len(got) == len(want)
        assert all(abs(a - b) <= 1e-4 for a, (_, b) in zip(got, want))
        body = {"model": "gpt", "prompt": "emma", "max_tokens": 20, "temperature": 1.0, "seed": 5}
        r = httpx.post(srv.url + "/v1/completions", json=body, headers=srv.headers(), timeout=60)
        assert r.json()["choices"][0]["text"] == adapted.generate("emma", max_new_tokens=20, seed=5).text
    finally:
        srv.stop()
