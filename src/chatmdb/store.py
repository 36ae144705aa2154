"""The Store: chat sessions, messages, agent cards, shared contexts and A2A tasks.

All domain logic lives here, once, on top of the small ordered key-value
contract in :mod:`chatmdb._engine`; LMDB and SQLite differ only below it.

Layout (integers are fixed-width big-endian, so byte order is numeric order):

============== ================================== ===============================
table          key                                value
============== ================================== ===============================
sessions       session id (UTF-8)                 [{n}, session]
session_order  n                                  session id
messages       n + seq                            [{g}, message]
msg_uuid       message uuid                       n + seq
agent_msgs     len + agent id + g                 n + seq
contexts       context id                         [{n, c}, context]
session_ctx..  n + c                              context id
tasks          task id                            [{n, t}, task]
task_index     kind (+ n) (+ state) + t           task id
events         n + e                              [event name, record key]
recovery       private connection id              [{}, connection state]
============== ================================== ===============================

``n`` numbers sessions in creation order, ``seq`` numbers a session's messages
1, 2, 3..., ``e`` numbers every room event of the store (a message, a context
change, a task change: the offsets of connection state recovery; a message's
``g`` is its ``e``), ``c`` every context and ``t`` every task status change. Each is assigned inside the write transaction
that uses it, so concurrent writers in any number of threads or processes get
contiguous numbers in commit order.
"""

from __future__ import annotations

import asyncio
import functools
import os
import reprlib
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

from . import _codec
from ._engine import U64, Engine, ReadTxn, U64x2, WriteTxn, prefix_end
from ._writer import GroupCommitWriter
from .errors import (
    ChatMDBError,
    Conflict,
    InvalidTransition,
    NotFound,
    SessionNotFound,
    StorageError,
    StoreClosed,
    ValidationError,
)

__all__ = ["DEFAULT_SETTINGS", "TASK_STATES", "TERMINAL_STATES", "Store", "open_store"]

T = TypeVar("T")

DEFAULT_SETTINGS: dict[str, Any] = {
    "max_message_size": 1 << 20,  # bytes of a serialized message, context or task
    "group_commit": True,  # batch concurrent writes into one transaction
    "max_batch": 1024,  # most operations in one group commit
    "lmdb_map_size": 1 << 30,  # initial LMDB map; it grows by itself
}

