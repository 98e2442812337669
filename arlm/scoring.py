"""Exact log-probabilities and metrics, written once against the model contract.

Semantics (DESIGN.md §3): a document x is fed as ``[<bos>, x_1 … x_n]`` with
targets ``[x_1 … x_n, <eos>]``; ``log_prob(x)`` sums all n+1 terms (nats) and
``log_prob(x, eos=False)`` is the prefix probability (n terms). Texts longer
than a windowed model's ``block_size`` are scored with a sliding window in
which every token is predicted exactly once; recurrent and n-gram models carry
their state and need no window.

Metrics (``evaluate``):

* ``nll``: total negative log-likelihood in nats over all predicted tokens
  (``<eos>`` counted once per document, ``<bos>`` never predicted);
* ``mean_nll = nll / n_tokens`` (nats per predicted token);
* ``perplexity = exp(mean_nll)``;
* ``bits_per_char = nll / (ln 2 · n_chars)`` and ``bits_per_byte = nll / (ln 2 ·
  n_bytes)``, where ``n_chars`` and ``n_bytes`` count the characters and UTF-8
  bytes of the original text evaluated (in ``lines`` mode the line breaks
  between documents are counted: ``<eos>`` stands for them).
"""

from __future__ import annotations

import math

import torch

from .corpus import split_documents
from .data import encode_document
from .errors import ArlmError
from .units import LN2
from .vocab.base import text_bytes


def _ids_tensor(ids: list[int]) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.long)


def _split_completion(vocab, completion: str, given: str) -> tuple[list[int], list[int]]:
    """Token ids of (prefix, completion) under the vocab's boundary policy."""
    split = getattr(vocab, "encode_pair", None)
    if split is not None:
        return split(given, completion)
    return vocab.encode(given), vocab.encode(completion)


def sequence_log_probs(model, token_ids: list[int], stride: int | None = None) -> torch.Tensor:
    """log p(token_ids[t+1] | token_ids[:t+1]) for each t: float64[len(token_ids) - 1], nats."""
    return model.sequence_log_probs(_ids_tensor(token_ids), stride=stride).double()


def log_prob(model, vocab, text: str, eos: bool = True, stride: int | None = None) -> float:
    """log p(text) in nats; with ``eos=False`` the prefix probability (no ``<eos>`` term).

    Raises:
        ArlmError: the vocab cannot encode ``text``.
    """
    return float(sequence_log_probs(model, encode_document(vocab, text, eos=eos), stride).sum())


def conditional_log_prob(model, vocab, completion: str, given: str = "", stride: int | None = None) -> float:
    """log p(completion | given) in nats, with no ``<eos>`` term.

    For char and byte vocabularies this equals ``log_prob(given + completion,
    eos=False) - log_prob(given, eos=False)`` exactly (the tokens of the
    concatenation are the tokens of the parts). For BPE the vocab's
    ``encode_pair`` decides the boundary (the lm-evaluation-harness practice, see
    ``arlm.vocab.bpe``): whitespace at the end of ``given`` moves to the start of
    the completion, then the two are encoded separately, so a non-empty
    completion is scored over at least one token of its own and the result is
    log p(ws + completion | given without ws), not a difference of canonical
    prefix log-probs. An empty completion has log-probability 0.
    """
    if completion == "":
        return 0.0
    prefix_ids, completion_ids = _split_completion(vocab, completion, given)
    ids = [vocab.bos_id, *prefix_ids, *completion_ids]
    lp = sequence_log_probs(model, ids, stride)
    return float(lp[len(prefix_ids):].sum())


def token_logprobs(model, vocab, text: str, eos: bool = True, stride: int | None = None) -> list[tuple[str, float]]:
    """Each predicted token of ``text`` with its log-probability (nats): ``[(token_text, logprob), ...]``.

    The sum of the logprobs equals ``log_prob(text, eos)``.
    """
    ids = encode_document(vocab, text, eos=eos)
    lp = sequence_log_probs(model, ids, stride)
    return [(vocab.token_text(t), float(v)) for t, v in zip(ids[1:], lp.tolist())]


@torch.no_grad()
def next_token_log_probs(model, vocab, prefix: str = "") -> dict[str, float]:
    """The whole next-token distribution after ``[<bos>] + prefix``: token text -> log-prob (nats).

    Every token except ``<bos>`` is a key, ``"<eos>"`` included; the probabilities sum to 1.
    """
    ids = _ids_tensor([vocab.bos_id, *vocab.encode(prefix)])
    if model.windowed and model.block_size is not None:
        ids = ids[-model.block_size :]
    logits, _ = model.prefill(ids[None].to(model.device))  # [1, V]
    log_probs = torch.log_softmax(logits.double(), dim=-1)[0].cpu()  # [V]
    return {vocab.token_text(i): float(log_probs[i]) for i in range(vocab.vocab_size) if i != vocab.bos_id}


