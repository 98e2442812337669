"""Next-token filtering and the generation loop (DESIGN.md §4).

Filters apply in the Hugging Face order: temperature, then top-k, then top-p.

* ``temperature=0`` is greedy argmax (no division; ties go to the lowest id).
* ``top_k=None`` or ``top_k >= V`` is off; otherwise exactly k tokens are kept,
  ties broken by lowest id.
* ``top_p`` keeps the smallest set of most probable tokens whose mass reaches
  p (never empty; ``top_p=0`` is greedy); ``top_p=1.0`` is off. Nucleus
  sampling: Holtzman et al., "The Curious Case of Neural Text Degeneration" (2020).
* Non-finite logits (NaN or +inf, or a row of all -inf) are an error, never a sample.

Each call uses its own ``torch.Generator`` seeded with ``seed``, so the same
seed gives the same text in any process, whatever ran before; ``seed=None``
draws a fresh seed from the operating system, so unseeded calls differ.
"""

from __future__ import annotations

import dataclasses
import math
import secrets

import numpy as np
import torch

from .errors import ArlmError


#: Seeds are the integers 0 .. 2**64 - 1 (what a 64-bit ``seed`` field of OpenAI's API can carry).
MAX_SEED = 2**64 - 1

# torch's CPU generator state: u64 initial seed, i32 left, i32 seeded, u64 next, u64[624] Mersenne Twister words, ...
_MT_WORDS_OFFSET, _MT_N = 24, 624


def check_seed(seed, name: str = "seed", limit: int = MAX_SEED) -> int | None:
    """``seed`` as an int, or None; raise ArlmError unless it is None or an integer in 0 .. ``limit``."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= limit:
        raise ArlmError(f"{name} must be an integer from 0 to {limit}, got {seed!r}")
    return int(seed)


def fresh_seed() -> int:
    """A seed drawn from the operating system's randomness (what ``seed=None`` uses)."""
    return secrets.randbits(64)


@dataclasses.dataclass
class Sample:
    """One generated completion: ``text`` (without the prompt), the generated
    ``token_ids`` (``<eos>`` excluded), and ``finish_reason``: ``"stop"`` (``<eos>``
    or a stop string) or ``"length"`` (``max_new_tokens`` reached)."""

    text: str
    token_ids: list[int]
    finish_reason: str


