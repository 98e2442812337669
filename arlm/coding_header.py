"""The container of ``arlm compress``: signature, version, the model's fingerprint, flags (document mode,
trailing newline, device type), variable-length counts and CRC-32 checksums (see :mod:`arlm.coding`)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import ArlmError

MAGIC = b"ARLZ"
FORMAT_VERSION = 1
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

    def pack(self) -> bytes:
        flags = (1 if self.documents == "lines" else 0) | (2 if self.trailing_newline else 0)
        flags |= DEVICE_TYPES.index(self.device) << 2
        body = (MAGIC + bytes([FORMAT_VERSION]) + self.fingerprint + bytes([flags]) + _varint(self.n_bytes)
                + _varint(self.n_documents) + _varint(self.n_tokens) + _varint(self.n_words)
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
        if version != FORMAT_VERSION:
            raise ArlmError(f"{name} has format version {version}; this arlm reads version {FORMAT_VERSION}")
        fp = buf[pos + 1 : pos + 1 + FINGERPRINT_BYTES]
        flags = buf[pos + 1 + FINGERPRINT_BYTES]
        pos += 2 + FINGERPRINT_BYTES
        try:
            n_bytes, pos = _read_varint(buf, pos)
            n_docs, pos = _read_varint(buf, pos)
            n_tokens, pos = _read_varint(buf, pos)
            n_words, pos = _read_varint(buf, pos)
        except ArlmError:
            raise ArlmError(f"{name} is truncated or corrupt: its header ends early") from None
        if len(buf) < pos + 8:
            raise ArlmError(f"{name} is truncated: its header ends early")
        (crc,) = struct.unpack_from("<I", buf, pos)
        (head_crc,) = struct.unpack_from("<I", buf, pos + 4)
        if zlib.crc32(buf[: pos + 4]) != head_crc:
            raise ArlmError(f"{name} is corrupt: its header checksum does not match")
        if flags & ~15 or flags >> 2 >= len(DEVICE_TYPES):
            raise ArlmError(f"{name} is corrupt: unknown header flags {flags:#x}")
        head = cls(fp, "lines" if flags & 1 else "file", bool(flags & 2), n_bytes, n_docs, n_tokens, n_words, crc,
                   DEVICE_TYPES[flags >> 2])
        return head, pos + 8
