"""The model contract every family implements (DESIGN.md §2).

A model is a ``torch.nn.Module`` with:

* ``family``: the registry name ("ngram", "lstm", "gpt", "mixture");
* ``config``: a dataclass of hyperparameters (saved as ``config.json``), which
  always holds ``vocab_size``, ``bos_id`` and ``eos_id``;
* ``block_size``: how many previous tokens the model sees (``order - 1`` for an
  n-gram, ``None`` for unbounded recurrence);
* ``logits(token_ids [B, T]) -> [B, T, V]``: row t scores the token after
  ``token_ids[:, :t+1]``; ``log_softmax`` of it is a distribution over all V
  tokens with ``<bos>`` at probability 0;
* ``step(token_ids [B], state) -> ([B, V], state)``: incremental scores;
  ``state=None`` means nothing came before.

Everything else (scoring, sampling, the CLI) is written once against these.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..paths import WEIGHTS_FILE


class LanguageModel(torch.nn.Module):
    """Base class of every family; see the module docstring for the contract."""

    family: ClassVar[str] = ""
    #: True when ``logits`` accepts at most ``block_size`` positions (learned
    #: position embeddings); such models are scored with a sliding window.
    windowed: ClassVar[bool] = False

    config: Any

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def bos_id(self) -> int:
        return self.config.bos_id

    @property
    def eos_id(self) -> int:
        return self.config.eos_id

    @property
    def block_size(self) -> int | None:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    # -- the contract ---------------------------------------------------------
    def logits(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced scores: LongTensor[B, T] -> FloatTensor[B, T, V]."""
        raise NotImplementedError

    def step(self, token_ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Scores after appending one token per row: LongTensor[B] -> (FloatTensor[B, V], state)."""
        raise NotImplementedError

    # -- written once against the contract; families may override for speed ---
    def prefill(self, token_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Feed a prompt LongTensor[B, T] (T >= 1); return (FloatTensor[B, V] scores after it, state)."""
        state = None
        for t in range(token_ids.shape[1]):
            out, state = self.step(token_ids[:, t], state)
        return out, state

    @torch.no_grad()
    def sequence_log_probs(self, token_ids: torch.Tensor, stride: int | None = None) -> torch.Tensor:
        """Log-probability (nats) of every token after the first of one sequence.

        Args:
            token_ids: LongTensor[T], normally ``[<bos>, x_1, ..., x_n, (<eos>)]``.
            stride: for windowed models, how many new tokens each window of
                ``block_size`` predicts (default ``block_size // 2``); every token
                is predicted exactly once, with as much context as the window
                allows. Ignored by models that need no window.

        Returns:
            FloatTensor[T - 1] (float64): entry t is log p(token_ids[t+1] | token_ids[:t+1]).
        """
        ids = token_ids.to(self.device)
        T = ids.shape[0]
        if T < 2:
            return torch.zeros(0, dtype=torch.float64)
        if not (self.windowed and self.block_size is not None and T - 1 > self.block_size):
            return self._gather_log_probs(ids[:-1], ids[1:])
        return self._windowed_log_probs(ids, stride)

    @torch.no_grad()
    def stepwise_log_probs(self, token_ids: torch.Tensor, normalise: bool = False) -> torch.Tensor:
        """``sequence_log_probs`` by the ``step`` loop, for adaptive models whose ``logits`` is that loop anyway.

        Args:
            token_ids: LongTensor[T].
            normalise: ``step`` returns logits (take ``log_softmax`` in float64) rather than log-probs.

        Returns:
            FloatTensor[T - 1] (float64): entry t is log p(token_ids[t+1] | token_ids[:t+1]), nats.
        """
        ids = token_ids.detach().cpu().reshape(-1)
        out = torch.zeros(max(len(ids) - 1, 0), dtype=torch.float64)
        state = None
        for t in range(len(ids) - 1):
            lp, state = self.step(ids[t : t + 1], state)
            out[t] = torch.log_softmax(lp[0].double(), -1)[ids[t + 1]] if normalise else lp[0, ids[t + 1]]
        return out

    @torch.no_grad()
    def dense_log_probs(self, token_ids: torch.Tensor) -> torch.Tensor:
        """log_softmax of ``logits`` for any length: LongTensor[B, T] -> DoubleTensor[B, T, V].

        Past ``block_size`` a windowed model sees the last ``block_size`` tokens
        at each position (what ``step`` gives); this costs one forward pass per
        position beyond the block, so it serves short texts and tests, not scoring.
        """
        T = token_ids.shape[1]
        block = self.block_size
        if not self.windowed or block is None or T <= block:
            return torch.log_softmax(self.logits(token_ids).double(), dim=-1).cpu()  # [B, T, V]
        head = torch.log_softmax(self.logits(token_ids[:, :block]).double(), dim=-1).cpu()  # [B, block, V]
        tail = [torch.log_softmax(self.logits(token_ids[:, t - block + 1 : t + 1])[:, -1].double(), dim=-1).cpu()
                for t in range(block, T)]  # each [B, V]
        return torch.cat([head, torch.stack(tail, dim=1)], dim=1)

    @torch.no_grad()
    def documents_log_probs(self, documents: list[torch.Tensor], max_batch_tokens: int = 8192) -> list[torch.Tensor]:
        """``sequence_log_probs`` of many sequences, batched where they fit in one window.

        Args:
            documents: LongTensor[T_i] each, normally ``[<bos>, …, <eos>]``.

        Returns:
            one float64 FloatTensor[T_i - 1] per document, in order.

        Short sequences are right-padded into batches (padding after a
        sequence cannot change its scores: every model is causal); longer
        ones go through ``sequence_log_probs`` one at a time.
        """
        out: list[torch.Tensor | None] = [None] * len(documents)
        limit = self.block_size if (self.windowed and self.block_size is not None) else max_batch_tokens
        short = [i for i, d in enumerate(documents) if 2 <= len(d) and len(d) - 1 <= limit]
        in_batches = set(short)
        for i, d in enumerate(documents):
            if i not in in_batches:
                out[i] = self.sequence_log_probs(d)
        short.sort(key=lambda i: len(documents[i]))
        j = 0
        while j < len(short):
            k = j + 1
            # grow the batch (sorted by length) while the padded size stays in budget
            while k < len(short) and (k - j + 1) * (len(documents[short[k]]) - 1) <= max_batch_tokens:
                k += 1
            group = short[j:k]
            T = len(documents[group[-1]]) - 1
            inputs = torch.full((len(group), T), self.eos_id, dtype=torch.long)
            targets = torch.full((len(group), T), self.eos_id, dtype=torch.long)
            for r, i in enumerate(group):
                d = documents[i]
                inputs[r, : len(d) - 1] = d[:-1]
                targets[r, : len(d) - 1] = d[1:]
            logits = self.logits(inputs.to(self.device))  # [B, T, V]
            lp = torch.log_softmax(logits.double(), dim=-1).gather(2, targets.to(self.device)[..., None])[..., 0].cpu()  # [B, T]
            for r, i in enumerate(group):
                out[i] = lp[r, : len(documents[i]) - 1]
            j = k
        return [o if o is not None else torch.zeros(0, dtype=torch.float64) for o in out]

    def _gather_log_probs(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.logits(inputs[None])[0]  # [T, V]
        log_probs = F.log_softmax(logits.double(), dim=-1)  # [T, V]
        return log_probs.gather(1, targets[:, None])[:, 0].cpu()  # [T]

    def _windowed_log_probs(self, ids: torch.Tensor, stride: int | None, batch_windows: int = 64) -> torch.Tensor:
        block = self.block_size
        stride = stride or max(1, block // 2)
        if not 1 <= stride <= block:
            raise ValueError(f"stride must be in [1, block_size={block}], got {stride}")
        n_pred = ids.shape[0] - 1
        # Window k starts at k * stride; the first predicts positions [0, block),
        # window k >= 1 predicts [block + (k-1) * stride, block + k * stride). A
        # position's window depends on the position alone, so the scores of a
        # prefix do not depend on the text that follows it (and conditional
        # log-probs are exact differences of prefix log-probs).
        n_windows = 1 + -(-max(0, n_pred - block) // stride)
        total = (n_windows - 1) * stride + block + 1
        # pad the end so every window is full; padding after a position cannot change its score
        padded = torch.cat([ids, ids.new_full((total - ids.shape[0],), self.eos_id)])
        windows = padded.unfold(0, block + 1, stride)  # [n_windows, block + 1]
        parts = []
        for i in range(0, n_windows, batch_windows):
            w = windows[i : i + batch_windows]
            logits = self.logits(w[:, :-1])  # [b, block, V]
            lp = torch.log_softmax(logits.double(), dim=-1).gather(2, w[:, 1:, None])[..., 0].cpu()  # [b, block]
            parts.append(lp)
        lp = torch.cat(parts)  # [n_windows, block]
        out = torch.cat([lp[0], lp[1:, block - stride :].reshape(-1)])
        return out[:n_pred]

    # -- persistence (checkpoint.py calls these) --------------------------------
    def save_weights(self, directory: Path, vocab=None) -> None:
        """Write ``model.safetensors`` into ``directory`` (atomically); ``vocab`` is for
        families that save nested model directories (the mixture)."""
        from safetensors.torch import save_model

        from ..io import atomic_path

        with atomic_path(Path(directory) / WEIGHTS_FILE) as tmp:
            save_model(self, str(tmp))

    @classmethod
    def load_weights(cls, config: Any, directory: Path, components: list | None = None) -> "LanguageModel":
        """Build a model from ``config`` and the weights in ``directory``; a composite also
        receives its ``components``, loaded by ``checkpoint.load`` from :meth:`component_dirs`."""
        from safetensors import safe_open
        from safetensors.torch import load_model

        path = str(Path(directory) / WEIGHTS_FILE)
        model = cls(config)
        with safe_open(path, framework="pt") as f:  # keep the stored dtype (a float64 model stays float64)
            dtypes = {f.get_slice(n).get_dtype() for n in f.keys()}
        if dtypes & {"F64"} and not dtypes & {"F32", "BF16", "F16"}:
            model.double()
        load_model(model, path, device="cpu")
        model.eval()
        return model

    # -- composites (mixture, mixer, dyneval): models made of saved component models ----------
    def components_to_save(self, directory: Path) -> list[tuple[str, "LanguageModel"]]:
        """``(sub-directory, component)`` of each component that ``checkpoint.save`` writes as
        a model directory inside ``directory`` before :meth:`save_weights`; [] without components."""
        return []

    @classmethod
    def component_dirs(cls, config: Any, directory: Path) -> list[Path]:
        """The model directories of the components ``checkpoint.load`` loads and passes to
        :meth:`load_weights`; [] for a model without components.

        Raises:
            ArlmError: a component directory is missing (with the family's advice).
        """
        return []

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def config_to_dict(config) -> dict:
    return dataclasses.asdict(config)


def config_from_dict(cls, data: dict):
    """``cls`` from a saved config dict: unknown keys are dropped; a field the dict lacks takes the value in
    ``cls.SAVED_BEFORE`` (what models saved before the field existed computed), else its default."""
    names = {f.name for f in dataclasses.fields(cls)}
    legacy = {k: v for k, v in getattr(cls, "SAVED_BEFORE", {}).items() if k not in data}
    return cls(**{k: v for k, v in data.items() if k in names}, **legacy)
