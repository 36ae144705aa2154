"""Every check of verify() has a negative test: one damage each, and the sentence that reports it.

Also: every durability setting is asserted on the engine's own flags, since a
SIGKILL cannot tell an fsync from none.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatmdb import Store, open_store
from chatmdb.engines.base import WriteTxn
from chatmdb.store import codec
from chatmdb.store.schema import U64, U64x2, agent_key, task_index_keys

Damage = Callable[[WriteTxn, dict[str, Any]], None]


def _setup(store: Store) -> dict[str, Any]:
    session = store.create_session(session_id="s")
    messages = [store.create_message({"session_id": "s", "content": str(i), "agent_id": "a"}) for i in range(3)]
    context = store.create_shared_context("s", {"v": 1}, context_id="c")
    task = store.create_task({"context_id": "s", "id": "t"})
    return {"session": session, "messages": messages, "context": context, "task": task}


def _reput(txn: WriteTxn, table: str, key: bytes, change: Callable[[dict[str, Any], dict[str, Any]], None]) -> None:
    raw = txn.get(table, key)
    assert raw is not None
    internal, record = codec.decode(raw)
    change(internal, record)
    txn.put(table, key, codec.encode([internal, record]))


N = 1  # the session number of "s": the stores of these tests hold no other session

CASES: dict[str, tuple[Damage, str]] = {
    "session order entry missing": (
        lambda txn, w: txn.delete("session_order", U64.pack(N)),
        "is missing from the session order",
    ),
    "session order entry dangling": (
        lambda txn, w: txn.put("session_order", U64.pack(99), b"nobody"),
        "points at no session",
    ),
    "message of no session": (
        lambda txn, w: txn.put("messages", U64x2.pack(99, 1), txn.get("messages", U64x2.pack(N, 1)) or b""),
        "belongs to no session",
    ),
    "message under the wrong key": (
        lambda txn, w: _reput(txn, "messages", U64x2.pack(N, 2), lambda i, r: r.update(seq=7)),
        "stored under the wrong key",
    ),
    "a gap in seq": (
        lambda txn, w: (txn.delete("messages", U64x2.pack(N, 2)),
                        txn.delete("msg_uuid", w["messages"][1]["message_uuid"].encode())),
        "has a gap before seq 3",
    ),
    "uuid index entry missing": (
        lambda txn, w: txn.delete("msg_uuid", w["messages"][0]["message_uuid"].encode()),
        "is missing from the uuid index",
    ),
    "agent index entry missing": (
        lambda txn, w: txn.delete("agent_msgs", agent_key(b"a", 1)),
        "is missing from the agent index",
    ),
    "message count wrong": (
        lambda txn, w: _reput(txn, "sessions", b"s", lambda i, r: r.update(message_count=5)),
        "counts 5 messages but holds 3",
    ),
    "uuid index entry dangling": (
        lambda txn, w: txn.put("msg_uuid", b"ghost", U64x2.pack(N, 42)),
        "msg_uuid entry",
    ),
    "agent index entry dangling": (
        lambda txn, w: txn.put("agent_msgs", agent_key(b"ghost", 99), U64x2.pack(N, 42)),
        "agent_msgs entry",
    ),
    "context missing from its session's index": (
        lambda txn, w: [txn.delete("session_contexts", k) for k, _ in list(txn.range("session_contexts", b"", None))],
        "is missing from its session's index",
    ),
    "session context entry dangling": (
        lambda txn, w: txn.put("session_contexts", U64x2.pack(N, 77), b"nocontext"),
        "points at no context",
    ),
    "event of no session": (
        lambda txn, w: txn.put("events", U64x2.pack(99, 1000), codec.encode(["context_updated", b"c"])),
        "belongs to no session",
    ),
    "message event dangling": (
        lambda txn, w: txn.put("events", U64x2.pack(N, 1000), codec.encode(["message", U64x2.pack(N, 42)])),
        "points at no message",
    ),
    "message events miscounted": (
        lambda txn, w: (txn.delete("events", U64x2.pack(N, 1)), txn.delete("event_order", U64.pack(1))),
        "message events for 3 messages",
    ),
    "store-wide log entry not in its session's log": (
        lambda txn, w: txn.put("event_order", U64.pack(1), codec.encode([N, "message", U64x2.pack(N, 3), None])),
        "is not in its session's log",
    ),
    "store-wide log miscounted": (
        lambda txn, w: txn.delete("event_order", U64.pack(2)),
        "the store-wide event log holds",
    ),
    "task missing from the task index": (
        lambda txn, w: txn.delete("task_index", task_index_keys(N, "submitted", 1)[0]),
        "is missing from the task index",
    ),
    "task index miscounted": (
        lambda txn, w: txn.put("task_index", b"A" + U64.pack(999), b"t"),
        "the task index holds",
    ),
    "a record fails its checksum": (
        lambda txn, w: txn.put("contexts", b"c", (txn.get("contexts", b"c") or b"")[:-1] + b"\x00"),
        "checksum",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_verify_check_reports_its_damage(store: Store, case: str) -> None:
    world = _setup(store)
    assert store.verify()["ok"], store.verify()["errors"]
    damage, sentence = CASES[case]
    store.engine.write(lambda txn: damage(txn, world))
    report = store.verify()
    assert not report["ok"]
    assert any(sentence in error for error in report["errors"]), report["errors"]


@pytest.mark.parametrize("durability", ["full", "process"])
def test_durability_is_the_engines_own_setting(tmp_path: Path, backend: str, durability: str) -> None:
    with open_store(tmp_path / "db", backend=backend, durability=durability) as store:
        if backend == "lmdb":
            flags = store.engine._live_env().env.flags()  # type: ignore[attr-defined]
            # full: fsync data and meta on every commit; never writemap (with no sync it can corrupt).
            assert (flags["sync"], flags["metasync"], flags["writemap"]) == (
                durability == "full", durability == "full", False
            ), flags
        else:
            conn = store.engine._conn()  # type: ignore[attr-defined]
            synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
            assert synchronous == (2 if durability == "full" else 1)  # FULL, NORMAL
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
