"""The official ``openai`` client against a real ``arlm serve``: text and logprobs equal ``arlm.load``'s."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

TOL = {"ngram": 1e-9, "gpt": 1e-5}
PROMPT = "jo"


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=server.api_key, max_retries=0, timeout=60)


def test_models_lists_both(client):
    ids = sorted(m.id for m in client.models.list().data)
    assert ids == ["gpt", "ngram"]


@pytest.mark.parametrize("name", ["ngram", "gpt"])
def test_generate_text_and_logprobs_match_the_library(client, lms, name):
    lm, tol = lms[name], TOL[name]
    r = client.completions.create(model=name, prompt=PROMPT, max_tokens=24, temperature=1.0, seed=7, logprobs=5)
    c = r.choices[0]
    want = lm.generate(PROMPT, max_new_tokens=24, temperature=1.0, seed=7)
    assert c.text == want.text
    assert c.finish_reason == want.finish_reason
    lp = c.logprobs
    ended = want.finish_reason == "stop"  # by <eos>, reported as the last token (as vLLM does)
    assert lp.tokens == list(want.text) + ["<eos>"] * ended
    assert r.usage.prompt_tokens == len(PROMPT)
    assert r.usage.completion_tokens == len(want.token_ids) + ended
    for i, (tok, value, top) in enumerate(zip(lp.tokens, lp.token_logprobs, lp.top_logprobs)):
        dist = lm.next_token_log_probs(PROMPT + c.text[:i])
        assert abs(value - dist[tok]) <= tol
        best = sorted(dist.items(), key=lambda kv: -kv[1])[:5]
        for t, v in best:  # the 5 most probable alternatives, with the model's log-probs
            assert abs(top[t] - v) <= tol
        assert lp.text_offset[i] == i  # characters before the token (<eos> sits at the end)


@pytest.mark.parametrize("name", ["ngram", "gpt"])
def test_echo_scores_the_prompt_from_bos(client, lms, name):
    lm, tol = lms[name], TOL[name]
    text = "emmaolivianoahliamava"  # 21 chars: past the GPT's block_size 16 (sliding window)
    r = client.completions.create(model=name, prompt=text, max_tokens=0, echo=True, logprobs=2)
    c = r.choices[0]
    assert c.text == text and c.finish_reason == "length"
    want = lm.token_logprobs(text, eos=False)  # the first token is scored as log p(x1 | <bos>)
    assert c.logprobs.tokens == [t for t, _ in want]
    assert all(abs(a - b) <= tol for a, (_, b) in zip(c.logprobs.token_logprobs, want))
    assert c.logprobs.text_offset == list(range(len(text)))
    assert abs(sum(c.logprobs.token_logprobs) - lm.log_prob(text, eos=False)) <= 20 * tol


@pytest.mark.parametrize("name", ["ngram", "gpt"])
def test_echo_with_generation_then_stream_gives_the_same(client, lms, name):
    lm, tol = lms[name], TOL[name]
    kw = dict(model=name, prompt=PROMPT, max_tokens=30, temperature=0.9, top_p=0.95, seed=11, logprobs=1)
    full = client.completions.create(echo=True, **kw).choices[0]
    want = lm.generate(PROMPT, max_new_tokens=30, temperature=0.9, top_p=0.95, seed=11)
    assert full.text == PROMPT + want.text
    n_prompt = len(PROMPT)
    ended = want.finish_reason == "stop"
    assert full.logprobs.text_offset[n_prompt:] == list(range(n_prompt, n_prompt + len(want.text) + ended))
    chunks = list(client.completions.create(stream=True, **kw))
    streamed = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert streamed == want.text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == want.finish_reason
    lps = [v for ch in chunks if ch.choices and ch.choices[0].logprobs for v in ch.choices[0].logprobs.token_logprobs]
    assert len(lps) == len(want.token_ids) + ended
    assert all(abs(a - b) <= tol for a, b in zip(lps, full.logprobs.token_logprobs[n_prompt:]))


@pytest.mark.parametrize("name", ["ngram", "gpt"])
def test_n3_with_seed_equals_num_samples(client, lms, name):
    r = client.completions.create(model=name, prompt="ma", max_tokens=12, n=3, seed=5, temperature=1.0)
    want = lms[name].generate("ma", max_new_tokens=12, seed=5, num_samples=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert [c.text for c in r.choices] == [s.text for s in want]
    assert len({c.text for c in r.choices}) > 1  # the three draws differ (one generator, drawn in turn)


@pytest.mark.parametrize("name", ["ngram", "gpt"])
def test_stop_strings(client, lms, name):
    lm = lms[name]
    for stop in (["a", "e"], "\n", ["xyz", "ia"]):
        r = client.completions.create(model=name, prompt="", max_tokens=40, seed=3, stop=stop, logprobs=0)
        c = r.choices[0]
        want = lm.generate("", max_new_tokens=40, seed=3, stop=stop)
        assert (c.text, c.finish_reason) == (want.text, want.finish_reason)
        # the stop string's tokens are not reported; an <eos> is
        assert "".join(c.logprobs.tokens).removesuffix("<eos>") == c.text
    s = client.completions.create(model=name, prompt="", max_tokens=40, seed=3, stop=["a", "e"], stream=True)
    assert "".join(ch.choices[0].text for ch in s if ch.choices) == lm.generate(
        "", max_new_tokens=40, seed=3, stop=["a", "e"]).text


def test_greedy_top_k_and_token_id_prompts(client, lms):
    lm = lms["ngram"]
    r = client.completions.create(model="ngram", prompt="al", max_tokens=10, temperature=0, extra_body={"top_k": 3})
    assert r.choices[0].text == lm.generate("al", max_new_tokens=10, temperature=0).text
    ids = lm.vocab.encode("al")
    r2 = client.completions.create(model="ngram", prompt=[ids, ids], max_tokens=10, temperature=0)
    assert [c.text for c in r2.choices] == [r.choices[0].text] * 2
    r3 = client.completions.create(model="ngram", prompt=["al", "bo"], max_tokens=5, temperature=0, n=2)
    assert [c.index for c in r3.choices] == [0, 1, 2, 3]
    assert r3.choices[2].text == lm.generate("bo", max_new_tokens=5, temperature=0).text


def test_errors_have_openais_shape(client, server):
    with pytest.raises(openai.NotFoundError) as e:
        client.completions.create(model="nope", prompt="a")
    assert "nope" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="ngram", prompt="ab\u00e9c")
    assert "U+00E9" in e.value.body["message"] and "position 2" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="ngram", prompt="a", max_tokens=5000)
    assert e.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="ngram", prompt="a", logprobs=21)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="ngram", prompt="a", n=16, max_tokens=4096)
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="ngram", prompt="a")
    r = httpx.post(server.url + "/v1/completions", content=b"{not json", headers=server.headers())
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.post(server.url + "/v1/completions", json={"model": "ngram", "prompt": "a", "max_tokens": "5"},
                   headers=server.headers())
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    assert httpx.get(server.url + "/health").status_code == 200  # no key needed
    assert httpx.get(server.url + "/v1/models").status_code == 401


def test_tokenizer_endpoints(server, lms):
    h = server.headers()
    info = httpx.get(server.url + "/tokenizer_info", params={"model": "ngram"}, headers=h).json()
    assert info["eos_token"] == "<eos>" and info["bos_token"] == "<bos>"
    vocab = lms["ngram"].vocab
    r = httpx.post(server.url + "/tokenize", json={"model": "ngram", "prompt": "emma<eos>"}, headers=h).json()
    assert r["tokens"] == vocab.encode("emma") + [vocab.eos_id] and r["count"] == 5
    r = httpx.post(server.url + "/detokenize", json={"model": "ngram", "tokens": vocab.encode("emma")}, headers=h)
    assert r.json() == {"prompt": "emma"}
    r = httpx.post(server.url + "/detokenize", json={"model": "ngram", "tokens": [10**6]}, headers=h)
    assert r.status_code == 400


def test_health_answers_while_busy_and_a_disconnect_stops_generation(server):
    h = server.headers()
    body = {"model": "gpt", "prompt": "a", "max_tokens": 4000, "min_tokens": 4000, "temperature": 1.0,
            "stream": True}
    with httpx.Client(timeout=30) as c:
        with c.stream("POST", server.url + "/v1/completions", json=body, headers=h) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any(x.startswith("data: {") for x in got)
            t0 = time.perf_counter()
            health = httpx.get(server.url + "/health", timeout=5).json()
            assert time.perf_counter() - t0 < 2.0
            assert health["sequences_in_flight"] >= 1  # answered while the model is generating
        # the stream is closed here, ~4000 tokens early: the server must stop generating
    deadline = time.time() + 10
    while httpx.get(server.url + "/health").json()["sequences_in_flight"] and time.time() < deadline:
        time.sleep(0.05)
    assert httpx.get(server.url + "/health").json()["sequences_in_flight"] == 0
    # the same for a request that is not streamed: the client gives up after 1 s
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/completions", json={**body, "stream": False}, headers=h, timeout=1.0)
    deadline = time.time() + 10
    while httpx.get(server.url + "/health").json()["sequences_in_flight"] and time.time() < deadline:
        time.sleep(0.05)
    assert httpx.get(server.url + "/health").json()["sequences_in_flight"] == 0


def test_unseeded_requests_differ_seeded_repeat_and_out_of_range_seeds_are_refused(server, client, lms):
    kw = dict(model="ngram", prompt="", max_tokens=30, temperature=1.0)
    texts = {client.completions.create(**kw).choices[0].text for _ in range(4)}
    assert len(texts) > 1  # a fresh seed per request, as OpenAI and vLLM do
    big = 2**64 - 1
    r = client.completions.create(**kw, seed=big, n=2)
    assert [c.text for c in r.choices] == [s.text for s in lms["ngram"].generate("", max_new_tokens=30, seed=big,
                                                                                  num_samples=2)]
    for bad in (2**64, -1):
        res = httpx.post(server.url + "/v1/completions", json={**kw, "seed": bad}, headers=server.headers())
        assert res.status_code == 400 and res.json()["error"]["param"] == "seed"
