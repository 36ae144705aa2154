"""The on-disk layout: every table, key and counter of the store, described once.

The engines create the tables, the entity modules read and write them through
the key builders below, the verifier checks them, and the README points here.
Integers are fixed-width big-endian, so byte order is numeric order on both
engines (py-lmdb cannot take a custom comparator).

================  ==================================  ===============================
table             key                                 value
================  ==================================  ===============================
meta              counter or setting name             U64 (or text for ``map_size``)
sessions          session id (UTF-8)                  [{n}, session]
session_order     n                                   session id
messages          n + seq                             [{g}, message]
messages          n + HEADER_SEQ                      [message_count, last_message_at]
msg_uuid          message uuid                        n + seq
agent_msgs        len(agent id) + agent id + g        n + seq
agents            agent id                            [{}, agent card]
contexts          context id                          [{n, c}, context]
session_contexts  n + c                               context id
tasks             task id                             [{n, t}, task]
task_index        kind (+ n) (+ state) + t            task id
events            n + e (contexts and tasks)          [event name, record key]
event_order       e                                   [n, event name, record key, origin]
recovery          private connection id               [{}, connection state]
================  ==================================  ===============================

``n`` numbers sessions in creation order, ``seq`` numbers a session's messages
1, 2, 3... (retention removes a prefix: a session's internal ``pruned`` says how
many of its first seqs are gone, so its messages are always pruned+1..message_count), ``e`` numbers every room event of the store (a message, a context
change, a task change: the offsets of connection state recovery; a message's
``g`` is its ``e``), ``c`` every context and ``t`` every task status change.

A session's ``message_count`` and ``last_message_at`` change with every
message, so they are not kept in its record but in a header stored after its
messages, under ``n + HEADER_SEQ``: a new message and the header it moves on
usually share one B-tree leaf, where a record in ``sessions`` would dirty a
page of another tree in every commit. For the same reason a message's room
event is only in ``event_order``: within a session ``g`` grows with ``seq``,
so the messages table itself answers "messages of session n after offset e"
(:func:`chatmdb.store.events.since`); ``events`` holds the other events.
Each is a counter in ``meta`` (:data:`COUNTERS`), taken inside the write
transaction that uses it, so concurrent writers in any number of threads or
processes get contiguous numbers in commit order.

Records are ``[internal, public]`` pairs (see :mod:`chatmdb.store.codec`): the
internal half holds the numbers the indexes need, the public half is what
callers get back.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, Final

from ..engines.base import ReadTxn, WriteTxn, prefix_end
from . import codec

__all__ = [
    "COUNTERS",
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "HEADER_SEQ",
    "TABLES",
    "TASK_INDEX_KINDS",
    "TASK_STATES",
    "TERMINAL_STATES",
    "U64",
    "U64x2",
    "agent_key",
    "agent_prefix",
    "follow",
    "header_key",
    "load",
    "log_event",
    "message_key",
    "next_number",
    "prefix_end",
    "public",
    "put",
    "session_prefix",
    "task_index_keys",
    "task_index_prefix",
]

# The on-disk format this code writes. Version 1 recorded no version (it is
# recognised by holding data without one); version 2 gave agent cards ``id``
# and the old ``db.py`` fields; version 3 added ``event_order``, the store-wide
# log that gateway workers tail; version 4 moved a session's message count to
# a header after its messages and stopped logging message events in
# ``events``. See :mod:`chatmdb.store.migrations`.
FORMAT_VERSION: Final = 4
FORMAT_KEY: Final = b"format_version"

# Every table, with what it holds; engines create them all when opening,
# because LMDB named databases must be opened once, up front.
TABLES: Final[dict[str, str]] = {
    "meta": "counters, the format version and settings",
    "sessions": "session id -> session record",
    "session_order": "session number -> session id (newest last)",
    "messages": "session number + seq -> message record; session number + HEADER_SEQ -> its message count",
    "msg_uuid": "message uuid -> message key",
    "agent_msgs": "agent id (length-prefixed) + event offset -> message key",
    "agents": "agent id -> agent card",
    "contexts": "context id -> shared context record",
    "session_contexts": "session number + context number -> context id",
    "tasks": "task id -> task record",
    "task_index": "kind + (session number) + (state) + status number -> task id",
    "events": "session number + event offset -> [event name, record key] (context and task events)",
    "event_order": "event offset -> [session number, event name, record key, origin]",
    "recovery": "private connection id -> a disconnected client's rooms and data",
}

# The counters in ``meta``.
COUNTERS: Final[dict[str, bytes]] = {
    "session": b"session_n",
    "event": b"event_seq",
    "context": b"context_c",
    "task": b"task_t",
    "pruned": b"pruned_messages",  # messages removed by retention, ever
}

U64 = struct.Struct(">Q")
U64x2 = struct.Struct(">QQ")

TASK_STATES: Final = (
    "submitted",
    "working",
    "input-required",
    "auth-required",
    "completed",
    "canceled",
    "failed",
    "rejected",
    "unknown",
)
TERMINAL_STATES: Final = frozenset({"completed", "canceled", "failed", "rejected"})
STATE_BYTE: Final = {state: bytes([i]) for i, state in enumerate(TASK_STATES)}

# Four index entries per task, one per way of listing tasks, newest status last:
# all tasks (A), a session's (C), one state's (S), a session's in one state (X).
TASK_INDEX_KINDS: Final = (b"A", b"C", b"S", b"X")


# The seq of a session's header in ``messages``: after every message it can hold.
HEADER_SEQ: Final = 2**64 - 1


def message_key(n: int, seq: int) -> bytes:
    return U64x2.pack(n, seq)


def header_key(n: int) -> bytes:
    """Where session *n* keeps its message count and newest message time, after its messages."""
    return U64x2.pack(n, HEADER_SEQ)


def session_prefix(n: int) -> bytes:
    """The prefix of every key of session *n* in messages, session_contexts and events."""
    return U64.pack(n)


def agent_prefix(agent_id: bytes) -> bytes:
    return len(agent_id).to_bytes(2, "big") + agent_id


def agent_key(agent_id: bytes, g: int) -> bytes:
    return agent_prefix(agent_id) + U64.pack(g)


def task_index_keys(n: int, state: str, t: int) -> list[bytes]:
    sb, tb, nb = STATE_BYTE[state], U64.pack(t), U64.pack(n)
    return [b"A" + tb, b"C" + nb + tb, b"S" + sb + tb, b"X" + nb + sb + tb]


def task_index_prefix(n: int | None, state: str | None) -> bytes:
    """The index prefix that lists the tasks of session *n* (or all) in *state* (or any)."""
    if n is not None:
        nb = U64.pack(n)
        return b"X" + nb + STATE_BYTE[state] if state else b"C" + nb
    return b"S" + STATE_BYTE[state] if state else b"A"


# -- records -----------------------------------------------------------------


def load(txn: ReadTxn, table: str, key: bytes) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The ``(internal, public)`` halves of a record, or None."""
    raw = txn.get(table, key)
    if raw is None:
        return None
    internal, record = codec.decode(raw)
    return internal, record


