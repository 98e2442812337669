"""Dynamic evaluation: a neural model that keeps training on the text it is reading.

Krause, Kahembwe, Murray & Renals, "Dynamic Evaluation of Neural Sequence
Models" (ICML 2018): after every chunk of ``chunk_size`` tokens has been
predicted, take ``steps`` gradient steps on the mean nll (nats per token) of that
chunk, then predict the next chunk with the updated weights. Update rules
(``optimizer``): ``"sgd"``, ``θ ← θ − η g``; ``"rms"``, ``θ ← θ − η g / (√v̂ + ε)``
with v̂ the bias-corrected running mean of g² over this document's updates
(their RMS-normalised rule, with the mean squares taken online rather than from
the training data); ``"rms-relative"`` (the default), the same step times the
RMS of the trained tensor θ₀ it updates, so that η is a fraction of each
weight's scale (weight decay in training shrinks the matrices many-fold). All
add a decay toward the trained weights ``λ (θ₀ − θ)`` (their "global prior").

GPT (block models): the chunks of a document are aligned windows. Chunk k
predicts the tokens after input positions ``s = k·c .. s + c − 1`` from one
window of inputs ``max(0, s + c − block_size) .. s + c − 1`` under the weights
θ_k (so every token sees at least ``block_size − c`` tokens of context, the
static sliding window's guarantee when ``c`` is its stride); the update after it
is a gradient step on the same window, with the loss on the chunk's tokens.
``sequence_log_probs`` runs one forward (and backward) per chunk; ``step`` primes
the KV cache with the window's context at each chunk start and then decodes
token by token. LSTM: the update continues from the recurrent state before
the chunk, and every path is the ``step`` loop.

Each update uses only tokens already predicted, so p(x_t | x_<t) depends on the
past alone and p(x) = Π p(x_t | x_<t) stays exact (DESIGN.md §8). Every
document starts from the trained weights (the state holds a private copy).
Two runs of ``step`` with the same thread count on the same machine give
bit-identical scores (``arlm compress``/``decompress`` use one thread);
``sequence_log_probs`` (batched forward) agrees with ``step`` to float rounding.

A saved directory embeds the base model as ``component0/``.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ArlmError
from ..paths import WEIGHTS_FILE
from .base import LanguageModel

#: The update rules of :class:`DynEvalConfig` (``optimizer``).
DYNEVAL_OPTIMIZERS = ("sgd", "rms", "rms-relative")
#: ``"rms"``: decay of the running mean of squared gradients, and ε.
_RMS_BETA, _RMS_EPS = 0.99, 1e-8
#: The step size η of each base family and rule when none is given (measured: bench/README.md, issue 24).
DEFAULT_LEARNING_RATES = {"gpt": {"sgd": 0.01, "rms": 3e-4, "rms-relative": 1e-3},
                          "lstm": {"sgd": 0.01, "rms": 3e-4, "rms-relative": 3e-3}}


@dataclasses.dataclass
class DynEvalConfig:
    """``base``: the wrapped family (lstm or gpt); the other fields are the settings of the
    updates (the module docstring), each also a ``--adapt-*`` flag of the commands that score."""

    vocab_size: int
    bos_id: int
    eos_id: int
    base: str = "lstm"
    chunk_size: int | None = field(default=None, metadata={
        "help": "tokens predicted between two updates (default: half a gpt's block size; 50 for an lstm)"})
    learning_rate: float | None = field(default=None, metadata={
        "help": "step size η of each update (default: rms-relative 1e-3 for a gpt and 3e-3 for an lstm; "
                "rms 3e-4; sgd 0.01)"})
    decay: float = field(default=0.001, metadata={"help": "pull λ of the weights back toward the trained ones per update"})
    steps: int = field(default=1, metadata={"help": "gradient steps per chunk"})
    optimizer: str = field(default="rms-relative", metadata={
        "help": "update rule: sgd; rms (steps divided by the running RMS of the gradients); rms-relative "
                "(rms steps times the RMS of each trained weight tensor)",
        "choices": DYNEVAL_OPTIMIZERS})


def check_settings(cfg: DynEvalConfig) -> None:
    """Raises ArlmError for settings no update can use (a non-positive chunk or step count, an unknown rule,
    a negative or non-finite rate)."""
    if cfg.chunk_size is not None and cfg.chunk_size < 1:
        raise ArlmError(f"the adaptation chunk size must be a positive number of tokens, got {cfg.chunk_size}")
    if cfg.steps < 1:
        raise ArlmError(f"the adaptation needs at least 1 step per chunk, got {cfg.steps}")
    if cfg.optimizer not in DYNEVAL_OPTIMIZERS:
        raise ArlmError(f"unknown adaptation rule {cfg.optimizer!r}: choose one of {', '.join(DYNEVAL_OPTIMIZERS)}")
    for name in ("learning_rate", "decay"):
        v = getattr(cfg, name)
        if v is not None and not (v >= 0 and v != float("inf")):
            raise ArlmError(f"the adaptation {name.replace('_', ' ')} must be a finite number ≥ 0, got {v}")


class DynEvalState:
    """The document's private copy of the model and its update statistics, the base model's ``step`` state,
    the tokens the next update needs (``ids``, the first at absolute input position ``offset``), the count of
    tokens read, and (lstm) the recurrent state before the current chunk."""

    __slots__ = ("model", "inner", "ids", "offset", "n", "start_state", "sq", "updates")

    def __init__(self, model):
        self.model, self.inner, self.ids, self.offset, self.n = model, None, [], 0, 0
        self.start_state, self.sq, self.updates = None, None, 0


class DynEvalModel(LanguageModel):
    """Dynamic evaluation of a neural ``base`` model (module docstring).

    Raises:
        ArlmError: ``base`` is not an lstm or gpt; a chunk longer than a gpt's block size; bad settings.
    """

    family = "dyneval"

    def __init__(self, config: DynEvalConfig, base: LanguageModel):
        super().__init__()
        if base.family not in ("lstm", "gpt"):
            raise ArlmError(f"dynamic evaluation wraps an lstm or gpt model, not {base.family!r}")
        check_settings(config)
        self.windowed_chunks = base.family == "gpt"
        chunk = config.chunk_size or (max(1, base.block_size // 2) if self.windowed_chunks else 50)
        if self.windowed_chunks and chunk > base.block_size:
            raise ArlmError(f"the adaptation chunk size must be in 1..block_size={base.block_size}, got {chunk}")
        self.config = config
        self.chunk = chunk
        lr = config.learning_rate
        self.learning_rate = DEFAULT_LEARNING_RATES[base.family][config.optimizer] if lr is None else lr
        self.base = base
        # the factor of each tensor's step: "rms-relative", the RMS of the trained tensor; else 1
        relative = config.optimizer == "rms-relative"
        self._scales = [_rms(p) if relative else 1.0 for p in base.parameters()]

    @property
    def block_size(self) -> None:
        return None

    def settings(self) -> dict:
        """The update settings in effect (``chunk_size`` resolved): the keywords of ``LM.adapt``."""
        return {"chunk_size": self.chunk, "learning_rate": self.learning_rate, "decay": self.config.decay,
                "steps": self.config.steps, "optimizer": self.config.optimizer}

    @property
    def device(self) -> torch.device:
        return self.base.device

    def _new_state(self) -> DynEvalState:
        return DynEvalState(copy.deepcopy(self.base).train(False))

    # -- the update ----------------------------------------------------------------------------------
    def _update(self, st: DynEvalState, inputs: torch.Tensor, targets: torch.Tensor, first: int) -> torch.Tensor:
        """``steps`` updates on the loss of inputs [1, n] rows ``first..`` against targets [n - first].

        Returns the logits [n, V] of the first forward pass (the weights before the update).
        """
        m, cfg = st.model, self.config
        out = None
        with torch.enable_grad():
            for _ in range(cfg.steps):
                m.zero_grad(set_to_none=True)
                if not self.windowed_chunks:  # recurrent: continue from the state before the chunk
                    logits, _ = m.forward_with_state(inputs, st.start_state)
                else:
                    logits = m.logits(inputs)
                if out is None:
                    out = logits.detach()[0]
                F.cross_entropy(logits[0, first:], targets).backward()
                self._apply(st)
        return out

    @torch.no_grad()
    def _apply(self, st: DynEvalState) -> None:
        cfg = self.config
        params = list(st.model.parameters())
        rms = cfg.optimizer != "sgd"
        if rms and st.sq is None:
            st.sq = [torch.zeros_like(p) for p in params]
        st.updates += 1
        correction = 1.0 - _RMS_BETA ** st.updates
        for i, (p, p0) in enumerate(zip(params, self.base.parameters())):
            g = p.grad
            if g is not None and self.learning_rate:
                if rms:
                    sq = st.sq[i].mul_(_RMS_BETA).addcmul_(g, g, value=1.0 - _RMS_BETA)
                    p.addcdiv_(g, (sq / correction).sqrt_().add_(_RMS_EPS),
                               value=-self.learning_rate * self._scales[i])
                else:
                    p.sub_(self.learning_rate * g)
            if cfg.decay:
                p.add_(cfg.decay * (p0 - p))

    # -- step: one token at a time --------------------------------------------------------------------
    @torch.no_grad()
    def step(self, token_ids: torch.Tensor, state: DynEvalState | None = None) -> tuple[torch.Tensor, Any]:
        """One token per row (each row a document of its own): LongTensor[B] -> (FloatTensor[B, V] logits, state)."""
        if token_ids.numel() != 1:
            return self._step_rows(token_ids, state)
        st = state if state is not None else self._new_state()
        tok = int(token_ids.reshape(-1)[0])
        if self.windowed_chunks:
            return self._step_window(tok, st), st
        if len(st.ids) == self.chunk + 1:
            ids = torch.tensor(st.ids, dtype=torch.long, device=self.device)
            self._update(st, ids[None, :-1], ids[1:], 0)
            st.ids = st.ids[-1:]
            st.start_state = _detach(st.inner)
        st.ids.append(tok)
        out, st.inner = st.model.step(torch.tensor([tok], device=self.device), st.inner)
        return out, st

    def _step_window(self, tok: int, st: DynEvalState) -> torch.Tensor:
        c, block = self.chunk, self.base.block_size
        i = st.n  # the absolute input position of tok
        st.n += 1
        st.ids.append(tok)
        if i % c:
            out, st.inner = st.model.step(torch.tensor([tok], device=self.device), st.inner)
            return out
        if i:  # the chunk before this token is complete: update on its window
            s = i - c
            w = max(0, s + c - block)
            ids = torch.tensor(st.ids[w - st.offset :], dtype=torch.long, device=self.device)  # [i + 1 - w]
            self._update(st, ids[None, :-1], ids[s - w + 1 :], s - w)
        w0 = max(0, i + c - block)
        st.ids, st.offset = st.ids[w0 - st.offset :], w0
        out, st.inner = st.model.prefill(torch.tensor(st.ids, dtype=torch.long, device=self.device)[None])
        return out

    def _step_rows(self, token_ids, state):
        states = state if state is not None else [None] * token_ids.numel()
        outs, new = [], []
        for t, s in zip(token_ids.reshape(-1), states):
            o, s2 = self.step(t.reshape(1), s)
            outs.append(o)
            new.append(s2)
        return torch.cat(outs), new

    # -- whole sequences ---------------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Scores by the ``step`` loop, each row its own document: LongTensor[B, T] -> FloatTensor[B, T, V]."""
        rows = []
        for b in range(token_ids.shape[0]):
            state, cols = None, []
            for t in range(token_ids.shape[1]):
                out, state = self.step(token_ids[b, t : t + 1], state)
                cols.append(out[0])
            rows.append(torch.stack(cols) if cols else torch.zeros(0, self.vocab_size))
        return torch.stack(rows)

    @torch.no_grad()
    def sequence_log_probs(self, token_ids: torch.Tensor, stride: int | None = None) -> torch.Tensor:
        """Log-probability (nats) of every token after the first: LongTensor[T] -> float64 FloatTensor[T - 1].

        GPT: one forward and backward pass per chunk (module docstring); equal to the ``step`` loop up to
        float rounding. LSTM: the ``step`` loop. ``stride`` is ignored (the chunks set the windows).
        """
        if not self.windowed_chunks:
            return self.stepwise_log_probs(token_ids, normalise=True)
        ids = token_ids.detach().to(self.device).reshape(-1)
        n = ids.shape[0] - 1
        out = torch.zeros(max(n, 0), dtype=torch.float64)
        st = self._new_state()
        c, block = self.chunk, self.base.block_size
        for s in range(0, n, c):
            e = min(s + c, n)
            w = max(0, s + c - block)
            window = ids[w : e + 1]
            if e < n:
                logits = self._update(st, window[None, :-1], window[s - w + 1 :], s - w)
            else:  # the last chunk: no update follows it
                logits = st.model.logits(window[None, :-1])[0]
            lp = torch.log_softmax(logits[s - w :].double(), dim=-1)  # [e - s, V]
            out[s:e] = lp.gather(1, window[s - w + 1 :, None])[:, 0].cpu()
        return out

    @torch.no_grad()
    def documents_log_probs(self, documents: list[torch.Tensor], max_batch_tokens: int = 0) -> list[torch.Tensor]:
        return [self.sequence_log_probs(d) for d in documents]

    def num_parameters(self) -> int:
        return self.base.num_parameters()


    # -- persistence -------------------------------------------------------------------------------
    def components_to_save(self, directory: Path) -> list[tuple[str, LanguageModel]]:
        return [("component0", self.base)]

    def save_weights(self, directory: Path, vocab=None) -> None:
        from safetensors.torch import save_file

        from ..io import atomic_path

        with atomic_path(Path(directory) / WEIGHTS_FILE) as tmp:
            save_file({"chunk_size": torch.tensor([self.chunk])}, str(tmp), metadata={"format": "arlm-dyneval"})

    @classmethod
    def component_dirs(cls, config: DynEvalConfig, directory: Path) -> list[Path]:
        if not (Path(directory) / WEIGHTS_FILE).is_file():
            raise ArlmError(f"{directory} is incomplete: {WEIGHTS_FILE} is missing")
        return [Path(directory) / "component0"]

    @classmethod
    def load_weights(cls, config: DynEvalConfig, directory: Path, components: list | None = None) -> "DynEvalModel":
        if not components:
            raise ArlmError(f"{directory}: a dyneval model is loaded with its base model (use arlm.checkpoint.load)")
        return cls(config, components[0]).eval()


def _rms(t: torch.Tensor) -> float:
    """The root mean square of a tensor's entries (0 for an empty one), in float64."""
    return t.detach().double().pow(2).mean().sqrt().item() if t.numel() else 0.0


def _detach(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(_detach(s) for s in state)
    return state.detach().clone()


def adapted(model: LanguageModel, settings: dict) -> DynEvalModel:
    """``model`` (a gpt or lstm, or the base of a dyneval model) under dynamic evaluation with ``settings``
    (fields of :class:`DynEvalConfig`).

    Raises:
        ArlmError: another family, an unknown setting, a bad value.
    """
    names = {f.name for f in dataclasses.fields(DynEvalConfig)} - {"vocab_size", "bos_id", "eos_id", "base"}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise ArlmError(f"unknown dynamic evaluation setting {unknown[0]!r}: choose from {', '.join(sorted(names))}")
    base = model.base if isinstance(model, DynEvalModel) else model
    if base.family not in ("lstm", "gpt"):
        raise ArlmError(f"dynamic evaluation (--adapt) needs a neural model (gpt or lstm), not {base.family!r}")
    cfg = DynEvalConfig(base.vocab_size, base.bos_id, base.eos_id, base.family, **settings)
    return DynEvalModel(cfg, base).eval()
