"""Shared contexts: versioned state that agents share inside a session.

A context is ``{"id", "session_id", "data", "version", "created_at",
"updated_at"}``; each write bumps ``version`` and logs a ``context_updated``
room event in the same transaction.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

from ..engines.base import ReadTxn, WriteTxn, prefix_end
from ..errors import Conflict, NotFound
from . import codec, sessions
from .ops import Op, WriteOutcome, done
from .rules import check_dict, check_id, check_int, now
from .schema import U64x2, follow, load, log_event, next_number, public, put, session_prefix


def create(size_limit: int, session_id: Any, data: Any, context_id: Any, origin: str | None = None) -> Op[dict[str, Any]]:
    skey = check_id(session_id, "session_id")
    check_dict(data, "data")
    if context_id is None:
        context_id = str(uuidlib.uuid4())
    ckey = check_id(context_id, "context_id")
    at = now()
    context = {"id": context_id, "session_id": session_id, "data": data, "version": 1, "created_at": at, "updated_at": at}
    packed = codec.pack(context, size_limit, "shared context")

    def op(txn: WriteTxn) -> WriteOutcome[dict[str, Any]]:
        n = sessions.find(txn, skey, session_id)[0]["n"]
        if txn.get("contexts", ckey) is not None:
            raise Conflict(f"shared context {context_id!r:.80} already exists")
        return done(dict(context), insert(txn, n, ckey, packed, origin))

    return op


def insert(txn: WriteTxn, n: int, ckey: bytes, packed: bytes, origin: str | None = None) -> int:
    """Store a new context (its packed public record) in session *n*: the next context number,
    the session's index entry and a room event, whose offset is returned."""
    c = next_number(txn, "context")
    txn.put("contexts", ckey, codec.seal_record({"n": n, "c": c}, packed))
    txn.put("session_contexts", U64x2.pack(n, c), ckey)
    return log_event(txn, n, "context_updated", ckey, origin)


def update(
    size_limit: int, context_id: Any, data: Any, expected_version: Any, origin: str | None = None
) -> Op[dict[str, Any]]:
    ckey = check_id(context_id, "context_id")
    check_dict(data, "data")
    if expected_version is not None:
        check_int(expected_version, "expected_version", 0)
    codec.encode(data, size_limit, "shared context")

    def op(txn: WriteTxn) -> WriteOutcome[dict[str, Any]]:
        found = load(txn, "contexts", ckey)
        if found is None:
            raise NotFound(f"no shared context {context_id!r:.80}")
        internal, context = found
        if expected_version is not None and context["version"] != expected_version:
            raise Conflict(
                f"shared context {context_id!r:.80} is at version {context['version']}, not {expected_version}",
                hint="read it again and retry",
                version=context["version"],
            )
        context.update(data=data, version=context["version"] + 1, updated_at=now())
        put(txn, "contexts", ckey, internal, context)
        return done(context, log_event(txn, internal["n"], "context_updated", ckey, origin))

    return op


def delete(context_id: Any) -> Op[bool]:
    ckey = check_id(context_id, "context_id")

    def op(txn: WriteTxn) -> WriteOutcome[bool]:
        found = load(txn, "contexts", ckey)
        if found is None:
            return done(False)
        txn.delete("session_contexts", U64x2.pack(found[0]["n"], found[0]["c"]))
        txn.delete("contexts", ckey)
        return done(True)

    return op


def delete_in_session(txn: WriteTxn, n: int) -> None:
    """Remove session *n*'s contexts and their index entries."""
    prefix = session_prefix(n)
    for key, cid in list(txn.range("session_contexts", prefix, prefix_end(prefix))):
        txn.delete("contexts", cid)
        txn.delete("session_contexts", key)


def get(txn: ReadTxn, ckey: bytes) -> dict[str, Any] | None:
    raw = txn.get("contexts", ckey)
    return None if raw is None else public(raw)


def list_in_session(txn: ReadTxn, skey: bytes) -> list[dict[str, Any]]:
    """A session's contexts in creation order (empty for an unknown session)."""
    n = sessions.number(txn, skey)
    if n is None:
        return []
    prefix = session_prefix(n)
    return follow(txn, "contexts", txn.range("session_contexts", prefix, prefix_end(prefix)))
