"""The container of ``arlm compress``: signature, version, the model's fingerprint, flags (document mode,
trailing newline, device type, adapted), variable-length counts, the dynamic evaluation settings (version 2,
``--adapt``) and CRC-32 checksums (see :mod:`arlm.coding`)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import ArlmError

MAGIC = b"ARLZ"
FORMAT_VERSION = 1
#: the version of files coded under dynamic evaluation (flags bit 4; the settings follow the counts)
ADAPT_VERSION = 2
#: the update rules a version-2 header names by index (arlm.models.dyneval.DYNEVAL_OPTIMIZERS)
ADAPT_OPTIMIZERS = ("sgd", "rms", "rms-relative")


def _pack_adapt(a: dict) -> bytes:
    """chunk_size and steps (varints), the rule's index (u8), learning_rate and decay (float64)."""
    return (_varint(a["chunk_size"]) + _varint(a["steps"]) + bytes([ADAPT_OPTIMIZERS.index(a["optimizer"])])
            + struct.pack("<dd", a["learning_rate"], a["decay"]))


def _unpack_adapt(buf: bytes, pos: int) -> tuple[dict | None, int]:
    chunk, pos = _read_varint(buf, pos)
    steps, pos = _read_varint(buf, pos)
    if len(buf) < pos + 17:
        raise ArlmError("header ends early")
    rule = buf[pos]
    lr, decay = struct.unpack_from("<dd", buf, pos + 1)
    if rule >= len(ADAPT_OPTIMIZERS):
        return None, pos + 17
    return {"chunk_size": chunk, "steps": steps, "optimizer": ADAPT_OPTIMIZERS[rule], "learning_rate": lr,
            "decay": decay}, pos + 17
FINGERPRINT_BYTES = 12


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    n, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ArlmError("the compressed file is truncated or corrupt (header ends early)")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


#: the device types a header records, by their code in flags bits 2-3
DEVICE_TYPES = ("cpu", "cuda", "mps")


@dataclass
class Header:
    fingerprint: bytes
    documents: str
    trailing_newline: bool
    n_bytes: int
    n_documents: int
    n_tokens: int
    n_words: int
    crc: int
    device: str = "cpu"  # the device type the model ran on (DEVICE_TYPES)
    adapt: dict | None = None  # dynamic evaluation settings (LM.adapt), or None

    def pack(self) -> bytes:
        flags = (1 if self.documents == "lines" else 0) | (2 if self.trailing_newline else 0)
        flags |= DEVICE_TYPES.index(self.device) << 2
        extra = b""
        if self.adapt is not None:
            flags |= 16
            extra = _pack_adapt(self.adapt)
        version = FORMAT_VERSION if self.adapt is None else ADAPT_VERSION
        body = (MAGIC + bytes([version]) + self.fingerprint + bytes([flags]) + _varint(self.n_bytes)
                + _varint(self.n_documents) + _varint(self.n_tokens) + _varint(self.n_words) + extra
                + struct.pack("<I", self.crc))
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def unpack(cls, buf: bytes, name: str) -> tuple["Header", int]:
        if len(buf) < len(MAGIC) or buf[: len(MAGIC)] != MAGIC:
            raise ArlmError(f"{name} is not an arlm compressed file (no ARLZ signature)")
        pos = len(MAGIC)
        if len(buf) < pos + 2 + FINGERPRINT_BYTES:
            raise ArlmError(f"{name} is truncated: its header ends early")
        version = buf[pos]
        if version not in (FORMAT_VERSION, ADAPT_VERSION):
            raise ArlmError(f"{name} has format version {version}; this arlm reads versions {FORMAT_VERSION} and "
                            f"{ADAPT_VERSION}")
        fp = buf[pos + 1 : pos + 1 + FINGERPRINT_BYTES]
        flags = buf[pos + 1 + FINGERPRINT_BYTES]
        pos += 2 + FINGERPRINT_BYTES
        try:
            n_bytes, pos = _read_varint(buf, pos)
            n_docs, pos = _read_varint(buf, pos)
            n_tokens, pos = _read_varint(buf, pos)
            n_words, pos = _read_varint(buf, pos)
            adapt = None
            if version == ADAPT_VERSION:
                adapt, pos = _unpack_adapt(buf, pos)
        except ArlmError:
            raise ArlmError(f"{name} is truncated or corrupt: its header ends early") from None
        if len(buf) < pos + 8:
            raise ArlmError(f"{name} is truncated: its header ends early")
        (crc,) = struct.unpack_from("<I", buf, pos)
        (head_crc,) = struct.unpack_from("<I", buf, pos + 4)
        if zlib.crc32(buf[: pos + 4]) != head_crc:
            raise ArlmError(f"{name} is corrupt: its header checksum does not match")
        adapted = version == ADAPT_VERSION
        if flags & ~(31 if adapted else 15) or (flags >> 2) & 3 >= len(DEVICE_TYPES) or bool(flags & 16) != adapted:
            raise ArlmError(f"{name} is corrupt: unknown header flags {flags:#x}")
        if adapted and adapt is None:
            raise ArlmError(f"{name} is corrupt: its dynamic evaluation settings cannot be read")
        head = cls(fp, "lines" if flags & 1 else "file", bool(flags & 2), n_bytes, n_docs, n_tokens, n_words, crc,
                   DEVICE_TYPES[(flags >> 2) & 3], adapt)
        return head, pos + 8
