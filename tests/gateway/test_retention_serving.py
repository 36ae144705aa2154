"""``chatmdb serve --retain-messages N --retain-days D``: retention while serving."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from chatmdb import open_store

from .conftest import BACKENDS, start_server, stop_and_check


@pytest.mark.parametrize("backend", BACKENDS)
def test_serve_prunes_old_messages_and_counts_them(tmp_path: Path, backend: str) -> None:
    with open_store(tmp_path / "db", backend=backend) as store:
        store.create_session(session_id="s")
        for i in range(10):
            store.create_message({"session_id": "s", "content": str(i)})
        store.create_message({"session_id": "s", "created_at": "2030-01-01T00:00:00+00:00", "content": "future"})
    server = start_server(tmp_path, backend, args=("--retain-messages", "3", "--retain-days", "30"))
    try:
        with server.http() as http:
            for _ in range(100):  # bounded: 10 s
                page = http.get("/api/sessions/s/messages", params={"direction": "asc"}).json()
                if page["pagination"]["total"] == 3:
                    break
                time.sleep(0.1)
            assert [m["seq"] for m in page["items"]] == [9, 10, 11]
            metrics = http.get("/metrics").text
            assert "chatmdb_messages_pruned_total 8.0" in metrics
            # Serving goes on: a new message gets the next seq.
            assert http.post("/api/sessions/s/messages", json={"content": "new"}).json()["seq"] == 12
    finally:
        stop_and_check(server)
    with open_store(tmp_path / "db", backend=backend) as store:
        assert store.verify()["ok"] and store.stats()["pruned_messages"] == 8


def test_bad_retention_flags_are_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "chatmdb", "serve", "--db", str(tmp_path / "db"), "--retain-messages", "-1"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0 and "retain" in done.stderr and "Traceback" not in done.stderr
