"""On-disk format versions: stamped at creation, older ones migrated, newer ones refused unwritten.

``tests/fixtures/format1-*`` are databases written by format 1 (before the
version was recorded): a session "format-1" with three messages by agent
chloe, the default agent cards, a custom card, a context and a task.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import pytest

import chatmdb
from chatmdb import FormatError, StorageError, open_store
from chatmdb.engines.base import WriteTxn
from chatmdb.store import codec
from chatmdb.store.schema import FORMAT_KEY, HEADER_SEQ, U64, U64x2, header_key

FIXTURES = Path(__file__).parent / "fixtures"


def _digest(path: Path) -> dict[str, str]:
    # lock.mdb and resize.lock are LMDB's locks, not data.
    data = [p for p in sorted(path.iterdir()) if p.is_file() and p.name not in ("lock.mdb", "resize.lock")]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in data}


def test_a_new_database_records_the_current_format(tmp_path: Path, backend: str) -> None:
    assert chatmdb.FORMAT_VERSION == 4
    with open_store(tmp_path / "db", backend=backend) as store:
        assert store.stats()["format_version"] == chatmdb.FORMAT_VERSION
    with open_store(tmp_path / "db", backend=backend) as store:  # and reopens as it is
        assert store.format_version_found == chatmdb.FORMAT_VERSION


def test_a_format_1_database_is_migrated_on_open(tmp_path: Path, backend: str, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "db"
    shutil.copytree(FIXTURES / f"format1-{backend}", path)
    with caplog.at_level(logging.WARNING, logger="chatmdb.store"), open_store(path, backend=backend) as store:
        assert store.format_version_found == 1
        assert store.stats()["format_version"] == chatmdb.FORMAT_VERSION
        assert store.verify()["ok"]
        chloe = store.get_agent_card("chloe")
        assert chloe is not None
        assert chloe["id"] == "chloe" and chloe["capabilities"] == ["git", "search", "explain"]
        assert chloe["color"] == "rgb(34, 197, 94)" and chloe["is_active"] is True
        custom = store.get_agent_card("custom")
        assert custom is not None
        assert (custom["id"], custom["name"], custom["color"]) == ("custom", "Custom", "red")
        page = store.get_session_messages("format-1", direction="asc")
        assert [m["content"] for m in page] == ["hello 0", "hello 1", "hello 2"]  # type: ignore[index]
        assert [m["seq"] for m in store.get_agent_messages("chloe", direction="asc")] == [1, 2, 3]
        assert store.get_shared_context("ctx-1") is not None and store.get_task("task-1") is not None
        # Numbering goes on where format 1 left it.
        assert store.create_message({"session_id": "format-1"})["seq"] == 4
    assert any(f"from on-disk format 1 to {chatmdb.FORMAT_VERSION}" in r.getMessage() for r in caplog.records)
    with open_store(path, backend=backend) as store:  # migrated once
        assert store.format_version_found == chatmdb.FORMAT_VERSION


def _back_to_format_3(txn: WriteTxn) -> None:
    """Lay a database out as format 3 did: counts in the session records, message events in ``events``."""
    for key, raw in list(txn.range("sessions", b"", None)):
        internal, session = codec.decode(raw)
        count, last = codec.decode(txn.get("messages", header_key(internal["n"])) or b"")
        txn.put("sessions", key, codec.encode([internal, {**session, "message_count": count, "last_message_at": last}]))
        txn.delete("messages", header_key(internal["n"]))
    for mkey, raw in list(txn.range("messages", b"", None)):
        n, seq = U64x2.unpack(mkey)
        assert seq != HEADER_SEQ
        txn.put("events", U64x2.pack(n, codec.decode(raw)[0]["g"]), codec.encode(["message", mkey]))
    txn.put("meta", FORMAT_KEY, U64.pack(3))


def test_a_format_3_database_is_migrated_on_open(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "db"
    rooms = ["a", "b", "pruned", "quiet"]
    with open_store(path, backend=backend) as store:
        for sid in rooms:
            store.create_session(session_id=sid)
        for i in range(12):
            store.create_message({"session_id": rooms[i % 3], "content": f"m{i}"})
            if i == 5:
                store.create_shared_context("a", {"i": i}, context_id="ctx")
                store.create_task({"context_id": "b", "id": "task"})
        store.update_shared_context("ctx", {"i": 99})
        store.prune(keep_last=1, session_id="pruned")
        sessions = {sid: store.get_session(sid) for sid in rooms}
        replays = {after: store.events_since(rooms, after) for after in (0, 3, 7, 20)}
        store.engine.write(_back_to_format_3)
    with open_store(path, backend=backend) as store:
        assert store.format_version_found == 3
        assert store.verify()["ok"], store.verify()["errors"]
        assert {sid: store.get_session(sid) for sid in rooms} == sessions
        assert {after: store.events_since(rooms, after) for after in (0, 3, 7, 20)} == replays
        assert store.stats()["messages"] == 9  # 12, of which retention removed 3 of "pruned"'s 4
        assert store.create_message({"session_id": "pruned"})["seq"] == 5
        quiet = sessions["quiet"]
        assert quiet is not None and (quiet["message_count"], quiet["last_message_at"]) == (0, None)
        assert store.get_session("quiet") == quiet


def test_a_newer_format_is_refused_and_nothing_is_written(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "db"
    with open_store(path, backend=backend) as store:
        store.create_session(session_id="s")
        store.engine.write(lambda txn: txn.put("meta", FORMAT_KEY, U64.pack(chatmdb.FORMAT_VERSION + 1)))
    before = _digest(path)
    with pytest.raises(FormatError) as caught:
        open_store(path, backend=backend)
    error = caught.value
    assert isinstance(error, StorageError)
    assert (error.found, error.supported) == (chatmdb.FORMAT_VERSION + 1, chatmdb.FORMAT_VERSION)
    assert f"format {chatmdb.FORMAT_VERSION + 1}" in str(error) and f"format {chatmdb.FORMAT_VERSION}" in str(error)
    assert _digest(path) == before
    # The refused open released the files: refusing again works the same way.
    with pytest.raises(FormatError):
        open_store(path, backend=backend)
    assert _digest(path) == before
