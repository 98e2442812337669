"""The wire format of ``arlm serve``: OpenAI's legacy completions API as vLLM implements it.

Field names follow vLLM's ``vllm/entrypoints/openai/protocol.py``
(``CompletionRequest``, ``CompletionResponse``, ``CompletionLogProbs``,
``TokenizeRequest``/``DetokenizeRequest``) and OpenAI's API reference for
``/v1/completions``. Requests are validated strictly (no silent type
coercion: ``"5"`` is not an integer); every error leaves the server as
OpenAI's error shape ``{"error": {"message", "type", "param", "code"}}``.

Log-probabilities (nats) come from the model's own distribution, before
temperature, top-k and top-p (vLLM's default, "raw" logprobs). A prompt is
scored as if preceded by ``<bos>``, so its first token gets log p(x_1 | <bos>)
where OpenAI returns ``null``; a token-id prompt whose first id is ``<bos>``
or ``<eos>`` takes that token as the document start (its logprob is ``null``).
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from ..errors import ArlmError
from ..sampling import check_sampling_args, fresh_seed

#: Most alternatives per position in ``logprobs`` (OpenAI's and vLLM's limit).
MAX_LOGPROBS = 20
#: Most completions per prompt (``n``).
MAX_N = 16
#: Most prompts in one request.
MAX_PROMPTS = 64

Number = Union[StrictInt, StrictFloat]
Prompt = Union[StrictStr, list[StrictStr], list[StrictInt], list[list[StrictInt]]]


class CompletionRequest(BaseModel):
    """``POST /v1/completions``. Unknown fields are ignored (as OpenAI's and vLLM's servers do)."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr
    prompt: Prompt
    max_tokens: Optional[StrictInt] = Field(default=16, ge=0)
    temperature: Optional[Number] = Field(default=1.0, ge=0.0)
    top_p: Optional[Number] = Field(default=1.0, ge=0.0, le=1.0)
    #: vLLM's extension; ``-1``, ``0`` or ``null`` switch it off.
    top_k: Optional[StrictInt] = Field(default=None, ge=-1)
    #: vLLM's extension: no ``<eos>`` before this many tokens (the logprobs stay the model's).
    min_tokens: StrictInt = Field(default=0, ge=0)
    n: StrictInt = Field(default=1, ge=1, le=MAX_N)
    #: 0 .. 2**64 - 1; omitted or null: a fresh seed per request (as OpenAI and vLLM do).
    seed: Optional[StrictInt] = Field(default=None, ge=0, le=2**64 - 1)
    stop: Optional[Union[StrictStr, list[StrictStr]]] = None
    echo: StrictBool = False
    logprobs: Optional[StrictInt] = Field(default=None, ge=0, le=MAX_LOGPROBS)
    stream: StrictBool = False
    stream_options: Optional[dict[str, Any]] = None
    user: Optional[StrictStr] = None


class TokenizeRequest(BaseModel):
    """``POST /tokenize`` (vLLM's shape; ``model`` may be omitted when one model is served)."""

    model_config = ConfigDict(extra="ignore")

    model: Optional[StrictStr] = None
    prompt: StrictStr
    add_special_tokens: StrictBool = False


class DetokenizeRequest(BaseModel):
    """``POST /detokenize`` (vLLM's shape)."""

    model_config = ConfigDict(extra="ignore")

    model: Optional[StrictStr] = None
    tokens: list[StrictInt]


