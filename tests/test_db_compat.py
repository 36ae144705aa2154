"""chatmdb.db as an application written for the old SQLite ``db.py`` uses it.

Every module-level function is called with the argument forms the old module
took (positional and keyword), and its results are checked for the shapes the
old module returned, on both backends. The fixture opens the shared store with
``db.configure`` in a temporary directory and closes it afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from chatmdb import Conflict, InvalidTransition, NotFound, SessionNotFound, ValidationError, db

BACKENDS = ["lmdb", "sqlite"]

OLD_DEFAULT_CARDS: dict[str, dict[str, Any]] = {
    "chloe": {
        "id": "chloe",
        "name": "Chloe",
        "description": "Git operations and general help",
        "color": "rgb(34, 197, 94)",
        "icon_path": "agents/chloe/src/assets/chloe.svg",
        "capabilities": ["git", "search", "explain"],
        "is_active": True,
    },
    "phil_connors": {
        "id": "phil_connors",
        "name": "Phil Connors",
        "description": "Task management and coordination",
        "color": "rgb(249, 115, 22)",
        "icon_path": "agents/phil_connors/src/assets/phil-connors.svg",
        "capabilities": ["task", "coordinate", "plan"],
        "is_active": True,
    },
}

SESSION_FIELDS = {"id", "title", "created_at", "session_metadata", "message_count", "last_message_at"}


@pytest.fixture(params=BACKENDS)
def app_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The shared store of chatmdb.db, opened on one backend; yields the backend name."""
    backend = str(request.param)
    db.configure(str(tmp_path / "db"), backend=backend)
    try:
        yield backend
    finally:
        db.reset()


