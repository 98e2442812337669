"""Turns completion requests into model calls, batching concurrent requests (dynamic batching).

One :class:`Engine` per served model owns a worker thread; the event loop
never runs the model. Requests are split into *sequences* (one per prompt and
choice). Sequences whose prompts have the same number of tokens and arrive
within ``coalesce_s`` of each other are prefilled together (``prefill`` on
``LongTensor[B, T]``) and then decoded together, one batched
``step(LongTensor[B], state)`` per token for the whole group: the model
contract's batched ``step`` (DESIGN.md §2) is the only thing used, so every
family is served and a faster ``step`` speeds the server up unchanged. All
groups in flight advance one token per engine iteration (iteration-level
scheduling, as in Orca, Yu et al. 2022, and vLLM), so a new request does not
wait for older ones to finish. Rows whose sequence has ended (``<eos>``, a
stop string, ``max_tokens``, a disconnected client) are fed ``<eos>`` until
their group ends; the contract has no way to drop a row from a state.

Exactness: each sequence is sampled from its own row of the batched scores
with :func:`arlm.sampling.sample_rows`, with the same generator discipline as
:meth:`arlm.LM.generate` (choice c of a prompt draws from
:func:`arlm.sampling.sample_generator` ``(seed, c)``), so the text equals
``LM.generate(prompt, …, seed=seed, num_samples=n)`` (to the float rounding
of a batched matmul for neural models). Log-probabilities are the model's,
before temperature/top-k/top-p, in nats: generated tokens from
``log_softmax`` of the decoding scores, prompt tokens (``echo``) from
:func:`arlm.scoring.sequence_log_probs` (so they equal ``LM.token_logprobs``
and ``conditional_log_prob``; past a windowed model's ``block_size`` that is
the sliding window of DESIGN.md §3, while the ``top_logprobs`` of prompt
positions use the full last window, what ``step`` sees).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import queue
import threading
import time
from typing import Any

import torch

from ..errors import ArlmError
from ..sampling import find_stop, sample_generator, sample_rows
from ..vocab.base import BOS, EOS
from .logprobs import finite, prompt_info, top_logprobs
from .protocol import Params, ServeError, validate_request

log = logging.getLogger("arlm.serve")

class Job:
    """One request in flight. The engine thread reports to the event loop through ``events``:

    ``("prompt", prompt_index, PromptInfo)``, ``("delta", choice_index, text, tokens)`` with
    ``tokens`` a list of ``(token_str, logprob, top | None, offset)``, ``("finish", choice_index,
    reason)``, ``("done", completion_tokens)`` and ``("error", ServeError)``.
    """

    def __init__(self, params: Params, loop: asyncio.AbstractEventLoop):
        self.params = params
        self.loop = loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = False
        self.remaining = len(params.prompts) * params.n
        self.completion_tokens = 0
        self.done_sent = False

    def emit(self, *event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server is shutting down
            self.cancelled = True

    def cancel(self) -> None:
        """Stop generating for this request (the client went away)."""
        self.cancelled = True


class Seq:
    """One choice being generated: a row of a decoding group."""

    __slots__ = ("job", "prompt_index", "choice", "index", "ids", "generator", "new_ids", "released_text",
                 "released_tokens", "offsets", "logprobs", "tops", "done", "arrived")

    def __init__(self, job: Job, prompt_index: int, choice: int, generator: torch.Generator):
        self.job = job
        self.prompt_index = prompt_index
        self.choice = choice
        self.index = prompt_index * job.params.n + choice
        self.ids = [0, *job.params.prompts[prompt_index]]  # [<bos>, prompt...]; <bos> set by the engine
        self.generator = generator
        self.new_ids: list[int] = []
        self.released_text = 0
        self.released_tokens = 0
        self.offsets: list[int] = []
        self.logprobs: list[float] = []
        self.tops: list[dict | None] = []
        self.done = False
        self.arrived = time.monotonic()


class Group:
    """Sequences decoded together: one batched state, one ``step`` per token."""

    def __init__(self, seqs: list[Seq], logits: torch.Tensor, state: Any):
        self.seqs = seqs
        self.logits = logits  # [B, V]
        self.state = state


class Engine:
    """Serves one model (an :class:`arlm.LM`) from a worker thread with dynamic batching.

    Args:
        name: the model id clients use.
        lm: the loaded model and vocab.
        coalesce_s: when nothing is being decoded, at most how long a new
            sequence waits for others of the same prompt length (seconds); it
            waits only while fewer are pending than ended in the last ``recent_s``.
        max_wait_s: while other sequences are decoded, how long a new one waits
            for enough company (as many as are being decoded) to start a batch.
        max_batch: the largest decoding group.
    """

    def __init__(self, name: str, lm, coalesce_s: float = 0.2, max_wait_s: float = 0.05, recent_s: float = 0.25,
                 max_batch: int = 64):
        self.name = name
        self.lm = lm
        self.model = lm.model
        self.vocab = lm.vocab
        self.coalesce_s = coalesce_s
        self.max_wait_s = max_wait_s
        self.recent_s = recent_s
        self._ended: collections.deque = collections.deque()  # monotonic times at which sequences ended
        self.max_batch = max_batch
        self.created = int(time.time())
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: list[Seq] = []
        self._groups: list[Group] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"arlm-engine-{name}", daemon=True)
        self._thread.start()

    # -- request side (called from the event loop) ---------------------------------------
    def tokenize(self, text: str, specials: bool = True) -> list[int]:
        """token_ids of ``text``; with ``specials`` the literal strings ``<bos>``/``<eos>`` become their ids
        (as Hugging Face tokenizers treat special tokens). Raises ArlmError for text outside the vocab."""
        if not specials:
            return self.vocab.encode(text)
        ids: list[int] = []
        pos = 0
        while pos <= len(text):
            hits = [(j, s) for s in (BOS, EOS) if (j := text.find(s, pos)) >= 0]
            if not hits:
                ids += self._encode_at(text[pos:], pos)
                break
            j, s = min(hits)
            ids += self._encode_at(text[pos:j], pos)
            ids.append(self.vocab.bos_id if s == BOS else self.vocab.eos_id)
            pos = j + len(s)
        return ids

    def _encode_at(self, text: str, offset: int) -> list[int]:
        try:
            return self.vocab.encode(text)
        except ArlmError as e:
            if offset == 0:
                raise
            raise ArlmError(f"{e} (position counted from offset {offset})") from None

    def detokenize(self, token_ids: list[int]) -> str:
        V = self.vocab.vocab_size
        bad = next((t for t in token_ids if not 0 <= t < V), None)
        if bad is not None:
            raise ServeError(f"token id {bad} is outside this model's vocab [0, {V})", param="tokens")
        return self.vocab.decode(token_ids)

    def prepare(self, req, max_tokens_limit: int) -> Params:
        """Validate a request and encode its prompts (:func:`~arlm.serve.protocol.validate_request`)."""
        return validate_request(req, self.vocab, max_tokens_limit)

    def submit(self, params: Params, loop: asyncio.AbstractEventLoop) -> Job:
        """Queue a request; its events arrive on ``job.events``."""
        job = Job(params, loop)
        self._inbox.put(job)
        return job

    @property
    def in_flight(self) -> int:
        """Sequences waiting or being decoded (read from another thread: a snapshot)."""
        return len(self._pending) + sum(1 for g in list(self._groups) for s in g.seqs if not s.done)

    def close(self) -> None:
        self._stopping = True
        self._inbox.put(None)

    # -- the worker thread ---------------------------------------------------------------
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stopping:
            try:
                self._iteration()
            except Exception:  # never let the worker die: fail the requests in flight
                log.exception("engine %s: internal error", self.name)
                jobs = {s.job for g in self._groups for s in g.seqs} | {s.job for s in self._pending}
                self._groups, self._pending = [], []
                for job in jobs:
                    job.emit("error", ServeError("internal error in the model engine (see the server log)",
                                                 status=500, type="server_error"))

    def _iteration(self) -> None:
        idle = not self._groups
        timeout = None
        if idle and self._pending:
            timeout = max(0.0, self.coalesce_s - (time.monotonic() - min(s.arrived for s in self._pending)))
        block = idle
        while True:
            try:
                job = self._inbox.get(block=block, timeout=timeout) if block else self._inbox.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return
            self._admit(job)
            block, timeout = False, None
        self._launch()
        for g in list(self._groups):
            self._advance(g)

    def _admit(self, job: Job) -> None:
        prm = job.params
        try:
            if prm.echo:
                for i in range(len(prm.prompts)):
                    job.emit("prompt", i, prompt_info(self.model, self.vocab, prm, i))
        except ArlmError as e:
            job.emit("error", ServeError(str(e)))
            return
        if prm.max_tokens == 0:
            for i in range(len(prm.prompts) * prm.n):
                job.emit("finish", i, "length")
            job.emit("done", 0)
            return
        for i in range(len(prm.prompts)):
            seq = Seq(job, i, 0, sample_generator(prm.seed, 0))
            seq.ids[0] = self.vocab.bos_id
            self._pending.append(seq)

    def _launch(self) -> None:
        """Prefill the pending sequences whose coalescing wait is over, grouped by prompt length."""
        if not self._pending:
            return
        now = time.monotonic()
        by_len: dict[int, list[Seq]] = {}
        for s in self._pending:
            by_len.setdefault(len(s.ids), []).append(s)
        keep: list[Seq] = []
        live_rows = sum(1 for g in self._groups for s in g.seqs if not s.done)
        while self._ended and self._ended[0] < now - self.recent_s:
            self._ended.popleft()
        recent = len(self._ended)
        for _, seqs in by_len.items():
            for s in seqs:
                if s.job.cancelled:
                    self._finish(s, None)
            seqs = [s for s in seqs if not s.job.cancelled]
            if not seqs:
                continue
            waited = now - min(s.arrived for s in seqs)
            # Clients whose sequences just ended tend to come back together (a closed loop): idle, wait
            # (up to coalesce_s) until as many sequences are pending as ended in the last recent_s.
            # Busy, a small bucket waits (up to max_wait_s) for as many as are being decoded, so that
            # requests arriving one by one do not each become a batch of one.
            if live_rows == 0:
                ready = len(seqs) >= max(1, recent) or waited >= self.coalesce_s
            else:
                ready = len(seqs) >= live_rows or waited >= self.max_wait_s
            if not ready:
                keep += seqs
                continue
            for j in range(0, len(seqs), self.max_batch):
                chunk = seqs[j : j + self.max_batch]
                ids = torch.tensor([s.ids for s in chunk], dtype=torch.long, device=self.model.device)  # [B, T]
                logits, state = self.model.prefill(ids)  # [B, V]
                self._groups.append(Group(chunk, logits, state))
                log.debug("engine %s: batch of %d (prompt %d tokens), %d groups", self.name, len(chunk), ids.shape[1], len(self._groups))
        self._pending = keep

    def _advance(self, g: Group) -> None:
        """Sample one token for every live row of ``g``, then one batched ``step``."""
        prm_logits = g.logits
        log_probs = None
        next_ids = []
        sampled = self._sample_rows(g)
        for r, s in enumerate(g.seqs):
            if s.done:
                next_ids.append(self.vocab.eos_id)
                continue
            if s.job.cancelled:
                self._finish(s, None)
                next_ids.append(self.vocab.eos_id)
                continue
            prm = s.job.params
            t = sampled[r]
            if isinstance(t, ArlmError):
                s.job.emit("error", ServeError(str(t), status=500, type="server_error"))
                s.job.cancelled = True
                self._finish(s, None)
                next_ids.append(self.vocab.eos_id)
                continue
            if t == self.vocab.eos_id:
                text = self.vocab.decode(s.new_ids)
                self._release(s, text, final=True)  # what a stop string held back
                # <eos> is reported as a generated token (as vLLM does): lm-eval drops the last logprob
                s.job.completion_tokens += 1
                if prm.logprobs is not None:
                    if log_probs is None:
                        log_probs = torch.log_softmax(prm_logits.double(), dim=-1).cpu()  # [B, V]
                    entry = (EOS, finite(float(log_probs[r, t])), top_logprobs(self.vocab, log_probs[r], prm.logprobs, t), len(text))
                    s.job.emit("delta", s.index, "", [entry])
                self._finish(s, "stop")
                next_ids.append(t)
                continue
            if prm.logprobs is not None:
                if log_probs is None:
                    log_probs = torch.log_softmax(prm_logits.double(), dim=-1).cpu()  # [B, V]
                s.logprobs.append(finite(float(log_probs[r, t])))
                s.tops.append(top_logprobs(self.vocab, log_probs[r], prm.logprobs, t))
            s.new_ids.append(t)
            s.job.completion_tokens += 1
            text = self.vocab.decode(s.new_ids)
            s.offsets.append(len(self.vocab.decode(s.new_ids[:-1])) if len(s.offsets) else 0)
            if prm.stops:
                cut = find_stop(text, prm.stops)
                if cut >= 0:
                    self._release(s, text[:cut], final=True, cut=True)
                    self._finish(s, "stop")
                    next_ids.append(t)
                    continue
            if len(s.new_ids) >= prm.max_tokens:
                self._release(s, text, final=True)
                self._finish(s, "length")
                next_ids.append(t)
                continue
            self._release(s, text, final=False)
            next_ids.append(t)
        if all(s.done for s in g.seqs):
            self._groups.remove(g)
            return
        tok = torch.tensor(next_ids, dtype=torch.long, device=self.model.device)  # [B]
        g.logits, g.state = self.model.step(tok, g.state)  # [B, V]

    def _sample_rows(self, g: Group) -> dict[int, int | ArlmError]:
        """One token per live row of ``g``: row -> token id (or the ArlmError its logits raised).

        Rows with the same knobs are sampled together by :func:`arlm.sampling.sample_rows`, each from
        its own generator (what ``LM.generate`` uses, so a choice gets the same text either way).
        """
        logits = g.logits  # [B, V]
        live = [r for r, s in enumerate(g.seqs) if not s.done and not s.job.cancelled]
        masked = [r for r in live if len(g.seqs[r].new_ids) < g.seqs[r].job.params.min_tokens]
        if masked:  # vLLM's min_tokens: no <eos> before it
            logits = logits.clone()
            logits[masked, self.vocab.eos_id] = -math.inf
        by_knobs: dict[tuple, list[int]] = {}
        for r in live:
            prm = g.seqs[r].job.params
            by_knobs.setdefault((prm.temperature, prm.top_k, prm.top_p), []).append(r)
        out: dict[int, int | ArlmError] = {}
        for (temperature, top_k, top_p), rows in by_knobs.items():
            drawn = sample_rows(logits[rows], [g.seqs[r].generator for r in rows], temperature, top_k, top_p)
            out.update(zip(rows, drawn))
        return out

    def _release(self, s: Seq, text: str, final: bool, cut: bool = False) -> None:
        """Send the text (and its tokens) that can no longer change; hold back a possible stop-string start.

        ``cut``: ``text`` was cut before a stop string, so only the tokens that start before the cut are sent.
        """
        if not final and not s.job.params.stream:  # nobody reads partial text: one event at the end
            return
        upto = len(text)
        if not final:
            hold = max((len(x) - 1 for x in s.job.params.stops), default=0)
            upto = max(s.released_text, upto - hold)
            while upto > s.released_text and text[upto - 1] == "\ufffd":  # an incomplete UTF-8 sequence
                upto -= 1
        if cut or upto < len(text):
            n_tok = max(s.released_tokens, sum(1 for o in s.offsets if o < upto))
        else:
            n_tok = len(s.new_ids)
        if upto == s.released_text and n_tok == s.released_tokens:
            return
        prm = s.job.params
        tokens = []
        if prm.logprobs is not None:
            for i in range(s.released_tokens, n_tok):
                tokens.append((self.vocab.token_text(s.new_ids[i]), s.logprobs[i], s.tops[i], s.offsets[i]))
        s.job.emit("delta", s.index, text[s.released_text : upto], tokens)
        s.released_text = upto
        s.released_tokens = n_tok

    def _finish(self, s: Seq, reason: str | None) -> None:
        """End a sequence (``reason`` None: its request was cancelled); start the next choice of its prompt."""
        s.done = True
        job = s.job
        if job.cancelled or reason is None:
            self._done(job)
            return
        job.emit("finish", s.index, reason)
        job.remaining -= 1
        if s.choice + 1 == job.params.n and job.remaining <= 0:
            self._ended.append(time.monotonic())
        if s.choice + 1 < job.params.n:
            nxt = Seq(job, s.prompt_index, s.choice + 1, sample_generator(job.params.seed, s.choice + 1))
            nxt.ids[0] = self.vocab.bos_id
            nxt.arrived -= max(self.coalesce_s, self.max_wait_s)  # a continuation does not wait for company
            self._pending.append(nxt)
        elif job.remaining <= 0:
            self._done(job)

    @staticmethod
    def _done(job: Job) -> None:
        if not job.done_sent:
            job.done_sent = True
            job.emit("done", job.completion_tokens)
