"""Text file -> split -> vocab -> fitted model directory: :func:`train` (``arlm.train``, what ``arlm train``
calls) and the steps it composes, one per way a family trains (the family table, ``arlm.models.registry``).
"""

from __future__ import annotations

import dataclasses
import time
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

    def vocab_docs(self, kind: str) -> list[str]:
        """The documents a vocab of ``kind`` is built from: the training documents, and for a char vocab val's
        too. A char vocab's symbols then cover every character of the text given (nanoGPT's char vocab is
        built over the whole file as well), so a character that only the held-out part holds is scored, not
        refused; no count or statistic of val enters the vocab."""
        return self.train_docs + self.val_docs if kind == "char" else self.train_docs


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


def val_share(val_file, val_fraction: float | None, cli_names: bool = False) -> float:
    """The share of the data held out as val: ``val_fraction``, 0.1 when None.

    Raises:
        ArlmError: both a val file and a val fraction are given (the file would make the fraction unused).
    """
    if val_file is not None and val_fraction is not None:
        both = "--val-file and --val-fraction" if cli_names else "val_file and val_fraction"
        raise ArlmError(f"give {both.replace(' and ', ' or ')}, not both: with a val file all of the data trains")
    return 0.1 if val_fraction is None else val_fraction


def split_meta(split: Split, val_file, val_fraction: float, seed: int) -> dict:
    return {
        "documents": split.documents,
        "data": split.source,
        "split": {"val_file": str(val_file) if val_file else None, "val_fraction": val_fraction, "seed": seed},
    }


@dataclasses.dataclass
class Trained:
    """What :func:`train` measured, attached to the returned LM as ``lm.trained``.

    ``split``: the train/val split (None for a token directory); ``val``: the val metrics of the model before
    any refit (None: not measured here; a neural run reports its own estimate in ``train_log.jsonl``);
    ``counting``: the n-gram counting statistics of a token-directory run; ``seconds``: wall time.
    """

    out: Path
    split: Split | None = None
    val: dict | None = None
    token_dir: bool = False
    counting: dict | None = None
    seconds: float = 0.0


_API_LABELS = {"data": "data", "val_file": "val_file", "out": "out"}
_CLI_LABELS = {"data": "DATA", "val_file": "--val-file", "out": "--out"}


def train(data: str | Path | None = None, model: str = "gpt", vocab: str = "char", out: str | Path | None = None,
          *, documents: str = "file", val_file: str | Path | None = None, val_fraction: float | None = None,
          seed: int = 1337, vocab_size: int | None = None, force: bool = False, keep_data: bool = True,
          progress: bool = True, cli_names: bool = False, **hyperparameters) -> LM | None:
    """Train a model of family ``model`` on the text file ``data`` and save it to the model directory ``out``.

    ``data``: a UTF-8 text file (None: the built-in corpus), a token directory from ``arlm tokenize``, or
    a :class:`Split` already made (``arlm compare``: its ``documents`` then win, ``val_fraction`` is recorded);
    ``documents``: ``"file"`` (one document) or ``"lines"`` (each non-empty line); val is ``val_file`` or
    the last ``val_fraction`` of ``data`` (default 0.1; shuffled documents in lines mode, by ``seed``). ``out`` defaults
    to ``runs/MODEL-VOCAB``; it may be absent, empty, or hold a model of the same family and vocab
    (replaced as a whole); anything else needs ``force=True``. ``hyperparameters`` are the family's
    options, named as the fields of its config dataclass and of its training settings (``n_layer=4``,
    ``max_steps=50``, ``order=5``; ``arlm train --model MODEL --help`` lists them as flags); those not
    given take the family table's defaults. ``progress``: progress bars on stderr (a terminal only);
    ``cli_names``: name inputs and options in messages as the command line does (``DATA``, ``--n-layer``).

    Returns:
        The trained :class:`LM` (``lm.trained``: a :class:`Trained`), or None in a DDP process other than rank 0.

    Raises:
        ArlmError: an unknown family or hyperparameter, one the family does not use, bad input, both
            ``val_file`` and ``val_fraction``, or an ``out`` that holds another model.
        Interrupted: SIGINT or SIGTERM stopped a neural run after it saved its checkpoint.
    """
    from .data import is_token_dir
    from .models.registry import family
    from .options import check_options

    fam = family(model)
    spell = (lambda n: "--" + n.replace("_", "-")) if cli_names else str
    if fam.trains is None:
        raise ArlmError(f"`arlm train` cannot train a {model!r} model; use `arlm mix` for mixtures")
    if hyperparameters.get("memory") is not None and model != "ngram":
        raise ArlmError("--memory bounds n-gram counting; neural training reads batches from a token directory "
                        "(arlm tokenize) without holding it")
    check_options(fam, hyperparameters, spell=spell)
    val_fraction = val_share(val_file, val_fraction, cli_names)
    labels = _CLI_LABELS if cli_names else _API_LABELS
    given_split = data if isinstance(data, Split) else None
    if given_split is None and ((data is not None and is_token_dir(data)) or hyperparameters.get("memory") is not None):
        from .tokens import train_from_tokens

        return train_from_tokens(fam, data, out, vocab, documents, val_file, val_fraction, seed, force,
                                 keep_data, progress, **hyperparameters)
    out = Path(out if out is not None else f"runs/{model}-{vocab}")
    inputs = [(labels["data"], None if given_split else data), (labels["val_file"], val_file)]
    replace = checkpoint.check_output_dir(out, force, family=model, vocab=vocab, flag=labels["out"], inputs=inputs)
    split = given_split or load_split(data, documents, val_file, val_fraction, seed)
    meta = split_meta(split, val_file, val_fraction, seed)
    if cli_names:  # the command line records where its inputs were
        meta["data_path"] = None if data is None else str(Path(data).resolve())
        if val_file is not None:
            meta["split"]["val_file"] = str(Path(val_file).resolve())
    t0 = time.time()
    if fam.trains == "gradient":
        lm = _train_gradient(fam, split, out, replace, vocab, vocab_size, meta, seed, keep_data, hyperparameters)
        val = None
        if lm is None:
            return None
    else:
        step = {"count": train_ngram, "none": make_cache, "adaptive": make_cm}[fam.trains]
        with checkpoint.new_model_dir(out, replace) as where:
            lm, val = step(split, where, vocab=vocab, vocab_size=vocab_size, meta=meta,
                           **_procedure_options(fam, hyperparameters))
    lm.trained = Trained(out, split, val, seconds=time.time() - t0)
    return lm


