"""``LM``: a trained model together with its vocab, the object ``arlm.load`` returns.

Every method delegates to ``scoring`` or ``sampling``, which are written once
against the model contract, so all families behave identically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import checkpoint, sampling, scoring
from .sampling import Sample


class LM:
    """A language model and its vocab.

    Attributes:
        model: the ``LanguageModel`` (eval mode).
        vocab: the ``Vocab``.
        documents: the document mode it was trained with (``"lines"`` or ``"file"``).
        info: the parsed ``config.json`` (empty for an unsaved model).
    """

    def __init__(self, model, vocab, documents: str = "file", info: dict[str, Any] | None = None):
        self.model = model
        self.vocab = vocab
        self.documents = documents
        self.info = info or {}

    @classmethod
    def load(cls, path: str | Path) -> "LM":
        """Load a model directory. Raises ArlmError if it is missing, truncated or corrupt."""
        model, vocab, cfg = checkpoint.load(path)
        return cls(model, vocab, cfg.get("documents", "file"), cfg)

    def save(self, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
        """Write a model directory (atomically, file by file; config.json last)."""
        return checkpoint.save(path, self.model, self.vocab, {"documents": self.documents, **(meta or {})})

    def to(self, device: str | torch.device) -> "LM":
        """Move the neural model, or a composite's neural components, to ``device``; other families stay on the CPU.

        Raises:
            ArlmError: a device this machine does not have (see ``arlm.device``).
        """
        from .device import place, resolve_device

        place(self.model, resolve_device(device) if isinstance(device, str) else device)
        return self

    def adapt(self, **settings) -> "LM":
        """This model under dynamic evaluation: it keeps training on each document as it reads it
        (Krause et al. 2018; :mod:`arlm.models.dyneval`), and p(x) = Π p(x_t | x_<t) stays exact.

        Args:
            settings: the update settings, fields of :class:`arlm.models.dyneval.DynEvalConfig`
                (``chunk_size``, ``learning_rate``, ``decay``, ``steps``, ``optimizer``); unset ones take
                its defaults. On a ``dyneval`` model they replace its saved settings.

        Returns:
            A new ``LM`` sharing this one's weights (never changed: each document adapts a private copy).

        Raises:
            ArlmError: the model is not a gpt or lstm (or a dyneval of one), an unknown setting, a bad value.
        """
        from .models.dyneval import adapted

        return LM(adapted(self.model, settings), self.vocab, self.documents, self.info)

    # -- scoring (nats) ----------------------------------------------------------------
    def log_prob(self, text: str, eos: bool = True) -> float:
        """log p(text) in nats; ``eos=False`` gives the prefix probability. See ``scoring.log_prob``."""
        _text(text=text)
        return scoring.log_prob(self.model, self.vocab, text, eos=eos)

    def conditional_log_prob(self, completion: str, given: str = "") -> float:
        """log p(completion | given) in nats. See ``scoring.conditional_log_prob``."""
        _text(completion=completion, given=given)
        return scoring.conditional_log_prob(self.model, self.vocab, completion, given=given)

    def token_logprobs(self, text: str, eos: bool = True) -> list[tuple[str, float]]:
        """Per-token ``(token_text, logprob)`` pairs in nats. See ``scoring.token_logprobs``."""
        _text(text=text)
        return scoring.token_logprobs(self.model, self.vocab, text, eos=eos)

    def next_token_log_probs(self, prefix: str = "") -> dict[str, float]:
        """Token text -> log-prob (nats) of the token after ``prefix``, ``<eos>`` included."""
        _text(prefix=prefix)
        return scoring.next_token_log_probs(self.model, self.vocab, prefix)

    def evaluate(self, text: str, documents: str | None = None, stride: int | None = None) -> dict[str, float]:
        """nll (nats), mean_nll (nats/token), bits_per_char, bits_per_byte, perplexity of ``text``.

        ``documents`` defaults to the mode the model was trained with. See ``scoring.evaluate``.
        """
        _text(text=text)
        return scoring.evaluate(self.model, self.vocab, text, documents or self.documents, stride=stride)

    # -- sampling ------------------------------------------------------------------------
    def generate(self, prompt: str = "", max_new_tokens: int = 200, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float = 1.0, seed: int | None = None,
                 stop: list[str] | str | None = None, num_samples: int = 1) -> Sample | list[Sample]:
        """Sample a completion of ``prompt`` (unconditional when empty).

        Returns a ``Sample(text, token_ids, finish_reason)``, or a list of
        ``num_samples`` of them drawn together as one batch (one batched model
        step per token) from one generator seeded with ``seed`` (0 .. 2**64 - 1;
        None, the default, draws a fresh seed, so unseeded calls differ: pass a
        seed to reproduce a sample). See
        ``sampling.generate`` and ``sampling.generate_many`` for the semantics.
        """
        _text(prompt=prompt)
        out = sampling.generate_many(self.model, self.vocab, prompt, num_samples, max_new_tokens, temperature,
                                     top_k, top_p, seed, stop)
        return out[0] if num_samples == 1 else out


def _text(**args) -> None:
    """Raises ArlmError naming the first argument that is not a str (the methods take text, not bytes or ids)."""
    for name, value in args.items():
        if not isinstance(value, str):
            from .errors import ArlmError

            raise ArlmError(f"{name} must be a str (text), not {type(value).__name__}")
