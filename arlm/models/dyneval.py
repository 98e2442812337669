"""Dynamic evaluation: a neural model that keeps training on the text it is reading.

Krause, Kahembwe, Murray & Renals, "Dynamic Evaluation of Neural Sequence
Models" (ICML 2018): after every chunk of ``chunk_size`` tokens has been
predicted, take ``steps`` gradient steps on the mean nll of that chunk, then
predict the next chunk with the updated weights. This wrapper uses plain SGD
with a decay of the weights toward the trained ones (their "global prior"
term), ``θ ← θ − η ∇ℓ + λ (θ₀ − θ)``.

Each update uses only tokens already predicted, so p(x_t | x_<t) depends on the
past alone and p(x) = Π p(x_t | x_<t) stays exact (DESIGN.md §8). Every
document starts from the trained weights (the state holds a private copy).
``logits``, ``sequence_log_probs`` and ``step`` run the same token-by-token
loop. Results are bit-exact between two runs with the same thread count on the
same machine (``arlm compress`` uses one thread); ``arlm eval`` with other
thread counts agrees to float rounding.

A saved directory embeds the base model as ``component0/``.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ArlmError
from ..paths import WEIGHTS_FILE
from .base import LanguageModel


@dataclasses.dataclass
class DynEvalConfig:
    """``base``: the wrapped family (lstm or gpt); ``chunk_size``: tokens per update
    (at most a GPT's block_size); ``learning_rate``: η; ``decay``: λ; ``steps``: updates per chunk."""

    vocab_size: int
    bos_id: int
    eos_id: int
    base: str = "lstm"
    chunk_size: int = 50
    learning_rate: float = 0.01
    decay: float = 0.0
    steps: int = 1


class DynEvalState:
    """The document's private copy of the model, its ``step`` state, the tokens since the
    last update (the first of them is context only), and the recurrent state before them."""

    __slots__ = ("model", "inner", "buffer", "start_state")

    def __init__(self, model, inner, buffer, start_state):
        self.model, self.inner, self.buffer, self.start_state = model, inner, buffer, start_state


class DynEvalModel(LanguageModel):
    """Dynamic evaluation of a neural ``base`` model (module docstring)."""

    family = "dyneval"

    def __init__(self, config: DynEvalConfig, base: LanguageModel):
        super().__init__()
        if base.family not in ("lstm", "gpt"):
            raise ArlmError(f"dynamic evaluation wraps an lstm or gpt model, not {base.family!r}")
        if config.chunk_size < 1 or (base.block_size is not None and config.chunk_size > base.block_size):
            raise ArlmError(f"chunk size must be in 1..block_size, got {config.chunk_size}")
        self.config = config
        self.base = base

    @property
    def block_size(self) -> None:
        return None

    @property
    def device(self) -> torch.device:
        return self.base.device

    def _adapt(self, st: DynEvalState) -> None:
        m = st.model
        ids = torch.tensor(st.buffer, dtype=torch.long, device=self.device)[None]  # [1, chunk + 1]
        with torch.enable_grad():
            for _ in range(self.config.steps):
                m.zero_grad(set_to_none=True)
                if hasattr(m, "forward_with_state"):  # recurrent: continue from the state before the chunk
                    logits, _ = m.forward_with_state(ids[:, :-1], st.start_state)
                else:
                    logits = m.logits(ids[:, :-1])
                loss = F.cross_entropy(logits[0], ids[0, 1:])
                loss.backward()
                with torch.no_grad():
                    for p, p0 in zip(m.parameters(), self.base.parameters()):
                        if p.grad is not None:
                            p.sub_(self.config.learning_rate * p.grad)
                        if self.config.decay:
                            p.add_(self.config.decay * (p0 - p))

    @torch.no_grad()
    def step(self, token_ids: torch.Tensor, state: DynEvalState | None = None) -> tuple[torch.Tensor, Any]:
        """One token (batch of 1 row per state; rows are documents of their own): (FloatTensor[B, V], state)."""
        if token_ids.numel() != 1:
            return self._step_rows(token_ids, state)
        if state is None:
            m = copy.deepcopy(self.base).train(False)
            state = DynEvalState(m, None, [], None)
        tok = int(token_ids.reshape(-1)[0])
        if len(state.buffer) == self.config.chunk_size + 1:
            self._adapt(state)
            state.buffer = state.buffer[-1:]
            state.start_state = _detach(state.inner) if hasattr(state.model, "forward_with_state") else None
        state.buffer.append(tok)
        out, state.inner = state.model.step(token_ids.reshape(1).to(self.device), state.inner)
        return out, state

    def _step_rows(self, token_ids, state):
        states = state if state is not None else [None] * token_ids.numel()
        outs, new = [], []
        for t, s in zip(token_ids.reshape(-1), states):
            o, s2 = self.step(t.reshape(1), s)
            outs.append(o)
            new.append(s2)
        return torch.cat(outs), new

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
        return self.stepwise_log_probs(token_ids, normalise=True)

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
            save_file({"chunk_size": torch.tensor([self.config.chunk_size])}, str(tmp), metadata={"format": "arlm-dyneval"})

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


def _detach(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(_detach(s) for s in state)
    return state.detach().clone()
