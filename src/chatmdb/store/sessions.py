"""Chat sessions: checks, write operations and reads.

A session is ``{"id", "title", "created_at", "updated_at", "session_metadata",
"message_count", "last_message_at"}``; ``message_count`` is also the seq of
its newest message (seq is dense), kept in the same transaction as each message.
Those two fields live in the session's header in ``messages`` (see
:mod:`chatmdb.store.schema`), not in its stored record: every read of a
session merges them in (:func:`view`), every write of one leaves them out
(:func:`store`).
"""

from __future__ import annotations

import heapq
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from ..engines.base import ReadTxn, WriteTxn, prefix_end
from ..errors import Conflict, SessionNotFound, ValidationError
from . import codec
from .ops import Op, WriteOutcome, done
from .rules import check_dict, check_id, check_limit, check_text, now
from .schema import U64, header_key, load, next_number, put, session_prefix

DEFAULT_SESSION_ID = "default"
DEFAULT_SESSION_TITLE = "Default Session"


def new_record(session_id: str, title: str | None, metadata: dict[str, Any], at: str) -> dict[str, Any]:
    return {
        "id": session_id,
        "title": title,
        "created_at": at,
        "updated_at": at,
        "session_metadata": metadata,
        "message_count": 0,
        "last_message_at": None,
    }


# The fields kept in a session's header rather than in its record.
COUNTED = ("message_count", "last_message_at")


def stored(session: dict[str, Any]) -> dict[str, Any]:
    """The part of a session that its record in ``sessions`` holds."""
    return {k: v for k, v in session.items() if k not in COUNTED}


def insert(
    txn: WriteTxn, key: bytes, packed: bytes, pruned: int = 0, last_message_at: str | None = None
) -> int:
    """Store a new session (its packed :func:`stored` record) under the next session number,
    with its header; return the number.

    *pruned* is how many of its first seqs retention removed (an imported
    session: its count starts there, and so does its *last_message_at*).
    """
    n = next_number(txn, "session")
    txn.put("sessions", key, codec.seal_record({"n": n, "pruned": pruned} if pruned else {"n": n}, packed))
    txn.put("session_order", U64.pack(n), key)
    set_counts(txn, n, pruned, last_message_at)
    return n


def counts(txn: ReadTxn, n: int) -> tuple[int, str | None]:
    """Session *n*'s ``message_count`` and ``last_message_at``, from its header."""
    raw = txn.get("messages", header_key(n))
    if raw is None:
        return 0, None  # verify reports a session without a header
    count, last = codec.decode(raw)
    return count, last


def set_counts(txn: WriteTxn, n: int, count: int, last_message_at: str | None) -> None:
    txn.put("messages", header_key(n), codec.encode([count, last_message_at]))


def view(txn: ReadTxn, n: int, record: dict[str, Any]) -> dict[str, Any]:
    """A stored session *record* of number *n* as callers see it: its counts merged in."""
    record["message_count"], record["last_message_at"] = counts(txn, n)
    return record


def store(txn: WriteTxn, key: bytes, internal: dict[str, Any], session: dict[str, Any]) -> None:
    """Write a session's record (its counts stay in the header)."""
    put(txn, "sessions", key, internal, stored(session))


