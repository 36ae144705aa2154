"""A2A tasks: a task's ``context_id`` names its session.

Each status change takes a new task number ``t`` and moves the task's four
index entries (:func:`chatmdb.store.schema.task_index_keys`), so every listing
is newest status first by a reverse range scan. A task in a terminal state
cannot change.
"""

from __future__ import annotations

import heapq
import uuid as uuidlib
from collections.abc import Iterable
from typing import Any

from ..engines.base import ReadTxn, WriteTxn, prefix_end
from ..errors import Conflict, InvalidTransition, NotFound, SessionNotFound, ValidationError
from . import codec, sessions
from .ops import Op, WriteOutcome, done
from .rules import MAX_TASK_PAGE, check_dict, check_id, check_limit, check_state, now, show
from .schema import (
    TERMINAL_STATES,
    U64,
    follow,
    load,
    log_event,
    next_number,
    public,
    put,
    task_index_keys,
    task_index_prefix,
)

_SHAPES = (("artifacts", list), ("history", list), ("metadata", dict))


def create(size_limit: int, task: Any, origin: str | None = None) -> Op[dict[str, Any]]:
    task = check_dict(task, "task")
    context_id = task.get("context_id")
    skey = check_id(context_id, "context_id")
    task_id = task.get("id") or str(uuidlib.uuid4())
    tkey = check_id(task_id, "id")
    status = task.get("status") or {}
    if not isinstance(status, dict):
        raise ValidationError("status must be an object with a 'state'")
    state = check_state(status.get("state", "submitted"))
    for name, kind in _SHAPES:
        if task.get(name) is not None and not isinstance(task[name], kind):
            raise ValidationError(f"{name} must be a {'list' if kind is list else 'dict'}")
    record = {
        **task,
        "id": task_id,
        "context_id": context_id,
        "kind": "task",
        "status": {**status, "state": state, "timestamp": now()},
        "artifacts": task.get("artifacts") or [],
        "history": task.get("history") or [],
        "metadata": task.get("metadata") or {},
    }
    packed = codec.pack(record, size_limit, "task")

    def op(txn: WriteTxn) -> WriteOutcome[dict[str, Any]]:
        found = load(txn, "sessions", skey)
        if found is None:
            raise SessionNotFound(f"no session {context_id!r:.80} (a task's context_id names a session)")
        if txn.get("tasks", tkey) is not None:
            raise Conflict(f"task {task_id!r:.80} already exists")
        return done(dict(record), insert(txn, found[0]["n"], tkey, state, packed, origin))

    return op


def insert(txn: WriteTxn, n: int, tkey: bytes, state: str, packed: bytes, origin: str | None = None) -> int:
    """Store a new task (its packed public record) in session *n*: the next status number, its
    four index entries and a room event, whose offset is returned."""
    t = next_number(txn, "task")
    txn.put("tasks", tkey, codec.seal_record({"n": n, "t": t}, packed))
    for ikey in task_index_keys(n, state, t):
        txn.put("task_index", ikey, tkey)
    return log_event(txn, n, "task_updated", tkey, origin)


def update(
    size_limit: int,
    task_id: Any,
    state: Any,
    status_message: Any,
    artifacts: Any,
    metadata: Any,
    origin: str | None = None,
) -> Op[dict[str, Any]]:
    tkey = check_id(task_id, "task_id")
    if state is not None:
        check_state(state)
    codec.check_value(status_message, "status_message")
    if artifacts is not None and not isinstance(artifacts, list):
        raise ValidationError("artifacts must be a list")
    codec.check_value(artifacts, "artifacts")
    if metadata is not None:
        check_dict(metadata, "metadata")
    if state is None and status_message is None and artifacts is None and metadata is None:
        raise ValidationError("update_task needs at least one of state, status_message, artifacts, metadata")

    def op(txn: WriteTxn) -> WriteOutcome[dict[str, Any]]:
        found = load(txn, "tasks", tkey)
        if found is None:
            raise NotFound(f"no task {task_id!r:.80}")
        internal, task = found
        old_state = task["status"]["state"]
        if old_state in TERMINAL_STATES:
            raise InvalidTransition(f"task {task_id!r:.80} is {old_state} and cannot change")
        new_state = state or old_state
        status = {**task["status"], "state": new_state, "timestamp": now()}
        if status_message is not None:
            status["message"] = status_message
            task["history"] = [*task["history"], status_message]
        task["status"] = status
        if artifacts:
            task["artifacts"] = [*task["artifacts"], *artifacts]
        if metadata:
            task["metadata"] = {**task["metadata"], **metadata}
        codec.encode(task, size_limit, "task")
        n, t = internal["n"], next_number(txn, "task")
        for ikey in task_index_keys(n, old_state, internal["t"]):
            txn.delete("task_index", ikey)
        for ikey in task_index_keys(n, new_state, t):
            txn.put("task_index", ikey, tkey)
        put(txn, "tasks", tkey, {"n": n, "t": t}, task)
        return done(task, log_event(txn, n, "task_updated", tkey, origin))

    return op


