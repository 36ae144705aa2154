"""Room events and saved connection state: what connection state recovery reads.

Every write that the gateway broadcasts to a session's room (a message, a
context change, a task change) logs an event under a store-wide offset, in
its own transaction (:func:`chatmdb.store.schema.log_event`); a session's
messages are found by offset in its messages, its other events under its
session number in ``events``. A reconnecting client that names
the last offset it saw gets the events after it. The state of a disconnected
client (its rooms, its offset, when it expires) is a record too, so it
survives a restart of the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from ..engines.base import ReadTxn, WriteTxn, prefix_end
from ..errors import ValidationError
from . import codec, sessions
from .ops import Op, WriteOutcome, done
from .rules import MAX_OFFSET, check_dict, check_id, check_int
from .schema import U64, U64x2, header_key, load, message_key, put, read_counter, session_prefix

MAX_EVENTS_PAGE: Final = 100_000

# The table of the record each kind of event refers to.
EVENT_TABLES: Final = {"message": "messages", "context_updated": "contexts", "task_updated": "tasks"}

Event = tuple[int, str, str, dict[str, Any]]  # (offset, session id, event name, record)
TailEvent = tuple[int, str, str, dict[str, Any], str | None]  # ... and the origin


def last_offset(txn: ReadTxn) -> int:
    return read_counter(txn, "event")


def delete_in_session(txn: WriteTxn, n: int) -> None:
    prefix = session_prefix(n)
    for key, _ in list(txn.range("events", prefix, prefix_end(prefix))):
        txn.delete("events", key)
        txn.delete("event_order", key[8:])  # the offset half of n + e


def check_since(session_ids: Any, after: Any, limit: Any) -> list[tuple[str, bytes]]:
    check_int(after, "after", 0, MAX_OFFSET)
    check_int(limit, "limit", 1, MAX_EVENTS_PAGE)
    if not isinstance(session_ids, (list, tuple)):
        raise ValidationError(f"session_ids must be a list of session ids, not {type(session_ids).__name__}")
    return [(session_id, check_id(session_id, "session_id")) for session_id in session_ids]


def since(txn: ReadTxn, rooms: list[tuple[str, bytes]], after: int, limit: int) -> tuple[list[Event], bool]:
    """Room events of these sessions with offset > *after*, oldest first, and whether more exist.

    A message event carries the message; a context or task event carries the
    context or task as it is now, once, at the offset of its newest change
    (older changes of it are passed over: the newest state supersedes them).
    """
    # (offset, session id, name, record key, the record if already read)
    merged: list[tuple[int, str, str, bytes, dict[str, Any] | None]] = []
    # Raw events read per room and source at most. Superseded context/task
    # changes and deleted records are dropped after the read, so a source that
    # reaches its cap may hold more live events than were read: then "more"
    # must be true, whatever is left after dropping (or the caller would think
    # it has all).
    cap = limit * 4 + 4
    horizon: int | None = None  # past the lowest offset a capped source reached, the page is incomplete
    for session_id, skey in rooms:
        found = load(txn, "sessions", skey)
        if found is None:
            continue
        n, pruned = found[0]["n"], found[0].get("pruned", 0)
        first = _first_after(txn, n, pruned + 1, sessions.counts(txn, n)[0], after)
        rows = txn.range("messages", message_key(n, first), header_key(n))
        for read, (key, raw) in enumerate(rows):
            internal, message = codec.decode(raw)
            offset = internal["g"]
            if read == cap:
                horizon = offset - 1 if horizon is None else min(horizon, offset - 1)
                break
            if offset > after:
                merged.append((offset, session_id, "message", key, message))
        others = txn.range("events", U64x2.pack(n, after + 1), U64x2.pack(n + 1, 0))
        for read, (key, raw) in enumerate(others):
            offset = U64x2.unpack(key)[1]
            if read == cap:
                horizon = offset - 1 if horizon is None else min(horizon, offset - 1)
                break
            name, ref = codec.decode(raw)
            merged.append((offset, session_id, name, ref, None))
    truncated = horizon is not None
    if horizon is not None:
        merged = [row for row in merged if row[0] <= horizon]
    merged.sort(key=lambda row: row[0])
    newest: dict[bytes, int] = {}
    for offset, _, name, ref, _record in merged:
        if name != "message":
            newest[ref] = offset
    events: list[Event] = []
    more = truncated
    for offset, session_id, name, ref, record in merged:
        if record is None:
            if newest[ref] != offset:
                continue
            current = txn.get(EVENT_TABLES[name], ref)
            if current is None:
                continue  # deleted since
            record = codec.decode(current)[1]
        if len(events) == limit:
            more = True
            break
        events.append((offset, session_id, name, record))
    return events, more


def _first_after(txn: ReadTxn, n: int, low: int, high: int, after: int) -> int:
    """The first seq in *low*..*high* of session *n* whose message's offset is past *after*
    (*high* + 1 if none): a binary search, since offsets grow with seqs in a session."""
    hi = high + 1
    while low < hi:
        mid = (low + hi) // 2
        raw = txn.get("messages", message_key(n, mid))
        if raw is None:
            return low  # a gap (verify reports it): read on from here, skipping what is too old
        if codec.decode(raw)[0]["g"] > after:
            hi = mid
        else:
            low = mid + 1
    return low


def tail(
    txn: ReadTxn, after: int, limit: int, wanted: Callable[[str], bool] | None = None
) -> tuple[list[TailEvent], int]:
    """Room events of every session with offset > *after*, oldest first, at most *limit*.

    Returns the events and the offset to tail from next (the last one read,
    even if its record was deleted since). Each event is ``(offset, session
    id, name, record as it is now, origin)``; of several changes of one
    context or task in the page, only the newest is returned.
    """
    rows: list[tuple[int, int, str, bytes, str | None]] = []
    last = after
    for key, raw in txn.range("event_order", U64.pack(after + 1), None):
        n, name, ref, origin = codec.decode(raw)
        last = U64.unpack(key)[0]
        rows.append((last, n, name, ref, origin))
        if len(rows) >= limit:
            break
    newest = {ref: offset for offset, _, name, ref, _ in rows if name != "message"}
    out: list[TailEvent] = []
    session_ids: dict[int, str | None] = {}
    for offset, n, name, ref, origin in rows:
        if name != "message" and newest[ref] != offset:
            continue
        if n not in session_ids:
            sid = txn.get("session_order", U64.pack(n))
            session_ids[n] = None if sid is None else sid.decode()
        session_id = session_ids[n]
        if session_id is not None and wanted is not None and not wanted(session_id):
            continue  # nobody to send it to: its record is not even read
        current = txn.get(EVENT_TABLES[name], ref)
        if session_id is None or current is None:
            continue  # deleted since
        out.append((offset, session_id, name, codec.decode(current)[1], origin))
    return out, last


# -- connection state -----------------------------------------------------------------


def save_connection(pid: Any, state: Any) -> Op[None]:
    key = check_id(pid, "pid")
    check_dict(state, "state")

    def op(txn: WriteTxn) -> WriteOutcome[None]:
        put(txn, "recovery", key, {}, state)
        return done(None)

    return op


def take_connection(pid: Any) -> Op[dict[str, Any] | None]:
    key = check_id(pid, "pid")

    def op(txn: WriteTxn) -> WriteOutcome[dict[str, Any] | None]:
        found = load(txn, "recovery", key)
        if found is None:
            return done(None)
        txn.delete("recovery", key)
        return done(found[1])

    return op


def expire_connections(at: Any, orphan_expiry: Any) -> Op[int]:
    if not isinstance(at, (int, float)) or isinstance(at, bool):
        raise ValidationError("now must be a number of seconds since the epoch")
    if orphan_expiry is not None and (not isinstance(orphan_expiry, (int, float)) or isinstance(orphan_expiry, bool)):
        raise ValidationError("orphan_expiry must be a number of seconds since the epoch, or None")

    def op(txn: WriteTxn) -> WriteOutcome[int]:
        removed = 0
        for key, raw in list(txn.range("recovery", b"", None)):
            internal, state = codec.decode(raw)
            expires = state.get("expires_at")
            if expires is None and orphan_expiry is not None:
                state["expires_at"] = orphan_expiry
                put(txn, "recovery", key, internal, state)
            elif expires is not None and expires < at:
                txn.delete("recovery", key)
                removed += 1
        return done(removed)

    return op
