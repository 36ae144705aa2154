"""Workload 2: the raw engine ceiling, straight through py-lmdb and sqlite3.

The same ~300-byte message records and their uuid index entries the store
writes, committed in batches from one thread with nothing else in the way
(no validation, no session record update, no group-commit queue), so the
report shows how close the store comes to each engine's own limit.
Settings match the store's engines: LMDB ``sync``/``metasync`` on for
``full`` and off for ``process`` (``writemap=False`` both); SQLite WAL with
``synchronous=FULL``/``NORMAL``, ``WITHOUT ROWID`` tables, ``BEGIN IMMEDIATE``.

Reproduce with ``chatmdb bench --only raw``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lmdb

from ..store import codec as _codec
from ._stats import BenchFailure, dir_size, summarize
from .store_load import content_for

_KEY = struct.Struct(">QQ")


class _Records:
    """Message records for 1,000 sessions, seq-numbered per session, round-robin."""

    def __init__(self, sessions: int = 1000) -> None:
        self.sessions = sessions
        self.content = content_for()
        self.i = 0

    def batch(self, size: int) -> list[tuple[bytes, bytes, bytes]]:
        """(message key, record, uuid key) triples."""
        out = []
        for _ in range(size):
            n, seq = self.i % self.sessions + 1, self.i // self.sessions + 1
            uid = os.urandom(16).hex()
            record = _codec.encode([{"g": self.i + 1}, {
                "session_id": f"s{n:04d}", "role": "user", "sender_id": "user-001", "content": self.content,
                "message_uuid": uid, "created_at": "2026-01-01T00:00:00.000000+00:00", "seq": seq,
            }])
            out.append((_KEY.pack(n, seq), record, uid.encode()))
            self.i += 1
        return out


def _measure(commit: Callable[[list[tuple[bytes, bytes, bytes]]], None], batch: int, seconds: float,
             warmup: float) -> tuple[int, list[float]]:
    """Commit batches for *seconds* after *warmup*; (records committed, per-commit latencies)."""
    records = _Records()
    clock = time.perf_counter
    warm_end = clock() + warmup
    while clock() < warm_end:
        commit(records.batch(batch))
    done, latencies = 0, []
    deadline = clock() + seconds
    while clock() < deadline:
        rows = records.batch(batch)  # building records is the caller's work, not the engine's
        t0 = clock()
        commit(rows)
        latencies.append(clock() - t0)
        done += batch
    return done, latencies


def raw_lmdb(path: Path, durability: str, batch: int, seconds: float, warmup: float) -> dict[str, Any]:
    sync = durability == "full"
    path.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=16 << 30, max_dbs=4, sync=sync, metasync=sync, writemap=False)
    messages, index = env.open_db(b"messages"), env.open_db(b"msg_uuid")

    def commit(rows: list[tuple[bytes, bytes, bytes]]) -> None:
        with env.begin(write=True) as txn:
            for key, record, uid in rows:
                txn.put(key, record, db=messages)
                txn.put(uid, key, db=index)

    try:
        done, latencies = _measure(commit, batch, seconds, warmup)
        with env.begin() as txn:
            stored = txn.stat(messages)["entries"]
    finally:
        env.close()
    return _row("lmdb", path, durability, batch, done, latencies, stored)


def raw_sqlite(path: Path, durability: str, batch: int, seconds: float, warmup: float) -> dict[str, Any]:
    path.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path / "raw.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {'FULL' if durability == 'full' else 'NORMAL'}")
    for table in ("messages", "msg_uuid"):
        conn.execute(f"CREATE TABLE t_{table} (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")

    def commit(rows: list[tuple[bytes, bytes, bytes]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO t_messages (k, v) VALUES (?, ?)", [(k, r) for k, r, _ in rows])
        conn.executemany("INSERT INTO t_msg_uuid (k, v) VALUES (?, ?)", [(u, k) for k, _, u in rows])
        conn.execute("COMMIT")

    try:
        done, latencies = _measure(commit, batch, seconds, warmup)
        stored = conn.execute("SELECT count(*) FROM t_messages").fetchone()[0]
    finally:
        conn.close()
    return _row("sqlite", path, durability, batch, done, latencies, stored)


def _row(engine: str, path: Path, durability: str, batch: int, done: int,
         latencies: list[float], stored: int) -> dict[str, Any]:
    size = dir_size(path)
    shutil.rmtree(path, ignore_errors=True)
    if stored < done:
        raise BenchFailure(f"raw {engine}: {done} records committed but {stored} stored")
    return {
        "backend": engine,
        "durability": durability,
        "batch": batch,
        # Time inside commits only: the ceiling of the engine, not of building records.
        "msgs_per_s": done / sum(latencies) if latencies else 0.0,
        "commit_latency_ms": summarize(latencies),
        "db": size,
    }
