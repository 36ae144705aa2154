"""Messages: checks, the create operation, paging and the agent index.

A message is stored under its session number and ``seq`` (1, 2, 3... per
session, assigned in the write transaction), with a uuid index for
``get_message`` and an agent index for ``get_agent_messages``. Creating a
message logs a room event in the same transaction; its offset is the
message's ``g``, which also orders the agent index. The session's header
(count and newest time) sits after its messages in the same table.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator
from datetime import UTC, datetime
from typing import Any

from ..engines.base import ReadTxn, WriteTxn, prefix_end
from ..errors import Conflict, ValidationError
from . import codec, sessions
from .ops import Op, WriteOutcome, done
from .rules import (
    MAX_OFFSET,
    check_bool,
    check_direction,
    check_id,
    check_int,
    check_limit,
    check_optional_id,
    check_seq_cursor,
    check_timestamp,
    new_uuid,
    now,
)
from .schema import (
    COUNTERS,
    HEADER_SEQ,
    U64,
    agent_key,
    agent_prefix,
    follow,
    header_key,
    load,
    log_event,
    message_key,
    public,
    session_prefix,
)

Page = list[dict[str, Any]] | dict[str, Any]


def create(size_limit: int, data: Any, origin: str | None = None) -> Op[dict[str, Any]]:
    if not isinstance(data, dict):
        raise ValidationError(f"message data must be an object (dict), not {type(data).__name__}")
    codec.check_value(data, "message")
    session_id = data.get("session_id")
    skey = check_id(session_id, "session_id")
    message_uuid = data.get("message_uuid")
    if message_uuid is None or message_uuid == "":
        message_uuid = new_uuid()
    ukey = check_id(message_uuid, "message_uuid")
    created_at = data.get("created_at")
    created_at = now() if created_at is None else check_timestamp(created_at, "created_at")
    akey = check_optional_id(data.get("agent_id"), "agent_id")
    fields = dict(data)
    fields.pop("seq", None)  # the store assigns it
    fields.update(session_id=session_id, message_uuid=message_uuid, created_at=created_at)
    # Packed once, here, in the caller's thread; the transaction only appends the seq.
    packed = codec.pack(fields, size_limit, "message")

    def op(txn: WriteTxn) -> WriteOutcome[dict[str, Any]]:
        n = sessions.find(txn, skey, session_id)[0]["n"]
        existing = txn.get("msg_uuid", ukey)
        if existing is not None:
            stored = public(txn.get("messages", existing) or b"")
            if stored["session_id"] == session_id:
                return WriteOutcome(stored, False, None)  # a retry: nothing written
            raise Conflict(f"message_uuid {message_uuid!r:.80} already exists in another session")
        seq = sessions.counts(txn, n)[0] + 1
        message = {**fields, "seq": seq}
        with_seq = codec.with_field(packed, "seq", seq) or codec.pack(message)
        g = insert(txn, n, seq, ukey, akey, with_seq, origin)
        sessions.set_counts(txn, n, seq, created_at)
        return WriteOutcome(message, True, g)

    return op


def insert(
    txn: WriteTxn, n: int, seq: int, ukey: bytes, akey: bytes | None, packed: bytes, origin: str | None = None
) -> int:
    """Store a message (its packed public record, seq included) as *seq* of session *n*, with
    its room event and its uuid and agent index entries; return its event offset ``g``.
    The caller moves the session's count on (:func:`chatmdb.store.sessions.set_counts`)."""
    mkey = message_key(n, seq)
    g = log_event(txn, n, "message", mkey, origin)
    txn.put("messages", mkey, codec.seal_record({"g": g}, packed))
    txn.put("msg_uuid", ukey, mkey)
    if akey is not None:
        txn.put("agent_msgs", agent_key(akey, g), mkey)
    return g


def _remove(txn: WriteTxn, mkey: bytes, raw: bytes) -> None:
    """Remove a message with its index entries and its room event."""
    internal, message = codec.decode(raw)
    txn.delete("msg_uuid", message["message_uuid"].encode())
    agent = message.get("agent_id")
    if isinstance(agent, str) and agent:
        txn.delete("agent_msgs", agent_key(agent.encode(), internal["g"]))
    txn.delete("event_order", U64.pack(internal["g"]))
    txn.delete("messages", mkey)


def delete_in_session(txn: WriteTxn, n: int) -> None:
    """Remove session *n*'s messages, their index entries and events, and its header."""
    prefix = session_prefix(n)
    for mkey, raw in list(txn.range("messages", prefix, header_key(n))):
        _remove(txn, mkey, raw)
    txn.delete("messages", header_key(n))


def instant(timestamp: str) -> float:
    """Seconds since the epoch of an ISO 8601 timestamp (one without a zone is UTC)."""
    moment = datetime.fromisoformat(timestamp)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def prune_plan(
    keys: list[bytes], older_than: float | None, keep_last: int | None, batch: int
) -> Generator[Op[int], int, dict[str, int]]:
    """The prune operations of *keys*, one at a time: send each one's result back in.

    Returns ``{"pruned", "sessions"}``. One plan serves ``Store.prune`` and
    its coroutine twin, which differ only in how they run an operation.
    """
    pruned = touched = 0
    for key in keys:
        here = 0
        while True:
            removed = yield prune_op(key, older_than, keep_last, batch)
            here += removed
            if removed < batch:
                break
        pruned += here
        touched += bool(here)
    return {"pruned": pruned, "sessions": touched}