def public(raw: bytes) -> dict[str, Any]:
    """The public half of an encoded record."""
    record: dict[str, Any] = codec.decode(raw)[1]
    return record


def follow(txn: ReadTxn, table: str, rows: Iterable[tuple[bytes, bytes]], limit: int | None = None) -> list[dict[str, Any]]:
    """The public records of *table* that index *rows* (key, record key) point at, in
    their order, at most *limit*; an entry whose record is gone is passed over."""
    items: list[dict[str, Any]] = []
    for _, ref in rows:
        raw = txn.get(table, ref)
        if raw is not None:
            items.append(public(raw))
            if limit is not None and len(items) >= limit:
                break
    return items


def put(txn: WriteTxn, table: str, key: bytes, internal: dict[str, Any], record: dict[str, Any]) -> None:
    txn.put(table, key, codec.encode([internal, record]))


def next_number(txn: WriteTxn, counter: str) -> int:
    """Take the next number of a counter of :data:`COUNTERS`, in this transaction."""
    key = COUNTERS[counter]
    raw = txn.get("meta", key)
    value = (U64.unpack(raw)[0] if raw else 0) + 1
    txn.put("meta", key, U64.pack(value))
    return value


def read_counter(txn: ReadTxn, counter: str) -> int:
    raw = txn.get("meta", COUNTERS[counter])
    return U64.unpack(raw)[0] if raw else 0


def log_event(txn: WriteTxn, n: int, name: str, ref: bytes, origin: str | None = None) -> int:
    """Log a room event of session *n* in this transaction; return its offset.

    *origin* names the client whose request caused it (a Socket.IO sid), which
    is not sent the event: every gateway worker that tails the log skips it.
    A message's event goes to the store-wide log only: its session's messages
    table is its per-session log (see the module docstring).
    """
    e = next_number(txn, "event")
    if name != "message":
        txn.put("events", U64x2.pack(n, e), codec.encode([name, ref]))
    txn.put("event_order", U64.pack(e), codec.encode([n, name, ref, origin]))
    return e
