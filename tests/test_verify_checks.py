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
from chatmdb.store.schema import U64, U64x2, agent_key, header_key, task_index_keys

Damage = Callable[[WriteTxn, dict[str, Any]], object]


def _setup(store: Store) -> dict[str, Any]:
    session = store.create_session(session_id="s")
    messages = [store.create_message({"session_id": "s", "content": str(i), "agent_id": "a"}) for i in range(3)]
    context = store.create_shared_context("s", {"v": 1}, context_id="c")
    task = store.create_task({"context_id": "s", "id": "t"})
    store.create_task({"context_id": "s", "id": "t2"})  # two tasks: the task index is counted per task
    return {"session": session, "messages": messages, "context": context, "task": task}


def _reput(txn: WriteTxn, table: str, key: bytes, change: Callable[[dict[str, Any], dict[str, Any]], None]) -> None:
    raw = txn.get(table, key)
    assert raw is not None
    internal, record = codec.decode(raw)
    change(internal, record)
    txn.put(table, key, codec.encode([internal, record]))


def _recount(txn: WriteTxn, n: int, count: int) -> None:
    """Give session *n* a wrong message count (in its header)."""
    txn.put("messages", header_key(n), codec.encode([count, None]))


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
    "session order entry naming another session": (
        lambda txn, w: txn.put("session_order", U64.pack(N), b"someone-else"),
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
    "message under another session's key": (
        lambda txn, w: _reput(txn, "messages", U64x2.pack(N, 2), lambda i, r: r.update(session_id="other")),
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
        lambda txn, w: _recount(txn, N, 5),
        "counts 5 messages but holds 3",
    ),
    "message count missing": (
        lambda txn, w: txn.delete("messages", header_key(N)),
        "has no message count",
    ),
    "message count of no session": (
        lambda txn, w: _recount(txn, 99, 0),
        "the message count of session number 99 belongs to no session",
    ),
    "message offsets out of order": (
        lambda txn, w: _reput(txn, "messages", U64x2.pack(N, 3), lambda i, r: i.update(g=1)),
        "has an offset below an older message's",
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
    "message event in a session's log": (
        lambda txn, w: txn.put("events", U64x2.pack(N, 1000), codec.encode(["message", U64x2.pack(N, 42)])),
        "is in a session's log of context and task events",
    ),
    "message missing from the store-wide log": (
        lambda txn, w: txn.delete("event_order", U64.pack(1)),
        "1 messages are missing from the store-wide event log, the first at offset 1",
    ),
    "store-wide message event pointing at another message": (
        lambda txn, w: txn.put("event_order", U64.pack(1), codec.encode([N, "message", U64x2.pack(N, 3), None])),
        "message event 1 of the store-wide log points at no message of that offset",
    ),
    "store-wide log entry not in its session's log": (
        lambda txn, w: txn.put("event_order", U64.pack(4), codec.encode([N, "context_updated", b"other", None])),
        "is not in its session's log",
    ),
    "store-wide log entry with no session event": (
        lambda txn, w: txn.delete("events", U64x2.pack(N, 4)),  # 1-3 are the messages, 4 the context
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


def test_sqlite_integrity_check_is_reported(tmp_path: Path) -> None:
    """The engine's own check: SQLite's integrity_check (LMDB's, a truncated file, is in
    tests/reliability/test_corruption.py, in a subprocess since a truncated map can fault)."""
    with open_store(tmp_path / "db", backend="sqlite") as store:
        _setup(store)
    (file,) = (tmp_path / "db").glob("*.sqlite3")
    raw = bytearray(file.read_bytes())
    raw[36:40] = (3).to_bytes(4, "big")  # the header's freelist page count: none are free
    file.write_bytes(bytes(raw))
    with open_store(tmp_path / "db", backend="sqlite") as store:
        report = store.verify()
    assert not report["ok"]
    assert any("freelist" in error for error in report["errors"]), report["errors"]


# The message a report must name, for the checks about one message (its uuid, as repr() shows it).
NAMED: dict[str, Callable[[dict[str, Any]], str]] = {
    "message of no session": lambda w: w["messages"][0]["message_uuid"],
    "message under the wrong key": lambda w: w["messages"][1]["message_uuid"],
    "message under another session's key": lambda w: w["messages"][1]["message_uuid"],
    "uuid index entry missing": lambda w: w["messages"][0]["message_uuid"],
    "agent index entry missing": lambda w: w["messages"][0]["message_uuid"],
    "message offsets out of order": lambda w: w["messages"][2]["message_uuid"],
}


@pytest.mark.parametrize("case", sorted(NAMED))
def test_a_report_names_the_damaged_message(store: Store, case: str) -> None:
    world = _setup(store)
    damage, sentence = CASES[case]
    store.engine.write(lambda txn: damage(txn, world))
    expected = f"message {NAMED[case](world)!r} "
    assert any(error.startswith(expected) and sentence in error for error in store.verify()["errors"])


def test_verify_counts_every_entry_it_checked(store: Store) -> None:
    _setup(store)
    # 3 messages, each with a uuid and an agent index entry; 6 events (3 messages, a context, two tasks),
    # of which the session's log holds the context's and the tasks'.
    assert store.verify()["checked"] == {
        "sessions": 1, "messages": 3, "msg_uuid": 3, "agent_msgs": 3, "contexts": 1,
        "events": 3, "event_order": 6, "tasks": 2,
    }


def test_verify_counts_from_where_retention_left_off(store: Store) -> None:
    store.create_session(session_id="s")
    uuids = [store.create_message({"session_id": "s", "content": i, "agent_id": "a"})["message_uuid"] for i in range(5)]
    assert store.prune(keep_last=3, session_id="s")["pruned"] == 2
    assert store.verify()["ok"], store.verify()["errors"]  # seq 3..5 after a pruned 1..2 is no gap
    # A gap after the pruned prefix still is one, and a count is of what is held, not what was numbered.
    store.engine.write(lambda txn: (txn.delete("messages", U64x2.pack(N, 4)), txn.delete("msg_uuid", uuids[3].encode()),
                                    txn.delete("agent_msgs", agent_key(b"a", 4))))
    store.engine.write(lambda txn: _recount(txn, N, 6))
    errors = store.verify()["errors"]
    assert any("has a gap before seq 5" in error for error in errors), errors
    assert any("counts 4 messages but holds 3" in error for error in errors), errors  # 6 and 5 numbered, 2 pruned


def test_a_message_of_no_session_does_not_stop_the_checks_of_the_others(store: Store) -> None:
    world = _setup(store)

    def damage(txn: WriteTxn) -> None:
        # Session numbers start at 1: a message under number 0 is the first the walk meets.
        txn.put("messages", U64x2.pack(0, 1), txn.get("messages", U64x2.pack(N, 1)) or b"")
        txn.delete("msg_uuid", world["messages"][2]["message_uuid"].encode())

    store.engine.write(damage)
    errors = store.verify()["errors"]
    assert any("belongs to no session" in error for error in errors), errors
    assert any("is missing from the uuid index" in error for error in errors), errors


def test_a_session_that_holds_no_message_but_counts_some(store: Store) -> None:
    store.create_session(session_id="empty")
    store.engine.write(lambda txn: _recount(txn, N, 2))
    errors = store.verify()["errors"]
    assert any("'empty' counts 2 messages but holds 0" in error for error in errors), errors