def check_sampling_args(temperature: float, top_k: int | None, top_p: float, max_new_tokens: int | None = None) -> None:
    """Raise ValueError (an ArlmError) naming the first out-of-range knob."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ArlmError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ArlmError(f"top_k must be an integer >= 1 (or None for off), got {top_k}")
    if not (isinstance(top_p, (int, float)) and 0.0 <= top_p <= 1.0):
        raise ArlmError(f"top_p must be in [0, 1], got {top_p}")
    if max_new_tokens is not None and (not isinstance(max_new_tokens, int) or max_new_tokens < 0):
        raise ArlmError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens}")


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0) -> torch.Tensor:
    """Apply temperature, top-k and top-p to FloatTensor[B, V] logits.

    Returns FloatTensor[B, V] (float64) log-probabilities with removed tokens at
    -inf. ``temperature=0`` keeps only the argmax. Raises ArlmError for
    out-of-range knobs or non-finite logits.
    """
    check_sampling_args(temperature, top_k, top_p)
    logits = logits.double()
    if torch.isnan(logits).any() or torch.isposinf(logits).any():
        raise ArlmError("the model produced non-finite logits (NaN or +inf); refusing to sample")
    if torch.isneginf(logits).all(dim=-1).any():
        raise ArlmError("the model gave every token probability zero; refusing to sample")
    V = logits.shape[-1]
    if is_greedy(temperature, top_k, top_p):
        keep = torch.zeros_like(logits, dtype=torch.bool)  # [B, V]
        keep.scatter_(1, logits.argmax(dim=-1, keepdim=True), True)
        return torch.where(keep, 0.0, -math.inf)
    log_probs = torch.log_softmax(logits / temperature, dim=-1)  # [B, V]
    if top_k is None and top_p >= 1.0:
        return log_probs
    # descending, stable: among equal values the lower id comes first
    sorted_lp, order = torch.sort(log_probs, dim=-1, descending=True, stable=True)  # [B, V]
    keep_sorted = torch.ones_like(sorted_lp, dtype=torch.bool)
    if top_k is not None and top_k < V:
        keep_sorted[:, top_k:] = False
    if top_p < 1.0:
        probs = sorted_lp.exp()
        probs = torch.where(keep_sorted, probs, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)  # renormalised after top-k
        mass_before = probs.cumsum(dim=-1) - probs
        keep_sorted &= mass_before < top_p
        keep_sorted[:, 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)  # [B, V]
    filtered = torch.where(keep, log_probs, -math.inf)
    return torch.log_softmax(filtered, dim=-1)


def is_greedy(temperature: float, top_k: int | None, top_p: float) -> bool:
    """True when the knobs keep only the argmax (no random draw)."""
    return temperature == 0 or top_p == 0.0 or top_k == 1


def sample_next(logits: torch.Tensor, generator: torch.Generator, temperature: float = 1.0,
                top_k: int | None = None, top_p: float = 1.0) -> torch.Tensor:
    """Draw one token per row from FloatTensor[B, V] logits after filtering, every row from
    ``generator``: LongTensor[B]. (Rows with a generator each: :func:`sample_rows`.)"""
    lp = filter_logits(logits, temperature, top_k, top_p)  # [B, V]
    if is_greedy(temperature, top_k, top_p):
        return lp.argmax(dim=-1)
    return torch.multinomial(lp.exp().cpu(), 1, generator=generator)[:, 0]


def sample_rows(logits: torch.Tensor, generators: list[torch.Generator], temperature: float = 1.0,
                top_k: int | None = None, top_p: float = 1.0) -> list[int | ArlmError]:
    """The batched sampler of ``LM.generate`` and the server: one token per row of FloatTensor[B, V]
    logits, filtered together (:func:`filter_logits` is row-wise), row b drawing from ``generators[b]``.

    Row b's token depends on its logits and its generator only, never on the other rows, so
    a row sampled alone or in any batch gives the same token. A row whose logits are
    non-finite gets the ArlmError they raise instead of a token; the other rows are sampled.
    """
    try:
        lp = filter_logits(logits, temperature, top_k, top_p)  # [B, V] float64
    except ArlmError as e:
        if len(generators) == 1:
            return [e]
        return [sample_rows(logits[r : r + 1], [g], temperature, top_k, top_p)[0] for r, g in enumerate(generators)]
    if is_greedy(temperature, top_k, top_p):
        return lp.argmax(dim=-1).tolist()
    probs = lp.exp().cpu()  # [B, V]
    return [int(torch.multinomial(probs[i : i + 1], 1, generator=g)[0, 0]) for i, g in enumerate(generators)]


def find_stop(text: str, stops: list[str]) -> int:
    """Where ``text`` is cut for the stop strings: the index of the earliest occurrence of any, or -1."""
    return min((j for j in (text.find(s) for s in stops) if j >= 0), default=-1)


@torch.no_grad()
def generate(model, vocab, prompt: str = "", max_new_tokens: int = 200, temperature: float = 1.0,
             top_k: int | None = None, top_p: float = 1.0, seed: int | None = None,
             stop: list[str] | str | None = None, generator: torch.Generator | None = None) -> Sample:
    """Sample a completion of ``prompt`` (unconditional when empty: from ``<bos>``).

    The model sees ``[<bos>] + encode(prompt)`` and draws up to
    ``max_new_tokens`` tokens. Generation stops at ``<eos>`` (``finish_reason
    "stop"``, ``<eos>`` not in the text), at the first occurrence of a string in
    ``stop`` (the text is cut before it, ``"stop"``), or after
    ``max_new_tokens`` tokens (``"length"``). ``seed`` (0 .. 2**64 - 1) makes
    the draw reproducible; None draws a fresh seed, so unseeded calls differ.

    Raises:
        ArlmError: out-of-range knobs or seed, a prompt the vocab cannot encode, or
            non-finite logits.
    """
    return generate_many(model, vocab, prompt, 1, max_new_tokens, temperature, top_k, top_p, seed, stop,
                         generator)[0]


def sample_generator(seed: int, index: int = 0) -> torch.Generator:
    """The CPU ``torch.Generator`` of sample ``index`` of a call seeded with ``seed`` (0 .. 2**64 - 1).

    Sample 0 of a seed below 2**32 uses ``torch.Generator.manual_seed(seed)``
    (what :func:`generate` has always drawn). Every other (seed, index) pair
    fills the generator's whole Mersenne Twister state (624 32-bit words) from
    NumPy's ``SeedSequence(seed, spawn_key=(index,))``: ``manual_seed`` keeps
    only 32 bits of a seed (seed and seed + 2**32 would share a stream), while
    SeedSequence hashes all of them, so distinct pairs get distinct streams.

    Raises:
        ArlmError: ``seed`` is not an integer in 0 .. 2**64 - 1.
    """
    seed = check_seed(seed)
    if seed is None:
        raise ArlmError("sample_generator needs a seed (generate draws a fresh one for seed=None)")
    g = torch.Generator(device="cpu")
    g.manual_seed(seed & 0xFFFF_FFFF)
    if index == 0 and seed < 2**32:
        return g
    words = np.random.SeedSequence(seed, spawn_key=(int(index),)).generate_state(_MT_N, dtype=np.uint32)
    if not words.any():  # the all-zero state is the one the Mersenne Twister cannot leave
        words[0] = 1
    state = g.get_state().numpy().copy()
    state[_MT_WORDS_OFFSET:_MT_WORDS_OFFSET + 8 * _MT_N] = words.astype("<u8").view(np.uint8)
    g.set_state(torch.from_numpy(state))
    return g


def generate_many(model, vocab, prompt: str = "", num_samples: int = 1, max_new_tokens: int = 200,
                  temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0, seed: int | None = None,
                  stop: list[str] | str | None = None, generator: torch.Generator | None = None) -> list[Sample]:
    """``num_samples`` completions of ``prompt`` drawn together, as one batch of rows.

    Every row follows the rules of :func:`generate`; the model runs one
    batched ``step`` per token for all rows (rows that have finished are
    carried along until all have, or until ``max_new_tokens``). Row r draws
    from its own generator, :func:`sample_generator` ``(seed, r)``: sample r
    depends on ``seed`` and r only, never on how many samples are drawn or on
    how rows are batched (a server drawing the same samples one at a time gets
    the same text), and sample 0 equals :func:`generate` with the same seed.
    ``seed=None`` draws one fresh seed for the call.

    Raises:
        ArlmError: ``num_samples`` < 1, or as :func:`generate`.
    """
    check_sampling_args(temperature, top_k, top_p, max_new_tokens)
    seed = check_seed(seed)
    if seed is None:
        seed = fresh_seed()
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ArlmError(f"num_samples must be an integer >= 1, got {num_samples}")
    stops = [stop] if isinstance(stop, str) else [s for s in (stop or []) if s]
    B = num_samples
    if generator is not None and B == 1:
        generators = [generator]
    else:
        generators = [sample_generator(seed, r) for r in range(B)]
    was_training = model.training
    model.eval()
    try:
        prompt_ids = [vocab.bos_id, *vocab.encode(prompt)]
        if max_new_tokens == 0:
            return [Sample("", [], "length") for _ in range(B)]
        new_ids: list[list[int]] = [[] for _ in range(B)]
        texts: list[str | None] = [None] * B  # set when a row has finished early (stop string or <eos>)
        finish = ["length"] * B
        logits, state = model.prefill(torch.tensor([prompt_ids] * B, device=model.device))  # [B, V]
        for i in range(max_new_tokens):
            tok = torch.full((B,), vocab.eos_id, dtype=torch.long)  # [B]; finished rows are fed <eos>
            live = [r for r in range(B) if finish[r] != "stop"]
            for r, t in zip(live, sample_rows(logits[live], [generators[r] for r in live], temperature, top_k, top_p)):
                if isinstance(t, ArlmError):
                    raise t
                tok[r] = t
            for r, t in enumerate(tok.tolist()):
                if finish[r] == "stop":
                    continue
                if t == vocab.eos_id:
                    finish[r] = "stop"
                    continue
                new_ids[r].append(t)
                if stops:
                    text = vocab.decode(new_ids[r])
                    cut = find_stop(text, stops)
                    if cut >= 0:
                        finish[r], texts[r] = "stop", text[:cut]
            if all(f == "stop" for f in finish):
                break
            if i + 1 < max_new_tokens:
                logits, state = model.step(tok.to(model.device), state)
        return [Sample(texts[r] if texts[r] is not None else vocab.decode(new_ids[r]), new_ids[r], finish[r])
                for r in range(B)]
    finally:
        model.train(was_training)
