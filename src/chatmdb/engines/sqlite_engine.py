"""SQLite engine: the baseline and fallback, at SQLite's own best practice.

WAL journal, ``busy_timeout``, ``BEGIN IMMEDIATE`` for every write (a deferred
transaction that later needs the write lock fails with "database is locked"
instead of waiting), one connection per thread, and a ``WITHOUT ROWID`` table
per keyspace so each lookup is one B-tree search on the primary key.
Durability ``full`` is ``synchronous=FULL``; ``process`` is ``synchronous=NORMAL``,
which in WAL mode survives a process crash but not a power loss.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ..errors import ChatMDBError, CorruptionError, StorageError, StoreClosed
from .base import FILE_MODE, Engine, T, WriteTxn, make_private_dir

FILENAME = "chatmdb.sqlite3"
BUSY_TIMEOUT_MS = 60_000


class _Savepoint:
    """SQLite's own SAVEPOINT: a failed block is rolled back, the transaction goes on."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("SAVEPOINT op")

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if kind is not None:
            self._conn.execute("ROLLBACK TO op")
        self._conn.execute("RELEASE op")


class _SqliteTxn:
    __slots__ = ("_conn",)

    def savepoint(self) -> _Savepoint:
        return _Savepoint(self._conn)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get(self, table: str, key: bytes) -> bytes | None:
        row = self._conn.execute(f"SELECT v FROM t_{table} WHERE k = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self._conn.execute(f"INSERT OR REPLACE INTO t_{table} (k, v) VALUES (?, ?)", (key, value))

    def delete(self, table: str, key: bytes) -> bool:
        return self._conn.execute(f"DELETE FROM t_{table} WHERE k = ?", (key,)).rowcount > 0

    def count(self, table: str) -> int:
        return int(self._conn.execute(f"SELECT count(*) FROM t_{table}").fetchone()[0])

    def range(
        self, table: str, start: bytes, end: bytes | None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        order = "DESC" if reverse else "ASC"
        if end is None:
            rows = self._conn.execute(f"SELECT k, v FROM t_{table} WHERE k >= ? ORDER BY k {order}", (start,))
        else:
            rows = self._conn.execute(
                f"SELECT k, v FROM t_{table} WHERE k >= ? AND k < ? ORDER BY k {order}", (start, end)
            )
        for key, value in rows:
            yield bytes(key), bytes(value)


class SqliteEngine(Engine):
    name = "sqlite"
    FILES = (FILENAME,)  # what a backup holds (the WAL is checkpointed into it)

    def __init__(self, path: str | os.PathLike[str], *, tables: tuple[str, ...], durability: str = "full") -> None:
        self.path = Path(path).absolute()
        self.file = self.path / FILENAME
        self._synchronous = "FULL" if durability == "full" else "NORMAL"
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        try:
            make_private_dir(self.path)
            _create_private(self.file)
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            for table in tables:
                conn.execute(f"CREATE TABLE IF NOT EXISTS t_{table} (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self.close()
            raise _translate(exc, str(self.file)) from exc
        except OSError as exc:
            raise StorageError(f"cannot open the SQLite database at {self.file}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreClosed("the store is closed")
        if self._pid != os.getpid():
            # SQLite connections must not cross fork(); start afresh in the child.
            self._pid = os.getpid()
            self._local = threading.local()
            self._conns = []
            self._conns_lock = threading.Lock()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.file, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StorageError(f"{self.file} cannot use WAL journaling (got {mode})")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA cache_size = -65536")  # 64 MiB per connection
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def read(self) -> Iterator[_SqliteTxn]:
        conn = self._conn()
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise _translate(exc, str(self.file)) from exc
        try:
            yield _SqliteTxn(conn)
        except sqlite3.Error as exc:
            raise _translate(exc, str(self.file)) from exc
        finally:
            conn.execute("ROLLBACK")

    def write(self, fn: Callable[[WriteTxn], T]) -> T:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _translate(exc, str(self.file)) from exc
        try:
            result = fn(_SqliteTxn(conn))
            conn.execute("COMMIT")
            return result
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error) and not isinstance(exc, ChatMDBError):
                raise _translate(exc, str(self.file)) from exc
            raise

    def info(self) -> dict[str, Any]:
        conn = self._conn()
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = sum(p.stat().st_size for p in self.path.glob(FILENAME + "*"))
        return {"file_size": size, "bytes_used": (pages - free) * page_size, "map_size": None}

    def backup(self, dest: Path, *, compact: bool = False) -> None:
        if compact:
            self._compact_copy(dest)
            return
        make_private_dir(dest)
        _create_private(dest / FILENAME)
        target = sqlite3.connect(dest / FILENAME)
        try:
            self._conn().backup(target)
            target.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as exc:
            raise _translate(exc, str(self.file)) from exc
        finally:
            target.close()

    def _compact_copy(self, dest: Path) -> None:
        # VACUUM INTO writes the snapshot of one read transaction (writers go
        # on: WAL) as a new database without free pages. It does not fsync
        # the copy; whoever relies on it being on disk syncs it.
        make_private_dir(dest)
        _create_private(dest / FILENAME)  # an empty file is allowed, and keeps 0600
        try:
            self._conn().execute("VACUUM INTO ?", (str(dest / FILENAME),))
            target = sqlite3.connect(dest / FILENAME)
            try:
                target.execute("PRAGMA journal_mode = WAL")
            finally:
                target.close()
        except sqlite3.Error as exc:
            raise _translate(exc, str(self.file)) from exc

    @classmethod
    def tables_in(cls, path: Path) -> set[str]:
        file = path / FILENAME
        if not file.is_file():
            raise StorageError(f"{path} holds no SQLite database (no {FILENAME})")
        try:
            conn = sqlite3.connect(f"{file.absolute().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise _translate(exc, str(file)) from exc
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc, str(file)) from exc
        finally:
            conn.close()
        return {name[2:] for (name,) in rows if name.startswith("t_")}

    def check(self) -> list[str]:
        rows = self._conn().execute("PRAGMA integrity_check").fetchall()
        return [] if rows == [("ok",)] else [str(r[0]) for r in rows]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with suppress(sqlite3.Error):
                conn.close()


def _create_private(file: Path) -> None:
    # SQLite creates its files 0644 (less the umask) and gives the -wal and
    # -shm files the mode of the database file, so make that one 0600 first.
    if not file.exists():
        os.close(os.open(file, os.O_CREAT | os.O_WRONLY, FILE_MODE))


def _translate(exc: sqlite3.Error, where: str) -> StorageError:
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text):
        return CorruptionError(f"{where} is damaged: {text}", hint="restore from a backup")
    if "full" in text:
        return StorageError(f"the disk is full: {text}", hint="free space; committed data is intact")
    if "locked" in text or "busy" in text:
        return StorageError(f"{where} stayed locked past the busy timeout: {text}")
    return StorageError(f"SQLite failed on {where}: {text}")