def find(txn: ReadTxn, key: bytes, session_id: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``(internal, stored record)`` of a session that must exist (no counts: see :func:`view`)."""
    found = load(txn, "sessions", key)
    if found is None:
        raise SessionNotFound(f"no session {session_id!r:.80}")
    return found


def number(txn: ReadTxn, key: bytes) -> int | None:
    """The session number ``n`` of a session, or None."""
    found = load(txn, "sessions", key)
    return None if found is None else int(found[0]["n"])


# -- writes --------------------------------------------------------------------


def create(size_limit: int, title: Any, session_id: Any, metadata: Any) -> Op[dict[str, Any]]:
    check_text(title, "title")
    if session_id is None:
        session_id = str(uuidlib.uuid4())
    key = check_id(session_id, "session_id")
    meta = {} if metadata is None else check_dict(metadata, "metadata")
    session = new_record(session_id, title, meta, now())
    packed = codec.pack(stored(session), size_limit, "session")

    def op(txn: WriteTxn) -> WriteOutcome[dict[str, Any]]:
        if txn.get("sessions", key) is not None:
            raise Conflict(f"session {session_id!r:.80} already exists")
        insert(txn, key, packed)
        return done(dict(session))

    return op


def update(size_limit: int, session_id: Any, title: Any, metadata: Any) -> Op[dict[str, Any]]:
    key = check_id(session_id, "session_id")
    check_text(title, "title")
    if metadata is not None:
        check_dict(metadata, "metadata")
        codec.encode(metadata, size_limit, "metadata")

    def op(txn: WriteTxn) -> WriteOutcome[dict[str, Any]]:
        internal, session = find(txn, key, session_id)
        if title is not None:
            session["title"] = title
        if metadata is not None:
            session["session_metadata"] = metadata
        session["updated_at"] = now()
        store(txn, key, internal, session)
        return done(view(txn, internal["n"], session))

    return op


def delete(session_id: Any, parts: Sequence[Callable[[WriteTxn, int], None]]) -> Op[bool]:
    """Delete a session and everything in it: each of *parts* removes one kind
    of record of session number ``n`` (messages, contexts, tasks, events)."""
    key = check_id(session_id, "session_id")

    def op(txn: WriteTxn) -> WriteOutcome[bool]:
        found = load(txn, "sessions", key)
        if found is None:
            return done(False)
        n = found[0]["n"]
        for delete_part in parts:
            delete_part(txn, n)
        txn.delete("session_order", session_prefix(n))
        txn.delete("sessions", key)
        return done(True)

    return op


def create_default(txn: WriteTxn, at: str) -> None:
    """The "Default Session" of ``init_database``, once."""
    key = DEFAULT_SESSION_ID.encode()
    if txn.get("sessions", key) is None:
        insert(txn, key, codec.pack(stored(new_record(DEFAULT_SESSION_ID, DEFAULT_SESSION_TITLE, {}, at))))


# -- reads -----------------------------------------------------------------------


def get(txn: ReadTxn, key: bytes) -> dict[str, Any] | None:
    found = load(txn, "sessions", key)
    return None if found is None else view(txn, found[0]["n"], found[1])


def check_list(limit: Any, cursor: Any) -> bytes | None:
    check_limit(limit)
    return None if cursor is None else check_id(cursor, "cursor")


def list_page(txn: ReadTxn, limit: int, cursor_key: bytes | None) -> list[dict[str, Any]]:
    """Sessions newest first, after the session *cursor_key* names."""
    end = None
    if cursor_key is not None:
        found = load(txn, "sessions", cursor_key)
        if found is None:
            raise ValidationError(f"cursor names no session: {cursor_key.decode()!r:.60}")
        end = U64.pack(found[0]["n"])
    items: list[dict[str, Any]] = []
    for _, key in txn.range("session_order", b"", end, reverse=True):
        record = get(txn, key)
        if record is not None:
            items.append(record)
            if len(items) >= limit:
                break
    return items


def named(txn: ReadTxn, ids: Iterable[bytes], prefixes: Iterable[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(n, stored record)`` of each session with one of *ids* or an id starting with one of
    *prefixes*, once each: reads those sessions only, however many others the store holds."""

    def rows() -> Iterator[tuple[bytes, bytes]]:
        for key in ids:
            raw = txn.get("sessions", key)
            if raw is not None:
                yield key, raw
        for prefix in prefixes:
            yield from txn.range("sessions", prefix, prefix_end(prefix))

    seen: set[bytes] = set()
    for key, raw in rows():
        if key not in seen:  # a session named by an id and a prefix, or by two prefixes, counts once
            seen.add(key)
            internal, record = codec.decode(raw)
            yield internal["n"], record


def list_named(
    txn: ReadTxn, ids: Iterable[bytes], prefixes: Iterable[bytes], limit: int, cursor_key: bytes | None
) -> list[dict[str, Any]]:
    """The sessions :func:`named` names, newest first, after the session *cursor_key* names."""
    end = None
    if cursor_key is not None:
        found = load(txn, "sessions", cursor_key)
        if found is None:
            raise ValidationError(f"cursor names no session: {cursor_key.decode()!r:.60}")
        end = found[0]["n"]
    rows = (row for row in named(txn, ids, prefixes) if end is None or row[0] < end)
    return [view(txn, n, record) for n, record in heapq.nlargest(limit, rows, key=lambda row: row[0])]