def evaluate(model, vocab, text: str, documents: str = "file", stride: int | None = None) -> dict[str, float]:
    """NLL and the derived metrics of ``text`` split into documents (see module docstring for the units).

    Returns a dict with ``n_documents``, ``n_tokens`` (predicted tokens,
    ``<eos>`` counted), ``n_chars``, ``n_bytes``, ``nll`` (nats, sum),
    ``mean_nll`` (nats per token), ``bits_per_char``, ``bits_per_byte``,
    ``perplexity``.

    Raises:
        ArlmError: empty text, or text the vocab cannot encode.
    """
    docs = split_documents(text, documents)
    encoded = [_ids_tensor(encode_document(vocab, d)) for d in docs]
    if len(encoded) == 1:
        per_doc = [model.sequence_log_probs(encoded[0], stride=stride)]
    else:
        per_doc = model.documents_log_probs(encoded)
    nll = -sum(float(lp.double().sum()) for lp in per_doc)
    n_tokens = sum(lp.numel() for lp in per_doc)
    return metrics(nll, n_tokens, text, len(docs))


def metrics(nll: float, n_tokens: int, text: str, n_documents: int = 1) -> dict[str, float]:
    """The metric dict of ``evaluate`` from a total ``nll`` (nats) over ``n_tokens`` predicted tokens of ``text``."""
    return _metrics(nll, n_tokens, len(text), len(text_bytes(text)), n_documents)


def _metrics(nll: float, n_tokens: int, n_chars: int, n_bytes: int, n_documents: int) -> dict[str, float]:
    if n_tokens == 0 or n_chars == 0:
        raise ArlmError("nothing to evaluate: the text is empty")
    mean_nll = nll / n_tokens
    return {
        "n_documents": n_documents,
        "n_tokens": n_tokens,
        "n_chars": n_chars,
        "n_bytes": n_bytes,
        "nll": nll,
        "mean_nll": mean_nll,
        "bits_per_char": nll / (LN2 * n_chars),
        "bits_per_byte": nll / (LN2 * n_bytes),
        "perplexity": math.exp(mean_nll) if mean_nll < 700 else math.inf,
    }


def evaluate_file(model, vocab, path, documents: str = "file", chunk_bytes: int = 4 << 20,
                  window_tokens: int = 1 << 20) -> dict[str, float]:
    """``evaluate`` of the text file ``path``, read and scored piece by piece (files bigger than memory).

    ``lines``: any model; the documents of each piece are scored together
    (``documents_log_probs``). ``file``: n-gram models (a history of at most
    ``order - 1`` tokens): each window of ``window_tokens`` is scored with the
    last ``order - 1`` tokens before it as context, so every token gets the
    same probability as in ``evaluate``. The nll equals ``evaluate``'s up to
    the order of float summation (``lines``: exactly, for the n-gram).

    Raises:
        ArlmError: ``file`` mode with a model that is not an n-gram (its
            history is unbounded or windowed: use ``evaluate``), empty or invalid text.
    """
    import numpy as np

    from .data import iter_encoded

    if documents == "file" and getattr(model, "family", None) != "ngram":
        raise ArlmError(f"streaming evaluation of one long document needs an n-gram model, not {model.family}")
    n_tokens, n_chars, n_bytes, n_docs = 0, 0, 0, 0
    total = 0.0  # sum of log-probs, nats
    context = np.zeros(0, dtype=np.int64)
    keep = max(getattr(model, "block_size", 1) or 1, 1)
    for piece in iter_encoded(path, vocab, documents, chunk_bytes):
        n_chars += piece.n_chars
        n_bytes += piece.n_bytes
        if documents == "lines":
            if len(piece.doc_sizes):
                docs = torch.split(torch.from_numpy(piece.ids.astype(np.int64)), piece.doc_sizes.tolist())
                for lp in model.documents_log_probs(list(docs)):
                    total += float(lp.double().sum())
                    n_tokens += lp.numel()
                n_docs += len(piece.doc_sizes)
            continue
        n_docs = 1
        for a in range(0, len(piece.ids), window_tokens):
            window = np.concatenate([context, piece.ids[a : a + window_tokens]])
            if len(window) >= 2:
                p = model.target_probs(window[None, :-1], window[None, 1:])[0]
                new = p[max(len(context) - 1, 0) :]  # targets not scored with the previous window
                with np.errstate(divide="ignore"):
                    total += float(np.log(new).sum())
                n_tokens += len(new)
            context = window[-keep:]
    return _metrics(-total, n_tokens, n_chars, n_bytes, n_docs)
