"""``verify()``: every index entry points at a record, every record is indexed,
every counter matches.

It walks the tables described in :mod:`chatmdb.store.schema` and reports what
does not hold, as sentences, rather than stopping at the first problem.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..engines.base import Engine, ReadTxn
from ..errors import ChatMDBError
from . import codec
from .schema import HEADER_SEQ, U64, U64x2, agent_key, task_index_keys

MAX_REPORTED = 100


def verify(engine: Engine) -> dict[str, Any]:
    """Check the engine's files, then (if they are sound) the records; return the report."""
    checker = Verifier()
    checker.errors.extend(engine.check())
    if not checker.errors:
        # Only walk the records of files the engine vouches for: reading a
        # truncated LMDB file through its map faults the process (SIGBUS).
        with engine.read() as txn:
            checker.run(txn)
    return {
        "ok": not checker.errors,
        "errors": checker.errors[:MAX_REPORTED],
        "error_count": len(checker.errors),
        "checked": checker.checked,
    }


class Verifier:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.checked: dict[str, int] = {}

    def _records(self, txn: ReadTxn, table: str) -> Iterator[tuple[bytes, Any]]:
        count = 0
        for key, raw in txn.range(table, b"", None):
            count += 1
            try:
                yield key, codec.decode(raw)
            except ChatMDBError as exc:
                self.errors.append(f"{table} {key!r:.60}: {exc}")
        self.checked[table] = count

    def run(self, txn: ReadTxn) -> None:
        e = self.errors.append
        sessions: dict[int, tuple[bytes, dict[str, Any]]] = {}
        pruned: dict[int, int] = {}  # how many of each session's first seqs retention removed
        for key, (internal, session) in self._records(txn, "sessions"):
            sessions[internal["n"]] = (key, session)
            pruned[internal["n"]] = internal.get("pruned", 0)
            if txn.get("session_order", U64.pack(internal["n"])) != key:
                e(f"session {key!r:.60} is missing from the session order")
        for nkey, sid in txn.range("session_order", b"", None):
            found = sessions.get(U64.unpack(nkey)[0])
            if found is None or found[0] != sid:
                e(f"session order entry {U64.unpack(nkey)[0]} points at no session")
        seen: dict[int, int] = {}
        headers: dict[int, int] = {}  # each session's message_count, from its header
        offsets: dict[int, int] = {}  # the offset of each session's newest message read so far
        logged: dict[int, bytes] = {}  # message events owed to the store-wide log: offset -> message key
        for mkey, (internal, message) in self._records(txn, "messages"):
            n, seq = U64x2.unpack(mkey)
            if seq == HEADER_SEQ:
                if n not in sessions:
                    e(f"the message count of session number {n} belongs to no session")
                else:
                    headers[n] = internal  # a header is [count, last_message_at]: its first half
                continue
            if n not in sessions:
                e(f"message {message.get('message_uuid')!r} belongs to no session")
                continue
            if message.get("seq") != seq or message.get("session_id") != sessions[n][1]["id"]:
                e(f"message {message.get('message_uuid')!r} is stored under the wrong key")
            if seq != seen.get(n, pruned[n]) + 1:
                e(f"session {sessions[n][1]['id']!r} has a gap before seq {seq}")
            seen[n] = seq
            g = internal["g"]
            if g <= offsets.get(n, 0):
                e(f"message {message.get('message_uuid')!r} has an offset below an older message's")
            offsets[n] = g
            logged[g] = mkey
            if txn.get("msg_uuid", str(message.get("message_uuid")).encode()) != mkey:
                e(f"message {message.get('message_uuid')!r} is missing from the uuid index")
            agent = message.get("agent_id")
            if isinstance(agent, str) and txn.get("agent_msgs", agent_key(agent.encode(), g)) != mkey:
                e(f"message {message.get('message_uuid')!r} is missing from the agent index")
        self.checked["messages"] = len(logged)
        for n, (_, session) in sessions.items():
            if n not in headers:
                e(f"session {session['id']!r} has no message count")
            elif headers[n] != seen.get(n, pruned[n]):
                held = seen.get(n, pruned[n]) - pruned[n]
                e(f"session {session['id']!r} counts {headers[n] - pruned[n]} messages but holds {held}")
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
        for ekey, (name, _ref) in self._records(txn, "events"):
            n = U64x2.unpack(ekey)[0]
            if n not in sessions:
                e(f"event {U64x2.unpack(ekey)[1]} belongs to no session")
            elif name == "message":
                e(f"message event {U64x2.unpack(ekey)[1]} is in a session's log of context and task events")
        ordered = 0
        for okey, (n, name, ref, _origin) in self._records(txn, "event_order"):
            ordered += 1
            offset = U64.unpack(okey)[0]
            if name == "message":
                if logged.pop(offset, None) != ref:
                    e(f"message event {offset} of the store-wide log points at no message of that offset")
                continue
            entry = txn.get("events", U64x2.pack(n, offset))
            if entry is None or codec.decode(entry) != [name, ref]:
                e(f"event {offset} of the store-wide log is not in its session's log")
        if logged:
            e(f"{len(logged)} messages are missing from the store-wide event log, the first at offset {min(logged)}")
        expected = self.checked.get("events", 0) + self.checked["messages"]
        if ordered != expected:
            e(f"the store-wide event log holds {ordered} events, the session logs and messages {expected}")
        indexed = 0
        for tkey, (internal, task) in self._records(txn, "tasks"):
            for ikey in task_index_keys(internal["n"], task["status"]["state"], internal["t"]):
                if txn.get("task_index", ikey) != tkey:
                    e(f"task {tkey!r:.60} is missing from the task index")
            indexed += 4
        entries = sum(1 for _ in txn.range("task_index", b"", None))
        if entries != indexed:
            e(f"the task index holds {entries} entries for {indexed // 4} tasks")
