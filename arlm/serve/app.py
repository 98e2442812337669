"""The routes of ``arlm serve`` (FastAPI): they only translate between HTTP and the engine.

Endpoints: ``GET /health``; ``GET /v1/models``; ``POST /v1/completions``
(OpenAI legacy completions, see ``protocol.py``); vLLM's tokenizer endpoints
``GET /tokenizer_info``, ``POST /tokenize``, ``POST /detokenize`` (what
lm-evaluation-harness's ``tokenizer_backend="remote"`` calls); ``GET /`` the
playground page. Every route is also served under ``/models/NAME/`` for the
model NAME alone (``/models/NAME/v1/completions``, ``/models/NAME/tokenize``):
lm-eval's remote tokenizer never sends ``model``. With an API key every endpoint but ``/health`` and the
(static, data-free) playground page ``/`` needs ``Authorization: Bearer KEY``
(a browser cannot send the header when it opens a page); the page asks for
the key and sends it with its API calls.
"""

from __future__ import annotations

import asyncio
import json
import os
import logging
import secrets
import time
import urllib.parse
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ArlmError
from .engine import Engine, Job, ServeError
from .protocol import (CompletionRequest, DetokenizeRequest, TokenizeRequest, completion_body, completion_id,
                       error_body, logprobs_body, usage_body)

log = logging.getLogger("arlm.serve")

OPEN_PATHS = {"/health", "/", "/favicon.ico"}
#: ``/models/NAME/v1/completions``, ``/models/NAME/tokenize``, ...: every route, for the model NAME alone
#: (what a client that never sends ``model``, such as lm-eval's remote tokenizer, is pointed at).
MODEL_PREFIX = "/models/"


def _error(status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
           code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type, param, code), status_code=status)


def _validation_message(exc: RequestValidationError | ValidationError) -> tuple[str, str | None]:
    errs = exc.errors()
    if not errs:
        return "invalid request", None
    e = errs[0]
    loc = [str(x) for x in e.get("loc", ()) if x != "body"]
    if e.get("type") == "json_invalid":
        return f"the request body is not valid JSON: {e.get('msg', '')}", None
    # a union (prompt, stop) reports one error per member: name the field once
    field = ".".join(loc[:1]) if loc else None
    msg = str(e.get("msg", "invalid value"))
    where = ".".join(loc) if loc else "body"
    return f"{where}: {msg}", field


