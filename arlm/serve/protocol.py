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

import time
import uuid
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

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