class ServeError(Exception):
    """A request the server refuses: HTTP ``status`` and OpenAI's error fields."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code
        self.type = type


@dataclasses.dataclass
class Params:
    """A validated completion request, ready for the engine."""

    prompts: list[list[int]]  # token ids without the leading <bos>
    prompt_texts: list[str]
    prompt_starts: list[bool]  # the prompt's first id was a <bos>/<eos> document start (logprob null)
    max_tokens: int
    temperature: float
    top_k: int | None
    top_p: float
    n: int
    seed: int  # the request's, or a fresh one drawn for an unseeded request (never reported)
    stops: list[str]
    echo: bool
    logprobs: int | None
    min_tokens: int = 0
    stream: bool = False  # deltas are sent as tokens come; otherwise once, when a choice ends



def encode_prompts(req: CompletionRequest, vocab) -> tuple[list[list[int]], list[str], list[bool]]:
    """The prompts of ``req`` as token ids (without a leading ``<bos>``), their texts, and whether each
    token-id prompt began with a document start (``<bos>``/``<eos>``, dropped). Raises ServeError."""
    p = req.prompt
    if isinstance(p, str):
        raw = [p]
    elif len(p) == 0:
        raise ServeError("prompt must not be an empty list", param="prompt")
    elif isinstance(p[0], int):
        raw = [p]
    else:
        raw = list(p)
    if len(raw) > MAX_PROMPTS:
        raise ServeError(f"at most {MAX_PROMPTS} prompts per request, got {len(raw)}", param="prompt")
    V, bos, eos = vocab.vocab_size, vocab.bos_id, vocab.eos_id
    prompts, texts, starts = [], [], []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            try:
                ids = vocab.encode(item)
            except ArlmError as e:
                where = f"prompt[{i}]: " if len(raw) > 1 else ""
                raise ServeError(f"{where}{e}", param="prompt", code="invalid_prompt") from None
            texts.append(item)
            starts.append(False)
        else:
            ids = list(item)
            bad = next((j for j, t in enumerate(ids) if not 0 <= t < V), None)
            if bad is not None:
                raise ServeError(f"prompt token id {ids[bad]} at position {bad} is outside this model's vocab "
                                 f"[0, {V})", param="prompt", code="invalid_prompt")
            start = bool(ids) and ids[0] in (bos, eos)
            if start:
                ids = ids[1:]
            if bos in ids:
                raise ServeError(f"<bos> (id {bos}) may only be the first token of a prompt, found at position "
                                 f"{ids.index(bos) + start}", param="prompt", code="invalid_prompt")
            texts.append(vocab.decode(([bos] if start else []) + ids))
            starts.append(start)
        prompts.append(ids)
    return prompts, texts, starts


def validate_request(req: CompletionRequest, vocab, max_tokens_limit: int) -> Params:
    """Validate a :class:`CompletionRequest` against the served model's ``vocab`` and this server's
    limits, and encode its prompts. Raises ServeError (HTTP 400) naming the field at fault."""
    prompts, texts, starts = encode_prompts(req, vocab)
    max_tokens = 16 if req.max_tokens is None else req.max_tokens
    if max_tokens > max_tokens_limit:
        raise ServeError(f"max_tokens={max_tokens} is above this server's limit {max_tokens_limit} "
                         "(--max-tokens-limit)", param="max_tokens")
    if max_tokens == 0 and not req.echo:
        raise ServeError("max_tokens=0 returns nothing without echo=true", param="max_tokens")
    total = max_tokens * req.n * len(prompts)
    cap = 4 * max_tokens_limit
    if total > cap:
        raise ServeError(f"n x max_tokens x prompts = {total} tokens is above this server's cap {cap} "
                         "(4 x --max-tokens-limit)", param="n")
    temperature = 1.0 if req.temperature is None else float(req.temperature)
    top_p = 1.0 if req.top_p is None else float(req.top_p)
    top_k = None if req.top_k in (None, -1, 0) else int(req.top_k)
    if not math.isfinite(temperature):
        raise ServeError("temperature must be finite", param="temperature")
    try:
        check_sampling_args(temperature, top_k, top_p, max_tokens)
    except ArlmError as e:
        raise ServeError(str(e), param="temperature") from None
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    stops = [s for s in stops if s]
    return Params(prompts, texts, starts, max_tokens, temperature, top_k, top_p, req.n, fresh_seed() if req.seed is None else req.seed, stops,
                  req.echo, req.logprobs, min(req.min_tokens, max_tokens), req.stream)


ErrorType = Literal["invalid_request_error", "authentication_error", "not_found_error", "server_error"]


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | int | None = None) -> dict:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def logprobs_body(tokens: list[str], token_logprobs: list[float | None], top_logprobs: list[dict | None] | None,
                  text_offset: list[int]) -> dict:
    """OpenAI's legacy ``logprobs`` object: parallel lists, one entry per token."""
    return {"tokens": tokens, "token_logprobs": token_logprobs,
            "top_logprobs": top_logprobs if top_logprobs is not None else None, "text_offset": text_offset}


def completion_body(id_: str, model: str, choices: list[dict], usage: dict | None, created: int | None = None) -> dict:
    """A ``text_completion`` response (or one streamed chunk when ``usage`` is None)."""
    body = {"id": id_, "object": "text_completion", "created": created or int(time.time()), "model": model,
            "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}