async def _parse(request: Request, model_cls):
    """The JSON body as ``model_cls`` (whatever the Content-Type: ``curl -d`` sends a form type). Raises ServeError."""
    raw = await request.body()
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ServeError(f"the request body is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ServeError(f"the request body must be a JSON object, got {type(obj).__name__}")
    try:
        return model_cls.model_validate(obj)
    except ValidationError as e:
        msg, field = _validation_message(e)
        raise ServeError(msg, param=field) from None


class _AuthAndLog:
    """ASGI middleware: the bearer-key check and one log line per request (method, path, status, ms).

    Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``, which would hide the client's
    ``http.disconnect`` from the routes (needed to stop the generation of a client that went away).
    """

    def __init__(self, app, api_key: str | None):
        self.app = app
        self.expected = None if api_key is None else api_key.encode("ascii")

    def _authorized(self, header: bytes) -> bool:
        """``Authorization: Bearer KEY``; the scheme is case-insensitive (RFC 7235), the key compared in constant time."""
        scheme, _, key = header.strip().partition(b" ")
        return scheme.lower() == b"bearer" and secrets.compare_digest(key.strip(), self.expected)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [500]

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        path = scope["path"]
        if path.startswith(MODEL_PREFIX):  # /models/NAME/REST: the route REST, with NAME as the model
            name, _, rest = path[len(MODEL_PREFIX):].partition("/")
            scope = {**scope, "path": "/" + rest, "raw_path": ("/" + rest).encode(),
                     "arlm_model": urllib.parse.unquote(name)}
        try:
            if self.expected is not None and scope["path"] not in OPEN_PATHS:
                got = dict(scope.get("headers") or []).get(b"authorization", b"")
                if not self._authorized(got):
                    response = _error(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                      "authentication_error", code="invalid_api_key")
                    return await response(scope, receive, send_and_note)
            await self.app(scope, receive, send_and_note)
        finally:
            log.info("%s %s %d %.1f ms", scope["method"], path, status[0], 1e3 * (time.perf_counter() - t0))


def create_app(engines: dict[str, Engine], api_key: str | None = None, max_tokens_limit: int = 4096) -> FastAPI:
    """The FastAPI application serving ``engines`` (model id -> :class:`Engine`)."""
    app = FastAPI(title="arlm serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engines = engines

    app.add_middleware(_AuthAndLog, api_key=api_key)

    _add_error_handlers(app)

    signatures = {n: (e.vocab.kind, tuple(e.vocab.token_text(i) for i in range(e.vocab.vocab_size)))
                  for n, e in engines.items()}
    one_vocab = len(set(signatures.values())) == 1

    def engine_for(name: str | None, request: Request) -> Engine:
        """The engine of ``name``, or of the route's ``/models/NAME/`` prefix; without either (lm-eval's
        tokenizer calls) any, if all share one vocab."""
        scoped = request.scope.get("arlm_model")
        if scoped is not None:
            if scoped not in engines:
                raise ServeError(f"the model {scoped!r} of the route {MODEL_PREFIX}{scoped}/ does not exist here; "
                                 f"served: {', '.join(engines)}", status=404, param="model", code="model_not_found",
                                 type="not_found_error")
            if name is not None and name != scoped:
                raise ServeError(f"the route {MODEL_PREFIX}{scoped}/ serves {scoped!r}, but the request names "
                                 f"{name!r}", param="model")
            name = scoped
        if name is None:
            if one_vocab:
                return next(iter(engines.values()))
            raise ServeError(f"the served models ({', '.join(engines)}) have different vocabs: say which with "
                             f"'model', or use the route {MODEL_PREFIX}NAME/ (e.g. {MODEL_PREFIX}NAME/v1/completions)",
                             param="model")
        eng = engines.get(name)
        if eng is None:
            raise ServeError(f"the model {name!r} does not exist here; served: {', '.join(engines)}", status=404,
                             param="model", code="model_not_found", type="not_found_error")
        return eng

    @app.get("/health")
    async def health():
        return {"status": "ok", "sequences_in_flight": sum(e.in_flight for e in engines.values())}

    @app.get("/", response_class=HTMLResponse)
    async def playground():
        return HTMLResponse(resources.files("arlm.serve").joinpath("static/index.html").read_text(encoding="utf-8"))

    @app.get("/v1/models")
    async def models():
        data = []
        for name, eng in engines.items():
            bs = eng.model.block_size
            data.append({"id": name, "object": "model", "created": eng.created, "owned_by": "arlm",
                         "root": name, "family": eng.model.family, "vocab": eng.vocab.kind,
                         "vocab_size": eng.vocab.vocab_size, "block_size": bs,
                         "max_model_len": bs})
        return {"object": "list", "data": data}

    _add_tokenizer_routes(app, engine_for)

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await _parse(request, CompletionRequest)
        eng = engine_for(req.model, request)
        params = await run_in_threadpool(eng.prepare, req, max_tokens_limit)
        job = eng.submit(params, asyncio.get_running_loop())
        rid = completion_id()
        created = int(time.time())
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(_stream(job, rid, created, req.model, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return await _collect(job, rid, created, req.model, request)

    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error leaves as OpenAI's error shape (``protocol.error_body``)."""
    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError):
        msg, field = _validation_message(exc)
        return _error(400, msg, param=field)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), "not_found_error" if exc.status_code == 404
                      else "invalid_request_error")

    @app.exception_handler(ServeError)
    async def on_serve(request: Request, exc: ServeError):
        return _error(exc.status, exc.message, exc.type, exc.param, exc.code)

    @app.exception_handler(ArlmError)
    async def on_arlm(request: Request, exc: ArlmError):
        return _error(400, str(exc))

    @app.exception_handler(Exception)
    async def on_other(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal server error (see the server log)", "server_error")


def _add_tokenizer_routes(app: FastAPI, engine_for) -> None:
    """vLLM's tokenizer endpoints (what lm-evaluation-harness's remote tokenizer calls)."""
    @app.get("/tokenizer_info")
    async def tokenizer_info(request: Request, model: str | None = None):
        eng = engine_for(model, request)
        return {"tokenizer_class": f"arlm.{eng.vocab.kind}", "vocab_size": eng.vocab.vocab_size,
                "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": None, "unk_token": None,
                "bos_token_id": eng.vocab.bos_id, "eos_token_id": eng.vocab.eos_id,
                "model_max_length": eng.model.block_size, "add_bos_token": False}

    @app.post("/tokenize")
    async def tokenize(request: Request):
        req = await _parse(request, TokenizeRequest)
        eng = engine_for(req.model, request)
        try:
            ids = await run_in_threadpool(eng.tokenize, req.prompt)
        except ArlmError as e:
            raise ServeError(str(e), param="prompt", code="invalid_prompt") from None
        if req.add_special_tokens:
            ids = [eng.vocab.bos_id, *ids]
        return {"count": len(ids), "max_model_len": eng.model.block_size, "tokens": ids,
                "token_strs": [eng.vocab.token_text(t) for t in ids]}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        req = await _parse(request, DetokenizeRequest)
        eng = engine_for(req.model, request)
        return {"prompt": eng.detokenize(req.tokens)}


class _Choices:
    """Assembles the choices of a response from the engine's events."""

    def __init__(self, job: Job):
        prm = job.params
        self.n = prm.n
        self.want_logprobs = prm.logprobs is not None
        self.prompt_tokens = sum(len(p) for p in prm.prompts)
        k = len(prm.prompts) * prm.n
        self.text = [""] * k
        self.base = [0] * k
        self.finish: list[str | None] = [None] * k
        self.lp = [{"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []} for _ in range(k)]

    def prompt(self, i: int, info) -> list[int]:
        idx = list(range(i * self.n, (i + 1) * self.n))
        for c in idx:
            self.text[c] = info.text
            self.base[c] = len(info.text)
            if self.want_logprobs:
                self.lp[c] = {"tokens": list(info.tokens), "token_logprobs": list(info.token_logprobs),
                              "top_logprobs": list(info.top_logprobs), "text_offset": list(info.text_offset)}
        return idx

    def delta(self, c: int, text: str, tokens: list) -> dict | None:
        self.text[c] += text
        if not self.want_logprobs:
            return None
        part = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for tok, lp, top, off in tokens:
            for d in (self.lp[c], part):
                d["tokens"].append(tok)
                d["token_logprobs"].append(lp)
                d["top_logprobs"].append(top)
                d["text_offset"].append(self.base[c] + off)
        return part

    def choice(self, c: int) -> dict:
        lp = None
        if self.want_logprobs:
            d = self.lp[c]
            lp = logprobs_body(d["tokens"], d["token_logprobs"], d["top_logprobs"], d["text_offset"])
        return {"index": c, "text": self.text[c], "logprobs": lp, "finish_reason": self.finish[c]}


async def _collect(job: Job, rid: str, created: int, model: str, request: Request) -> JSONResponse:
    ch = _Choices(job)
    checked = time.monotonic()
    try:
        while True:
            try:
                ev = await asyncio.wait_for(job.events.get(), timeout=0.5)
            except asyncio.TimeoutError:
                ev = None
            if time.monotonic() - checked > 0.5:  # a client that went away stops its generation
                checked = time.monotonic()
                if await request.is_disconnected():
                    job.cancel()
                    return _error(499, "client closed the request")
            if ev is None:
                continue
            kind = ev[0]
            if kind == "prompt":
                ch.prompt(ev[1], ev[2])
            elif kind == "delta":
                ch.delta(ev[1], ev[2], ev[3])
            elif kind == "finish":
                ch.finish[ev[1]] = ev[2]
            elif kind == "error":
                job.cancel()
                err: ServeError = ev[1]
                return _error(err.status, err.message, err.type, err.param, err.code)
            elif kind == "done":
                choices = [ch.choice(c) for c in range(len(ch.text))]
                body = completion_body(rid, model, choices, usage_body(ch.prompt_tokens, ev[1]), created)
                return JSONResponse(jsonable_encoder(body))
    except asyncio.CancelledError:
        job.cancel()
        raise


def _sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _stream(job: Job, rid: str, created: int, model: str, include_usage: bool):
    """Server-sent events: one ``text_completion`` chunk per delta, then ``data: [DONE]``.

    A client that goes away cancels this generator; ``finally`` then stops the generation.
    """
    ch = _Choices(job)
    finished = False

    def chunk(c: int, text: str, lp, finish=None) -> str:
        choice = {"index": c, "text": text, "logprobs": lp, "finish_reason": finish}
        return _sse(completion_body(rid, model, [choice], None, created))

    try:
        while True:
            ev = await job.events.get()
            kind = ev[0]
            if kind == "prompt":
                info = ev[2]
                for c in ch.prompt(ev[1], info):
                    lp = (logprobs_body(info.tokens, info.token_logprobs, info.top_logprobs, info.text_offset)
                          if ch.want_logprobs else None)
                    yield chunk(c, info.text, lp)
            elif kind == "delta":
                part = ch.delta(ev[1], ev[2], ev[3])
                lp = (logprobs_body(part["tokens"], part["token_logprobs"], part["top_logprobs"], part["text_offset"])
                      if part is not None else None)
                yield chunk(ev[1], ev[2], lp)
            elif kind == "finish":
                yield chunk(ev[1], "", None, ev[2])
            elif kind == "error":
                err: ServeError = ev[1]
                yield _sse(error_body(err.message, err.type, err.param, err.code))
                yield "data: [DONE]\n\n"
                finished = True
                return
            elif kind == "done":
                if include_usage:
                    yield _sse(completion_body(rid, model, [], usage_body(ch.prompt_tokens, ev[1]), created))
                yield "data: [DONE]\n\n"
                finished = True
                return
    finally:
        if not finished:
            job.cancel()


def build_engines(specs: list[str], device: str | None = None, adapt: dict | None = None) -> dict[str, Engine]:
    """Load ``DIR`` or ``NAME=DIR`` model specs (neural models onto ``device``, default the CPU; under dynamic
    evaluation with the settings ``adapt`` when given, see ``LM.adapt``); the id is NAME
    or the directory's name. Raises ArlmError."""
    from pathlib import Path

    from ..lm import LM

    engines: dict[str, Engine] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            path, name = spec, Path(spec).resolve().name
        if not name:
            raise ArlmError(f"empty model name in {spec!r}: use NAME=DIR")
        if name in engines:
            raise ArlmError(f"two models are named {name!r}: use NAME=DIR to tell them apart")
        lm = LM.load(path)
        if adapt is not None:
            try:
                lm = lm.adapt(**adapt)
            except ArlmError as e:
                raise ArlmError(f"model {name!r}: {e}") from None
        engines[name] = Engine(name, lm.to(device) if device else lm)
    return engines


def serve(specs: list[str], host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_tokens_limit: int = 4096, device: str | None = None, adapt: dict | None = None) -> None:
    """Load the models (neural ones onto ``device``, default the CPU; ``adapt``: see ``build_engines``) and serve
    them with uvicorn until interrupted."""
    import sys

    import uvicorn

    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:  # a clear error before loading
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise ArlmError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    engines = build_engines(specs, device, adapt)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s arlm.serve %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if os.environ.get("ARLM_SERVE_DEBUG") else logging.INFO)
    log.propagate = False
    app = create_app(engines, api_key=api_key, max_tokens_limit=max_tokens_limit)
    for name, eng in engines.items():
        print(f"serving {name} ({eng.model.family}, {eng.vocab.kind} vocab) at http://{host}:{port}/v1",
              file=sys.stderr, flush=True)
    print(f"playground: http://{host}:{port}/  (Ctrl-C stops the server)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
