"""``chatmdb backup`` while writers run, ``chatmdb restore``, ``verify`` and ``stats``, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from _rel import check_messages

from chatmdb import open_store


def chatmdb(*args: str) -> tuple[int, Any, str]:
    """Run the ``chatmdb`` command; return its exit code, its JSON output (or None) and stderr."""
    done = subprocess.run([sys.executable, "-m", "chatmdb", *args], capture_output=True, text=True, timeout=120)
    try:
        out = json.loads(done.stdout) if done.stdout.strip() else None
    except json.JSONDecodeError:
        out = done.stdout
    return done.returncode, out, done.stderr


def test_backup_while_writing_then_restore(tmp_path: Path, backend: str) -> None:
    db, copy, restored = tmp_path / "db", tmp_path / "backup", tmp_path / "restored"
    store = open_store(db, backend=backend)
    sids = [store.create_session(session_id=f"s{i}")["id"] for i in range(3)]
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def produce(worker: int) -> None:
        i = 0
        try:
            while not stop.is_set() or i < 50:
                msg = store.create_message({"session_id": sids[i % 3], "message_uuid": f"w{worker}-{i}", "text": "z" * 200})
                with lock:
                    acked.append(msg["message_uuid"])
                i += 1
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
    for thread in writers:
        thread.start()
    try:
        while len(acked) < 200:
            threading.Event().wait(0.01)
        with lock:
            before_backup = list(acked)
        code, out, err = chatmdb("backup", "--db", str(db), "--backend", backend, str(copy))
        with lock:
            during = len(acked) - len(before_backup)
    finally:
        stop.set()
        for thread in writers:
            thread.join(timeout=120)
    assert not errors, errors
    assert code == 0, err
    assert out["backend"] == backend and out["bytes"] > 0
    assert during > 0, "the writers did not run while the backup was taken"

    # The copy verifies clean on the CLI, and holds everything acked before the backup began.
    code, report, err = chatmdb("verify", "--db", str(copy), "--backend", backend)
    assert code == 0, err
    assert report["ok"] is True and report["error_count"] == 0
    with open_store(copy, backend=backend) as backup:
        in_copy = check_messages(backup, sids, before_backup)
    assert in_copy <= set(acked)

    # Restore brings it back in a new place; it refuses to overwrite a database without --force.
    code, report, err = chatmdb("restore", "--db", str(restored), "--backend", backend, str(copy))
    assert code == 0, err
    assert report["ok"] is True
    code, _, err = chatmdb("restore", "--db", str(restored), "--backend", backend, str(copy))
    assert code != 0 and "--force" in err
    code, report, err = chatmdb("restore", "--db", str(restored), "--backend", backend, "--force", str(copy))
    assert code == 0 and report["ok"] is True, err
    code, stats, err = chatmdb("stats", "--db", str(restored), "--backend", backend)
    assert code == 0, err
    assert stats["backend"] == backend
    assert stats["sessions"] == 3 and stats["messages"] == len(in_copy)
    with open_store(restored, backend=backend) as back:
        assert check_messages(back, sids, before_backup) == in_copy

    # The live store kept every message.
    check_messages(store, sids, acked)
    code, stats, err = chatmdb("stats", "--db", str(db), "--backend", backend)
    assert code == 0 and stats["messages"] == len(acked), err
    store.close()


def test_cli_verify_fails_on_a_damaged_database(tmp_path: Path, backend: str) -> None:
    db = tmp_path / "db"
    with open_store(db, backend=backend) as store:
        sid = store.create_session()["id"]
        for i in range(20):
            store.create_message({"session_id": sid, "content": f"needle-{i:04d}-" + "q" * 100})
    data = next(p for p in db.iterdir() if p.name in ("data.mdb", "chatmdb.sqlite3"))
    raw = bytearray(data.read_bytes())
    # LMDB copies pages on write, so stale copies of a value may sit in free
    # pages: flip the byte in every copy, the live one included.
    found = [i for i in range(len(raw)) if raw.startswith(b"needle-0007", i)]
    assert found
    for at in found:
        raw[at + 3] ^= 0x01
    data.write_bytes(bytes(raw))
    code, report, _ = chatmdb("verify", "--db", str(db), "--backend", backend)
    assert code == 1
    assert report["ok"] is False and report["error_count"] >= 1
    assert any("checksum" in e for e in report["errors"]), report["errors"]
    # Restoring from a damaged source is refused before anything is copied.
    code, _, err = chatmdb("restore", "--db", str(tmp_path / "elsewhere"), "--backend", backend, str(db))
    assert code != 0 and "does not verify" in err
    assert not (tmp_path / "elsewhere").exists()