TASK_STATES = (
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
TERMINAL_STATES = frozenset({"completed", "canceled", "failed", "rejected"})
_STATE_BYTE = {state: bytes([i]) for i, state in enumerate(TASK_STATES)}

MAX_ID_LENGTH = 256
MAX_LIMIT = 1000
MAX_TASK_PAGE = 100

DEFAULT_AGENTS = (
    {
        "agent_id": "chloe",
        "name": "Chloe",
        "description": "Git operations and general help",
        "version": "1.0.0",
        "capabilities": {"streaming": False},
        "skills": [{"id": "git", "name": "Git operations"}, {"id": "help", "name": "General help"}],
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
    },
    {
        "agent_id": "phil_connors",
        "name": "Phil Connors",
        "description": "Task management and coordination",
        "version": "1.0.0",
        "capabilities": {"streaming": False},
        "skills": [{"id": "tasks", "name": "Task management"}, {"id": "coordination", "name": "Coordination"}],
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
    },
)
DEFAULT_SESSION_ID = "default"
DEFAULT_SESSION_TITLE = "Default Session"


# -- validation helpers ---------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _check_id(value: Any, what: str) -> bytes:
    """Validate an id string and return its key bytes."""
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string, not {type(value).__name__}")
    if not value or len(value) > MAX_ID_LENGTH:
        raise ValidationError(f"{what} must be 1 to {MAX_ID_LENGTH} characters long")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{what} is not valid Unicode text") from exc


def _check_optional_text(value: Any, what: str, limit: int = 10_000) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ValidationError(f"{what} must be a string or null, not {type(value).__name__}")
    if len(value) > limit:
        raise ValidationError(f"{what} is longer than {limit} characters")
    _codec.check_value(value, what)


def _check_int(value: Any, what: str, low: int, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(f"{what} must be an integer, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValidationError(f"{what} must be {bound}, got {value}")
    return value


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 40, 40


def _show(value: Any) -> str:
    """A short repr for an error message, safe on any argument (a plain repr of
    deeply nested input raises RecursionError)."""
    return _REPR.repr(value)


def _check_state(state: Any) -> str:
    # A list or dict is unhashable: test the type before looking it up.
    if not isinstance(state, str) or state not in _STATE_BYTE:
        raise ValidationError(f"state must be one of {', '.join(TASK_STATES)}, not {_show(state)}")
    return state


def _check_direction(direction: Any) -> bool:
    """Return True for newest-first."""
    if direction not in ("asc", "desc"):
        raise ValidationError(f"direction must be 'asc' or 'desc', not {_show(direction)}")
    return bool(direction == "desc")


def _check_seq_cursor(cursor: Any) -> int | None:
    if cursor is None:
        return None
    if isinstance(cursor, int) and not isinstance(cursor, bool):
        number = cursor
    elif isinstance(cursor, str) and cursor.isascii() and cursor.isdigit() and len(cursor) <= 19:
        number = int(cursor)
    else:
        raise ValidationError(f"cursor must be a message seq as a string of digits, not {_show(cursor)}")
    if not 0 <= number < 2**63:
        raise ValidationError("cursor is out of range")
    return number


def _check_timestamp(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) > 64:
        raise ValidationError(f"{what} must be an ISO 8601 timestamp string")
    try:
        datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValidationError(f"{what} is not an ISO 8601 timestamp: {value!r:.40}") from exc
    return value


def _check_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(f"{what} must be an object (dict), not {type(value).__name__}")
    _codec.check_value(value, what)
    return value


def _agent_key(agent_id: bytes, g: int) -> bytes:
    return len(agent_id).to_bytes(2, "big") + agent_id + U64.pack(g)


def _agent_prefix(agent_id: bytes) -> bytes:
    return len(agent_id).to_bytes(2, "big") + agent_id


def _load(txn: ReadTxn, table: str, key: bytes) -> tuple[dict[str, Any], dict[str, Any]] | None:
    raw = txn.get(table, key)
    if raw is None:
        return None
    internal, public = _codec.decode(raw)
    return internal, public


def _public(raw: bytes) -> dict[str, Any]:
    record: dict[str, Any] = _codec.decode(raw)[1]
    return record


def _put(txn: WriteTxn, table: str, key: bytes, internal: dict[str, Any], public: dict[str, Any]) -> None:
    txn.put(table, key, _codec.encode([internal, public]))


def _next(txn: WriteTxn, counter: bytes) -> int:
    raw = txn.get("meta", counter)
    value = (U64.unpack(raw)[0] if raw else 0) + 1
    txn.put("meta", counter, U64.pack(value))
    return value


def _task_index_keys(n: int, state: str, t: int) -> list[bytes]:
    sb, tb, nb = _STATE_BYTE[state], U64.pack(t), U64.pack(n)
    return [b"A" + tb, b"C" + nb + tb, b"S" + sb + tb, b"X" + nb + sb + tb]


class WriteOutcome(NamedTuple):
    """What a write did, for callers that broadcast it (the gateway)."""

    record: Any
    created: bool  # False when an idempotent retry returned the stored record
    offset: int | None  # the store-wide offset of the room event it produced


def _unwrap(result: Any) -> Any:
    return result.record if isinstance(result, WriteOutcome) else result


def _event(txn: WriteTxn, n: int, name: str, ref: bytes) -> int:
    """Log a room event of session *n* in this transaction; return its offset."""
    e = _next(txn, b"event_seq")
    txn.put("events", U64x2.pack(n, e), _codec.encode([name, ref]))
    return e


def _write_method(prepare: Callable[..., Callable[[WriteTxn], T]]) -> Callable[..., T]:
    """Turn ``prepare(self, ...) -> op`` into a method that runs ``op`` and returns its result.

    ``prepare`` validates its arguments in the caller's thread and returns the
    operation; the operation reads what it needs and raises before its first
    write, so a rejected call writes nothing even inside a group commit.
    """

    @functools.wraps(prepare)
    def method(self: Store, *args: Any, **kwargs: Any) -> T:
        result: T = _unwrap(self._execute(prepare(self, *args, **kwargs)))
        return result

    method._prepare = prepare  # type: ignore[attr-defined]
    return method


class Store:
    """A chat message store on one engine. Safe to share between threads.

    Use :func:`open_store` to make one. Every method returns plain dicts and
    lists that serialize to JSON. Writes are committed, at the durability the
    store was opened with, before a method returns.
    """

    def __init__(self, engine: Engine, *, durability: str, **settings: Any) -> None:
        unknown = set(settings) - set(DEFAULT_SETTINGS)
        if unknown:
            raise ValidationError(f"unknown store settings: {', '.join(sorted(unknown))}")
        self.settings = {**DEFAULT_SETTINGS, **settings}
        self.engine = engine
        self.backend = engine.name
        self.path = engine.path
        self.durability = durability
        self.max_message_size = _check_int(self.settings["max_message_size"], "max_message_size", 1)
        self.commit_listeners: list[Callable[[int, float], None]] = []
        self._pid = os.getpid()
        self._writer: GroupCommitWriter | None = None
        if self.settings["group_commit"]:
            self._writer = self._new_writer()
        self._closed = False
        self.aio = AsyncStore(self)

    def _new_writer(self) -> GroupCommitWriter:
        return GroupCommitWriter(self.engine, max_batch=self.settings["max_batch"], on_commit=self._committed)

    def _committed(self, size: int, seconds: float) -> None:
        for listener in self.commit_listeners:
            listener(size, seconds)

    # -- plumbing -----------------------------------------------------------

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {self.backend} {str(self.path)!r} durability={self.durability}>"

    def close(self) -> None:
        """Commit what was submitted, then release the database. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None and self._pid == os.getpid():
            self._writer.close()
        self.engine.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _writer_here(self) -> GroupCommitWriter | None:
        if self._writer is not None and self._pid != os.getpid():
            # Threads do not survive fork(): the child gets its own writer.
            self._pid = os.getpid()
            self._writer = self._new_writer()
        return self._writer

    def _execute(self, op: Callable[[WriteTxn], T]) -> T:
        if self._closed:
            raise StoreClosed("the store is closed")
        writer = self._writer_here()
        if writer is None:
            started = time.perf_counter()
            result = self.engine.write(op)
            self._committed(1, time.perf_counter() - started)
            return result
        done: T = writer.run(op)
        return done

    def _read(self) -> Any:
        if self._closed:
            raise StoreClosed("the store is closed")
        return self.engine.read()

    # -- sessions -------------------------------------------------------------

    @_write_method
    def create_session(
        self, title: str | None = None, session_id: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Callable[[WriteTxn], dict[str, Any]]:
        """Create a session and return it.

        ``session_id`` defaults to a new uuid4. Raises :class:`Conflict` if a
        session with that id exists, :class:`ValidationError` on bad arguments.
        """
        _check_optional_text(title, "title")
        if session_id is None:
            session_id = str(uuidlib.uuid4())
        key = _check_id(session_id, "session_id")
        meta = {} if metadata is None else _check_dict(metadata, "metadata")
        now = _now()
        session = {
            "id": session_id,
            "title": title,
            "created_at": now,
            "updated_at": now,
            "session_metadata": meta,
            "message_count": 0,
            "last_message_at": None,
        }
        _codec.encode(session, self.max_message_size, "session")

        def op(txn: WriteTxn) -> dict[str, Any]:
            if txn.get("sessions", key) is not None:
                raise Conflict(f"session {session_id!r} already exists")
            n = _next(txn, b"session_n")
            _put(txn, "sessions", key, {"n": n}, session)
            txn.put("session_order", U64.pack(n), key)
            return dict(session)

        return op

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """Return the session, or None if there is none with that id."""
        key = _check_id(session_id, "session_id")
        with self._read() as txn:
            raw = txn.get("sessions", key)
            return None if raw is None else _public(raw)

    def list_sessions(self, limit: int = 100, cursor: str | None = None) -> list[dict[str, Any]]:
        """Sessions, newest first.

        ``cursor`` is the id of the last session of the previous page; the
        page holds the sessions created before it.
        """
        _check_int(limit, "limit", 1, MAX_LIMIT)
        with self._read() as txn:
            end = None
            if cursor is not None:
                found = _load(txn, "sessions", _check_id(cursor, "cursor"))
                if found is None:
                    raise ValidationError(f"cursor names no session: {cursor!r:.60}")
                end = U64.pack(found[0]["n"])
            items = []
            for _, sid in txn.range("session_order", b"", end, reverse=True):
                raw = txn.get("sessions", sid)
                if raw is not None:
                    items.append(_public(raw))
                if len(items) >= limit:
                    break
            return items

    @_write_method
    def update_session(
        self, session_id: str, title: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Callable[[WriteTxn], dict[str, Any]]:
        """Change a session's title and/or replace its metadata; return it.

        Raises :class:`SessionNotFound` if there is no such session.
        """
        key = _check_id(session_id, "session_id")
        _check_optional_text(title, "title")
        if metadata is not None:
            _check_dict(metadata, "metadata")
            _codec.encode(metadata, self.max_message_size, "metadata")

        def op(txn: WriteTxn) -> dict[str, Any]:
            found = _load(txn, "sessions", key)
            if found is None:
                raise SessionNotFound(f"no session {session_id!r}")
            internal, session = found
            if title is not None:
                session["title"] = title
            if metadata is not None:
                session["session_metadata"] = metadata
            session["updated_at"] = _now()
            _put(txn, "sessions", key, internal, session)
            return session

        return op

    @_write_method
    def delete_session(self, session_id: str) -> Callable[[WriteTxn], bool]:
        """Delete a session with its messages, contexts and tasks.

        Returns False if there was no such session.
        """
        key = _check_id(session_id, "session_id")

        def op(txn: WriteTxn) -> bool:
            found = _load(txn, "sessions", key)
            if found is None:
                return False
            n = found[0]["n"]
            prefix = U64.pack(n)
            for mkey, raw in list(txn.range("messages", prefix, prefix_end(prefix))):
                internal, message = _codec.decode(raw)
                txn.delete("msg_uuid", message["message_uuid"].encode())
                agent = message.get("agent_id")
                if isinstance(agent, str) and agent:
                    txn.delete("agent_msgs", _agent_key(agent.encode(), internal["g"]))
                txn.delete("messages", mkey)
            for ckey, cid in list(txn.range("session_contexts", prefix, prefix_end(prefix))):
                txn.delete("contexts", cid)
                txn.delete("session_contexts", ckey)
            cprefix = b"C" + prefix
            for _, tid in list(txn.range("task_index", cprefix, prefix_end(cprefix))):
                tfound = _load(txn, "tasks", tid)
                if tfound is not None:
                    tint, task = tfound
                    for ikey in _task_index_keys(n, task["status"]["state"], tint["t"]):
                        txn.delete("task_index", ikey)
                    txn.delete("tasks", tid)
            for ekey, _ in list(txn.range("events", prefix, prefix_end(prefix))):
                txn.delete("events", ekey)
            txn.delete("session_order", prefix)
            txn.delete("sessions", key)
            return True

        return op

    # -- messages -------------------------------------------------------------

    @_write_method
    def create_message(self, data: dict[str, Any]) -> Callable[[WriteTxn], dict[str, Any]]:
        """Store a message in its session and return the committed record.

        ``data`` needs ``session_id``; ``message_uuid`` (uuid4) and
        ``created_at`` (ISO 8601 UTC) are generated when missing, and ``seq``
        is assigned: 1, 2, 3... per session in commit order. Every other field
        is stored as given.

        Creating a message whose ``message_uuid`` exists in the same session
        returns the stored message and writes nothing (safe retries).

        Raises :class:`SessionNotFound` for an unknown session,
        :class:`Conflict` if the uuid exists in another session,
        :class:`TooLarge` over ``max_message_size``, :class:`ValidationError`
        for anything else malformed.
        """
        return self._message_op(data)  # type: ignore[return-value]  # unwrapped to the record

    def _message_op(self, data: dict[str, Any]) -> Callable[[WriteTxn], WriteOutcome]:
        # The outcome says whether this call stored the message (False for a
        # retry of a stored uuid, decided inside the transaction) and the
        # offset of its room event; create_message returns only the record.
        if not isinstance(data, dict):
            raise ValidationError(f"message data must be an object (dict), not {type(data).__name__}")
        _codec.check_value(data, "message")
        session_id = data.get("session_id")
        skey = _check_id(session_id, "session_id")
        message_uuid = data.get("message_uuid")
        if message_uuid is None or message_uuid == "":
            message_uuid = str(uuidlib.uuid4())
        ukey = _check_id(message_uuid, "message_uuid")
        created_at = data.get("created_at")
        created_at = _now() if created_at is None else _check_timestamp(created_at, "created_at")
        agent_id = data.get("agent_id")
        akey = None if agent_id is None else _check_id(agent_id, "agent_id")
        fields = dict(data)
        fields.pop("seq", None)  # the store assigns it
        fields.update(session_id=session_id, message_uuid=message_uuid, created_at=created_at)
        _codec.encode(fields, self.max_message_size, "message")

        def op(txn: WriteTxn) -> WriteOutcome:
            raw = txn.get("sessions", skey)
            if raw is None:
                raise SessionNotFound(f"no session {session_id!r}")
            existing = txn.get("msg_uuid", ukey)
            if existing is not None:
                stored = _public(txn.get("messages", existing) or b"")
                if stored["session_id"] == session_id:
                    return WriteOutcome(stored, False, None)
                raise Conflict(f"message_uuid {message_uuid!r} already exists in another session")
            internal, session = _codec.decode(raw)
            seq = session["message_count"] + 1
            message = {**fields, "seq": seq}
            mkey = U64x2.pack(internal["n"], seq)
            g = _event(txn, internal["n"], "message", mkey)
            _put(txn, "messages", mkey, {"g": g}, message)
            txn.put("msg_uuid", ukey, mkey)
            if akey is not None:
                txn.put("agent_msgs", _agent_key(akey, g), mkey)
            session["message_count"] = seq
            session["last_message_at"] = created_at
            _put(txn, "sessions", skey, internal, session)
            return WriteOutcome(message, True, g)

        return op

    def get_message(self, message_uuid: str) -> dict[str, Any] | None:
        """Return the message with this uuid (one index lookup), or None."""
        ukey = _check_id(message_uuid, "message_uuid")
        with self._read() as txn:
            mkey = txn.get("msg_uuid", ukey)
            if mkey is None:
                return None
            raw = txn.get("messages", mkey)
            return None if raw is None else _public(raw)

    def get_session_messages(
        self,
        session_id: str,
        skip: int = 0,
        limit: int = 100,
        cursor: str | None = None,
        direction: str = "desc",
        include_total: bool = False,
    ) -> list[dict[str, Any]] | dict[str, Any]:
        """A page of a session's messages, ordered by ``seq``.

        ``direction="desc"`` pages newest first. ``cursor`` is a message's
        ``seq`` as a string (what ``next_cursor`` gives): the page holds the
        messages strictly after it in the chosen direction, then ``skip``
        more are passed over. Returns a list; with ``include_total=True``,
        ``{"items": [...], "pagination": {"total", "limit", "direction",
        "next_cursor"?, "skip"?}}`` where ``next_cursor`` is present exactly
        when more messages lie past the page. An unknown session has no
        messages (an empty page), as the SQL it replaces returned.
        """
        skey = _check_id(session_id, "session_id")
        _check_int(skip, "skip", 0, 2**63 - 1)  # cursor + skip must fit the 64-bit key
        _check_int(limit, "limit", 1, MAX_LIMIT)
        desc = _check_direction(direction)
        after = _check_seq_cursor(cursor)
        if not isinstance(include_total, bool):
            raise ValidationError("include_total must be true or false")
        items: list[dict[str, Any]] = []
        more = False
        total = 0
        with self._read() as txn:
            found = _load(txn, "sessions", skey)
            if found is not None:
                n, total = found[0]["n"], found[1]["message_count"]
                # seq is dense (1..total), so skip is arithmetic, not a scan.
                if desc:
                    top = min(total, (after - 1) if after is not None else total) - skip
                    rows = txn.range("messages", U64x2.pack(n, 1), U64x2.pack(n, top + 1), reverse=True) if top >= 1 else iter(())
                else:
                    first = (after + 1 if after is not None else 1) + skip
                    rows = txn.range("messages", U64x2.pack(n, max(first, 1)), U64x2.pack(n + 1, 0))
                for _, raw in rows:
                    if len(items) == limit:
                        more = True
                        break
                    items.append(_public(raw))
        if not include_total:
            return items
        pagination: dict[str, Any] = {"total": total, "limit": limit, "direction": direction}
        if more:
            pagination["next_cursor"] = str(items[-1]["seq"])
        if cursor is None:
            pagination["skip"] = skip
        return {"items": items, "pagination": pagination}

    def get_messages_after(self, session_id: str, after_seq: int, limit: int = 100) -> tuple[list[dict[str, Any]], bool]:
        """Messages with ``seq > after_seq`` ascending, at most *limit*; and whether more exist."""
        _check_int(after_seq, "after_seq", 0, 2**63 - 1)
        page = self.get_session_messages(
            session_id, limit=limit, cursor=str(after_seq), direction="asc", include_total=True
        )
        assert isinstance(page, dict)
        return page["items"], "next_cursor" in page["pagination"]

    def get_agent_messages(
        self, agent_id: str, limit: int = 100, cursor: str | None = None, direction: str = "desc"
    ) -> list[dict[str, Any]]:
        """Messages with this ``agent_id`` across sessions, in store order.

        ``cursor`` is the ``message_uuid`` of the last message of the previous page.
        """
        akey = _check_id(agent_id, "agent_id")
        _check_int(limit, "limit", 1, MAX_LIMIT)
        desc = _check_direction(direction)
        prefix = _agent_prefix(akey)
        start, end = prefix, prefix_end(prefix)
        with self._read() as txn:
            if cursor is not None:
                ckey = txn.get("msg_uuid", _check_id(cursor, "cursor"))
                found = None if ckey is None else _load(txn, "messages", ckey)
                if found is None or found[1].get("agent_id") != agent_id:
                    raise ValidationError(f"cursor names no message of agent {agent_id!r:.60}")
                if desc:
                    end = _agent_key(akey, found[0]["g"])
                else:
                    start = _agent_key(akey, found[0]["g"] + 1)
            items = []
            for _, mkey in txn.range("agent_msgs", start, end, reverse=desc):
                raw = txn.get("messages", mkey)
                if raw is not None:
                    items.append(_public(raw))
                if len(items) >= limit:
                    break
            return items

    # -- agent cards -------------------------------------------------------------

    @_write_method
    def upsert_agent_card(self, card: dict[str, Any]) -> Callable[[WriteTxn], dict[str, Any]]:
        """Create or replace an agent card (A2A AgentCard fields) and return it.

        The card needs ``agent_id`` (or ``id``) and ``name``.
        """
        card = _check_dict(card, "card")
        agent_id = card.get("agent_id", card.get("id"))
        akey = _check_id(agent_id, "agent_id")
        if not isinstance(card.get("name"), str) or not card["name"]:
            raise ValidationError("card needs a non-empty string 'name'")
        stored = {**card, "agent_id": agent_id}
        _codec.encode(stored, self.max_message_size, "agent card")

        def op(txn: WriteTxn) -> dict[str, Any]:
            previous = _load(txn, "agents", akey)
            now = _now()
            record = {**stored, "created_at": previous[1]["created_at"] if previous else now, "updated_at": now}
            _put(txn, "agents", akey, {}, record)
            return record

        return op

    def get_agent_card(self, agent_id: str) -> dict[str, Any] | None:
        """Return the agent card, or None."""
        akey = _check_id(agent_id, "agent_id")
        with self._read() as txn:
            raw = txn.get("agents", akey)
            return None if raw is None else _public(raw)

    def list_agent_cards(self) -> list[dict[str, Any]]:
        """Every agent card, ordered by ``agent_id``."""
        with self._read() as txn:
            return [_public(raw) for _, raw in txn.range("agents", b"", None)]

    @_write_method
    def delete_agent_card(self, agent_id: str) -> Callable[[WriteTxn], bool]:
        """Delete an agent card; False if there was none. Its messages stay."""
        akey = _check_id(agent_id, "agent_id")
        return lambda txn: txn.delete("agents", akey)

    # -- shared contexts -----------------------------------------------------------

    @_write_method
    def create_shared_context(
        self, session_id: str, data: dict[str, Any], context_id: str | None = None
    ) -> Callable[[WriteTxn], dict[str, Any]]:
        """Create a shared context (version 1) in a session and return it.

        Raises :class:`SessionNotFound`, or :class:`Conflict` if the id exists.
        """
        skey = _check_id(session_id, "session_id")
        _check_dict(data, "data")
        if context_id is None:
            context_id = str(uuidlib.uuid4())
        ckey = _check_id(context_id, "context_id")
        now = _now()
        context = {
            "id": context_id,
            "session_id": session_id,
            "data": data,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        _codec.encode(context, self.max_message_size, "shared context")

        def op(txn: WriteTxn) -> Any:  # a WriteOutcome; the method returns its record
            found = _load(txn, "sessions", skey)
            if found is None:
                raise SessionNotFound(f"no session {session_id!r}")
            if txn.get("contexts", ckey) is not None:
                raise Conflict(f"shared context {context_id!r} already exists")
            n, c = found[0]["n"], _next(txn, b"context_c")
            _put(txn, "contexts", ckey, {"n": n, "c": c}, context)
            txn.put("session_contexts", U64x2.pack(n, c), ckey)
            return WriteOutcome(dict(context), True, _event(txn, n, "context_updated", ckey))

        return op

    def get_shared_context(self, context_id: str) -> dict[str, Any] | None:
        """Return the shared context, or None."""
        ckey = _check_id(context_id, "context_id")
        with self._read() as txn:
            raw = txn.get("contexts", ckey)
            return None if raw is None else _public(raw)

    def list_session_contexts(self, session_id: str) -> list[dict[str, Any]]:
        """A session's shared contexts in creation order (empty for an unknown session)."""
        skey = _check_id(session_id, "session_id")
        with self._read() as txn:
            found = _load(txn, "sessions", skey)
            if found is None:
                return []
            prefix = U64.pack(found[0]["n"])
            items = []
            for _, cid in txn.range("session_contexts", prefix, prefix_end(prefix)):
                raw = txn.get("contexts", cid)
                if raw is not None:
                    items.append(_public(raw))
            return items

    @_write_method
    def update_shared_context(
        self, context_id: str, data: dict[str, Any], expected_version: int | None = None
    ) -> Callable[[WriteTxn], dict[str, Any]]:
        """Replace a context's data, bump its version and return it.

        With ``expected_version``, raises :class:`Conflict` (writing nothing)
        unless the stored version equals it. Raises :class:`NotFound` if absent.
        """
        ckey = _check_id(context_id, "context_id")
        _check_dict(data, "data")
        if expected_version is not None:
            _check_int(expected_version, "expected_version", 0)
        _codec.encode(data, self.max_message_size, "shared context")

        def op(txn: WriteTxn) -> Any:  # a WriteOutcome; the method returns its record
            found = _load(txn, "contexts", ckey)
            if found is None:
                raise NotFound(f"no shared context {context_id!r}")
            internal, context = found
            if expected_version is not None and context["version"] != expected_version:
                raise Conflict(
                    f"shared context {context_id!r} is at version {context['version']}, not {expected_version}",
                    hint="read it again and retry",
                    version=context["version"],
                )
            context.update(data=data, version=context["version"] + 1, updated_at=_now())
            _put(txn, "contexts", ckey, internal, context)
            return WriteOutcome(context, True, _event(txn, internal["n"], "context_updated", ckey))

        return op

    @_write_method
    def delete_shared_context(self, context_id: str) -> Callable[[WriteTxn], bool]:
        """Delete a shared context; False if there was none."""
        ckey = _check_id(context_id, "context_id")

        def op(txn: WriteTxn) -> bool:
            found = _load(txn, "contexts", ckey)
            if found is None:
                return False
            txn.delete("session_contexts", U64x2.pack(found[0]["n"], found[0]["c"]))
            txn.delete("contexts", ckey)
            return True

        return op

    # -- A2A tasks ---------------------------------------------------------------------

    @_write_method
    def create_task(self, task: dict[str, Any]) -> Callable[[WriteTxn], dict[str, Any]]:
        """Create an A2A task in the session named by ``context_id``; return it.

        ``id`` defaults to a uuid4; ``status.state`` to ``submitted``.
        Raises :class:`SessionNotFound`, :class:`Conflict` for an existing id.
        """
        task = _check_dict(task, "task")
        context_id = task.get("context_id")
        skey = _check_id(context_id, "context_id")
        task_id = task.get("id") or str(uuidlib.uuid4())
        tkey = _check_id(task_id, "id")
        status = task.get("status") or {}
        if not isinstance(status, dict):
            raise ValidationError("status must be an object with a 'state'")
        state = _check_state(status.get("state", "submitted"))
        for name, kind in (("artifacts", list), ("history", list), ("metadata", dict)):
            if task.get(name) is not None and not isinstance(task[name], kind):
                raise ValidationError(f"{name} must be a {'list' if kind is list else 'dict'}")
        record = {
            **task,
            "id": task_id,
            "context_id": context_id,
            "kind": "task",
            "status": {**status, "state": state, "timestamp": _now()},
            "artifacts": task.get("artifacts") or [],
            "history": task.get("history") or [],
            "metadata": task.get("metadata") or {},
        }
        _codec.encode(record, self.max_message_size, "task")

        def op(txn: WriteTxn) -> Any:  # a WriteOutcome; the method returns its record
            found = _load(txn, "sessions", skey)
            if found is None:
                raise SessionNotFound(f"no session {context_id!r} (a task's context_id names a session)")
            if txn.get("tasks", tkey) is not None:
                raise Conflict(f"task {task_id!r} already exists")
            n, t = found[0]["n"], _next(txn, b"task_t")
            _put(txn, "tasks", tkey, {"n": n, "t": t}, record)
            for ikey in _task_index_keys(n, state, t):
                txn.put("task_index", ikey, tkey)
            return WriteOutcome(dict(record), True, _event(txn, n, "task_updated", tkey))

        return op

    def get_task(self, task_id: str) -> dict[str, Any] | None:
        """Return the task, or None."""
        tkey = _check_id(task_id, "task_id")
        with self._read() as txn:
            raw = txn.get("tasks", tkey)
            return None if raw is None else _public(raw)

    @_write_method
    def update_task(
        self,
        task_id: str,
        state: str | None = None,
        status_message: Any = None,
        artifacts: list[Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Callable[[WriteTxn], dict[str, Any]]:
        """Change a task's state and/or status message, add artifacts, merge metadata.

        ``artifacts`` are appended; ``metadata`` keys are merged; a status
        message is also appended to ``history``. Raises :class:`NotFound`,
        and :class:`InvalidTransition` if the task is already in a terminal
        state (completed, canceled, failed, rejected).
        """
        tkey = _check_id(task_id, "task_id")
        if state is not None:
            _check_state(state)
        _codec.check_value(status_message, "status_message")
        if artifacts is not None and not isinstance(artifacts, list):
            raise ValidationError("artifacts must be a list")
        _codec.check_value(artifacts, "artifacts")
        if metadata is not None:
            _check_dict(metadata, "metadata")
        if state is None and status_message is None and artifacts is None and metadata is None:
            raise ValidationError("update_task needs at least one of state, status_message, artifacts, metadata")

        def op(txn: WriteTxn) -> Any:  # a WriteOutcome; the method returns its record
            found = _load(txn, "tasks", tkey)
            if found is None:
                raise NotFound(f"no task {task_id!r}")
            internal, task = found
            old_state = task["status"]["state"]
            if old_state in TERMINAL_STATES:
                raise InvalidTransition(f"task {task_id!r} is {old_state} and cannot change")
            new_state = state or old_state
            status = {**task["status"], "state": new_state, "timestamp": _now()}
            if status_message is not None:
                status["message"] = status_message
                task["history"] = [*task["history"], status_message]
            task["status"] = status
            if artifacts:
                task["artifacts"] = [*task["artifacts"], *artifacts]
            if metadata:
                task["metadata"] = {**task["metadata"], **metadata}
            _codec.encode(task, self.max_message_size, "task")
            n, t = internal["n"], _next(txn, b"task_t")
            for ikey in _task_index_keys(n, old_state, internal["t"]):
                txn.delete("task_index", ikey)
            for ikey in _task_index_keys(n, new_state, t):
                txn.put("task_index", ikey, tkey)
            _put(txn, "tasks", tkey, {"n": n, "t": t}, task)
            return WriteOutcome(task, True, _event(txn, n, "task_updated", tkey))

        return op

    def list_tasks(
        self, context_id: str | None = None, state: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> list[dict[str, Any]]:
        """Tasks, newest status change first, optionally of one session and/or state.

        ``limit`` is 1..100; ``cursor`` is the id of the last task of the previous page.
        """
        if state is not None:
            _check_state(state)
        _check_int(limit, "limit", 1, MAX_TASK_PAGE)
        skey = None if context_id is None else _check_id(context_id, "context_id")
        ckey = None if cursor is None else _check_id(cursor, "cursor")
        with self._read() as txn:
            if skey is not None:
                found = _load(txn, "sessions", skey)
                if found is None:
                    return []
                nb = U64.pack(found[0]["n"])
                prefix = b"X" + nb + _STATE_BYTE[state] if state else b"C" + nb
            else:
                prefix = b"S" + _STATE_BYTE[state] if state else b"A"
            end = prefix_end(prefix)
            if ckey is not None:
                tfound = _load(txn, "tasks", ckey)
                if tfound is None:
                    raise ValidationError(f"cursor names no task: {cursor!r:.60}")
                end = prefix + U64.pack(tfound[0]["t"])
            items = []
            for _, tid in txn.range("task_index", prefix, end, reverse=True):
                raw = txn.get("tasks", tid)
                if raw is not None:
                    items.append(_public(raw))
                if len(items) >= limit:
                    break
            return items

    # -- room events and connection state recovery ----------------------------------------

    def last_event_offset(self) -> int:
        """The offset of the newest room event of the store (0 before the first)."""
        with self._read() as txn:
            raw = txn.get("meta", b"event_seq")
            return U64.unpack(raw)[0] if raw else 0

    def events_since(self, session_ids: list[str], after: int, limit: int = 1000) -> tuple[list[tuple[int, str, str, dict[str, Any]]], bool]:
        """Room events of these sessions with offset > *after*, oldest first.

        Returns ``([(offset, session_id, event, record), ...], more)``. A
        message event carries the message; a context or task event carries the
        context or task as it is now, once, at the offset of its newest change
        (older changes of it are passed over: the newest state supersedes them).
        """
        _check_int(after, "after", 0, 2**63 - 1)
        _check_int(limit, "limit", 1, 100_000)
        if not isinstance(session_ids, (list, tuple)):
            raise ValidationError(f"session_ids must be a list of session ids, not {type(session_ids).__name__}")
        for session_id in session_ids:
            _check_id(session_id, "session_id")
        merged: list[tuple[int, str, str, bytes, bytes]] = []
        with self._read() as txn:
            for session_id in session_ids:
                found = _load(txn, "sessions", _check_id(session_id, "session_id"))
                if found is None:
                    continue
                n = found[0]["n"]
                for key, raw in txn.range("events", U64x2.pack(n, after + 1), U64x2.pack(n + 1, 0)):
                    name, ref = _codec.decode(raw)
                    merged.append((U64x2.unpack(key)[1], session_id, name, ref, key))
                    if len(merged) > limit * 4 + 4 * len(session_ids):
                        break
            merged.sort()
            newest: dict[bytes, int] = {}
            for offset, _, name, ref, _ in merged:
                if name != "message":
                    newest[ref] = offset
            events: list[tuple[int, str, str, dict[str, Any]]] = []
            more = False
            for offset, session_id, name, ref, _ in merged:
                if name != "message" and newest[ref] != offset:
                    continue
                table = {"message": "messages", "context_updated": "contexts", "task_updated": "tasks"}[name]
                raw = txn.get(table, ref)
                if raw is None:
                    continue  # deleted since
                if len(events) == limit:
                    more = True
                    break
                events.append((offset, session_id, name, _public(raw)))
        return events, more

    @_write_method
    def save_connection(self, pid: str, state: dict[str, Any]) -> Callable[[WriteTxn], None]:
        """Store the recoverable state of a client connection under its private id."""
        key = _check_id(pid, "pid")
        _check_dict(state, "state")

        def op(txn: WriteTxn) -> None:
            _put(txn, "recovery", key, {}, state)

        return op

    @_write_method
    def take_connection(self, pid: str) -> Callable[[WriteTxn], dict[str, Any] | None]:
        """Remove and return the state saved under *pid* (None if there is none)."""
        key = _check_id(pid, "pid")

        def op(txn: WriteTxn) -> dict[str, Any] | None:
            found = _load(txn, "recovery", key)
            if found is None:
                return None
            txn.delete("recovery", key)
            return found[1]

        return op

    @_write_method
    def expire_connections(self, now: float, orphan_expiry: float | None = None) -> Callable[[WriteTxn], int]:
        """Delete saved connections whose ``expires_at`` is before *now*; return how many.

        With *orphan_expiry*, connections saved while connected (``expires_at``
        None: their server stopped without seeing them go) expire then.
        """

        def op(txn: WriteTxn) -> int:
            removed = 0
            for key, raw in list(txn.range("recovery", b"", None)):
                internal, state = _codec.decode(raw)
                expires = state.get("expires_at")
                if expires is None and orphan_expiry is not None:
                    state["expires_at"] = orphan_expiry
                    _put(txn, "recovery", key, internal, state)
                elif expires is not None and expires < now:
                    txn.delete("recovery", key)
                    removed += 1
            return removed

        return op

    # -- setup and operations ---------------------------------------------------------------

    @_write_method
    def init_database(self) -> Callable[[WriteTxn], None]:
        """Create the default agent cards and the default session, once."""
        now = _now()

        def op(txn: WriteTxn) -> None:
            for card in DEFAULT_AGENTS:
                akey = card["agent_id"].encode()  # type: ignore[attr-defined]
                if txn.get("agents", akey) is None:
                    _put(txn, "agents", akey, {}, {**card, "created_at": now, "updated_at": now})
            skey = DEFAULT_SESSION_ID.encode()
            if txn.get("sessions", skey) is None:
                n = _next(txn, b"session_n")
                session = {
                    "id": DEFAULT_SESSION_ID,
                    "title": DEFAULT_SESSION_TITLE,
                    "created_at": now,
                    "updated_at": now,
                    "session_metadata": {},
                    "message_count": 0,
                    "last_message_at": None,
                }
                _put(txn, "sessions", skey, {"n": n}, session)
                txn.put("session_order", U64.pack(n), skey)

        return op

    def stats(self) -> dict[str, Any]:
        """Counts of every kind of record, and the sizes of the database."""
        with self._read() as txn:
            counts = {
                "sessions": txn.count("sessions"),
                "messages": txn.count("messages"),
                "agents": txn.count("agents"),
                "contexts": txn.count("contexts"),
                "tasks": txn.count("tasks"),
                "saved_connections": txn.count("recovery"),
            }
        info = self.engine.info()
        used_ratio = None
        if info.get("map_size"):
            used_ratio = round(info["bytes_used"] / info["map_size"], 4)
        return {
            "backend": self.backend,
            "path": str(self.path),
            "durability": self.durability,
            **counts,
            **info,
            "map_used_ratio": used_ratio,
        }

    def backup(self, dest_dir: str | os.PathLike[str]) -> dict[str, Any]:
        """Write a consistent copy of the database into *dest_dir*, while writers run.

        *dest_dir* must not hold a database already. Returns where and how big.
        """
        if not isinstance(dest_dir, (str, os.PathLike)) or not str(dest_dir):
            raise ValidationError(f"dest_dir must name a directory, not {_show(dest_dir)}")
        dest = Path(dest_dir)
        try:
            occupied = dest.exists() and (not dest.is_dir() or any(dest.iterdir()))
        except (OSError, ValueError) as exc:  # an embedded NUL, an unencodable name, no permission
            raise ValidationError(f"cannot use {_show(str(dest))} as a backup directory: {exc}") from exc
        if occupied:
            raise ValidationError(f"{dest} exists and is not an empty directory")
        if self._closed:
            raise StoreClosed("the store is closed")
        try:
            self.engine.backup(dest)
        except OSError as exc:  # e.g. a parent of dest is a file
            raise StorageError(f"cannot write the backup to {dest}: {exc}") from exc
        size = sum(p.stat().st_size for p in dest.iterdir() if p.is_file())
        return {"path": str(dest.absolute()), "backend": self.backend, "bytes": size}

    def verify(self) -> dict[str, Any]:
        """Check that every index entry points at a record, every record is indexed
        and every counter matches; returns ``{"ok": bool, "errors": [...], ...}``.
        """
        checker = _Verifier()
        checker.errors.extend(self.engine.check())
        if not checker.errors:
            # Only walk the records of files the engine vouches for: reading a
            # truncated LMDB file through its map faults the process (SIGBUS).
            with self._read() as txn:
                checker.run(txn)
        return {
            "ok": not checker.errors,
            "errors": checker.errors[:100],
            "error_count": len(checker.errors),
            "checked": checker.checked,
        }


class _Verifier:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.checked: dict[str, int] = {}

    def _records(self, txn: ReadTxn, table: str) -> Iterator[tuple[bytes, Any]]:
        count = 0
        for key, raw in txn.range(table, b"", None):
            count += 1
            try:
                yield key, _codec.decode(raw)
            except ChatMDBError as exc:
                self.errors.append(f"{table} {key!r:.60}: {exc}")
        self.checked[table] = count

    def run(self, txn: ReadTxn) -> None:
        e = self.errors.append
        sessions: dict[int, tuple[bytes, dict[str, Any]]] = {}
        for key, (internal, session) in self._records(txn, "sessions"):
            sessions[internal["n"]] = (key, session)
            if txn.get("session_order", U64.pack(internal["n"])) != key:
                e(f"session {key!r:.60} is missing from the session order")
        for nkey, sid in txn.range("session_order", b"", None):
            found = sessions.get(U64.unpack(nkey)[0])
            if found is None or found[0] != sid:
                e(f"session order entry {U64.unpack(nkey)[0]} points at no session")
        seen: dict[int, int] = {}
        for mkey, (internal, message) in self._records(txn, "messages"):
            n, seq = U64x2.unpack(mkey)
            if n not in sessions:
                e(f"message {message.get('message_uuid')!r} belongs to no session")
                continue
            if message.get("seq") != seq or message.get("session_id") != sessions[n][1]["id"]:
                e(f"message {message.get('message_uuid')!r} is stored under the wrong key")
            if seq != seen.get(n, 0) + 1:
                e(f"session {sessions[n][1]['id']!r} has a gap before seq {seq}")
            seen[n] = seq
            if txn.get("msg_uuid", str(message.get("message_uuid")).encode()) != mkey:
                e(f"message {message.get('message_uuid')!r} is missing from the uuid index")
            agent = message.get("agent_id")
            if isinstance(agent, str) and txn.get("agent_msgs", _agent_key(agent.encode(), internal["g"])) != mkey:
                e(f"message {message.get('message_uuid')!r} is missing from the agent index")
        for n, (_, session) in sessions.items():
            if session["message_count"] != seen.get(n, 0):
                e(f"session {session['id']!r} counts {session['message_count']} messages but holds {seen.get(n, 0)}")
        for table in ("msg_uuid", "agent_msgs"):
            count = 0
            for key, mkey in txn.range(table, b"", None):
                count += 1
                if txn.get("messages", mkey) is None:
                    e(f"{table} entry {key!r:.60} points at no message")
            self.checked[table] = count
        for ckey, (internal, _ctx) in self._records(txn, "contexts"):
            if txn.get("session_contexts", U64x2.pack(internal["n"], internal["c"])) != ckey:
                e(f"shared context {ckey!r:.60} is missing from its session's index")
        for key, cid in txn.range("session_contexts", b"", None):
            if txn.get("contexts", cid) is None:
                e(f"session context entry {key!r:.60} points at no context")
        message_events = 0
        for ekey, (name, ref) in self._records(txn, "events"):
            n = U64x2.unpack(ekey)[0]
            if n not in sessions:
                e(f"event {U64x2.unpack(ekey)[1]} belongs to no session")
            elif name == "message":
                message_events += 1
                if txn.get("messages", ref) is None:
                    e(f"message event {U64x2.unpack(ekey)[1]} points at no message")
        if message_events != self.checked.get("messages", 0):
            e(f"{message_events} message events for {self.checked.get('messages', 0)} messages")
        indexed = 0
        for tkey, (internal, task) in self._records(txn, "tasks"):
            for ikey in _task_index_keys(internal["n"], task["status"]["state"], internal["t"]):
                if txn.get("task_index", ikey) != tkey:
                    e(f"task {tkey!r:.60} is missing from the task index")
            indexed += 4
        entries = sum(1 for _ in txn.range("task_index", b"", None))
        if entries != indexed:
            e(f"the task index holds {entries} entries for {indexed // 4} tasks")


class AsyncStore:
    """Coroutine versions of a store's methods, for event loops.

    Writes are queued to the group-commit writer and awaited, so the loop
    never blocks on a commit; reads are microseconds and run inline.
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(type(self._store), name, None)
        if method is None or name.startswith("_"):
            raise AttributeError(name)
        prepare = getattr(method, "_prepare", None)
        store = self._store

        if prepare is None:

            async def read(*args: Any, **kwargs: Any) -> Any:
                return method(store, *args, **kwargs)

            return read

        async def write(*args: Any, **kwargs: Any) -> Any:
            return (await self.outcome(name, *args, **kwargs)).record

        return write

    async def create_message_outcome(self, data: dict[str, Any]) -> WriteOutcome:
        return await self.outcome("create_message", data)

    async def create_shared_context_outcome(
        self, session_id: str, data: dict[str, Any], context_id: str | None = None
    ) -> WriteOutcome:
        return await self.outcome("create_shared_context", session_id, data, context_id=context_id)

    async def update_shared_context_outcome(
        self, context_id: str, data: dict[str, Any], expected_version: int | None = None
    ) -> WriteOutcome:
        return await self.outcome("update_shared_context", context_id, data, expected_version=expected_version)

    async def create_task_outcome(self, task: dict[str, Any]) -> WriteOutcome:
        return await self.outcome("create_task", task)

    async def update_task_outcome(
        self,
        task_id: str,
        state: str | None = None,
        status_message: Any = None,
        artifacts: list[Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> WriteOutcome:
        return await self.outcome(
            "update_task", task_id, state=state, status_message=status_message, artifacts=artifacts, metadata=metadata
        )

    async def outcome(self, name: str, *args: Any, **kwargs: Any) -> WriteOutcome:
        """Run the write method *name* and return its :class:`WriteOutcome`.

        For callers that broadcast what was written: the outcome says whether
        the call created anything and the offset of the room event it logged.
        This method is a coroutine.
        """
        prepare = getattr(getattr(type(self._store), name, None), "_prepare", None)
        if prepare is None:
            raise AttributeError(f"{name} is not a write method")
        store = self._store
        op = prepare(store, *args, **kwargs)
        writer = store._writer_here()
        if store.closed:
            raise StoreClosed("the store is closed")
        if writer is None:
            result = await asyncio.to_thread(store._execute, op)
        else:
            result = await asyncio.wrap_future(writer.submit(op))
        if isinstance(result, WriteOutcome):
            return result
        return WriteOutcome(result, True, None)


def open_store(
    path: str | os.PathLike[str],
    backend: Literal["lmdb", "sqlite"] | str = "lmdb",
    durability: Literal["full", "process"] | str = "full",
    **options: Any,
) -> Store:
    """Open (creating if needed) the store in directory *path* and return it.

    ``backend`` is ``"lmdb"`` (default) or ``"sqlite"``. ``durability`` is
    ``"full"`` (default: every commit is fsynced and survives power loss) or
    ``"process"`` (survives a crash of the process, not of the OS). Options:
    ``map_size`` (LMDB's initial map, bytes), and the keys of
    :data:`DEFAULT_SETTINGS`: ``max_message_size``, ``group_commit``, ``max_batch``.
    """
    if durability not in ("full", "process"):
        raise ValidationError(f"durability must be 'full' or 'process', not {_show(durability)}")
    if not isinstance(path, (str, os.PathLike)) or not str(path) or "\x00" in str(path):
        raise ValidationError("path must name a directory")
    try:
        str(path).encode("utf-8")  # py-lmdb takes the path as UTF-8
    except UnicodeError as exc:
        raise ValidationError("path is not valid Unicode text") from exc
    map_size = options.pop("map_size", None)
    engine: Engine
    if backend == "lmdb":
        from ._lmdb import LmdbEngine

        if map_size is not None:
            _check_int(map_size, "map_size", 1 << 16)
        engine = LmdbEngine(path, durability=durability, map_size=map_size or options.get("lmdb_map_size"))
    elif backend == "sqlite":
        from ._sqlite import SqliteEngine

        engine = SqliteEngine(path, durability=durability)
    else:
        raise ValidationError(f"backend must be 'lmdb' or 'sqlite', not {_show(backend)}")
    try:
        return Store(engine, durability=durability, **options)
    except BaseException:
        engine.close()
        raise
