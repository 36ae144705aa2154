"""Argument rules shared by every store method: each rule written once.

Every check raises :class:`~chatmdb.errors.ValidationError` with a message
that names the argument, and runs in the caller's thread before anything is
queued for writing, so a rejected call writes nothing.
"""

from __future__ import annotations

import os
import reprlib
import time
from datetime import UTC, datetime
from typing import Any, Final, Literal

from ..errors import ValidationError
from . import codec
from .schema import STATE_BYTE, TASK_STATES

# Ids are keys. LMDB refuses keys over 511 bytes and the agent index adds 10,
# so the limit is on the UTF-8 bytes, not the characters (200 emoji are 800
# bytes), and both backends honour the same one.
MAX_ID_BYTES: Final = 256
MAX_LIMIT: Final = 1000  # items in one page of messages or sessions
MAX_TASK_PAGE: Final = 100  # A2A's page_size bound
MAX_TEXT: Final = 10_000  # characters of a title
MAX_CURSOR_DIGITS: Final = 19  # a seq below 2**63
MAX_OFFSET: Final = 2**63 - 1

Direction = Literal["asc", "desc"]

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 40, 40


def show(value: Any) -> str:
    """A short repr for an error message, safe on any argument (a plain repr of
    deeply nested input raises RecursionError)."""
    return _REPR.repr(value)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def new_uuid() -> str:
    """A new UUID of version 7 (RFC 9562): Unix milliseconds, then 74 random bits.

    The store keys its uuid index by message uuid. Random uuid4s land on a
    random leaf of that B-tree, one more page for every commit to write;
    uuids that grow with time are added at its end, where the previous
    message's already is. They are as unguessable as the 74 random bits.
    """
    millis = time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits: 12 and 62 of them are used
    value = millis << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62 | rand & 0x3FFF_FFFF_FFFF_FFFF
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def check_id(value: Any, what: str) -> bytes:
    """Validate an id string and return its key bytes."""
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, not {type(value).__name__}")
    try:
        key = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{what} is not valid Unicode text") from exc
    if not key or len(key) > MAX_ID_BYTES:
        raise ValidationError(f"{what} must be 1 to {MAX_ID_BYTES} bytes long in UTF-8, not {len(key)}")
    return key


def check_optional_id(value: Any, what: str) -> bytes | None:
    return None if value is None else check_id(value, what)


def check_text(value: Any, what: str, limit: int = MAX_TEXT) -> None:
    """A string of at most *limit* characters, or None."""
    if value is None:
        return
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string or null, not {type(value).__name__}")
    if len(value) > limit:
        raise ValidationError(f"{what} is longer than {limit} characters")
    codec.check_value(value, what)


def check_int(value: Any, what: str, low: int, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(f"{what} must be an integer, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValidationError(f"{what} must be {bound}, got {value}")
    return value


def check_limit(value: Any, high: int = MAX_LIMIT) -> int:
    return check_int(value, "limit", 1, high)


def check_state(state: Any) -> str:
    # A list or dict is unhashable: test the type before looking it up.
    if not isinstance(state, str) or state not in STATE_BYTE:
        raise ValidationError(f"state must be one of {', '.join(TASK_STATES)}, not {show(state)}")
    return state


def check_direction(direction: Any) -> Direction:
    """``"asc"`` or ``"desc"``, in any case (the ``db.py`` it replaces lowered it)."""
    lowered = direction.lower() if isinstance(direction, str) else None
    if lowered == "asc":
        return "asc"
    if lowered == "desc":
        return "desc"
    raise ValidationError(f"direction must be 'asc' or 'desc', not {show(direction)}")


def check_seq_cursor(cursor: Any) -> int | None:
    """A message cursor: a seq as a string of digits (what ``next_cursor`` holds) or an int."""
    if cursor is None:
        return None
    if isinstance(cursor, int) and not isinstance(cursor, bool):
        number = cursor
    elif isinstance(cursor, str) and cursor.isascii() and cursor.isdigit() and len(cursor) <= MAX_CURSOR_DIGITS:
        number = int(cursor)
    else:
        raise ValidationError(f"cursor must be a message seq as a string of digits, not {show(cursor)}")
    if not 0 <= number <= MAX_OFFSET:
        raise ValidationError("cursor is out of range")
    return number


def check_timestamp(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > 64:
        raise ValidationError(f"{what} must be an ISO 8601 timestamp string")
    try:
        datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValidationError(f"{what} is not an ISO 8601 timestamp: {value!r:.40}") from exc
    return value


def check_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(f"{what} must be an object (dict), not {type(value).__name__}")
    codec.check_value(value, what)
    return value


def check_bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{what} must be true or false")
    return value