def delete_in_session(txn: WriteTxn, n: int) -> None:
    """Remove session *n*'s tasks and their index entries."""
    prefix = task_index_prefix(n, None)
    for _, tid in list(txn.range("task_index", prefix, prefix_end(prefix))):
        found = load(txn, "tasks", tid)
        if found is not None:
            internal, task = found
            for ikey in task_index_keys(n, task["status"]["state"], internal["t"]):
                txn.delete("task_index", ikey)
            txn.delete("tasks", tid)


def get(txn: ReadTxn, tkey: bytes) -> dict[str, Any] | None:
    raw = txn.get("tasks", tkey)
    return None if raw is None else public(raw)


class ListQuery:
    """The checked arguments of ``list_tasks``."""

    __slots__ = ("cursor_key", "limit", "skey", "state")

    def __init__(self, context_id: Any, state: Any, limit: Any, cursor: Any) -> None:
        self.state: str | None = None if state is None else check_state(state)
        self.limit = check_limit(limit, MAX_TASK_PAGE)
        self.skey = None if context_id is None else check_id(context_id, "context_id")
        self.cursor_key = None if cursor is None else check_id(cursor, "cursor")


def list_page(txn: ReadTxn, q: ListQuery) -> list[dict[str, Any]]:
    """Tasks newest status change first, of one session and/or state, after the task *cursor* names."""
    n = None
    if q.skey is not None:
        n = sessions.number(txn, q.skey)
        if n is None:
            return []
    prefix = task_index_prefix(n, q.state)
    end = prefix_end(prefix)
    if q.cursor_key is not None:
        found = load(txn, "tasks", q.cursor_key)
        if found is None:
            raise ValidationError(f"cursor names no task: {show(q.cursor_key.decode())}")
        end = prefix + U64.pack(found[0]["t"])
    return follow(txn, "tasks", txn.range("task_index", prefix, end, reverse=True), q.limit)


def list_in_sessions(txn: ReadTxn, q: ListQuery, numbers: Iterable[int]) -> list[dict[str, Any]]:
    """The tasks of the sessions numbered *numbers* (of *q*'s state), newest status change first,
    after the task *q*'s cursor names: each session's index is read newest first only while it
    could still make the page, so the cost follows those sessions, not the store."""
    bound = None
    if q.cursor_key is not None:
        found = load(txn, "tasks", q.cursor_key)
        if found is None:
            raise ValidationError(f"cursor names no task: {show(q.cursor_key.decode())}")
        bound = found[0]["t"]
    best: list[tuple[int, bytes]] = []  # the page so far, a min-heap of (t, task id) of at most q.limit
    for n in numbers:
        prefix = task_index_prefix(n, q.state)
        end = prefix_end(prefix) if bound is None else prefix + U64.pack(bound)
        for key, ref in txn.range("task_index", prefix, end, reverse=True):
            t = U64.unpack(key[-8:])[0]
            if len(best) < q.limit:
                heapq.heappush(best, (t, ref))
            elif t > best[0][0]:
                heapq.heapreplace(best, (t, ref))
            else:
                break  # this session's older tasks cannot make the page either
    return follow(txn, "tasks", ((U64.pack(t), ref) for t, ref in sorted(best, reverse=True)), q.limit)
