"""chatmdb.db: the drop-in module keeps the original signatures and opens lazily."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatmdb import SessionNotFound, db


@pytest.fixture
def env_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> Iterator[Path]:
    db.reset()  # forget the configure() of other tests: open from the environment
    monkeypatch.setenv("CHATMDB_PATH", str(tmp_path / "appdb"))
    monkeypatch.setenv("CHATMDB_BACKEND", backend)
    yield tmp_path / "appdb"
    db.reset()


def test_original_signatures() -> None:
    assert str(inspect.signature(db.create_session)).startswith("(title: 'str | None' = None, session_id: 'str | None' = None)")
    params = list(inspect.signature(db.get_session_messages).parameters)
    assert params == ["session_id", "skip", "limit", "cursor", "direction", "include_total"]
    assert list(inspect.signature(db.create_message).parameters) == ["data"]
    assert list(inspect.signature(db.init_database).parameters) == []


def test_module_functions_use_the_environment(env_db: Path, backend: str) -> None:
    db.init_database()
    assert db.get_store().backend == backend
    assert {c["agent_id"] for c in db.list_agent_cards()} == {"chloe", "phil_connors"}
    assert db.get_agent_card("chloe") is not None
    session = db.create_session("Standup")
    msg = db.create_message({"session_id": session["id"], "content": "hi", "role": "user"})
    assert db.get_message(msg["message_uuid"]) == msg
    assert db.get_session_messages(session["id"]) == [msg]
    with pytest.raises(ValueError):  # applications catch ValueError, as before
        db.create_message({"session_id": "missing", "content": "x"})
    with pytest.raises(SessionNotFound):
        db.create_message({"session_id": "missing", "content": "x"})
    assert env_db.exists()
    db.close()
    # Reopened lazily on the next call, with everything still there.
    assert db.get_session(session["id"])["message_count"] == 1  # type: ignore[index]