def needs_pruning(txn: ReadTxn, session_key: bytes, older_than: float | None, keep_last: int | None) -> bool:
    """Whether ``prune_op`` would remove anything from this session (a read, to skip the others)."""
    found = load(txn, "sessions", session_key)
    if found is None:
        return False
    internal = found[0]
    n, pruned = internal["n"], internal.get("pruned", 0)
    last = sessions.counts(txn, n)[0]
    if pruned >= last:
        return False
    if keep_last is not None and last - pruned > keep_last:
        return True
    raw = txn.get("messages", message_key(n, pruned + 1))
    return older_than is not None and raw is not None and instant(codec.decode(raw)[1]["created_at"]) < older_than


def prune_op(session_key: bytes, older_than: float | None, keep_last: int | None, most: int) -> Op[int]:
    """Remove up to *most* of a session's oldest messages: each one created before *older_than*,
    or not among the newest *keep_last*, up to the first that is neither (so what is removed is a
    prefix in seq order and seq stays dense), with their index entries and room events.
    Returns how many were removed (0: nothing left to prune in this session).
    """

    def op(txn: WriteTxn) -> WriteOutcome[int]:
        found = load(txn, "sessions", session_key)
        if found is None:
            return done(0)
        internal, session = found
        n, pruned = internal["n"], internal.get("pruned", 0)
        last = sessions.counts(txn, n)[0]
        over_count = last - keep_last if keep_last is not None else pruned  # seqs up to this go anyway
        rows = list(itertools.islice(txn.range("messages", message_key(n, pruned + 1), message_key(n, last + 1)), most))
        removed = 0
        for mkey, raw in rows:
            if pruned + removed + 1 > over_count and (
                older_than is None or instant(codec.decode(raw)[1]["created_at"]) >= older_than
            ):
                break
            _remove(txn, mkey, raw)
            removed += 1
        if removed:
            internal["pruned"] = pruned + removed
            sessions.store(txn, session_key, internal, session)
            count = txn.get("meta", COUNTERS["pruned"])
            txn.put("meta", COUNTERS["pruned"], U64.pack((U64.unpack(count)[0] if count else 0) + removed))
        return done(removed)

    return op


# -- reads ------------------------------------------------------------------------


def count(txn: ReadTxn) -> int:
    """How many messages the store holds: its messages table also holds one header per session."""
    return txn.count("messages") - txn.count("sessions")



def get(txn: ReadTxn, ukey: bytes) -> dict[str, Any] | None:
    mkey = txn.get("msg_uuid", ukey)
    if mkey is None:
        return None
    raw = txn.get("messages", mkey)
    return None if raw is None else public(raw)


class PageQuery:
    """The checked arguments of ``get_session_messages``."""

    __slots__ = ("after", "direction", "include_total", "limit", "skey", "skip")

    def __init__(self, session_id: Any, skip: Any, limit: Any, cursor: Any, direction: Any, include_total: Any):
        self.skey = check_id(session_id, "session_id")
        self.skip = check_int(skip, "skip", 0, MAX_OFFSET)  # cursor + skip must fit the 64-bit key
        self.limit = check_limit(limit)
        self.direction = check_direction(direction)
        self.after = check_seq_cursor(cursor)
        self.include_total = check_bool(include_total, "include_total")


def page(txn: ReadTxn, q: PageQuery) -> Page:
    """A page of a session's messages by ``seq`` (see ``Store.get_session_messages``)."""
    items: list[dict[str, Any]] = []
    more = False
    total = 0
    found = load(txn, "sessions", q.skey)
    if found is not None:
        n, pruned = found[0]["n"], found[0].get("pruned", 0)
        last = sessions.counts(txn, n)[0]
        total = last - pruned
        # seq is dense (pruned+1..last), so skip is arithmetic, not a scan.
        if q.direction == "desc":
            top = min(last, (q.after - 1) if q.after is not None else last) - q.skip
            rows = (
                txn.range("messages", message_key(n, pruned + 1), message_key(n, top + 1), reverse=True)
                if top > pruned
                else iter(())
            )
        else:
            first = max(q.after if q.after is not None else 0, pruned) + 1 + q.skip
            rows = txn.range("messages", message_key(n, first), message_key(n, HEADER_SEQ))
        for _, raw in rows:
            if len(items) == q.limit:
                more = True
                break
            items.append(public(raw))
    if not q.include_total:
        return items
    pagination: dict[str, Any] = {"total": total, "limit": q.limit, "direction": q.direction}
    if more:
        pagination["next_cursor"] = str(items[-1]["seq"])
    if q.after is None:
        pagination["skip"] = q.skip
    return {"items": items, "pagination": pagination}


class AgentQuery:
    """The checked arguments of ``get_agent_messages``."""

    __slots__ = ("agent_id", "akey", "cursor_key", "desc", "limit")

    def __init__(self, agent_id: Any, limit: Any, cursor: Any, direction: Any):
        self.akey = check_id(agent_id, "agent_id")
        self.agent_id: str = agent_id
        self.limit = check_limit(limit)
        self.desc = check_direction(direction) == "desc"
        self.cursor_key = None if cursor is None else check_id(cursor, "cursor")


def agent_page(txn: ReadTxn, q: AgentQuery) -> list[dict[str, Any]]:
    """An agent's messages across sessions in store order, after the message *cursor* names."""
    prefix = agent_prefix(q.akey)
    start, end = prefix, prefix_end(prefix)
    if q.cursor_key is not None:
        ckey = txn.get("msg_uuid", q.cursor_key)
        found = None if ckey is None else load(txn, "messages", ckey)
        if found is None or found[1].get("agent_id") != q.agent_id:
            raise ValidationError(f"cursor names no message of agent {q.agent_id!r:.60}")
        if q.desc:
            end = agent_key(q.akey, found[0]["g"])
        else:
            start = agent_key(q.akey, found[0]["g"] + 1)
    return follow(txn, "messages", txn.range("agent_msgs", start, end, reverse=q.desc), q.limit)
