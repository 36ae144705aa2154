"""``chatmdb restore`` refuses what would lose data: wrong sources, wrong backends, a database in use, symlinks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_backup_cli import chatmdb

from chatmdb import open_store

LIVE = 50


@pytest.fixture
def live(tmp_path: Path, backend: str) -> Path:
    """A database holding 50 messages in session "s"."""
    db = tmp_path / "live"
    with open_store(db, backend=backend) as store:
        store.create_session(session_id="s")
        for i in range(LIVE):
            store.create_message({"session_id": "s", "message_uuid": f"m{i}", "content": str(i)})
    return db


@pytest.fixture
def backup_dir(tmp_path: Path, live: Path, backend: str) -> Path:
    with open_store(live, backend=backend) as store:
        store.create_message({"session_id": "s", "message_uuid": "after-backup?", "content": "no"})
        dest = tmp_path / "backup"
        store.backup(dest)
    return dest


def _messages(db: Path, backend: str) -> int:
    with open_store(db, backend=backend) as store:
        return int(store.stats()["messages"])


def _refused(code: int, err: str, *words: str) -> None:
    assert code != 0
    assert "Traceback" not in err, err
    for word in words:
        assert word in err, err


def test_an_empty_or_mistyped_source_replaces_nothing(tmp_path: Path, live: Path, backend: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = chatmdb("restore", "--db", str(live), "--backend", backend, "--force", str(empty))
    _refused(code, err, "holds no", "database")
    assert list(empty.iterdir()) == [], "the source was written to"
    code, _, err = chatmdb("restore", "--db", str(live), "--backend", backend, "--force", str(tmp_path / "typo"))
    _refused(code, err, "does not exist")
    assert not (tmp_path / "typo").exists()
    assert _messages(live, backend) == LIVE


def test_a_backup_of_the_other_backend_is_refused(tmp_path: Path, live: Path, backup_dir: Path, backend: str) -> None:
    other = "sqlite" if backend == "lmdb" else "lmdb"
    before = sorted(p.name for p in backup_dir.iterdir())
    target = tmp_path / "target"
    code, _, err = chatmdb("restore", "--db", str(target), "--backend", other, "--force", str(backup_dir))
    _refused(code, err, f"no {other}")
    assert sorted(p.name for p in backup_dir.iterdir()) == before, "the backup was written to"
    assert not target.exists()


def test_a_directory_that_is_not_a_chatmdb_database_is_refused(tmp_path: Path, live: Path, backend: str) -> None:
    source = tmp_path / "foreign"
    source.mkdir()
    if backend == "lmdb":
        import lmdb

        env = lmdb.open(str(source), max_dbs=2)
        with env.begin(write=True) as txn:
            txn.put(b"k", b"v")
        env.close()
    else:
        import sqlite3

        conn = sqlite3.connect(source / "chatmdb.sqlite3")
        conn.execute("CREATE TABLE t_meta (k BLOB PRIMARY KEY, v BLOB)")
        conn.commit()
        conn.close()
    code, _, err = chatmdb("restore", "--db", str(live), "--backend", backend, "--force", str(source))
    _refused(code, err, "not a chatmdb database")
    assert _messages(live, backend) == LIVE


def test_a_database_in_use_is_not_replaced(live: Path, backup_dir: Path, backend: str) -> None:
    with open_store(live, backend=backend) as store:  # another process: the restore runs as a subprocess
        code, _, err = chatmdb("restore", "--db", str(live), "--backend", backend, "--force", str(backup_dir))
        _refused(code, err, "in use")
        acked = store.create_message({"session_id": "s", "message_uuid": "acked-during-restore"})
    assert acked["seq"] == LIVE + 2
    with open_store(live, backend=backend) as store:
        assert store.get_message("acked-during-restore") is not None


def test_restore_replaces_and_drops_the_old_copy_once_verified(tmp_path: Path, live: Path, backup_dir: Path, backend: str) -> None:
    code, report, err = chatmdb("restore", "--db", str(live), "--backend", backend, "--force", str(backup_dir))
    assert code == 0 and report["ok"] is True, err
    assert _messages(live, backend) == LIVE + 1
    assert [p.name for p in tmp_path.iterdir() if "before-restore" in p.name or "restoring" in p.name] == []
    assert os.stat(live).st_mode & 0o077 == 0


def test_symlinks_are_refused_never_followed(tmp_path: Path, live: Path, backup_dir: Path, backend: str) -> None:
    link = tmp_path / "link-to-live"
    link.symlink_to(live)
    code, _, err = chatmdb("restore", "--db", str(link), "--backend", backend, "--force", str(backup_dir))
    _refused(code, err, "symlink")
    # A source whose data file is a link to a file elsewhere.
    outside = tmp_path / "outside"
    outside.mkdir()
    source = tmp_path / "linked-source"
    source.mkdir()
    data = next(p for p in backup_dir.iterdir() if p.name in ("data.mdb", "chatmdb.sqlite3"))
    (outside / data.name).write_bytes(data.read_bytes())
    (source / data.name).symlink_to(outside / data.name)
    code, _, err = chatmdb("restore", "--db", str(tmp_path / "new"), "--backend", backend, str(source))
    _refused(code, err, "symlink")
    assert not (tmp_path / "new").exists()
    # Stray files in a source are not copied.
    (backup_dir / "notes.txt").write_text("not part of a database")
    code, _, err = chatmdb("restore", "--db", str(tmp_path / "clean"), "--backend", backend, str(backup_dir))
    assert code == 0, err
    assert not (tmp_path / "clean" / "notes.txt").exists()
    assert _messages(live, backend) == LIVE + 1  # the link was refused, so live is as it was
