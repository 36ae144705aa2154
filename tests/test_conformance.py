"""The store contract, held to the same tests on every backend."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from _util import snapshot
from chatmdb import (
    ChatMDBError,
    Conflict,
    InvalidTransition,
    NotFound,
    SessionNotFound,
    Store,
    StoreClosed,
    TooLarge,
    ValidationError,
    open_store,
)


def add(store: Store, session_id: str, n: int, **fields: Any) -> list[dict[str, Any]]:
    return [store.create_message({"session_id": session_id, "content": f"m{i}", **fields}) for i in range(n)]


def seqs(items: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in items]


# -- errors -----------------------------------------------------------------------


def test_error_tree() -> None:
    assert issubclass(ValidationError, ValueError) and issubclass(ValidationError, ChatMDBError)
    assert issubclass(SessionNotFound, ValueError) and issubclass(SessionNotFound, ChatMDBError)
    assert issubclass(TooLarge, ValidationError)
    assert issubclass(InvalidTransition, Conflict)


# -- sessions ---------------------------------------------------------------------


def test_create_and_get_session(store: Store) -> None:
    created = store.create_session(title="Standup", metadata={"team": "core"})
    assert set(created) >= {"id", "title", "created_at", "session_metadata", "message_count", "last_message_at"}
    assert created["message_count"] == 0 and created["last_message_at"] is None
    assert store.get_session(created["id"]) == created
    assert store.get_session("nope") is None
    json.dumps(created)


def test_create_session_with_id_and_conflict(store: Store) -> None:
    store.create_session(title="a", session_id="s1")
    before = snapshot(store)
    with pytest.raises(Conflict):
        store.create_session(title="b", session_id="s1")
    assert snapshot(store) == before
    assert store.get_session("s1")["title"] == "a"  # type: ignore[index]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"title": 5},
        {"session_id": ""},
        {"session_id": 7},
        {"session_id": "x" * 300},
        {"metadata": "nope"},
        {"metadata": {"k": object()}},
        {"metadata": {1: "int key"}},
        {"title": "\udcff"},
    ],
)
def test_create_session_rejects_bad_input(store: Store, kwargs: dict[str, Any]) -> None:
    before = snapshot(store)
    with pytest.raises(ValidationError):
        store.create_session(**kwargs)
    assert snapshot(store) == before


def test_list_sessions_newest_first_with_cursor(store: Store) -> None:
    ids = [store.create_session(title=f"s{i}")["id"] for i in range(7)]
    first = store.list_sessions(limit=3)
    assert [s["id"] for s in first] == ids[::-1][:3]
    second = store.list_sessions(limit=3, cursor=first[-1]["id"])
    third = store.list_sessions(limit=3, cursor=second[-1]["id"])
    assert [s["id"] for s in first + second + third] == ids[::-1]
    with pytest.raises(ValidationError):
        store.list_sessions(limit=0)
    with pytest.raises(ValidationError):
        store.list_sessions(cursor="no-such-session")


def test_update_session(store: Store, session: dict[str, Any]) -> None:
    updated = store.update_session(session["id"], title="renamed", metadata={"a": 1})
    assert updated["title"] == "renamed" and updated["session_metadata"] == {"a": 1}
    assert store.get_session(session["id"]) == updated
    before = snapshot(store)
    with pytest.raises(SessionNotFound):
        store.update_session("missing", title="x")
    with pytest.raises(ValidationError):
        store.update_session(session["id"], metadata=[1])  # type: ignore[arg-type]
    assert snapshot(store) == before


def test_delete_session_removes_everything(store: Store) -> None:
    keep = store.create_session(title="keep")
    add(store, keep["id"], 2, agent_id="a1")
    before = snapshot(store)
    doomed = store.create_session(title="doomed")
    msgs = add(store, doomed["id"], 5, agent_id="a1")
    store.create_shared_context(doomed["id"], {"x": 1})
    task = store.create_task({"context_id": doomed["id"]})
    store.update_task(task["id"], state="working")
    assert store.delete_session(doomed["id"]) is True
    assert store.get_session(doomed["id"]) is None
    assert store.get_message(msgs[0]["message_uuid"]) is None
    assert store.get_task(task["id"]) is None
    assert [m["session_id"] for m in store.get_agent_messages("a1")] == [keep["id"]] * 2
    # Everything the doomed session added is gone, except the store-wide counters.
    after = snapshot(store)
    assert {t: v for t, v in after.items() if t != "meta"} == {t: v for t, v in before.items() if t != "meta"}
    assert store.verify()["ok"]
    assert store.delete_session(doomed["id"]) is False


# -- messages ---------------------------------------------------------------------


def test_create_message_assigns_fields(store: Store, session: dict[str, Any]) -> None:
    msg = store.create_message(
        {"session_id": session["id"], "content": "hello", "role": "user", "agent_id": "chloe", "metadata": {"k": [1]}}
    )
    assert msg["seq"] == 1 and msg["content"] == "hello" and msg["role"] == "user"
    uuid.UUID(msg["message_uuid"])
    assert msg["created_at"].endswith("+00:00")
    assert store.get_message(msg["message_uuid"]) == msg
    got = store.get_session(session["id"])
    assert got is not None and got["message_count"] == 1 and got["last_message_at"] == msg["created_at"]
    json.dumps(msg)


def test_generated_message_uuids_are_version_7_and_grow_with_time(store: Store, session: dict[str, Any]) -> None:
    made = []
    for _ in range(3):
        made.append(uuid.UUID(store.create_message({"session_id": session["id"]})["message_uuid"]))
        before = made[-1].int >> 80  # its milliseconds
        while time.time_ns() // 1_000_000 == before:  # bounded: the clock moves on within a millisecond
            pass
    assert [(u.version, u.variant) for u in made] == [(7, uuid.RFC_4122)] * 3
    assert sorted(str(u) for u in made) == [str(u) for u in made]  # as text too: the index's key order
    assert all(abs((u.int >> 80) - time.time() * 1000) < 60_000 for u in made)


def test_seq_is_per_session_and_contiguous(store: Store) -> None:
    a, b = store.create_session(), store.create_session()
    for i in range(6):
        store.create_message({"session_id": (a if i % 2 else b)["id"], "content": i})
    assert seqs(store.get_session_messages(a["id"], direction="asc")) == [1, 2, 3]  # type: ignore[arg-type]
    assert seqs(store.get_session_messages(b["id"], direction="asc")) == [1, 2, 3]  # type: ignore[arg-type]


def test_client_fields_kept_and_seq_ignored(store: Store, session: dict[str, Any]) -> None:
    given = {
        "session_id": session["id"],
        "message_uuid": "client-1",
        "created_at": "2025-01-02T03:04:05+00:00",
        "seq": 99,
        "extra": {"nested": [1, 2.5, None, True]},
    }
    msg = store.create_message(given)
    assert msg["message_uuid"] == "client-1" and msg["created_at"] == given["created_at"]
    assert msg["seq"] == 1 and msg["extra"] == given["extra"]


def test_create_message_unknown_session(store: Store) -> None:
    before = snapshot(store)
    with pytest.raises(SessionNotFound) as info:
        store.create_message({"session_id": "nope", "content": "x"})
    assert isinstance(info.value, ValueError)
    assert snapshot(store) == before


@pytest.mark.parametrize(
    "data",
    [
        None,
        "text",
        ["session_id"],
        {},
        {"content": "no session"},
        {"session_id": 5, "content": "x"},
        {"session_id": "S", "message_uuid": 5},
        {"session_id": "S", "agent_id": 5},
        {"session_id": "S", "created_at": "yesterday"},
        {"session_id": "S", "content": b"bytes"},
        {"session_id": "S", "content": {1, 2}},
        {"session_id": "S", "content": float("nan")},
        {"session_id": "S", "content": 2**70},
        {"session_id": "S", "content": "\ud800"},
        {"session_id": "S", "metadata": {3: "int key"}},
    ],
)
def test_create_message_rejects_bad_data(store: Store, data: Any) -> None:
    store.create_session(session_id="S")
    before = snapshot(store)
    with pytest.raises(ValidationError):
        store.create_message(data)
    assert snapshot(store) == before


def test_deep_nesting_rejected(store: Store, session: dict[str, Any]) -> None:
    deep: Any = "leaf"
    for _ in range(200):
        deep = [deep]
    before = snapshot(store)
    with pytest.raises(ValidationError):
        store.create_message({"session_id": session["id"], "content": deep})
    assert snapshot(store) == before


def test_too_large(make_store: Any) -> None:
    store = make_store(max_message_size=1000)
    session = store.create_session()
    store.create_message({"session_id": session["id"], "content": "x" * 700})
    before = snapshot(store)
    with pytest.raises(TooLarge) as info:
        store.create_message({"session_id": session["id"], "content": "x" * 1000})
    assert isinstance(info.value, ValidationError) and info.value.code == "too_large"
    assert snapshot(store) == before


def test_default_size_limit_is_one_mib(store: Store, session: dict[str, Any]) -> None:
    store.create_message({"session_id": session["id"], "content": "x" * ((1 << 20) - 200)})
    with pytest.raises(TooLarge):
        store.create_message({"session_id": session["id"], "content": "x" * (1 << 20)})


def test_idempotent_create(store: Store, session: dict[str, Any]) -> None:
    first = store.create_message({"session_id": session["id"], "message_uuid": "u1", "content": "a"})
    before = snapshot(store)
    again = store.create_message({"session_id": session["id"], "message_uuid": "u1", "content": "changed"})
    assert again == first
    assert snapshot(store) == before
    other = store.create_session()
    before = snapshot(store)
    with pytest.raises(Conflict):
        store.create_message({"session_id": other["id"], "message_uuid": "u1", "content": "a"})
    assert snapshot(store) == before


def test_get_message_validation(store: Store) -> None:
    assert store.get_message("missing") is None
    for bad in (None, 5, "", "x" * 1000):
        with pytest.raises(ValidationError):
            store.get_message(bad)  # type: ignore[arg-type]


# -- paging -------------------------------------------------------------------------


def test_list_form_keeps_original_signature(store: Store, session: dict[str, Any]) -> None:
    add(store, session["id"], 5)
    page = store.get_session_messages(session["id"], 1, 2)
    assert isinstance(page, list) and seqs(page) == [4, 3]
    assert store.get_session_messages("unknown-session") == []


def test_pagination_shape(store: Store, session: dict[str, Any]) -> None:
    add(store, session["id"], 5)
    page = store.get_session_messages(session["id"], limit=2, include_total=True)
    assert isinstance(page, dict)
    assert seqs(page["items"]) == [5, 4]
    assert page["pagination"] == {"total": 5, "limit": 2, "direction": "desc", "next_cursor": "4", "skip": 0}
    last = store.get_session_messages(session["id"], limit=2, cursor="2", include_total=True)
    assert isinstance(last, dict)
    assert seqs(last["items"]) == [1]
    assert "next_cursor" not in last["pagination"] and "skip" not in last["pagination"]


@pytest.mark.parametrize("direction", ["asc", "desc"])
@pytest.mark.parametrize("limit", [1, 3, 10, 11])
def test_cursor_walk_covers_everything_once(store: Store, session: dict[str, Any], direction: str, limit: int) -> None:
    add(store, session["id"], 10)
    cursor, seen = None, []
    for _ in range(20):
        page = store.get_session_messages(session["id"], limit=limit, cursor=cursor, direction=direction, include_total=True)
        assert isinstance(page, dict)
        seen += seqs(page["items"])
        cursor = page["pagination"].get("next_cursor")
        if cursor is None:
            break
    expected = list(range(1, 11))
    assert seen == (expected if direction == "asc" else expected[::-1])


def test_next_cursor_exactly_when_more(store: Store, session: dict[str, Any]) -> None:
    add(store, session["id"], 4)
    full = store.get_session_messages(session["id"], limit=4, include_total=True)
    assert isinstance(full, dict) and "next_cursor" not in full["pagination"]
    empty = store.get_session_messages(session["id"], limit=4, cursor="1", include_total=True)
    assert isinstance(empty, dict) and empty["items"] == [] and "next_cursor" not in empty["pagination"]


def test_skip(store: Store, session: dict[str, Any]) -> None:
    add(store, session["id"], 10)
    assert seqs(store.get_session_messages(session["id"], skip=3, limit=2)) == [7, 6]  # type: ignore[arg-type]
    assert seqs(store.get_session_messages(session["id"], skip=3, limit=2, direction="asc")) == [4, 5]  # type: ignore[arg-type]
    assert store.get_session_messages(session["id"], skip=10) == []
    assert seqs(store.get_session_messages(session["id"], skip=1, cursor="5", limit=2)) == [3, 2]  # type: ignore[arg-type]


def test_cursor_while_writers_append(store: Store, session: dict[str, Any]) -> None:
    add(store, session["id"], 5)
    page = store.get_session_messages(session["id"], limit=2, direction="asc", include_total=True)
    assert isinstance(page, dict)
    add(store, session["id"], 3)
    rest = store.get_session_messages(
        session["id"], limit=100, direction="asc", cursor=page["pagination"]["next_cursor"], include_total=True
    )
    assert isinstance(rest, dict)
    assert seqs(page["items"]) + seqs(rest["items"]) == list(range(1, 9))
    assert rest["pagination"]["total"] == 8


@pytest.mark.parametrize(
    "kwargs",
    [
        {"direction": "up"},
        {"limit": 0},
        {"limit": 1001},
        {"limit": True},
        {"limit": "5"},
        {"skip": -1},
        {"cursor": "abc"},
        {"cursor": "-1"},
        {"cursor": "1.5"},
        {"cursor": "9" * 30},
        {"cursor": [1]},
        {"include_total": "yes"},
    ],
)
def test_paging_rejects_bad_arguments(store: Store, session: dict[str, Any], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        store.get_session_messages(session["id"], **kwargs)


def test_get_messages_after(store: Store, session: dict[str, Any]) -> None:
    add(store, session["id"], 7)
    items, more = store.get_messages_after(session["id"], 2, limit=3)
    assert seqs(items) == [3, 4, 5] and more
    items, more = store.get_messages_after(session["id"], 5, limit=3)
    assert seqs(items) == [6, 7] and not more


def test_agent_messages(store: Store) -> None:
    a, b = store.create_session(), store.create_session()
    made = []
    for i in range(6):
        made.append(store.create_message({"session_id": (a, b)[i % 2]["id"], "agent_id": "bot", "content": i}))
        store.create_message({"session_id": a["id"], "agent_id": "other", "content": i})
    newest = store.get_agent_messages("bot", limit=4)
    assert [m["content"] for m in newest] == [5, 4, 3, 2]
    older = store.get_agent_messages("bot", limit=4, cursor=newest[-1]["message_uuid"])
    assert [m["content"] for m in older] == [1, 0]
    asc = store.get_agent_messages("bot", limit=3, direction="asc")
    asc += store.get_agent_messages("bot", limit=3, direction="asc", cursor=asc[-1]["message_uuid"])
    assert [m["message_uuid"] for m in asc] == [m["message_uuid"] for m in made]
    assert store.get_agent_messages("nobody") == []
    with pytest.raises(ValidationError):
        store.get_agent_messages("bot", cursor=store.get_agent_messages("other")[0]["message_uuid"])
    with pytest.raises(ValidationError):
        store.get_agent_messages("bot", direction="sideways")


# -- agent cards ----------------------------------------------------------------------


def test_agent_cards(store: Store) -> None:
    card = {
        "agent_id": "helper",
        "name": "Helper",
        "description": "does things",
        "url": "http://127.0.0.1:9/a2a",
        "version": "0.3",
        "capabilities": {"streaming": True},
        "skills": [{"id": "s", "name": "S"}],
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
    }
    stored = store.upsert_agent_card(card)
    assert {k: stored[k] for k in card} == card
    assert store.get_agent_card("helper") == stored
    replaced = store.upsert_agent_card({**card, "description": "does more"})
    assert replaced["description"] == "does more" and replaced["created_at"] == stored["created_at"]
    assert [c["agent_id"] for c in store.list_agent_cards()] == ["helper"]
    assert store.delete_agent_card("helper") is True
    assert store.get_agent_card("helper") is None and store.delete_agent_card("helper") is False


@pytest.mark.parametrize("card", [None, {}, {"agent_id": "x"}, {"name": "no id"}, {"agent_id": 1, "name": "n"}, {"agent_id": "x", "name": ""}])
def test_agent_card_rejects_bad_input(store: Store, card: Any) -> None:
    before = snapshot(store)
    with pytest.raises(ValidationError):
        store.upsert_agent_card(card)
    assert snapshot(store) == before


def test_init_database_is_idempotent(store: Store) -> None:
    store.init_database()
    first = snapshot(store)
    store.init_database()
    assert snapshot(store) == first
    cards = {c["agent_id"]: c for c in store.list_agent_cards()}
    assert cards["chloe"]["description"] == "Git operations and general help"
    assert cards["phil_connors"]["description"] == "Task management and coordination"
    titles = [s["title"] for s in store.list_sessions()]
    assert titles == ["Default Session"]


# -- shared contexts ------------------------------------------------------------------


def test_shared_contexts(store: Store, session: dict[str, Any]) -> None:
    ctx = store.create_shared_context(session["id"], {"plan": [1]}, context_id="c1")
    assert ctx["version"] == 1 and ctx["data"] == {"plan": [1]} and ctx["session_id"] == session["id"]
    v2 = store.update_shared_context("c1", {"plan": [1, 2]})
    assert v2["version"] == 2
    v3 = store.update_shared_context("c1", {"plan": [3]}, expected_version=2)
    assert v3["version"] == 3 and store.get_shared_context("c1") == v3
    before = snapshot(store)
    with pytest.raises(Conflict):
        store.update_shared_context("c1", {"plan": []}, expected_version=2)
    with pytest.raises(NotFound):
        store.update_shared_context("missing", {})
    with pytest.raises(Conflict):
        store.create_shared_context(session["id"], {}, context_id="c1")
    with pytest.raises(SessionNotFound):
        store.create_shared_context("missing", {})
    with pytest.raises(ValidationError):
        store.create_shared_context(session["id"], "not a dict")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        store.update_shared_context("c1", {}, expected_version="2")  # type: ignore[arg-type]
    assert snapshot(store) == before
    store.create_shared_context(session["id"], {}, context_id="c0")
    assert [c["id"] for c in store.list_session_contexts(session["id"])] == ["c1", "c0"]
    assert store.list_session_contexts("missing") == []
    assert store.delete_shared_context("c1") is True and store.delete_shared_context("c1") is False
    assert [c["id"] for c in store.list_session_contexts(session["id"])] == ["c0"]


# -- tasks ------------------------------------------------------------------------------


def test_tasks_lifecycle(store: Store, session: dict[str, Any]) -> None:
    task = store.create_task({"context_id": session["id"], "metadata": {"p": 1}})
    assert task["status"]["state"] == "submitted" and task["kind"] == "task" and task["artifacts"] == []
    working = store.update_task(task["id"], state="working", status_message={"role": "agent", "parts": []})
    assert working["status"]["state"] == "working" and len(working["history"]) == 1
    with_art = store.update_task(task["id"], artifacts=[{"name": "a"}], metadata={"q": 2})
    assert with_art["artifacts"] == [{"name": "a"}] and with_art["metadata"] == {"p": 1, "q": 2}
    done = store.update_task(task["id"], state="completed")
    assert store.get_task(task["id"]) == done
    before = snapshot(store)
    for change in ({"state": "working"}, {"metadata": {"x": 1}}):
        with pytest.raises(InvalidTransition):
            store.update_task(task["id"], **change)  # type: ignore[arg-type]
    assert snapshot(store) == before


def test_task_errors_write_nothing(store: Store, session: dict[str, Any]) -> None:
    store.create_task({"context_id": session["id"], "id": "t1"})
    before = snapshot(store)
    with pytest.raises(Conflict):
        store.create_task({"context_id": session["id"], "id": "t1"})
    with pytest.raises(SessionNotFound):
        store.create_task({"context_id": "missing"})
    with pytest.raises(NotFound):
        store.update_task("missing", state="working")
    for bad in ({"context_id": session["id"], "status": {"state": "sleeping"}}, {"id": "x"}, "task", {"context_id": session["id"], "artifacts": "a"}):
        with pytest.raises(ValidationError):
            store.create_task(bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        store.update_task("t1", state="sleeping")
    with pytest.raises(ValidationError):
        store.update_task("t1")
    assert snapshot(store) == before


def test_list_tasks_newest_status_first(store: Store) -> None:
    a, b = store.create_session(), store.create_session()
    t = [store.create_task({"context_id": (a, b)[i % 2]["id"], "id": f"t{i}"}) for i in range(6)]
    store.update_task("t0", state="working")
    assert [x["id"] for x in store.list_tasks()] == ["t0", "t5", "t4", "t3", "t2", "t1"]
    assert [x["id"] for x in store.list_tasks(context_id=a["id"])] == ["t0", "t4", "t2"]
    assert [x["id"] for x in store.list_tasks(state="working")] == ["t0"]
    assert [x["id"] for x in store.list_tasks(context_id=b["id"], state="submitted")] == ["t5", "t3", "t1"]
    page = store.list_tasks(limit=4)
    rest = store.list_tasks(limit=4, cursor=page[-1]["id"])
    assert [x["id"] for x in page + rest] == ["t0", "t5", "t4", "t3", "t2", "t1"]
    assert store.list_tasks(context_id="missing") == []
    assert len(t) == 6
    for kwargs in ({"state": "nap"}, {"limit": 0}, {"limit": 101}, {"cursor": "missing"}):
        with pytest.raises(ValidationError):
            store.list_tasks(**kwargs)  # type: ignore[arg-type]


# -- operations -------------------------------------------------------------------------


def test_stats(store: Store, session: dict[str, Any]) -> None:
    add(store, session["id"], 3)
    stats = store.stats()
    assert stats["sessions"] == 1 and stats["messages"] == 3 and stats["backend"] == store.backend
    assert stats["bytes_used"] > 0 and stats["file_size"] > 0
    json.dumps(stats)


def test_verify_detects_a_missing_index_entry(store: Store, session: dict[str, Any]) -> None:
    msgs = add(store, session["id"], 3)
    assert store.verify()["ok"]
    store.engine.write(lambda txn: txn.delete("msg_uuid", msgs[1]["message_uuid"].encode()))
    report = store.verify()
    assert not report["ok"] and any("uuid index" in e for e in report["errors"])


def test_verify_detects_a_wrong_counter(store: Store, session: dict[str, Any]) -> None:
    msgs = add(store, session["id"], 3)
    from chatmdb.store.schema import U64x2

    def drop(txn: Any) -> None:
        txn.delete("messages", U64x2.pack(1, 3))
        txn.delete("msg_uuid", msgs[2]["message_uuid"].encode())

    store.engine.write(drop)
    report = store.verify()
    assert not report["ok"] and any("counts 3 messages but holds 2" in e for e in report["errors"])


def test_backup_is_a_complete_copy(store: Store, session: dict[str, Any], tmp_path: Path, backend: str) -> None:
    add(store, session["id"], 20)
    result = store.backup(tmp_path / "copy")
    assert result["bytes"] > 0
    with open_store(tmp_path / "copy", backend=backend) as copy:
        assert copy.verify()["ok"]
        assert copy.get_session_messages(session["id"], limit=100) == store.get_session_messages(session["id"], limit=100)
    with pytest.raises(ValidationError):
        store.backup(tmp_path / "copy")  # not empty


def test_reopen_keeps_everything(make_store: Any) -> None:
    store = make_store("db")
    session = store.create_session(title="persist")
    msgs = add(store, session["id"], 10, agent_id="a")
    ctx = store.create_shared_context(session["id"], {"a": 1})
    task = store.create_task({"context_id": session["id"]})
    store.close()
    again = make_store("db")
    assert again.get_session(session["id"])["message_count"] == 10
    assert again.get_session_messages(session["id"], direction="asc") == msgs
    assert again.get_shared_context(ctx["id"]) == ctx and again.get_task(task["id"]) == task
    assert again.create_message({"session_id": session["id"]})["seq"] == 11
    assert again.verify()["ok"]


def test_closed_store_raises(make_store: Any) -> None:
    store = make_store()
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreClosed):
        store.create_session()
    with pytest.raises(StoreClosed):
        store.get_session("x")


@pytest.mark.parametrize("group_commit", [True, False])
def test_without_group_commit_same_behaviour(make_store: Any, group_commit: bool) -> None:
    store = make_store(group_commit=group_commit)
    session = store.create_session()
    msgs = add(store, session["id"], 3)
    assert seqs(msgs) == [1, 2, 3]
    with pytest.raises(SessionNotFound):
        store.create_message({"session_id": "missing"})


def test_open_store_rejects_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        open_store(tmp_path / "a", backend="redis")
    with pytest.raises(ValidationError):
        open_store(tmp_path / "b", durability="sometimes")
    with pytest.raises(ValidationError):
        open_store(tmp_path / "c", no_such_option=1)


def test_two_stores_on_one_path_share_the_database(make_store: Any) -> None:
    one, two = make_store("same"), make_store("same")
    session = one.create_session()
    two.create_message({"session_id": session["id"]})
    assert one.get_session(session["id"])["message_count"] == 1
    one.close()
    assert two.create_message({"session_id": session["id"]})["seq"] == 2


async def test_async_methods(store: Store, session: dict[str, Any]) -> None:
    msg = await store.aio.create_message({"session_id": session["id"], "content": "async"})
    assert msg["seq"] == 1
    assert store.get_message(msg["message_uuid"]) == msg  # reads stay on the store
    with pytest.raises(SessionNotFound):
        await store.aio.create_message({"session_id": "missing"})
    with pytest.raises(AttributeError):
        store.aio.no_such_method  # type: ignore[attr-defined]  # noqa: B018


# -- room events and saved connections (connection state recovery) ------------------------


async def test_write_outcomes_carry_event_offsets(store: Store, session: dict[str, Any]) -> None:
    first = await store.aio.create_message_outcome({"session_id": session["id"], "message_uuid": "m1"})
    assert first.created and first.offset == 1 and first.record["seq"] == 1
    retry = await store.aio.create_message_outcome({"session_id": session["id"], "message_uuid": "m1"})
    assert not retry.created and retry.offset is None and retry.record == first.record
    ctx = await store.aio.create_shared_context_outcome(session["id"], {"a": 1})
    task = await store.aio.create_task_outcome({"context_id": session["id"]})
    assert (ctx.offset, task.offset) == (2, 3)
    assert store.last_event_offset() == 3
    assert not hasattr(store.aio, "get_session")  # reads are not queued: they stay on the store


def test_events_since(store: Store) -> None:
    a, b, c = store.create_session(), store.create_session(), store.create_session()
    store.create_message({"session_id": a["id"], "content": 1})  # offset 1
    ctx = store.create_shared_context(b["id"], {"v": 1})  # 2
    store.create_message({"session_id": c["id"], "content": "other room"})  # 3
    store.create_message({"session_id": b["id"], "content": 2})  # 4
    store.update_shared_context(ctx["id"], {"v": 2})  # 5
    store.create_message({"session_id": a["id"], "content": 3})  # 6
    events, more = store.events_since([a["id"], b["id"]], after=1)
    assert [(o, name) for o, _, name, _ in events] == [(4, "message"), (5, "context_updated"), (6, "message")]
    assert events[1][3]["data"] == {"v": 2} and not more
    events, more = store.events_since([a["id"], b["id"]], after=0, limit=2)
    assert [o for o, *_ in events] == [1, 4] and more
    assert store.events_since(["missing"], after=0) == ([], False)
    assert store.verify()["ok"]


def test_saved_connections(store: Store) -> None:
    store.save_connection("p1", {"sid": "s1", "rooms": ["r"], "expires_at": 100.0})
    store.save_connection("p2", {"sid": "s2", "rooms": [], "expires_at": None})
    assert store.expire_connections(now=50.0, orphan_expiry=200.0) == 0
    assert store.expire_connections(now=150.0) == 1  # p1 expired; p2 now expires at 200
    assert store.take_connection("p1") is None
    assert store.take_connection("p2") == {"sid": "s2", "rooms": [], "expires_at": 200.0}
    assert store.take_connection("p2") is None
    with pytest.raises(ValidationError):
        store.save_connection("", {})


async def test_events_after_is_the_store_wide_log_in_offset_order(store: Store) -> None:
    a, b = store.create_session(), store.create_session()
    m1 = await store.aio.create_message_outcome({"session_id": a["id"], "content": 1}, origin="sid-1")  # offset 1
    ctx = await store.aio.create_shared_context_outcome(b["id"], {"v": 1}, origin="sid-2")  # 2
    await store.aio.create_message_outcome({"session_id": b["id"], "content": 2})  # 3
    await store.aio.update_shared_context_outcome(ctx.record["id"], {"v": 2}, origin="sid-3")  # 4
    await store.aio.create_task_outcome({"context_id": a["id"]}, origin="sid-4")  # 5
    events, last = store.events_after(0)
    assert [(o, s, name, origin) for o, s, name, _, origin in events] == [
        (1, a["id"], "message", "sid-1"),
        (3, b["id"], "message", None),
        (4, b["id"], "context_updated", "sid-3"),  # the older change of the context is superseded
        (5, a["id"], "task_updated", "sid-4"),
    ]
    assert last == 5 and events[0][3] == m1.record and events[2][3]["data"] == {"v": 2}
    page, last = store.events_after(0, limit=2)
    assert [o for o, *_ in page] == [1, 2] and last == 2  # a page holds the first change of a context
    assert store.events_after(2, limit=1)[1] == 3
    assert store.events_after(5) == ([], 5)
    store.delete_session(a["id"])
    assert [o for o, *_ in store.events_after(0)[0]] == [3, 4]
    assert store.verify()["ok"]
    with pytest.raises(ValidationError):
        store.events_after(-1)


def test_verify_detects_a_missing_entry_of_the_store_wide_event_log(store: Store, session: dict[str, Any]) -> None:
    add(store, session["id"], 2)
    from chatmdb.store.schema import U64

    store.engine.write(lambda txn: txn.delete("event_order", U64.pack(2)))
    report = store.verify()
    assert not report["ok"] and any("store-wide event log" in e for e in report["errors"])


def test_events_since_says_more_when_superseded_changes_fill_its_read(store: Store) -> None:
    # One context changed 15 times, then 5 messages: the page must not end with "no more".
    s = store.create_session()
    ctx = store.create_shared_context(s["id"], {"v": 0})
    for v in range(14):
        store.update_shared_context(ctx["id"], {"v": v + 1})
    for i in range(5):
        store.create_message({"session_id": s["id"], "content": i})
    seen: list[int] = []
    after, more = 0, True
    for _ in range(20):  # page through, bounded
        events, more = store.events_since([s["id"]], after, limit=2)
        seen += [o for o, *_ in events]
        if not more:
            break
        after = events[-1][0] if events else after + 12
    assert not more
    assert [e[2] for e in store.events_since([s["id"]], 0, limit=1000)[0]] == ["context_updated"] + ["message"] * 5
    assert seen[-5:] == [16, 17, 18, 19, 20]  # every message, whatever the superseded changes before them
    a, b = store.create_session(), store.create_session()
    for i in range(12):
        store.create_message({"session_id": a["id"], "content": i})
    for i in range(3):
        store.create_message({"session_id": b["id"], "content": i})
    events, more = store.events_since([a["id"], b["id"]], 20, limit=2)
    assert more and [o for o, *_ in events] == sorted(o for o, *_ in events)
