"""Shared fixtures: the data directory and tiny models of every family."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from arlm.data import encode_documents
from arlm.vocab import ByteVocab, CharVocab

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"  # small fixtures kept in the repo (see data/README.md)
NAMES = DATA / "names.txt"
SHAKESPEARE = DATA / "shakespeare.txt"


def run_arlm(*args, check: bool = True, text: bool = True, **kw) -> subprocess.CompletedProcess:
    """``python -m arlm ARGS`` in a subprocess (arguments: str, Path, or bytes for undecodable ones), output
    captured; with ``check`` a non-zero exit fails the test, showing stderr. ``kw`` goes to ``subprocess.run``."""
    argv = [sys.executable, "-m", "arlm", *(a if isinstance(a, bytes) else str(a) for a in args)]
    res = subprocess.run(argv, capture_output=True, text=text, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"arlm {' '.join(map(str, args))} failed ({res.returncode}):\n{res.stderr}")
    return res


def names_docs(n: int = 2000) -> list[str]:
    return NAMES.read_text(encoding="utf-8").split()[:n]


def make_ngram(vocab, docs, order):
    from arlm.models.ngram import NGramConfig, NGramModel

    return NGramModel.fit(NGramConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, order=order), encode_documents(vocab, docs))


#: Every modded-nanoGPT option of GPTConfig turned on (models/gpt_blocks.py), for the contract's variants.
MODDED = dict(qk_norm=True, mlp_act="relu2", logit_softcap=5.0, value_residual=True, unet_skips=True,
              tie_word_embeddings=False)


def make_gpt(vocab, docs=None, block_size=8, seed=0, pos_emb="learned", n_layer=1, **options):
    """A tiny float64 GPT; ``options``: more GPTConfig fields. Learned scalars (value mix, U-net weights)
    are drawn at random so that a path ignoring them would score differently."""
    from arlm.models.gpt import GPTConfig, GPTModel

    torch.manual_seed(seed)
    m = GPTModel(GPTConfig(vocab_size=vocab.vocab_size, bos_id=vocab.bos_id, eos_id=vocab.eos_id,
                           n_layer=n_layer, n_head=2, n_embd=16, block_size=block_size, dropout=0.0, bias=True,
                           pos_emb=pos_emb, **options))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("value_mix") or name == "skip_weights":
                p.uniform_(0.2, 1.5)
    # float64 so that probabilities from forward passes of different lengths agree to 1e-15
    return m.double().eval()


def make_lstm(vocab, docs=None, seed=0):
    from arlm.models.lstm import LSTMConfig, LSTMModel

    torch.manual_seed(seed)
    m = LSTMModel(LSTMConfig(vocab_size=vocab.vocab_size, bos_id=vocab.bos_id, eos_id=vocab.eos_id,
                             n_layer=1, n_embd=16, n_hidden=16, dropout=0.0))
    return m.double().eval()


def make_cache(vocab, docs=None, order=4):
    from arlm.models.cache import CacheConfig, CacheModel

    return CacheModel(CacheConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, order=order))


def make_mixture(vocab, docs, bucketed=False, seed=0, cache=False):
    from arlm.models.mixture import MixtureConfig, MixtureModel

    comps = [make_ngram(vocab, docs, 3), make_gpt(vocab, docs, seed=seed)]
    buckets = [0] if bucketed else []
    if cache:
        comps.append(make_cache(vocab, order=3))
        buckets = [0, 2]
    cfg = MixtureConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, [c.family for c in comps], buckets)
    m = MixtureModel(cfg, comps)
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(m.n_buckets, len(comps), generator=g, dtype=torch.float64) + 0.1
    m.weights.copy_(w / w.sum(-1, keepdim=True))
    return m.eval()


def make_backoff(vocab, docs, order):
    """An n-gram model exported to ARPA and imported back: the back-off family on the file KenLM would read."""
    import tempfile

    from arlm.formats.arpa import export_arpa, import_arpa

    with tempfile.TemporaryDirectory() as tmp:
        export_arpa(make_ngram(vocab, docs, order), vocab, Path(tmp) / "model.arpa")
        lm = import_arpa(Path(tmp) / "model.arpa")
    assert lm.vocab.vocab_size == vocab.vocab_size and lm.vocab.bos_id == vocab.bos_id
    return lm.model


def make_mixer(vocab, docs, seed=0):
    """An online gated mixer of an n-gram, a cache and a GPT, weight sets selected by the first two."""
    from arlm.models.mixer import MixerConfig, MixerModel

    comps = [make_ngram(vocab, docs, 3), make_cache(vocab, order=3), make_gpt(vocab, docs, seed=seed)]
    cfg = MixerConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, [c.family for c in comps], [0, 1], 0.05)
    m = MixerModel(cfg, comps)
    g = torch.Generator().manual_seed(seed)
    m.weights.copy_(torch.rand(m.weights.shape, generator=g, dtype=torch.float64) / 2)
    return m.eval()


def make_dyneval(vocab, docs=None, seed=0, base="lstm", gpt=None, **settings):
    """Dynamic evaluation of the tiny LSTM or GPT (8-token window), updating every 3 or 4 tokens (so short texts
    adapt and the GPT's windows slide)."""
    from arlm.models.dyneval import DynEvalConfig, DynEvalModel

    settings = {"chunk_size": 4 if base == "lstm" else 3, "optimizer": "sgd", "learning_rate": 0.5, "decay": 0.01,
                **settings}
    cfg = DynEvalConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, base, **settings)
    net = make_lstm(vocab, docs, seed=seed) if base == "lstm" else make_gpt(vocab, docs, seed=seed, **(gpt or {}))
    return DynEvalModel(cfg, net).eval()


