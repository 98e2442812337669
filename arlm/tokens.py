"""Corpora bigger than memory: encode a text file into a token directory (``arlm tokenize``), and train
from one: an n-gram counted in memory or within a budget (``memory``), or a neural run reading its batches.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from . import checkpoint
from .errors import ArlmError


def _byte_bar(total: int, desc: str, enabled: bool = True):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, desc=desc, dynamic_ncols=True,
                mininterval=0.5, file=sys.stderr, disable=None if enabled else True)


def vocab_from(directory):
    """The vocab of a model directory or a token directory."""
    from .data import TokenDir, is_token_dir
    from .vocab import load_vocab

    if is_token_dir(directory):
        return TokenDir(directory).vocab()
    return load_vocab(checkpoint.read_config(directory).get("vocab", "char"), Path(directory))


def tokenize(data, out, kind, vocab_dir, documents, chunk_bytes: int, progress: bool = True) -> dict:
    """Build (``kind``: char, byte) or load (``vocab_dir``) the vocab and encode the text file ``data`` into
    the token directory ``out``; returns its header plus timings (seconds, MB/s).

    Raises:
        ArlmError: a bpe vocab without ``vocab_dir``, or a ``kind`` that disagrees with it.
    """
    from .data import collect_chars, tokenize_file
    from .vocab import ByteVocab, CharVocab

    path = Path(data)
    size = path.stat().st_size if path.is_file() else 0
    t0 = time.perf_counter()
    if vocab_dir is not None:
        vocab = vocab_from(vocab_dir)
        if kind is not None and vocab.kind != kind:
            raise ArlmError(f"--vocab {kind} disagrees with the {vocab.kind} vocab of {vocab_dir}")
    elif kind in (None, "char"):
        with _byte_bar(size, "characters", progress) as bar:
            vocab = CharVocab(collect_chars(path, documents, chunk_bytes, bar.update))
    elif kind == "byte":
        vocab = ByteVocab()
    else:
        raise ArlmError("--vocab bpe needs --vocab-from DIR (a model or token directory whose tokenizer to use), "
                        "e.g. one trained with `arlm train SAMPLE.txt --vocab bpe`")
    t1 = time.perf_counter()
    with _byte_bar(size, "tokenize", progress) as bar:
        header = tokenize_file(path, out, vocab, documents, chunk_bytes, bar.update)
    t2 = time.perf_counter()
    mb = size / 1e6
    return {**header, "seconds": round(t2 - t0, 3), "vocab_seconds": round(t1 - t0, 3),
            "mb_per_s": round(mb / max(t2 - t0, 1e-9), 2), "encode_mb_per_s": round(mb / max(t2 - t1, 1e-9), 2)}


def train_from_tokens(fam, data, out, vocab: str, documents: str, val_file, val_fraction: float, seed: int,
                      force: bool, keep_data: bool, progress: bool = True, **hyper):
    """``arlm.train`` on a token directory, or an n-gram with ``memory``; see :func:`arlm.pipeline.train`."""
    from .data import TokenDir, is_token_dir
    from .models.ngram_count import parse_memory

    if fam.trains == "gradient":
        return _train_neural(fam, data, out, val_file, val_fraction, seed, force, keep_data, hyper)
    if fam.name != "ngram":
        raise ArlmError(f"--model {fam.name} needs a text file as DATA, not a token directory")
    memory = hyper.get("memory")
    memory = parse_memory(memory) if memory is not None else None
    if memory is not None and hyper.get("refit") is False:
        raise ArlmError("--no-refit needs in-memory counting: --memory fits on all of DATA (score val with --val-file)")
    with tempfile.TemporaryDirectory(prefix="arlm-tokens-") as tmp:
        if data is not None and is_token_dir(data):
            tokens = TokenDir(data)
        else:
            if data is None:
                raise ArlmError("--memory needs DATA (a text file or a token directory)")
            if vocab == "bpe":
                raise ArlmError("--memory with --vocab bpe needs a token directory: arlm tokenize DATA --vocab bpe "
                                "--vocab-from DIR --out TOKENS, then arlm train TOKENS --memory ...")
            tokenize(data, tmp, vocab, None, documents, 4 << 20, progress=progress)
            tokens = TokenDir(tmp)
        return _count_ngram(fam, tokens, data, out, val_file, seed, force, memory, hyper)


def _count_ngram(fam, tokens, data, out, val_file, seed: int, force: bool, memory: int | None, hyper: dict):
    import numpy as np

    from .corpus import read_text
    from .lm import LM
    from .models.ngram import NGramConfig, NGramModel
    from .models.ngram_count import fit_budgeted
    from .models.registry import default_of, hyperparameters
    from .pipeline import Trained

    vocab = tokens.vocab()
    out = Path(out if out is not None else f"runs/ngram-{vocab.kind}")
    replace = checkpoint.check_output_dir(out, force, family="ngram", vocab=vocab.kind,
                                          inputs=[("DATA", data), ("--val-file", val_file)])
    kw = {f.name: hyper[f.name] if hyper.get(f.name) is not None else default_of(fam, f)
          for f in hyperparameters(NGramConfig)}
    config = NGramConfig(vocab.vocab_size, vocab.bos_id, vocab.eos_id, **kw)
    t0 = time.time()
    stats: dict = {}
    if memory is not None:
        model = fit_budgeted(config, tokens.iter_chunks(1 << 20), memory, stats=stats)
        stats["memory"] = memory
    else:
        off = np.asarray(tokens.offsets)
        model = NGramModel.fit(config, [np.asarray(tokens.ids[a:b], dtype=np.int64) for a, b in zip(off[:-1], off[1:])])
    lm = LM(model, vocab, tokens.documents)
    with checkpoint.new_model_dir(out, replace) as where:
        lm.save(where, {"data": str(data), "data_path": str(Path(data).resolve()),
                        "split": {"val_file": str(Path(val_file).resolve()) if val_file else None,
                                  "val_fraction": 0.0, "seed": seed},
                        "refit_on_val": False, "counting": stats or None})
    seconds = time.time() - t0
    val = lm.evaluate(read_text(val_file), tokens.documents) if val_file is not None else None
    lm.trained = Trained(out, None, val, token_dir=True, counting=stats or None, seconds=seconds)
    return lm


def _train_neural(fam, data, out, val_file, val_fraction: float, seed: int, force: bool, keep_data: bool,
                  hyper: dict):
    from .lm import LM
    from .pipeline import Trained
    from .training import distributed, token_data_from_dir
    from .training.run import train_gradient

    if val_file is not None:
        raise ArlmError("--val-file takes text; with a token directory as DATA, val is its last --val-fraction")
    train, val, tokens = token_data_from_dir(data, val_fraction, seed)
    vocab = tokens.vocab()
    out = Path(out if out is not None else f"runs/{fam.name}-{vocab.kind}")
    main_rank = distributed.current().is_main  # under DDP rank 0 alone writes
    replace = checkpoint.check_output_dir(out, force, family=fam.name, vocab=vocab.kind, inputs=[("DATA", data)])
    meta = {"documents": tokens.documents, "data": str(data), "data_path": str(Path(data).resolve()),
            "token_dir": True, "split": {"val_file": None, "val_fraction": val_fraction, "seed": seed}}
    # under DDP rank 0 alone writes; a replaced directory is deleted once the new run has checkpointed
    with checkpoint.new_run_dir(out, write=main_rank, replace=bool(replace)):
        train_gradient(fam.name, vocab, [], [], tokens.documents, out, meta, seed=seed, keep_data=keep_data,
                       token_data=(train, val), **hyper)
    if not main_rank:
        return None
    lm = LM.load(out)
    lm.trained = Trained(out, None, None, token_dir=True)
    return lm
