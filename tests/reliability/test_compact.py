"""``chatmdb compact``: a database that shed most of its records gets its disk space back, and keeps the rest intact.

Compaction refuses a database in use, a path that is not a database, and a
database of the other backend, and then changes nothing. A compacted copy that
does not verify, before or after it is swapped in, leaves the old database in
place. ``Store.backup(dest, compact=True)`` is the hot variant.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from _rel import check_messages
from test_backup_cli import chatmdb

from chatmdb import open_store
from chatmdb.errors import CorruptionError, StorageError, ValidationError
from chatmdb.store import compact as compact_module
from chatmdb.store.compact import compact

SESSIONS = 200
MESSAGES = 10
KEPT = 20  # sessions left after deleting 90%
DATA_FILE = {"lmdb": "data.mdb", "sqlite": "chatmdb.sqlite3"}


def _fill(db: Path, backend: str) -> dict[str, list[str]]:
    """200 sessions of 10 messages of about 1 KB; then all but 20 sessions deleted. Returns the kept uuids."""
    kept: dict[str, list[str]] = {}
    with open_store(db, backend=backend, durability="process") as store:
        for s in range(SESSIONS):
            sid = store.create_session(session_id=f"s{s:03d}")["id"]
            uuids = [f"m{s:03d}-{i}" for i in range(MESSAGES)]
            for uuid in uuids:
                store.create_message({"session_id": sid, "message_uuid": uuid, "content": f"{uuid} " + "x" * 1000})
            kept[sid] = uuids
        for s in range(SESSIONS):
            if s % (SESSIONS // KEPT):  # keep every tenth
                assert store.delete_session(f"s{s:03d}")
                del kept[f"s{s:03d}"]
    assert len(kept) == KEPT
    return kept


def _size(db: Path, backend: str) -> int:
    return (db / DATA_FILE[backend]).stat().st_size


def _snapshot(directory: Path) -> dict[str, str]:
    """Every entry of *directory* with a digest of its content (files) or a marker.

    LMDB's lock.mdb (its reader table, rebuilt by whoever opens the database) is listed, not read.
    """
    out = {}
    for item in sorted(directory.iterdir()):
        if item.name == "lock.mdb":
            out[item.name] = "lock"
            continue
        if item.is_file():
            out[item.name] = hashlib.sha256(item.read_bytes()).hexdigest()
        else:
            out[item.name] = "dir"
    return out


def _check_intact(db: Path, backend: str, kept: dict[str, list[str]]) -> None:
    with open_store(db, backend=backend) as store:
        check_messages(store, kept, [u for uuids in kept.values() for u in uuids])  # also verify()
        stats = store.stats()
        assert stats["sessions"] == KEPT and stats["messages"] == KEPT * MESSAGES
        for sid, uuids in kept.items():
            message = store.get_message(uuids[-1])
            assert message is not None and message["session_id"] == sid
            assert message["content"] == f"{uuids[-1]} " + "x" * 1000
        # Still a working database: it takes writes after compaction.
        store.create_message({"session_id": next(iter(kept)), "message_uuid": "after", "content": "after"})
        assert store.verify()["ok"]


def _leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if "compacting" in p.name or "before-compact" in p.name)


def test_compact_gives_back_the_space_of_deleted_sessions(tmp_path: Path, backend: str) -> None:
    db = tmp_path / "db"
    kept = _fill(db, backend)
    before = _size(db, backend)
    code, report, err = chatmdb("compact", "--db", str(db), "--backend", backend)
    assert code == 0, err
    after = _size(db, backend)
    print(f"{backend}: {before} -> {after} bytes ({after / before:.1%})")
    assert after < 0.4 * before, (before, after)
    assert report["backend"] == backend and report["path"] == str(db.absolute())
    assert report["bytes_before"] >= before and report["bytes_after"] == after
    assert report["saved_bytes"] == report["bytes_before"] - report["bytes_after"] > 0
    assert report["verify"]["ok"] is True
    assert _leftovers(tmp_path) == []
    assert (db / "chatmdb.lock").exists()
    assert db.stat().st_mode & 0o777 == 0o700 and (db / DATA_FILE[backend]).stat().st_mode & 0o777 == 0o600
    _check_intact(db, backend, kept)
    # Compacting a compact database is harmless.
    code, report, err = chatmdb("compact", "--db", str(db), "--backend", backend)
    assert code == 0, err
    assert report["bytes_after"] <= report["bytes_before"] * 1.05 + 65536


def test_compact_refuses_a_database_in_use(tmp_path: Path, backend: str) -> None:
    db = tmp_path / "db"
    with open_store(db, backend=backend) as store:
        store.create_session(session_id="s")
        store.create_message({"session_id": "s", "message_uuid": "m", "content": "hello"})
        before = _size(db, backend)
        code, _, err = chatmdb("compact", "--db", str(db), "--backend", backend)
        assert code == 1
        assert "in use" in err and "stop it, then compact" in err and "Traceback" not in err
        assert _leftovers(tmp_path) == []
        # The open store never noticed.
        store.create_message({"session_id": "s", "message_uuid": "m2", "content": "still here"})
        assert store.verify()["ok"]
    assert _size(db, backend) >= before
    with open_store(db, backend=backend) as store:
        assert store.stats()["messages"] == 2


def test_compact_refuses_what_is_not_a_database_of_its_backend(tmp_path: Path, backend: str) -> None:
    db = tmp_path / "db"
    with open_store(db, backend=backend) as store:
        store.create_session(session_id="s")
    before = _snapshot(db)

    other = "sqlite" if backend == "lmdb" else "lmdb"
    code, _, err = chatmdb("compact", "--db", str(db), "--backend", other)
    assert code == 1 and "Traceback" not in err
    assert f"holds no {other} database" in err and "--backend" in err
    assert _snapshot(db) == before, "the database of the other backend was touched"

    missing = tmp_path / "typo"
    code, _, err = chatmdb("compact", "--db", str(missing), "--backend", backend)
    assert code == 1 and "does not exist" in err and "Traceback" not in err
    assert not missing.exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = chatmdb("compact", "--db", str(empty), "--backend", backend)
    assert code == 1 and "holds no" in err
    assert list(empty.iterdir()) == [], "an empty directory was written to"

    a_file = tmp_path / "file"
    a_file.write_text("not a database")
    code, _, err = chatmdb("compact", "--db", str(a_file), "--backend", backend)
    assert code == 1 and "not a directory" in err
    assert a_file.read_text() == "not a database"

    link = tmp_path / "link"
    link.symlink_to(db)
    code, _, err = chatmdb("compact", "--db", str(link), "--backend", backend)
    assert code == 1 and "symlink" in err
    assert _snapshot(db) == before

    code, _, err = chatmdb("compact", "--db", str(db), "--backend", "mysql")
    assert code == 2  # click refuses the choice
    assert _leftovers(tmp_path) == []
    assert _snapshot(db) == before
    with pytest.raises(ValidationError, match="backend"):
        compact(db, "mysql")


def test_a_copy_that_does_not_verify_changes_nothing(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "db"
    kept = _fill(db, backend)
    before = _snapshot(db)
    real = compact_module.verify_unlocked  # type: ignore[attr-defined]  # the name compact calls
    calls: list[Path] = []

    def failing_at(which: int) -> Any:
        def verify(directory: Path, backend: str) -> dict[str, Any]:
            calls.append(directory)
            report = real(directory, backend)
            if len(calls) == which:
                return {**report, "ok": False, "errors": ["injected"], "error_count": 1}
            return report

        return verify

    # The staged copy does not verify: the database was never moved.
    monkeypatch.setattr(compact_module, "verify_unlocked", failing_at(1))
    with pytest.raises(CorruptionError, match="nothing was changed"):
        compact(db, backend)
    assert _snapshot(db) == before
    assert _leftovers(tmp_path) == []

    # The copy verifies, is swapped in, and then does not: the old one is put back.
    calls.clear()
    monkeypatch.setattr(compact_module, "verify_unlocked", failing_at(2))
    with pytest.raises(CorruptionError, match="does not verify"):
        compact(db, backend)
    assert len(calls) == 2 and calls[1] == db
    assert _snapshot(db) == before, "the old database was not put back as it was"
    assert _leftovers(tmp_path) == []
    monkeypatch.undo()
    _check_intact(db, backend, kept)


def test_compact_without_hard_links(tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the file system has no hard links, the old files are moved aside instead (and back on failure)."""
    db = tmp_path / "db"
    kept = _fill(db, backend)
    before = _size(db, backend)
    snapshot = _snapshot(db)

    def no_links(src: Any, dst: Any, **kwargs: Any) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    real = compact_module.verify_unlocked  # type: ignore[attr-defined]  # the name compact calls
    calls: list[Path] = []

    def verify(directory: Path, backend: str) -> dict[str, Any]:
        calls.append(directory)
        report = real(directory, backend)
        return {**report, "ok": False, "errors": ["injected"]} if len(calls) == 2 else report

    monkeypatch.setattr(compact_module, "verify_unlocked", verify)
    with pytest.raises(CorruptionError):
        compact(db, backend)
    assert _snapshot(db) == snapshot
    monkeypatch.setattr(compact_module, "verify_unlocked", real)
    report = compact(db, backend)
    assert report["bytes_after"] < 0.4 * before
    assert _leftovers(tmp_path) == []
    monkeypatch.undo()
    _check_intact(db, backend, kept)