def _is_iso8601(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _fill(session_id: str, count: int) -> list[dict[str, Any]]:
    return [
        db.create_message({"session_id": session_id, "content": f"m{i}", "role": "user"}) for i in range(1, count + 1)
    ]


def _seqs(messages: Any) -> list[int]:
    assert isinstance(messages, list)
    return [m["seq"] for m in messages]


# -- lazy opening from the environment ----------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_lazy_open_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    path = tmp_path / "from-env"
    db.reset()  # forget any configure() of an earlier test
    monkeypatch.setenv("CHATMDB_PATH", str(path))
    monkeypatch.setenv("CHATMDB_BACKEND", backend)
    try:
        assert not path.exists()
        db.init_database()  # no configure(): opened on first use
        assert path.is_dir()
        files = {p.name for p in path.iterdir()}
        if backend == "lmdb":
            assert "data.mdb" in files
        else:
            assert "chatmdb.sqlite3" in files
        assert db.get_store().backend == backend
        assert Path(db.get_store().path).absolute() == path.absolute()
        assert [s["title"] for s in db.list_sessions()] == ["Default Session"]
        db.close()
        # Reopened lazily, at the same place, with the data still there.
        assert [s["title"] for s in db.list_sessions()] == ["Default Session"]
    finally:
        db.reset()


def test_close_then_reopen_where_configure_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATMDB_PATH", str(tmp_path / "env-path"))
    db.configure(str(tmp_path / "configured"), backend="sqlite")
    try:
        db.create_session("kept", "s1")
        db.close()
        assert db.get_session("s1") is not None  # not a new empty database at $CHATMDB_PATH
        assert db.get_store().backend == "sqlite"
        assert not (tmp_path / "env-path").exists()
    finally:
        db.reset()


# -- fact 1: init_database ------------------------------------------------------------------


def test_init_database_default_cards_have_old_fields(app_db: str) -> None:
    db.init_database()
    for agent_id, expected in OLD_DEFAULT_CARDS.items():
        card = db.get_agent_card(agent_id)
        assert card is not None
        for field, value in expected.items():
            assert card.get(field) == value, (agent_id, field, card.get(field))
        assert _is_iso8601(card.get("created_at"))
    cards = db.list_agent_cards()
    assert {"chloe", "phil_connors"} <= {c.get("id") for c in cards}
    assert all("id" in c for c in cards)


def test_init_database_is_idempotent(app_db: str) -> None:
    db.init_database()
    first = {c.get("id", c.get("agent_id")): c for c in db.list_agent_cards()}
    sessions = db.list_sessions()
    db.init_database()
    assert [s["title"] for s in db.list_sessions()].count("Default Session") == 1
    assert db.list_sessions() == sessions
    again = db.list_agent_cards()
    assert len(again) == len(first) == 2
    for card in again:
        key = card.get("id", card.get("agent_id"))
        assert card == first[key]
        assert card["created_at"] == first[key]["created_at"]


def test_init_database_default_session_shape(app_db: str) -> None:
    db.init_database()
    [default] = [s for s in db.list_sessions() if s["title"] == "Default Session"]
    assert set(default) >= SESSION_FIELDS
    assert default["session_metadata"] == {}
    assert default["message_count"] == 0
    assert default["last_message_at"] is None
    assert db.get_session(default["id"]) == default


# -- fact 2: agent cards ----------------------------------------------------------------------


def test_agent_card_roundtrip_by_id(app_db: str) -> None:
    card = {
        "id": "x",
        "name": "Xavier",
        "color": "rgb(1, 2, 3)",
        "icon_path": "agents/x/x.svg",
        "capabilities": ["a", "b"],
        "is_active": False,
    }
    stored = db.upsert_agent_card(dict(card))
    got = db.get_agent_card("x")
    assert got is not None
    assert stored == got
    for field, value in card.items():
        assert got[field] == value, field
    assert got["id"] == "x"
    assert _is_iso8601(got["created_at"])
    assert _is_iso8601(got["updated_at"])
    [listed] = [c for c in db.list_agent_cards() if c.get("id") == "x"]
    assert listed == got


def test_agent_card_agent_id_alias(app_db: str) -> None:
    db.upsert_agent_card({"agent_id": "y", "name": "Y"})
    got = db.get_agent_card("y")
    assert got is not None
    assert got["id"] == "y"
    assert got["name"] == "Y"
    assert "y" in {c.get("id") for c in db.list_agent_cards()}


def test_agent_card_upsert_replaces_and_keeps_created_at(app_db: str) -> None:
    first = db.upsert_agent_card({"id": "x", "name": "One", "is_active": True})
    second = db.upsert_agent_card({"id": "x", "name": "Two", "is_active": False})
    assert second["name"] == "Two"
    assert second["is_active"] is False
    assert second["created_at"] == first["created_at"]
    assert db.get_agent_card("x") == second
    assert [c for c in db.list_agent_cards() if c.get("id", c.get("agent_id")) == "x"] == [second]


def test_agent_cards_listed_by_id(app_db: str) -> None:
    db.init_database()
    for agent_id in ("zed", "alpha", "mike"):
        db.upsert_agent_card({"id": agent_id, "name": agent_id.title()})
    ids = [c["id"] for c in db.list_agent_cards()]
    assert ids == sorted(ids)
    assert ids == ["alpha", "chloe", "mike", "phil_connors", "zed"]


def test_delete_agent_card(app_db: str) -> None:
    db.upsert_agent_card({"id": "gone", "name": "Gone"})
    assert db.delete_agent_card("gone") is True
    assert db.get_agent_card("gone") is None
    assert db.delete_agent_card("gone") is False
    assert db.get_agent_card("never-there") is None


def test_agent_card_needs_a_name(app_db: str) -> None:
    with pytest.raises(ValueError):
        db.upsert_agent_card({"id": "nameless"})
    assert db.get_agent_card("nameless") is None


# -- fact 3: get_session_messages ---------------------------------------------------------------


def test_session_messages_old_argument_forms(app_db: str) -> None:
    sid = db.create_session("Paging")["id"]
    _fill(sid, 10)
    assert _seqs(db.get_session_messages(sid)) == list(range(10, 0, -1))  # default: newest first
    assert _seqs(db.get_session_messages(sid, 0, 50)) == list(range(10, 0, -1))
    assert _seqs(db.get_session_messages(sid, 2, 3)) == [8, 7, 6]  # positional skip, limit
    assert _seqs(db.get_session_messages(sid, skip=2, limit=3)) == [8, 7, 6]
    assert _seqs(db.get_session_messages(sid, limit=4)) == [10, 9, 8, 7]
    assert _seqs(db.get_session_messages(sid, cursor="7", limit=2)) == [6, 5]
    assert _seqs(db.get_session_messages(sid, 0, 3, None, "asc")) == [1, 2, 3]
    assert _seqs(db.get_session_messages(sid, skip=2, limit=3, direction="asc")) == [3, 4, 5]
    assert _seqs(db.get_session_messages(sid, cursor="7", direction="asc")) == [8, 9, 10]


@pytest.mark.parametrize(
    ("direction", "expected"),
    [
        ("asc", [1, 2, 3, 4, 5]),
        ("desc", [5, 4, 3, 2, 1]),
        ("ASC", [1, 2, 3, 4, 5]),
        ("DESC", [5, 4, 3, 2, 1]),
        ("Desc", [5, 4, 3, 2, 1]),
        ("Asc", [1, 2, 3, 4, 5]),
    ],
)
def test_session_messages_direction_any_case(app_db: str, direction: str, expected: list[int]) -> None:
    sid = db.create_session("Case")["id"]
    _fill(sid, 5)
    assert _seqs(db.get_session_messages(sid, direction=direction)) == expected
    assert _seqs(db.get_session_messages(sid, 0, 100, None, direction)) == expected
    page = db.get_session_messages(sid, limit=2, direction=direction, include_total=True)
    assert isinstance(page, dict)
    assert _seqs(page["items"]) == expected[:2]
    assert str(page["pagination"]["direction"]).lower() == direction.lower()
    rest = db.get_session_messages(sid, cursor=page["pagination"]["next_cursor"], direction=direction)
    assert _seqs(rest) == expected[2:]


@pytest.mark.parametrize("direction", ["up", "", None, 1, "ascending", "des"])
def test_session_messages_bad_direction(app_db: str, direction: Any) -> None:
    sid = db.create_session("Bad")["id"]
    _fill(sid, 2)
    with pytest.raises(ValueError):
        db.get_session_messages(sid, direction=direction)
    with pytest.raises(ValidationError):
        db.get_session_messages(sid, direction=direction)


def test_session_messages_include_total_shape(app_db: str) -> None:
    sid = db.create_session("Totals")["id"]
    _fill(sid, 5)
    page = db.get_session_messages(sid, 0, 2, include_total=True)
    assert isinstance(page, dict)
    assert set(page) == {"items", "pagination"}
    assert _seqs(page["items"]) == [5, 4]
    pagination = page["pagination"]
    assert {"total", "limit", "direction"} <= set(pagination)
    assert set(pagination) <= {"total", "limit", "direction", "next_cursor", "skip"}
    assert pagination["total"] == 5
    assert pagination["limit"] == 2
    assert pagination["direction"] == "desc"
    assert pagination["next_cursor"] == "4"
    assert pagination["skip"] == 0

    # The page that reaches the end has no next_cursor, nor has a page that holds everything.
    last = db.get_session_messages(sid, cursor="2", limit=2, include_total=True)
    assert isinstance(last, dict)
    assert _seqs(last["items"]) == [1]
    assert "next_cursor" not in last["pagination"]
    whole = db.get_session_messages(sid, limit=5, include_total=True)
    assert isinstance(whole, dict)
    assert "next_cursor" not in whole["pagination"]
    exact = db.get_session_messages(sid, cursor="3", limit=2, include_total=True)
    assert isinstance(exact, dict)
    assert _seqs(exact["items"]) == [2, 1]
    assert "next_cursor" not in exact["pagination"]


@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_session_messages_cursor_paging_visits_all_once(app_db: str, direction: str) -> None:
    sid = db.create_session("Walk")["id"]
    created = _fill(sid, 23)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = db.get_session_messages(sid, limit=5, cursor=cursor, direction=direction, include_total=True)
        assert isinstance(page, dict)
        seen.extend(m["message_uuid"] for m in page["items"])
        pages += 1
        cursor = page["pagination"].get("next_cursor")
        if cursor is None:
            break
        assert page["pagination"]["total"] == 23
    assert pages == 5
    expected = [m["message_uuid"] for m in created]
    assert seen == (expected if direction == "asc" else expected[::-1])
    assert len(set(seen)) == 23


def test_session_messages_unknown_session_is_empty(app_db: str) -> None:
    assert db.get_session_messages("no-such-session") == []
    assert db.get_session_messages("no-such-session", 0, 50) == []
    page = db.get_session_messages("no-such-session", include_total=True)
    assert isinstance(page, dict)
    assert page["items"] == []
    assert page["pagination"]["total"] == 0
    assert "next_cursor" not in page["pagination"]


def test_session_messages_are_the_stored_records(app_db: str) -> None:
    sid = db.create_session("Records")["id"]
    created = _fill(sid, 3)
    assert db.get_session_messages(sid, direction="asc") == created


# -- fact 4: sessions -----------------------------------------------------------------------------


def test_create_session_positional_forms(app_db: str) -> None:
    standup = db.create_session("Standup")
    assert standup["title"] == "Standup"
    named = db.create_session("T", "my-id")
    assert named["id"] == "my-id"
    assert named["title"] == "T"
    untitled = db.create_session()
    assert untitled["title"] is None
    uuid.UUID(untitled["id"])  # a generated id
    keyword = db.create_session(title="K", session_id="kw-id")
    assert keyword["id"] == "kw-id"
    for session in (standup, named, untitled, keyword):
        assert set(session) >= SESSION_FIELDS
        assert isinstance(session["session_metadata"], dict)
        assert session["session_metadata"] == {}
        assert session["message_count"] == 0
        assert session["last_message_at"] is None
        assert _is_iso8601(session["created_at"])
        assert db.get_session(session["id"]) == session


def test_get_session_unknown_is_none(app_db: str) -> None:
    assert db.get_session("no-such-session") is None


def test_create_session_duplicate_id_conflicts(app_db: str) -> None:
    first = db.create_session("One", "dup")
    with pytest.raises(Conflict):
        db.create_session("Two", "dup")
    assert db.get_session("dup") == first


def test_update_session(app_db: str) -> None:
    session = db.create_session("Before")
    renamed = db.update_session(session["id"], "After")  # positional title
    assert renamed["title"] == "After"
    assert renamed["created_at"] == session["created_at"]
    with_meta = db.update_session(session["id"], metadata={"topic": "x"})
    assert with_meta["title"] == "After"
    assert with_meta["session_metadata"] == {"topic": "x"}
    assert db.get_session(session["id"]) == with_meta
    with pytest.raises(ValueError):
        db.update_session("no-such-session", "x")
    with pytest.raises(SessionNotFound):
        db.update_session("no-such-session", title="x")


def test_delete_session(app_db: str) -> None:
    session = db.create_session("Doomed")
    msg = db.create_message({"session_id": session["id"], "content": "bye", "role": "user"})
    assert db.delete_session(session["id"]) is True
    assert db.get_session(session["id"]) is None
    assert db.get_message(msg["message_uuid"]) is None
    assert db.get_session_messages(session["id"]) == []
    assert db.delete_session(session["id"]) is False


def test_list_sessions(app_db: str) -> None:
    made = [db.create_session(f"S{i}") for i in range(5)]
    listed = db.list_sessions()
    assert [s["id"] for s in listed] == [s["id"] for s in reversed(made)]  # newest first
    assert listed == list(reversed(made))
    assert [s["id"] for s in db.list_sessions(2)] == [made[4]["id"], made[3]["id"]]
    page = db.list_sessions(limit=2, cursor=made[3]["id"])
    assert [s["id"] for s in page] == [made[2]["id"], made[1]["id"]]


# -- fact 5: messages -----------------------------------------------------------------------------


def test_create_message_returns_committed_record(app_db: str) -> None:
    sid = db.create_session("Chat")["id"]
    data = {"session_id": sid, "content": "hi", "role": "user", "agent_id": "chloe"}
    records = [db.create_message(dict(data)) for _ in range(3)]
    assert [m["seq"] for m in records] == [1, 2, 3]
    for record in records:
        for field, value in data.items():
            assert record[field] == value
        uuid.UUID(record["message_uuid"])
        assert _is_iso8601(record["created_at"])
        assert db.get_message(record["message_uuid"]) == record
    assert len({m["message_uuid"] for m in records}) == 3
    session = db.get_session(sid)
    assert session is not None
    assert session["message_count"] == 3
    assert session["last_message_at"] == records[-1]["created_at"]


def test_create_message_keeps_extra_fields(app_db: str) -> None:
    sid = db.create_session("Extra")["id"]
    data = {
        "session_id": sid,
        "content": "with extras",
        "role": "assistant",
        "agent_id": "phil_connors",
        "message_uuid": "fixed-uuid-1",
        "created_at": "2024-05-01T12:00:00+00:00",
        "metadata": {"tokens": 12, "tags": ["a"]},
    }
    record = db.create_message(dict(data))
    for field, value in data.items():
        assert record[field] == value, field
    assert db.get_message("fixed-uuid-1") == record


def test_create_message_unknown_session(app_db: str) -> None:
    with pytest.raises(ValueError):
        db.create_message({"session_id": "no-such-session", "content": "x", "role": "user"})
    with pytest.raises(SessionNotFound):
        db.create_message({"session_id": "no-such-session", "content": "x", "role": "user"})
    assert db.get_session("no-such-session") is None


def test_create_message_same_uuid_is_idempotent(app_db: str) -> None:
    sid = db.create_session("Retry")["id"]
    first = db.create_message({"session_id": sid, "content": "once", "role": "user", "message_uuid": "u-1"})
    db.create_message({"session_id": sid, "content": "other", "role": "user"})
    again = db.create_message({"session_id": sid, "content": "once", "role": "user", "message_uuid": "u-1"})
    assert again == first
    assert again["seq"] == 1
    assert _seqs(db.get_session_messages(sid, direction="asc")) == [1, 2]
    session = db.get_session(sid)
    assert session is not None
    assert session["message_count"] == 2
    other = db.create_session("Other")["id"]
    with pytest.raises(Conflict):
        db.create_message({"session_id": other, "content": "once", "message_uuid": "u-1"})


def test_get_message_unknown_is_none(app_db: str) -> None:
    assert db.get_message(str(uuid.uuid4())) is None


def test_get_agent_messages(app_db: str) -> None:
    a = db.create_session("A")["id"]
    b = db.create_session("B")["id"]
    chloe = [
        db.create_message({"session_id": a, "content": "c1", "role": "assistant", "agent_id": "chloe"}),
        db.create_message({"session_id": b, "content": "c2", "role": "assistant", "agent_id": "chloe"}),
        db.create_message({"session_id": a, "content": "c3", "role": "assistant", "agent_id": "chloe"}),
    ]
    db.create_message({"session_id": a, "content": "p1", "role": "assistant", "agent_id": "phil_connors"})
    db.create_message({"session_id": a, "content": "u1", "role": "user"})
    assert db.get_agent_messages("chloe") == chloe[::-1]
    assert db.get_agent_messages("chloe", 2) == chloe[::-1][:2]
    assert db.get_agent_messages("chloe", direction="asc") == chloe
    assert db.get_agent_messages("chloe", limit=2, cursor=chloe[2]["message_uuid"]) == [chloe[1], chloe[0]]
    assert db.get_agent_messages("chloe", 10, chloe[0]["message_uuid"], "asc") == chloe[1:]
    assert [m["content"] for m in db.get_agent_messages("phil_connors")] == ["p1"]
    assert db.get_agent_messages("nobody") == []


# -- fact 6: shared contexts, tasks, operations -----------------------------------------------------


def test_shared_contexts_roundtrip(app_db: str) -> None:
    sid = db.create_session("Ctx")["id"]
    first = db.create_shared_context(sid, {"plan": ["a"]})
    named = db.create_shared_context(sid, {"k": 1}, "ctx-1")
    assert named["id"] == "ctx-1"
    assert first["session_id"] == sid
    assert first["data"] == {"plan": ["a"]}
    assert first["version"] == 1
    assert db.get_shared_context(first["id"]) == first
    assert db.list_session_contexts(sid) == [first, named]
    assert db.list_session_contexts("no-such-session") == []
    with pytest.raises(Conflict):
        db.create_shared_context(sid, {}, "ctx-1")
    with pytest.raises(ValueError):
        db.create_shared_context("no-such-session", {"k": 1})

    updated = db.update_shared_context("ctx-1", {"k": 2})
    assert updated["version"] == 2
    assert updated["data"] == {"k": 2}
    checked = db.update_shared_context("ctx-1", {"k": 3}, expected_version=2)
    assert checked["version"] == 3
    with pytest.raises(Conflict):
        db.update_shared_context("ctx-1", {"k": 4}, expected_version=2)
    assert db.get_shared_context("ctx-1") == checked
    with pytest.raises(NotFound):
        db.update_shared_context("no-such-context", {"k": 1})

    assert db.delete_shared_context("ctx-1") is True
    assert db.get_shared_context("ctx-1") is None
    assert db.delete_shared_context("ctx-1") is False
    assert db.list_session_contexts(sid) == [first]


def test_tasks_roundtrip(app_db: str) -> None:
    sid = db.create_session("Tasks")["id"]
    other = db.create_session("Other")["id"]
    task = db.create_task({"id": "t-1", "context_id": sid, "metadata": {"owner": "phil_connors"}})
    assert task["id"] == "t-1"
    assert task["context_id"] == sid
    assert task["status"]["state"] == "submitted"
    assert task["artifacts"] == []
    assert task["history"] == []
    assert task["metadata"] == {"owner": "phil_connors"}
    assert db.get_task("t-1") == task
    assert db.get_task("no-such-task") is None
    with pytest.raises(Conflict):
        db.create_task({"id": "t-1", "context_id": sid})
    with pytest.raises(ValueError):
        db.create_task({"context_id": "no-such-session"})

    working = db.update_task("t-1", state="working", status_message={"text": "on it"})
    assert working["status"]["state"] == "working"
    assert working["status"]["message"] == {"text": "on it"}
    assert working["history"] == [{"text": "on it"}]
    with_art = db.update_task("t-1", artifacts=[{"name": "out"}], metadata={"step": 2})
    assert with_art["artifacts"] == [{"name": "out"}]
    assert with_art["metadata"] == {"owner": "phil_connors", "step": 2}
    assert with_art["status"]["state"] == "working"
    done = db.update_task("t-1", "completed")  # positional state
    assert done["status"]["state"] == "completed"
    with pytest.raises(InvalidTransition):
        db.update_task("t-1", state="working")
    assert db.get_task("t-1") == done

    second = db.create_task({"context_id": sid})
    third = db.create_task({"context_id": other, "status": {"state": "working"}})
    assert [t["id"] for t in db.list_tasks()] == [third["id"], second["id"], "t-1"]
    assert [t["id"] for t in db.list_tasks(sid)] == [second["id"], "t-1"]
    assert [t["id"] for t in db.list_tasks(state="working")] == [third["id"]]
    assert [t["id"] for t in db.list_tasks(context_id=sid, state="completed")] == ["t-1"]
    assert [t["id"] for t in db.list_tasks(limit=1)] == [third["id"]]
    assert [t["id"] for t in db.list_tasks(None, None, 2, third["id"])] == [second["id"], "t-1"]
    assert db.list_tasks("no-such-session") == []


def test_stats_verify_backup(app_db: str, tmp_path: Path) -> None:
    db.init_database()
    sid = db.create_session("Ops")["id"]
    _fill(sid, 4)
    stats = db.stats()
    assert stats["backend"] == app_db
    assert stats["sessions"] == 2
    assert stats["messages"] == 4
    assert stats["agents"] == 2
    report = db.verify()
    assert report["ok"] is True
    assert report["errors"] == []
    result = db.backup(str(tmp_path / "backup"))
    assert result["backend"] == app_db
    assert result["bytes"] > 0
    assert Path(result["path"]).is_dir()

    # The copy holds what the store held.
    db.configure(str(tmp_path / "backup"), backend=app_db)
    assert _seqs(db.get_session_messages(sid, direction="asc")) == [1, 2, 3, 4]
    assert db.verify()["ok"] is True


def test_close_and_reopen_keeps_data(app_db: str) -> None:
    path = str(db.get_store().path)
    sid = db.create_session("Persist")["id"]
    msg = db.create_message({"session_id": sid, "content": "kept", "role": "user"})
    db.close()
    db.close()  # idempotent
    db.configure(path, backend=app_db)
    assert db.get_message(msg["message_uuid"]) == msg
    assert db.get_session_messages(sid) == [msg]
    assert db.create_message({"session_id": sid, "content": "next", "role": "user"})["seq"] == 2
