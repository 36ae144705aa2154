"""Edges of the engine contract and of the saved connection states, on both engines: savepoints
that undo deletes, range bounds, (LMDB) a write that finds the map grown past its own by another
process, and expiry at the boundary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatmdb import StorageError, Store, open_store
from chatmdb.engines.base import WriteTxn
from chatmdb.store.ops import WriteOutcome


class Undone(Exception):
    """Raised inside a savepoint to undo it."""


def test_a_failed_savepoint_restores_what_it_deleted(store: Store) -> None:
    def setup(txn: WriteTxn) -> None:
        txn.put("meta", b"t:old", b"committed")
        txn.put("meta", b"t:gone", b"x")

    store.engine.write(setup)

    def op(txn: WriteTxn) -> list[bytes | None]:
        txn.put("meta", b"t:new", b"earlier in this transaction")
        try:
            with txn.savepoint():
                assert txn.delete("meta", b"t:old")  # read through to the committed value
                assert txn.delete("meta", b"t:new")  # written earlier in the transaction
                assert not txn.delete("meta", b"t:never")
                raise Undone
        except Undone:
            pass
        with txn.savepoint():  # a savepoint that completes keeps its delete
            assert txn.delete("meta", b"t:gone")
        return [txn.get("meta", key) for key in (b"t:old", b"t:new", b"t:gone")]

    assert store.engine.write(op) == [b"committed", b"earlier in this transaction", None]
    with store.engine.read() as txn:
        assert [txn.get("meta", key) for key in (b"t:old", b"t:new", b"t:gone")] == [
            b"committed", b"earlier in this transaction", None,
        ]


def test_a_failed_savepoint_after_a_range_read_restores_what_it_deleted(store: Store) -> None:
    # A range read inside the savepoint flushes pending writes to the transaction: undo must still restore.
    store.engine.write(lambda txn: txn.put("meta", b"t:a", b"1"))

    def op(txn: WriteTxn) -> list[tuple[bytes, bytes]]:
        try:
            with txn.savepoint():
                assert txn.delete("meta", b"t:a")
                txn.put("meta", b"t:b", b"2")
                assert list(txn.range("meta", b"t:", b"t;")) == [(b"t:b", b"2")]
                raise Undone
        except Undone:
            pass
        return list(txn.range("meta", b"t:", b"t;"))

    assert store.engine.write(op) == [(b"t:a", b"1")]


def test_range_bounds(store: Store) -> None:
    keys = [b"r:a", b"r:b", b"r:c", b"r:d"]
    def setup(txn: WriteTxn) -> None:
        for key in keys:
            txn.put("meta", key, key.upper())

    store.engine.write(setup)
    for reading in ("committed", "in a write"):

        def ranges(txn: WriteTxn) -> list[list[bytes]]:
            return [
                [k for k, _ in txn.range("meta", b"r:b", b"r:d")],  # the end is excluded, the start included
                [k for k, _ in txn.range("meta", b"r:b", b"r:d", reverse=True)],
                [k for k, _ in txn.range("meta", b"r:b", b"r;")],
                [k for k, _ in txn.range("meta", b"r:", b"r;", reverse=True)],
                [k for k, _ in txn.range("meta", b"r:bb", b"r:cc")],
            ]

        expected = [[b"r:b", b"r:c"], [b"r:c", b"r:b"], [b"r:b", b"r:c", b"r:d"], keys[::-1], [b"r:c"]]
        if reading == "committed":
            with store.engine.read() as txn:
                assert ranges(txn) == expected  # type: ignore[arg-type]
        else:
            assert store.engine.write(ranges) == expected


def test_a_write_adopts_a_map_another_process_grew_and_filled(tmp_path: Path) -> None:
    """This process maps 1 MiB; another commits pages past it. The next write here begins with
    MapResizedError and must adopt the new size, not fail or grow from its own."""
    path = tmp_path / "db"
    with open_store(path, backend="lmdb", map_size=1 << 20) as store:
        store.create_session(session_id="s")
        other = subprocess.run(
            [sys.executable, "-c",
             "import sys; from chatmdb import open_store\n"
             "with open_store(sys.argv[1], backend='lmdb', map_size=1 << 20) as s:\n"
             "    [s.create_message({'session_id': 's', 'content': 'x' * 20_000}) for _ in range(150)]",
             str(path)],
            capture_output=True, text=True, timeout=120,
        )
        assert other.returncode == 0, other.stderr
        assert store.engine.info()["map_size"] == 1 << 20  # not adopted yet: this process has not written
        store.create_message({"session_id": "s", "content": "after"})
        assert store.engine.info()["map_size"] > 3 << 20  # adopted the other's 4 MiB, whatever it grew to here
        assert store.get_session("s")["message_count"] == 151  # type: ignore[index]
        assert store.verify()["ok"]


def test_saved_connections_expire_after_their_time_not_at_it(store: Store) -> None:
    for pid, expires in (("p1", 100.0), ("p2", 100.0), ("p3", 150.0), ("p4", 200.0)):
        store.save_connection(pid, {"sid": pid, "rooms": [], "expires_at": expires})
    assert store.expire_connections(now=100.0) == 0  # at its time a state still recovers
    assert store.expire_connections(now=150.5) == 3  # every one past its time, counted
    assert [store.take_connection(pid) is None for pid in ("p1", "p2", "p3", "p4")] == [True, True, True, False]


def test_a_new_database_is_private(tmp_path: Path, backend: str) -> None:
    # Messages are private: no file of a new database is open to the group or others, whatever the umask.
    old = os.umask(0o022)
    try:
        with open_store(tmp_path / "db", backend=backend) as store:
            store.create_session(session_id="s")
    finally:
        os.umask(old)
    assert (tmp_path / "db").stat().st_mode & 0o777 == 0o700
    files = [p for p in (tmp_path / "db").iterdir() if p.is_file()]
    assert files and {p.name: p.stat().st_mode & 0o077 for p in files} == {p.name: 0 for p in files}


def test_closing_the_last_store_closes_the_lmdb_environment(tmp_path: Path) -> None:
    # One environment per path and process, shared by its stores: the last close must really close
    # it, or the path could never be opened again in this process with another durability.
    first = open_store(tmp_path / "db", backend="lmdb", durability="full")
    second = open_store(tmp_path / "db", backend="lmdb", durability="full")
    first.close()
    with pytest.raises(StorageError, match="already open in this process"):
        open_store(tmp_path / "db", backend="lmdb", durability="process")
    second.close()
    with open_store(tmp_path / "db", backend="lmdb", durability="process") as store:
        assert store.engine._live_env().env.flags()["sync"] is False  # type: ignore[attr-defined]


def test_a_lone_write_that_fails_at_commit_raises_and_leaves_nothing(tmp_path: Path) -> None:
    # LMDB refuses a key over 511 bytes only when the write overlay is flushed, at commit: the
    # caller alone in its batch must get the error, never an acknowledgement of a write that is not there.
    with open_store(tmp_path / "db", backend="lmdb") as store:

        def oversized_key(txn: WriteTxn) -> WriteOutcome[None]:
            txn.put("meta", b"k" * 600, b"v")
            return WriteOutcome(None, True, None)

        with pytest.raises(StorageError):
            store._run(oversized_key)
        with store.engine.read() as txn:
            assert txn.get("meta", b"k" * 600) is None
        assert store.verify()["ok"]