def test_the_locked_database_cannot_be_opened_while_it_is_compacted(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Until the compacted database has verified in place, compaction holds the lock: a store opening it is refused."""
    db = tmp_path / "db"
    with open_store(db, backend=backend) as store:
        store.create_session(session_id="s")
    real = compact_module.verify_unlocked  # type: ignore[attr-defined]  # the name compact calls
    seen: list[str] = []

    def verify(directory: Path, backend: str) -> dict[str, Any]:
        if directory == db:
            with pytest.raises(StorageError) as refused:
                open_store(db, backend=backend)
            seen.append(str(refused.value))
        return real(directory, backend)

    monkeypatch.setattr(compact_module, "verify_unlocked", verify)
    compact(db, backend)
    assert len(seen) == 1
    with open_store(db, backend=backend) as store:
        assert store.get_session("s") is not None


def test_compacted_hot_backup(tmp_path: Path, backend: str) -> None:
    db = tmp_path / "db"
    kept = _fill(db, backend)
    with open_store(db, backend=backend) as store:
        plain = store.backup(tmp_path / "plain")
        small = store.backup(tmp_path / "small", compact=True)
        with pytest.raises(ValidationError, match="compact"):
            store.backup(tmp_path / "bad", compact="yes")  # type: ignore[arg-type]
        assert not (tmp_path / "bad").exists()
    assert small["compact"] is True and small["backend"] == backend
    print(f"{backend}: backup {plain['bytes']} bytes, compacted backup {small['bytes']} bytes")
    if backend == "sqlite":
        assert small["bytes"] < 0.4 * plain["bytes"]
    else:  # LMDB's backup is always compacted
        assert abs(small["bytes"] - plain["bytes"]) <= 65536
    assert oct((tmp_path / "small" / DATA_FILE[backend]).stat().st_mode & 0o777) == oct(0o600)
    _check_intact(tmp_path / "small", backend, kept)
    code, report, err = chatmdb(
        "restore", "--db", str(tmp_path / "restored"), "--backend", backend, str(tmp_path / "small")
    )
    assert code == 0 and report["ok"] is True, err
    assert os.path.isdir(tmp_path / "restored")
