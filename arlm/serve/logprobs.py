"""The log-probabilities a completion reports (OpenAI's ``logprobs`` fields), in nats, from the model's own distribution.

Generated tokens are scored by the engine from its decoding rows; ``echo`` prompts here,
with :func:`arlm.scoring.sequence_log_probs` (see ``engine.py``'s module docstring).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from ..scoring import sequence_log_probs
from ..vocab.base import BOS
from .protocol import Params

#: The logprob reported for a token of probability zero (JSON has no -inf; vLLM's convention).
NEG_INF_LOGPROB = -9999.0


def finite(x: float) -> float:
    return x if math.isfinite(x) else NEG_INF_LOGPROB


@dataclasses.dataclass
class PromptInfo:
    """The prompt's own tokens for ``echo``: text, token strings, logprobs, alternatives, char offsets."""

    text: str
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict | None] | None
    text_offset: list[int]


def top_logprobs(vocab, lp_row: torch.Tensor, k: int, chosen: int | None) -> dict:
    """The ``k`` most probable tokens of a DoubleTensor[V] log-prob row (and ``chosen``): text -> logprob."""
    vals, idx = torch.topk(lp_row, min(k, lp_row.shape[0]))
    out = {vocab.token_text(int(i)): finite(float(v)) for v, i in zip(vals, idx) if math.isfinite(float(v))}
    if chosen is not None:
        out.setdefault(vocab.token_text(chosen), finite(float(lp_row[chosen])))
    return out


def prompt_info(model, vocab, prm: Params, i: int) -> PromptInfo:
    """The ``echo`` logprobs of prompt ``i`` of ``prm`` (see the engine's module docstring)."""
    ids = prm.prompts[i]
    full = [vocab.bos_id, *ids]
    lp = sequence_log_probs(model, full).tolist() if ids else []
    tokens = ([BOS] if prm.prompt_starts[i] else []) + [vocab.token_text(t) for t in ids]
    token_logprobs: list[float | None] = ([None] if prm.prompt_starts[i] else []) + [finite(v) for v in lp]
    top = None
    if prm.logprobs is not None:
        top = [None] if prm.prompt_starts[i] else []
        if prm.logprobs > 0 and ids:
            dense = model.dense_log_probs(torch.tensor([full[:-1]], device=model.device))[0]  # [T, V]
            top += [top_logprobs(vocab, dense[j], prm.logprobs, ids[j]) for j in range(len(ids))]
        else:  # logprobs=0: only the token itself (vLLM's convention)
            top += [{vocab.token_text(t): finite(v)} for t, v in zip(ids, lp)]
    offsets = []
    pos = 0
    for tok_text, t in zip(tokens, ([vocab.bos_id] if prm.prompt_starts[i] else []) + ids):
        offsets.append(pos)
        if t not in (vocab.bos_id, vocab.eos_id):
            pos += len(vocab.decode([t]))
    return PromptInfo(prm.prompt_texts[i], tokens, token_logprobs, top, offsets)