def _procedure_options(fam, given: dict) -> dict:
    """The keyword arguments of a counted/adaptive/cache family's training step: its config's
    hyperparameters and its procedure's settings, given or by default (the table's, else the field's)."""
    from .models.registry import default_of, hyperparameters
    from .options import SETTINGS

    fields = hyperparameters(fam.config_class())
    fields += hyperparameters(SETTINGS["count"]) if fam.trains == "count" else []
    kw = {f.name: given[f.name] if given.get(f.name) is not None else default_of(fam, f) for f in fields}
    kw.pop("memory", None)
    if isinstance(kw.get("orders"), str):
        try:
            kw["orders"] = [int(k) for k in kw["orders"].split(",")]
        except ValueError:
            raise ArlmError(f"--orders must be a comma list of integers, got {kw['orders']!r}") from None
    return kw


def _train_gradient(fam, split: Split, out: Path, replace: bool, vocab: str, vocab_size, meta: dict, seed: int,
                    keep_data: bool, hyper: dict) -> LM | None:
    """A neural run writes its directory as it goes (to resume), so it is emptied first, in one rename;
    under DDP rank 0 alone writes."""
    from .training import distributed
    from .training.run import train_gradient

    main_rank = distributed.current().is_main
    v = train_vocab(vocab, split.vocab_docs(vocab), vocab_size)
    # under DDP rank 0 alone writes; a replaced directory is deleted once the new run has checkpointed
    with checkpoint.new_run_dir(out, write=main_rank, replace=bool(replace)):
        train_gradient(fam.name, v, split.train_docs, split.val_docs, split.documents, out, meta, seed=seed,
                       keep_data=keep_data, **hyper)
    return LM.load(out) if main_rank else None


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

    def fit(docs: list[str], vocab_docs: list[str]) -> LM:
        v = train_vocab(vocab, vocab_docs, vocab_size)
        model = NGramModel.fit(NGramConfig(v.vocab_size, v.bos_id, v.eos_id, order=order), encode_documents(v, docs))
        return LM(model, v, split.documents)

    lm = fit(split.train_docs, split.vocab_docs(vocab))
    val_metrics = lm.evaluate(split.val_text, split.documents) if split.val_docs else None
    refitted = refit and split.val_docs and not split.val_is_file
    if refitted:
        all_docs = [split.train_docs[0] + split.val_docs[0]] if split.documents == "file" else split.train_docs + split.val_docs
        lm = fit(all_docs, all_docs)
    lm.save(out, {**(meta or {}), "refit_on_val": bool(refitted)})
    return lm, val_metrics


def make_cache(split: Split, out: str | Path, order: int = 6, vocab: str = "char",
               vocab_size: int | None = None, meta: dict | None = None) -> tuple[LM, dict | None]:
    """Save a document-cache model (``arlm.models.cache``) with a vocab built from the
    training documents; it has nothing to fit. Returns ``(lm, val_metrics)``."""
    from .models.cache import CacheConfig, CacheModel

    checkpoint.prepare_dir(out)
    v = train_vocab(vocab, split.vocab_docs(vocab), vocab_size)
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
    from .models.cm import CMConfig, CMModel, newline_id, word_token_ids

    checkpoint.prepare_dir(out)
    network, v = _cm_network(config, vocab) if config.get("neural") else (None, train_vocab(vocab, split.vocab_docs(vocab),
                                                                                            vocab_size))
    model = CMModel(CMConfig(v.vocab_size, v.bos_id, v.eos_id, word_token_ids=word_token_ids(v),
                             newline_id=newline_id(v), **config), neural=network)
    model.fit([np.array(encode_document(v, d), dtype=np.int64) for d in split.train_docs])
    lm = LM(model, v, split.documents)
    val_metrics = lm.evaluate(split.val_text, split.documents) if split.val_docs else None
    lm.save(out, meta)
    return lm, val_metrics


def _cm_network(config: dict, vocab: str):
    """The network input of a cm model (``config["neural"]``: its directory) and its vocab, which cm
    adopts; with ``neural_dyneval``, wrapped in dynamic evaluation (``--adapt``'s defaults)."""
    from .models.dyneval import adapted

    network, v, _ = checkpoint.load(config["neural"])
    if v.kind != vocab:
        raise ArlmError(f"--neural {config['neural']} uses the {v.kind} vocab; this cm model the {vocab} vocab")
    if network.family not in ("gpt", "lstm", "dyneval"):
        raise ArlmError(f"--neural takes a gpt, lstm or dyneval model directory, not {network.family}")
    config["neural"] = str(Path(config["neural"]).resolve())  # where it came from (the model embeds it)
    if config.get("neural_dyneval"):
        if network.family == "dyneval":
            raise ArlmError("--neural-dyneval: the network is already a dyneval model")
        network = adapted(network, {})
    return network, v


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
