"""Lossless compression with a model: arithmetic (range) coding of its next-token distributions.

A model that gives p(x_t | x_<t) is a compressor: range coding each token with
its conditional distribution spends −log₂ p(x_t | x_<t) bits on it, up to a
small quantisation and termination overhead (Rissanen & Langdon, "Arithmetic
coding", IBM J. Res. Dev. 1979; Witten, Neal & Cleary, CACM 1987). The coder
is ``constriction``'s range coder (Bamler, "Understanding Entropy Coding With
Asymmetric Numeral Systems (ANS)", 2022, and the library's docs); arlm only
supplies the distributions.

The decoder must reproduce the encoder's distributions bit for bit, so:

* both directions run one code path, :class:`_Predictor`: the model's ``step``
  with batch size 1, token by token (never the batched ``logits``, whose
  floating-point sums may be ordered differently), with ``torch`` limited to
  one thread while coding;
* each distribution is quantised deterministically to integer frequencies that
  sum to ``2**PRECISION`` with every token at least 1 (:func:`quantise`), and
  the coder only ever sees those integers (as exact dyadic floats).

Results are bit-exact when the same model directory is used with the same arlm,
torch and constriction versions on the same kind of CPU (or GPU); a different
model is detected by the fingerprint in the header, a damaged file by
checksums. The header records the device type the model ran on (``--device``):
a GPU's probabilities differ from the CPU's in their last bits, so decoding on
another device type is refused before it starts.

File format (version 1), little-endian; ``varint`` is LEB128::

    b"ARLZ"  u8 version  12-byte model fingerprint  u8 flags
    varint n_bytes  varint n_documents  varint n_tokens  varint n_words  u32 crc32(original)
    u32 crc32(header so far)
    n_words little-endian u32 words of range-coder output

``flags``: bit 0 = documents mode ``lines`` (else ``file``), bit 1 = the text
ends with a line break (``lines`` mode), bits 2-3 = the device type the model
ran on (0 cpu, 1 cuda, 2 mps). In ``file`` mode the text is one
document ``[<bos>, x_1 … x_n, <eos>]`` exactly as ``arlm eval`` scores it; in
``lines`` mode every line (split at ``\\n`` only, empty lines kept, so any text
round-trips) is a document, and the line breaks are implied by ``<eos>``.
An empty file is coded as no documents.

The coded size is Σ −log₂ p of the tokens as ``arlm eval`` computes them (for a
windowed model beyond its ``block_size``, ``arlm eval --stride 1``: ``step``
lets every token see the last ``block_size`` tokens), plus the header (30 bytes
when every varint takes one byte, as for an empty file; one more per 7 bits of a
larger count), at most 4 bytes of coder termination and 2**-PRECISION-scale rounding.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from .checkpoint import refuse_model_files
from .coding_header import DEVICE_TYPES, FINGERPRINT_BYTES, FORMAT_VERSION, MAGIC, Header  # noqa: F401
from .corpus import check_document_mode
from .errors import ArlmError
from .paths import LOG_FILE, STATE_FILE
from .units import LN2

PRECISION = 24  # bits of each quantised probability (constriction's default range coder)
# files in a model directory that do not change its probabilities
_NOT_MODEL = {LOG_FILE, STATE_FILE}


# -- the model side -------------------------------------------------------------------------
def model_fingerprint(model_dir: str | Path) -> bytes:
    """First 12 bytes of SHA-256 over the names and contents of a model directory's files
    (recursively, sorted; the training log and optimiser state excluded).

    Raises:
        ArlmError: the directory does not exist.
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise ArlmError(f"no model directory at {d}")
    h = hashlib.sha256()
    for f in sorted(p for p in d.rglob("*") if p.is_file()):
        rel = f.relative_to(d).as_posix()
        if f.name in _NOT_MODEL or any(part.startswith(".") for part in f.relative_to(d).parts):
            continue
        h.update(rel.encode("utf-8") + b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    return h.digest()[:FINGERPRINT_BYTES]


def quantise(log_probs: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Integer frequencies of one distribution: float64[V] log-probs (nats) -> int64[V].

    ``freq = floor(p · (2**precision − V)) + 1`` for every token (so each is at
    least 1, ``<bos>`` included, and any token can be coded), then the
    remainder up to ``2**precision`` goes to the most probable token (lowest
    id on ties). Integer arithmetic after one float64 product: deterministic.
    The cost over −log₂ p is at most log₂(2**precision / (2**precision − V))
    bits per token plus the floor's rounding.
    """
    V = log_probs.shape[0]
    total = 1 << precision
    if V >= total // 2:
        raise ArlmError(f"vocab of {V} tokens is too large for {precision}-bit coding")
    probs = np.exp(log_probs)
    if not np.all(np.isfinite(probs)):
        raise ArlmError("the model produced a non-finite probability; it cannot be used for coding")
    freq = np.floor(probs * float(total - V)).astype(np.int64) + 1
    rest = total - int(freq.sum())
    if rest < 0:  # only if the distribution sums to more than 1 by a rounding hair
        freq = np.maximum(np.floor(freq * ((total - V) / (freq.sum()))).astype(np.int64), 1)
        rest = total - int(freq.sum())
    freq[int(np.argmax(freq))] += rest
    return freq


class _Predictor:
    """The one code path of encoder and decoder: feed tokens with ``step`` (batch 1)
    and return the next token's float64 log-probs [V]."""

    def __init__(self, model):
        self.model = model
        self.state = None

    def start(self, bos_id: int) -> np.ndarray:
        self.state = None
        return self.feed(bos_id)

    @torch.no_grad()
    def feed(self, token_id: int) -> np.ndarray:
        ids = torch.tensor([token_id], dtype=torch.long, device=self.model.device)
        out, self.state = self.model.step(ids, self.state)  # [1, V]
        return torch.log_softmax(out.double(), dim=-1)[0].cpu().numpy()  # [V]


class _OneThread:
    """Run torch on one thread inside the block (bit-identical reductions both ways)."""

    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


def _documents(text: str, documents: str) -> tuple[list[str], bool]:
    """The documents that are coded, and whether a final line break is implied (lines mode).

    Lossless, unlike ``corpus.split_documents``: every line is kept as it is (empty lines and
    ``\r`` too), so that decoding gives back the exact bytes."""
    check_document_mode(documents)
    if documents == "file":
        return ([text] if text else []), False
    if not text:
        return [], False
    lines = text.split("\n")
    trailing = text.endswith("\n")
    return (lines[:-1] if trailing else lines), trailing


def _join(docs: list[str], documents: str, trailing: bool) -> str:
    if documents == "file":
        return "".join(docs)
    return "\n".join(docs) + ("\n" if trailing else "")


def _progress(total: int, desc: str, show: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not show,
                leave=False, mininterval=0.5)


def _constriction():
    try:
        import constriction
    except ImportError:  # pragma: no cover - a runtime dependency
        raise ArlmError("compression needs the constriction package: pip install constriction") from None
    return constriction


def _categorical(constriction, freq: np.ndarray):
    # frequencies / 2**PRECISION are exact float64 dyadic numbers, and constriction's fast
    # quantisation at the same precision keeps them (the coded size equals Σ −log₂(freq / 2**PRECISION)
    # to the bit: tests/test_coding.py); ``lazy`` only changes speed, never the code
    return constriction.stream.model.Categorical(freq.astype(np.float64) / float(1 << PRECISION), lazy=True,
                                                 perfect=False)


# -- the two directions -----------------------------------------------------------------------------
def compress_bytes(lm, model_dir: str | Path, data: bytes, documents: str | None = None,
                   progress: bool = False, name: str = "input", adapt: dict | None = None) -> tuple[bytes, dict]:
    """Compress ``data`` (UTF-8 text) with the model ``lm`` loaded from ``model_dir``.

    Args:
        lm: an ``arlm.LM``.
        model_dir: its directory (for the fingerprint).
        data: the text's bytes (strict UTF-8; may be empty).
        documents: ``"file"`` or ``"lines"``; default the model's training mode.
        adapt: dynamic evaluation settings (``LM.adapt``): code under dynamic evaluation; the header
            records the settings and ``decompress_bytes`` applies them.

    Returns:
        ``(compressed bytes, stats)``; stats has ``n_bytes``, ``n_chars``,
        ``n_tokens`` (coded tokens, ``<eos>`` counted), ``nll_bits`` (Σ −log₂ p
        of the coded tokens under the model, before quantisation),
        ``compressed_bytes``, ``bits_per_char``, ``seconds``.

    Raises:
        ArlmError: the data is not UTF-8, the vocab cannot encode it exactly,
            or the model gives a non-finite probability.
    """
    constriction = _constriction()
    if adapt is not None:
        lm = lm.adapt(**adapt)
        adapt = lm.model.settings()
    documents = documents or lm.documents
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise ArlmError(f"{name} is not valid UTF-8: invalid byte 0x{data[e.start]:02x} at byte offset {e.start}") from None
    docs, trailing = _documents(text, documents)
    vocab, model = lm.vocab, lm.model
    encoded = []
    for d in docs:
        ids = vocab.encode(d)
        if vocab.decode(ids) != d:
            raise ArlmError(f"the {vocab.kind} vocab does not reproduce {name} exactly; use the byte vocabulary")
        encoded.append(ids)
    n_tokens = sum(len(ids) + 1 for ids in encoded)
    encoder = constriction.stream.queue.RangeEncoder()
    pred = _Predictor(model)
    nll = 0.0
    t0 = time.time()
    done = 0
    with _OneThread(), _progress(len(data), f"compress {name}", progress) as bar:
        for ids in encoded:
            log_probs = pred.start(vocab.bos_id)
            for tok in [*ids, vocab.eos_id]:
                freq = quantise(log_probs)
                encoder.encode(int(tok), _categorical(constriction, freq))
                nll -= float(log_probs[tok])
                if tok != vocab.eos_id:
                    log_probs = pred.feed(tok)
                done += 1
                if done % 256 == 0 or done == n_tokens:
                    bar.update(len(data) * done // n_tokens - bar.n)
    words = np.asarray(encoder.get_compressed(), dtype="<u4")
    head = Header(model_fingerprint(model_dir), documents, trailing, len(data), len(docs), n_tokens,
                  int(words.size), zlib.crc32(data), _device_type(model), adapt)
    out = head.pack() + words.tobytes()
    seconds = time.time() - t0
    stats = {"n_bytes": len(data), "n_chars": len(text), "n_tokens": n_tokens, "nll_bits": nll / LN2,
             "compressed_bytes": len(out), "seconds": seconds,
             "bits_per_char": 8 * len(out) / len(text) if text else 0.0}
    return out, stats


def _device_type(model) -> str:
    """The device type a model's probabilities are computed on, as the header records it."""
    from .device import neural_device

    kind = neural_device(model).type
    if kind not in DEVICE_TYPES:
        raise ArlmError(f"cannot code with a model on {kind}: use --device {' or '.join(DEVICE_TYPES)}")
    return kind


def decompress_bytes(lm, model_dir: str | Path, blob: bytes, progress: bool = False,
                     name: str = "input") -> tuple[bytes, dict]:
    """Invert :func:`compress_bytes`: the original bytes, and stats (``n_bytes``, ``seconds``).

    Raises:
        ArlmError: not an arlm compressed file, another format version, made
            with a different model (fingerprint) or with the model on another
            device type (``lm`` must be where the header says), truncated, or corrupt
            (checksums, impossible tokens, lengths that do not match).
    """
    constriction = _constriction()
    head, pos = Header.unpack(blob, name)
    if head.fingerprint != model_fingerprint(model_dir):
        raise ArlmError(f"{name} was compressed with a different model than {model_dir} (fingerprints differ)")
    if head.adapt is not None:
        try:
            lm = lm.adapt(**head.adapt)
        except (ArlmError, TypeError, ValueError):
            raise ArlmError(f"{name} is corrupt: its dynamic evaluation settings are not ones arlm can use") from None
    if _device_type(lm.model) != head.device:
        raise ArlmError(f"{name} was compressed with the model on {head.device}, not {_device_type(lm.model)}: "
                        f"decompress it with --device {head.device} (another device's probabilities differ in their "
                        "last bits, and decoding needs them bit for bit)")
    payload = blob[pos:]
    if len(payload) != 4 * head.n_words:
        what = "truncated" if len(payload) < 4 * head.n_words else "corrupt (extra bytes at the end)"
        raise ArlmError(f"{name} is {what}: expected {4 * head.n_words} payload bytes, found {len(payload)}")
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    vocab, model = lm.vocab, lm.model
    decoder = constriction.stream.queue.RangeDecoder(words)
    pred = _Predictor(model)
    docs: list[str] = []
    n_done = 0
    t0 = time.time()
    corrupt = ArlmError(f"{name} is corrupt: it does not decode to the text it was made from")
    with _OneThread(), _progress(head.n_bytes, f"decompress {name}", progress) as bar:
        for _ in range(head.n_documents):
            log_probs = pred.start(vocab.bos_id)
            ids: list[int] = []
            while True:
                if n_done >= head.n_tokens:
                    raise corrupt
                try:
                    tok = int(decoder.decode(_categorical(constriction, quantise(log_probs))))
                except Exception:  # noqa: BLE001 - the coder rejects impossible input in its own ways
                    raise corrupt from None
                n_done += 1
                if n_done % 256 == 0 or n_done == head.n_tokens:
                    bar.update(head.n_bytes * n_done // max(head.n_tokens, 1) - bar.n)
                if tok == vocab.eos_id:
                    break
                if tok == vocab.bos_id:
                    raise corrupt
                ids.append(tok)
                log_probs = pred.feed(tok)
            docs.append(vocab.decode(ids))
    data = _join(docs, head.documents, head.trailing_newline).encode("utf-8")
    if n_done != head.n_tokens or len(data) != head.n_bytes or zlib.crc32(data) != head.crc:
        raise corrupt
    return data, {"n_bytes": len(data), "seconds": time.time() - t0}


# -- files (the CLI) ------------------------------------------------------------------------------------
def _read_bytes(path: str | Path) -> bytes:
    from .corpus import open_binary

    with open_binary(path, "a file") as f:
        return f.read()


def _write_bytes(path: str | Path, data: bytes) -> None:
    from .io import atomic_path

    p = Path(path)
    try:
        with atomic_path(p) as tmp:
            tmp.write_bytes(data)
    except OSError as e:
        raise ArlmError(f"cannot write {p}: {e.strerror or e}") from None


def compress_file(model_dir: str | Path, src: str | Path, dst: str | Path, documents: str | None = None,
                  progress: bool = False, device: str | None = None, adapt: dict | None = None) -> dict:
    """Compress the file ``src`` into ``dst`` (atomically) with the model in ``model_dir`` (neural models on
    ``device``, default the CPU; the header records it; ``adapt``: as in ``compress_bytes``); stats as in
    ``compress_bytes``."""
    from .io import check_distinct_files
    from .lm import LM

    check_distinct_files([("IN", src)], [("OUT", dst)])
    refuse_model_files(dst, "OUT")
    lm = LM.load(model_dir)
    if device:
        lm.to(device)
    blob, stats = compress_bytes(lm, model_dir, _read_bytes(src), documents, progress, name=str(src), adapt=adapt)
    _write_bytes(dst, blob)
    return stats


def decompress_file(model_dir: str | Path, src: str | Path, dst: str | Path, progress: bool = False,
                    device: str | None = None) -> dict:
    """Decompress ``src`` into ``dst`` (atomically) with the model in ``model_dir`` on ``device`` (default: the
    device type the header records); stats as in ``decompress_bytes``.

    Raises:
        ArlmError: as ``decompress_bytes``, or the recorded device type is not on this machine.
    """
    from .device import resolve_device
    from .io import check_distinct_files
    from .lm import LM

    check_distinct_files([("IN", src)], [("OUT", dst)])
    refuse_model_files(dst, "OUT")
    blob = _read_bytes(src)
    head, _ = Header.unpack(blob, str(src))  # a bad file fails before the model is loaded
    if device is None and head.device != "cpu":
        try:
            device = str(resolve_device(head.device))
        except ArlmError:
            raise ArlmError(f"{src} was compressed with the model on {head.device}, which this machine does not have; "
                            "decoding needs that device's probabilities bit for bit") from None
    lm = LM.load(model_dir)
    if device:
        lm.to(device)
    data, stats = decompress_bytes(lm, model_dir, blob, progress, name=str(src))
    _write_bytes(dst, data)
    return stats