def make_cm(vocab, docs, neural=None):
    """A small context-mixing model (tiny tables), trained by reading docs once; ``neural``: a network
    input (the tiny GPT, or the tiny LSTM under dynamic evaluation), read on the last 200 training tokens."""
    import numpy as np

    from arlm.data import encode_document
    from arlm.models.cm import CMConfig, CMModel, newline_id, word_token_ids

    net = {None: None, "gpt": lambda: make_gpt(vocab, docs), "dyneval": lambda: make_dyneval(vocab, docs)}[neural]
    cfg = CMConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, orders=[0, 1, 2, 3], table_bits=12, match_bits=10,
                   match_min=3, word_token_ids=word_token_ids(vocab), newline_id=newline_id(vocab), neural=neural,
                   neural_tail=200)
    m = CMModel(cfg, neural=net() if net else None)
    m.fit([np.array(encode_document(vocab, d)) for d in (docs or [])[:300]])
    return m


# name -> (vocab kind, builder(vocab, docs))
FAMILY_CASES = {
    "ngram1-char": ("char", lambda v, d: make_ngram(v, d, 1)),
    "ngram3-char": ("char", lambda v, d: make_ngram(v, d, 3)),
    "ngram5-char": ("char", lambda v, d: make_ngram(v, d, 5)),
    "ngram4-byte": ("byte", lambda v, d: make_ngram(v, d, 4)),
    "gpt-char": ("char", lambda v, d: make_gpt(v, d)),
    # rotary, sliding-window attention: a 4-token window, so the contract's texts slide it many times
    "gpt-rotary-char": ("char", lambda v, d: make_gpt(v, d, block_size=4, pos_emb="rotary", n_layer=2)),
    # the modded-nanoGPT options (3 layers: an odd U-net, and value residual in two later layers)
    "gpt-modded-char": ("char", lambda v, d: make_gpt(v, d, n_layer=3, **MODDED)),
    "gpt-modded-rotary-char": ("char", lambda v, d: make_gpt(v, d, block_size=4, pos_emb="rotary", n_layer=4,
                                                             **MODDED)),
    "lstm-char": ("char", lambda v, d: make_lstm(v, d)),
    "cache-char": ("char", lambda v, d: make_cache(v, d)),
    "cache-byte": ("byte", lambda v, d: make_cache(v, d, order=2)),
    "mixture-cache-char": ("char", lambda v, d: make_mixture(v, d, bucketed=True, cache=True)),
    "mixture-char": ("char", lambda v, d: make_mixture(v, d)),
    "mixture-bucketed-char": ("char", lambda v, d: make_mixture(v, d, bucketed=True)),
    "backoff4-char": ("char", lambda v, d: make_backoff(v, d, 4)),
    "backoff3-byte": ("byte", lambda v, d: make_backoff(v, d, 3)),
    "mixer-char": ("char", lambda v, d: make_mixer(v, d)),
    "dyneval-lstm-char": ("char", lambda v, d: make_dyneval(v, d)),
    "dyneval-gpt-char": ("char", lambda v, d: make_dyneval(v, d, base="gpt")),
    "cm-char": ("char", lambda v, d: make_cm(v, d)),
    "cm-byte": ("byte", lambda v, d: make_cm(v, d)),
    "cm-gpt-char": ("char", lambda v, d: make_cm(v, d, "gpt")),
    "cm-dyneval-char": ("char", lambda v, d: make_cm(v, d, "dyneval")),
}


FAMILY_CASES.update({
    "ngram3-bpe": ("bpe", lambda v, d: make_ngram(v, d, 3)),
    "gpt-bpe": ("bpe", lambda v, d: make_gpt(v, d)),
    "gpt-rotary-bpe": ("bpe", lambda v, d: make_gpt(v, d, block_size=4, pos_emb="rotary")),
    "lstm-bpe": ("bpe", lambda v, d: make_lstm(v, d)),
    "cache-bpe": ("bpe", lambda v, d: make_cache(v, d)),
    "mixture-cache-bpe": ("bpe", lambda v, d: make_mixture(v, d, bucketed=True, cache=True)),
    "mixer-bpe": ("bpe", lambda v, d: make_mixer(v, d)),
    "dyneval-gpt-rotary-rms-bpe": ("bpe", lambda v, d: make_dyneval(
        v, d, base="gpt", gpt={"pos_emb": "rotary", "n_layer": 2}, optimizer="rms", learning_rate=0.01, steps=2)),
    "cm-bpe": ("bpe", lambda v, d: make_cm(v, d)),
})

_BPE = {}


def bpe_vocab(docs):
    from arlm.vocab.bpe import BPEVocab

    key = tuple(docs[:50])
    if key not in _BPE:
        _BPE[key] = BPEVocab.train(docs, vocab_size=300)
    return _BPE[key]


def build_case(name: str, docs: list[str]):
    kind, builder = FAMILY_CASES[name]
    vocab = {"char": CharVocab.train, "byte": lambda d: ByteVocab(), "bpe": bpe_vocab}[kind](docs)
    return builder(vocab, docs), vocab


@pytest.fixture(params=sorted(FAMILY_CASES))
def family_case(request):
    """(name, model, vocab) of a small model of each family, fitted or initialised on names."""
    model, vocab = build_case(request.param, names_docs())
    return request.param, model, vocab


@pytest.fixture(params=sorted(n for n, (kind, _) in FAMILY_CASES.items() if kind != "bpe"))
def char_or_byte_case(request):
    """``family_case`` limited to char and byte vocabularies, where a string's tokens
    do not depend on what follows it (the laws that need that are exact only there)."""
    model, vocab = build_case(request.param, names_docs())
    return request.param, model, vocab


@pytest.fixture
def rng():
    return np.random.default_rng(0)
