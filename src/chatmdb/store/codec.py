"""Record serialization, separate from storage.

Records are msgpack followed by a CRC-32 of the msgpack bytes. The checksum
costs about a microsecond per record and turns a flipped bit on disk into a
:class:`CorruptionError` instead of a wrong answer: LMDB itself keeps no
checksums of data pages.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import msgpack

from ..errors import CorruptionError, TooLarge, ValidationError

_CRC = struct.Struct(">I")

# Deeper structures are almost always a bug or an attack; msgpack's own
# limit (512) would surface as an obscure error from deep inside the packer.
MAX_DEPTH = 64

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def check_value(value: Any, where: str = "value", depth: int = 0) -> None:
    """Raise ValidationError unless *value* is JSON-like and msgpack-serializable.

    Dict keys must be strings (records come back as JSON), integers must fit
    64 bits, floats must be finite, strings must be valid Unicode (no lone
    surrogates), and nesting is bounded.
    """
    if depth > MAX_DEPTH:
        raise ValidationError(f"{where} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError(f"{where} is not valid Unicode text") from exc
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValidationError(f"{where} is an integer outside 64 bits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{where} is not a finite number")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"{where} has a key that is not a string: {key!r:.40}")
            check_value(key, f"{where} key", depth + 1)
            check_value(item, f"{where}.{key[:40]}", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_value(item, f"{where}[{index}]", depth + 1)
        return
    raise ValidationError(f"{where} has a value of type {type(value).__name__}, which cannot be stored")


def pack(obj: Any, limit: int | None = None, what: str = "record") -> bytes:
    """The msgpack of a checked object, without a checksum; raise TooLarge past *limit* bytes."""
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    if limit is not None and len(body) > limit:
        raise TooLarge(
            f"{what} is {len(body)} bytes serialized, over the limit of {limit}",
            hint="raise max_message_size when opening the store, or send less",
            size=len(body),
            limit=limit,
        )
    return body


def encode(obj: Any, limit: int | None = None, what: str = "record") -> bytes:
    """Serialize a checked object; raise TooLarge past *limit* bytes."""
    body = pack(obj, limit, what)
    return body + _CRC.pack(zlib.crc32(body))


def with_field(packed_map: bytes, key: str, value: Any) -> bytes | None:
    """The msgpack of the map *packed_map* with ``key: value`` appended, or None if its header
    cannot take one more entry in place (then encode the map again).

    Lets a record packed once, in the caller's thread, take a field that only
    the write transaction knows (a message's seq) without being packed again.
    """
    head = packed_map[0]
    if 0x80 <= head < 0x8F:  # fixmap of up to 14 entries
        start, header = 1, bytes([head + 1])
    elif head == 0xDE and int.from_bytes(packed_map[1:3], "big") < 0xFFFF:  # map16
        start, header = 3, b"\xde" + (int.from_bytes(packed_map[1:3], "big") + 1).to_bytes(2, "big")
    else:
        return None
    extra = bytes(msgpack.packb(key, use_bin_type=True)) + bytes(msgpack.packb(value, use_bin_type=True))
    return header + packed_map[start:] + extra


def seal_record(internal: dict[str, Any], packed_public: bytes) -> bytes:
    """``encode([internal, public])`` for a public half already packed."""
    body = b"\x92" + bytes(msgpack.packb(internal, use_bin_type=True)) + packed_public
    return body + _CRC.pack(zlib.crc32(body))


def decode(raw: bytes | memoryview) -> Any:
    """Deserialize a record, checking its CRC."""
    raw = bytes(raw)
    if len(raw) < 5:
        raise CorruptionError("a stored record is too short to be valid", hint="run verify()")
    body, crc = raw[:-4], _CRC.unpack(raw[-4:])[0]
    if zlib.crc32(body) != crc:
        raise CorruptionError("a stored record fails its checksum", hint="restore from a backup; run verify()")
    try:
        return msgpack.unpackb(body, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise CorruptionError("a stored record cannot be decoded") from exc
