"""Malformed and extreme requests (hypothesis) against a real ``arlm serve``: always a 4xx in OpenAI's shape."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

VALID = {"model": "ngram", "prompt": "emma", "max_tokens": 4, "temperature": 1.0, "seed": 1}

junk = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False),
                 st.text(max_size=8), st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                                               st.integers(), max_size=2))
outside = st.text(min_size=1, max_size=12).filter(lambda s: any(not ("a" <= c <= "z") for c in s))

# each mutation makes a request that must be refused, whatever the drawn value
MUTATIONS = {
    "model": st.one_of(st.text(max_size=10).filter(lambda s: s not in ("ngram", "gpt")), st.integers(), st.none()),
    "prompt": st.one_of(outside, st.just([]), st.lists(st.integers(28, 10**9), min_size=1, max_size=4),
                        st.lists(st.integers(-10**9, -1), min_size=1, max_size=4), st.integers(), st.none(),
                        st.lists(st.one_of(st.floats(), st.booleans()), min_size=1, max_size=3),
                        st.lists(st.text(max_size=3), min_size=65, max_size=70)),
    "max_tokens": st.one_of(st.integers(4097, 10**15), st.integers(-10**9, -1), st.floats(0.5, 99.5),
                            st.text(max_size=4), st.booleans()),
    "temperature": st.one_of(st.floats(max_value=-1e-9), st.text(max_size=4), st.lists(st.floats(), max_size=2)),
    "top_p": st.one_of(st.floats(min_value=1.0001, allow_infinity=False), st.floats(max_value=-1e-9)),
    "top_k": st.one_of(st.integers(max_value=-2), st.floats(0.5, 9.5), st.text(max_size=3)),
    "n": st.one_of(st.integers(max_value=0), st.integers(17, 10**9), st.text(max_size=3)),
    "logprobs": st.one_of(st.integers(21, 10**9), st.integers(max_value=-1), st.floats(0.5, 5.5)),
    "echo": st.one_of(st.integers(), st.text(max_size=3)),
    "stream": st.one_of(st.integers(), st.text(max_size=3)),
    "stop": st.one_of(st.integers(), st.lists(st.integers(), min_size=1, max_size=3)),
    "seed": st.one_of(st.floats(0.5, 9.5), st.text(max_size=3)),
}


@st.composite
def bad_request(draw):
    kind = draw(st.sampled_from(["mutation", "mutation", "mutation", "raw", "missing", "not_object"]))
    if kind == "raw":  # bytes that are not JSON at all
        raw = draw(st.binary(min_size=0, max_size=40))
        try:
            json.loads(raw)
            raw = b"{" + raw
        except (ValueError, UnicodeDecodeError):
            pass
        return raw
    if kind == "not_object":
        return json.dumps(draw(st.one_of(st.lists(junk, max_size=3), st.integers(), st.text(max_size=5)))).encode()
    body = dict(VALID)
    if kind == "missing":
        del body[draw(st.sampled_from(["model", "prompt"]))]
    else:
        field = draw(st.sampled_from(sorted(MUTATIONS)))
        body[field] = draw(MUTATIONS[field])
        if field == "n":  # n > 16 or n < 1 is refused; keep the rest valid
            body["max_tokens"] = 4
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=30) as c:
        yield c


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bad_request())
def test_malformed_requests_get_a_4xx_in_openai_shape(server, http, body):
    r = http.post(server.url + "/v1/completions", content=body,
                  headers={**server.headers(), "Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, (body, r.status_code, r.text[:300])
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and isinstance(err["message"], str) and err["message"]


@pytest.mark.parametrize("path,method", [("/tokenize", "post"), ("/detokenize", "post"), ("/nope", "get"),
                                         ("/v1/completions", "get")])
def test_other_endpoints_refuse_in_shape(server, path, method):
    r = getattr(httpx, method)(server.url + path, headers=server.headers(),
                               **({"content": b"[1, 2"} if method == "post" else {}))
    assert 400 <= r.status_code < 500
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_still_correct_after_the_fuzz(server, lms):
    r = httpx.post(server.url + "/v1/completions", json={**VALID, "max_tokens": 20, "seed": 9},
                   headers=server.headers(), timeout=30)
    assert r.status_code == 200
    assert r.json()["choices"][0]["text"] == lms["ngram"].generate("emma", max_new_tokens=20, seed=9).text
