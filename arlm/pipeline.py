"""Text file -> split -> vocab -> fitted model directory: the steps `arlm train` composes.

Kept apart from ``cli.py`` so the Python API (``arlm.train``) and the CLI share them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import checkpoint
from .corpus import builtin_corpus, read_text, split_documents, train_val_split
from .data import encode_documents
from .errors import ArlmError
from .lm import LM
from .vocab import train_vocab


@dataclasses.dataclass
class Split:
    """Train and val documents, and the val text the metrics are computed over."""

    train_docs: list[str]
    val_docs: list[str]
    val_text: str
    documents: str
    source: str
    val_is_file: bool = False


def load_split(data: str | Path | None, documents: str = "file", val_file: str | Path | None = None,
               val_fraction: float = 0.1, seed: int = 1337) -> Split:
    """Read ``data`` (the built-in corpus when None) and split it (see ``corpus.train_val_split``).

    With ``val_file`` the whole of ``data`` is train and ``val_file`` is val.
    """
    text = builtin_corpus() if data is None else read_text(data)
    source = "builtin:pydoc_data.topics" if data is None else str(data)
    if val_file is not None:
        val_text = read_text(val_file)
        return Split(split_documents(text, documents), split_documents(val_text, documents), val_text, documents,
                     source, val_is_file=True)
    train_docs, val_docs = train_val_split(text, documents, val_fraction, seed)
    val_text = val_docs[0] if documents == "file" and val_docs else "".join(d + "\n" for d in val_docs)
    return Split(train_docs, val_docs, val_text, documents, source)


def split_meta(split: Split, val_file, val_fraction: float, seed: int) -> dict:
    return {
        "documents": split.documents,
        "data": split.source,
        "split": {"val_file": str(val_file) if val_file else None, "val_fraction": val_fraction, "seed": seed},
    }


def train_ngram(split: Split, out: str | Path, order: int = 5, vocab: str = "char",
                vocab_size: int | None = None, meta: dict | None = None,
                refit: bool = True) -> tuple[LM, dict | None]:
    """Fit an interpolated modified Kneser-Ney model and save it to ``out``.

    The model is fitted on ``split.train_docs`` and scored on the held-out
    ``split.val_docs``. Kneser-Ney estimation selects nothing on held-out text
    (discounts come from counts of counts), so with ``refit`` (the default) and
    a val split carved out of DATA, the saved model is then refitted on every
    document of DATA, train and val together, as KenLM's ``lmplz`` would be; the
    returned metrics are those of the model that had not seen val.

    Returns:
        ``(lm, val_metrics)``; ``val_metrics`` is None when there is no val text.

    Raises:
        ArlmError: order outside 1..10, an unwritable ``out``, or bad text.
    """
    from .models.ngram import MAX_ORDER, NGramConfig, NGramModel

    if not 1 <= order <= MAX_ORDER:
        raise ArlmError(f"--order must be in 1..{MAX_ORDER}, got {order}")
    checkpoint.prepare_dir(out)

    def fit(docs: list[str]) -> LM:
        v = train_vocab(vocab, docs, vocab_size)
        model = NGramModel.fit(NGramConfig(v.vocab_size, v.bos_id, v.eos_id, order=order), encode_documents(v, docs))
        return LM(model, v, split.documents)

    lm = fit(split.train_docs)
    val_metrics = lm.evaluate(split.val_text, split.documents) if split.val_docs else None
    refitted = refit and split.val_docs and not split.val_is_file
    if refitted:
        all_docs = [split.train_docs[0] + split.val_docs[0]] if split.documents == "file" else split.train_docs + split.val_docs
        lm = fit(all_docs)
    lm.save(out, {**(meta or {}), "refit_on_val": bool(refitted)})
    return lm, val_metrics


def make_cache(split: Split, out: str | Path, order: int = 6, vocab: str = "char",
               vocab_size: int | None = None, meta: dict | None = None) -> tuple[LM, dict | None]:
    """Save a document-cache model (``arlm.models.cache``) with a vocab built from the
    training documents; it has nothing to fit. Returns ``(lm, val_metrics)``."""
    from .models.cache import CacheConfig, CacheModel

    checkpoint.prepare_dir(out)
    v = train_vocab(vocab, split.train_docs, vocab_size)
    lm = LM(CacheModel(CacheConfig(v.vocab_size, v.bos_id, v.eos_id, order=order)), v, split.documents)
    val_metrics = lm.evaluate(split.val_text, split.documents) if split.val_docs else None
    lm.save(out, meta)
    return lm, val_metrics


def make_cm(split: Split, out: str | Path, vocab: str = "char", vocab_size: int | None = None,
            meta: dict | None = None, **config) -> tuple[LM, dict | None]:
    """Train a context-mixing model (``arlm.models.cm``): read the training documents
    through it once, in order, and save its tables; ``config`` holds ``CMConfig`` fields.
    Returns ``(lm, val_metrics)``."""
    import numpy as np

    from .data import encode_document
    from .models.cm import CMConfig, CMModel, word_token_ids

    checkpoint.prepare_dir(out)
    v = train_vocab(vocab, split.train_docs, vocab_size)
    model = CMModel(CMConfig(v.vocab_size, v.bos_id, v.eos_id, word_token_ids=word_token_ids(v), **config))
    model.fit([np.array(encode_document(v, d), dtype=np.int64) for d in split.train_docs])
    lm = LM(model, v, split.documents)
    val_metrics = lm.evaluate(split.val_text, split.documents) if split.val_docs else None
    lm.save(out, meta)
    return lm, val_metrics


# -- composites: built from loaded LMs and texts (the models receive their components) ----------
def build_mixture(lms: list, fit_text: str, documents: str, bucketed: bool = False):
    """Fit a mixture of loaded ``LM`` objects on ``fit_text``; returns ``(LM, history)``.

    ``history`` is as in :func:`fit_weights`. The returned model's
    ``fit_component_mean_nll`` lists each component's mean_nll (nats per token)
    on ``fit_text``, to compare with the mixture's ``-history[-1]``.

    Raises:
        ArlmError: fewer than two components, vocabularies that differ, or a
            bucketed mixture whose first component is not an n-gram model.
    """
    import torch

    from .data import encode_document
    from .models.mixture import MixtureConfig, MixtureModel, fit_weights

    if len(lms) < 2:
        raise ArlmError("a mixture needs at least two models")
    v0 = lms[0].vocab
    check_same_vocab([lm.vocab for lm in lms])
    bucket_components = []
    if bucketed:
        # the first n-gram and the first cache component select the weights
        for fam in ("ngram", "cache"):
            idx = [i for i, lm in enumerate(lms) if lm.model.family == fam]
            bucket_components += idx[:1]
        if not bucket_components:
            raise ArlmError("context-dependent weights need an n-gram or cache component")
    cfg = MixtureConfig(v0.vocab_size, v0.bos_id, v0.eos_id, [lm.model.family for lm in lms], bucket_components)
    model = MixtureModel(cfg, [lm.model for lm in lms])
    docs = [torch.tensor(encode_document(v0, d)) for d in split_documents(fit_text, documents)]
    L, buckets, _ = model.component_log_probs(docs)
    w, history = fit_weights(L, buckets, model.n_buckets)
    model.weights.copy_(w)
    model.fit_component_mean_nll = [float(-x) for x in L.mean(dim=1)]
    return LM(model.eval(), v0, documents), history


def reuse_weights(lms: list, donor, documents: str):
    """A mixture of ``lms`` with the weights of the mixture ``donor`` (an LM).

    The usual way to use held-out data twice (Jelinek & Mercer's deleted
    interpolation): fit the weights with components trained without the
    held-out part, then retrain the components on everything and keep the
    weights. Returns ``(LM, [])``.

    Raises:
        ArlmError: ``donor`` is not a mixture, or its components differ in
            number, family, order or vocabulary.
    """
    from .models.mixture import MixtureModel

    dm = donor.model
    if dm.family != "mixture":
        raise ArlmError("--weights-from needs a mixture model directory")
    if [lm.model.family for lm in lms] != dm.config.components:
        raise ArlmError(f"the models ({[lm.model.family for lm in lms]}) differ from the mixture's components "
                        f"({dm.config.components})")
    for k in dm.config.bucket_components:
        if lms[k].model.feature_size != dm.components[k].feature_size:
            raise ArlmError(f"component {k} has another order than in the mixture the weights come from")
    v0 = lms[0].vocab
    check_same_vocab([lm.vocab for lm in lms] + [donor.vocab])
    cfg = dataclasses.replace(dm.config)
    model = MixtureModel(cfg, [lm.model for lm in lms], dm.weights.clone())
    return LM(model.eval(), v0, documents), []


def check_same_vocab(vocabs) -> None:
    v0 = vocabs[0]
    probe = "The quick brown fox, 0123456789!\n"
    for v in vocabs[1:]:
        same = v.kind == v0.kind and v.vocab_size == v0.vocab_size
        if same and v0.kind == "char":
            same = v.chars == v0.chars
        if same and v0.kind == "word":
            same = v.words == v0.words
        if same and v0.kind == "bpe":
            same = v.encode(probe) == v0.encode(probe)
        if not same:
            raise ArlmError("the models do not share one vocabulary (train them with the same --vocab on the same text)")


def build_mixer(lms: list, select: list[int], learning_rate: float, prime_text: str | None = None,
                documents: str = "file", linear_input: bool = True):
    """An ``LM`` holding a mixer of ``lms`` (which share one vocab).

    With ``prime_text``, the mixer reads it once and keeps its final weights as
    the initial weights (a warm start learnt on held-out text, never the test text).

    Raises:
        ArlmError: the vocabularies differ, or a selecting component is not an n-gram or cache.
    """
    import torch

    from .data import encode_document
    from .models.mixer import MixerConfig, MixerModel

    check_same_vocab([lm.vocab for lm in lms])
    vocab = lms[0].vocab
    cfg = MixerConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, [lm.model.family for lm in lms],
                      list(select), learning_rate, linear_input)
    model = MixerModel(cfg, [lm.model for lm in lms]).eval()
    if prime_text:
        for doc in split_documents(prime_text, documents):
            ids = torch.tensor(encode_document(vocab, doc))
            state = None
            for t in range(len(ids)):
                _, state = model.step(ids[t : t + 1], state)
            # the last update waits for a token that never comes: that is fine, eos was the last one seen
            model.weights.copy_(torch.from_numpy(state.weights))
    return LM(model, vocab, documents)
