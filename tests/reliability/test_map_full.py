"""A 1 MiB LMDB map takes 100 MB of messages without one failed write, from one or two processes.

The map grows by itself: a full map aborts the transaction, the map doubles
(serialized across processes by a file lock and committed at once), and the
write is retried; other processes adopt the new size before their next
transaction. Map size is an LMDB notion, so these run on LMDB only.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from _rel import check_messages, child_command, run_child

from chatmdb import open_store

TINY_MAP = 1 << 20
TOTAL = 100 * 1000 * 1000
VALUE_SIZE = 20_000  # 5,000 messages of 20 kB


def _check(path: Path, acked: list[str]) -> None:
    with open_store(path, backend="lmdb") as store:
        check_messages(store, ["big"], acked)
        stats = store.stats()
        assert stats["messages"] == len(acked)
        assert stats["bytes_used"] >= TOTAL
        assert stats["map_size"] >= stats["bytes_used"]


def test_tiny_map_takes_100_mb(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with open_store(path, backend="lmdb", map_size=TINY_MAP) as store:
        store.create_session(session_id="big")
    report = run_child(
        "map-writer", path=str(path), durability="process", map_size=TINY_MAP, total=TOTAL,
        value_size=VALUE_SIZE, sid="big", prefix="one",
    )
    assert report["failures"] == []
    assert len(report["acked"]) == TOTAL // VALUE_SIZE
    assert report["map_size"] > 64 * TINY_MAP
    _check(path, report["acked"])


def test_tiny_map_two_writer_processes(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with open_store(path, backend="lmdb", map_size=TINY_MAP) as store:
        store.create_session(session_id="big")
    procs = [
        subprocess.Popen(
            child_command(
                "map-writer", path=str(path), durability="full" if w == 0 else "process", map_size=TINY_MAP,
                total=TOTAL // 2, value_size=VALUE_SIZE, sid="big", prefix=f"proc{w}",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(2)
    ]
    acked: list[str] = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]
        report = json.loads(out)
        assert report["failures"] == []
        acked += report["acked"]
    assert len(acked) == TOTAL // VALUE_SIZE
    _check(path, acked)
