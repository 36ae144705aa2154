"""LMDB engine: one Environment per process, named databases opened once.

The facts this module is built around (see the README's design notes):

* liblmdb forbids opening one environment twice in a process, so stores on
  the same path share one :class:`_Env` through a process-wide registry.
* ``set_mapsize`` may only run while this process has no live transaction,
  so every transaction passes a shared/exclusive :class:`_Gate`, and growing
  the map takes it exclusively. Across processes, growth is serialized by an
  ``flock`` and the new size is committed at once, so every other process
  adopts it (``MapResizedError`` -> ``set_mapsize(0)``) before it can write.
* An environment must not be used across ``fork()``. A fork handler waits
  until no transaction is live, and the child reopens on first use.
* Durability ``full`` is ``sync=True`` (fsync per commit); ``process`` is
  ``sync=False`` with ``writemap=False``: it survives a process crash and
  never risks the corruption that ``writemap`` + no-sync allows on an OS crash.
"""

from __future__ import annotations

import fcntl
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb

from ..errors import ChatMDBError, CorruptionError, StorageError, StoreClosed
from .base import FILE_MODE, Engine, T, WriteTxn, make_private_dir

DEFAULT_MAP_SIZE = 1 << 30  # 1 GiB; sparse, so it costs nothing until used
MAX_GROWTH_STEP = 8 << 30  # past 8 GiB, grow linearly instead of doubling
MAX_READERS = 1024


class _Gate:
    """Many transactions at once, or one map resize with none."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._exclusive = False

    def enter(self) -> None:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._active += 1

    def leave(self) -> None:
        with self._cond:
            self._active -= 1
            if self._active == 0:
                self._cond.notify_all()

    def acquire_exclusive(self, timeout: float | None = None) -> bool:
        with self._cond:
            if not self._cond.wait_for(lambda: not self._exclusive, timeout):
                return False
            self._exclusive = True
            if not self._cond.wait_for(lambda: self._active == 0, timeout):
                self._exclusive = False
                self._cond.notify_all()
                return False
            return True

    def release_exclusive(self) -> None:
        with self._cond:
            self._exclusive = False
            self._cond.notify_all()


class _LmdbTxn:
    __slots__ = ("_dbs", "_txn")

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any]) -> None:
        self._txn = txn
        self._dbs = dbs

    def get(self, table: str, key: bytes) -> bytes | None:
        value = self._txn.get(key, db=self._dbs[table])
        return None if value is None else bytes(value)

    def put(self, table: str, key: bytes, value: bytes) -> None:
        self._txn.put(key, value, db=self._dbs[table])

    def delete(self, table: str, key: bytes) -> bool:
        return bool(self._txn.delete(key, db=self._dbs[table]))

    def count(self, table: str) -> int:
        return int(self._txn.stat(self._dbs[table])["entries"])

    def range(
        self, table: str, start: bytes, end: bytes | None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        cursor = self._txn.cursor(db=self._dbs[table])
        if not reverse:
            if not cursor.set_range(start):
                return
            for key, value in cursor.iternext():
                if end is not None and bytes(key) >= end:
                    return
                yield bytes(key), bytes(value)
            return
        if end is None:
            positioned = cursor.last()
        elif cursor.set_range(end):
            positioned = cursor.prev()
        else:
            positioned = cursor.last()
        if not positioned:
            return
        for key, value in cursor.iterprev():
            if bytes(key) < start:
                return
            yield bytes(key), bytes(value)


_ABSENT = object()  # no pending entry: the key reads through to the transaction


class _Savepoint:
    """Undoes the overlay writes of a block that raises (see ``_LmdbWriteTxn.savepoint``)."""

    __slots__ = ("_txn",)

    def __init__(self, txn: _LmdbWriteTxn) -> None:
        self._txn = txn

    def __enter__(self) -> None:
        if self._txn._undo is not None:
            raise RuntimeError("savepoints do not nest")
        self._txn._undo = []

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        txn = self._txn
        undo, txn._undo = txn._undo, None
        if kind is None or undo is None:
            return
        for table, key, previous in reversed(undo):
            pending = txn._pending.setdefault(table, {})
            if previous is _ABSENT:
                pending.pop(key, None)
            else:
                pending[key] = previous


class _LmdbWriteTxn(_LmdbTxn):
    """A write transaction that holds its puts and deletes until the commit.

    py-lmdb releases the GIL around every ``put`` and ``delete``, and winning
    it back costs tens of microseconds when other threads are runnable (the
    producers of a group commit always are): measured 0.7 us per put alone,
    76 us with four busy threads. Reads keep the GIL, and ``putmulti``
    releases it once for a whole list, so writes go to an overlay that is
    flushed, per table and in key order, with one ``putmulti`` each.

    A savepoint is an undo log of the overlay: each write inside it records
    the entry it replaced. A flush inside a savepoint (a range or a count
    reads through to the transaction) first records the transaction's own
    values of the keys it is about to overwrite, so undoing restores them too.
    """

    __slots__ = ("_pending", "_undo")

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any]) -> None:
        super().__init__(txn, dbs)
        self._pending: dict[str, dict[bytes, bytes | None]] = {}
        self._undo: list[tuple[str, bytes, Any]] | None = None

    def savepoint(self) -> _Savepoint:
        return _Savepoint(self)

    def get(self, table: str, key: bytes) -> bytes | None:
        pending = self._pending.get(table)
        if pending is not None and key in pending:
            return pending[key]
        return super().get(table, key)

    def put(self, table: str, key: bytes, value: bytes) -> None:
        pending = self._pending.setdefault(table, {})
        if self._undo is not None:
            self._undo.append((table, key, pending.get(key, _ABSENT)))
        pending[key] = value

    def delete(self, table: str, key: bytes) -> bool:
        existed = self.get(table, key) is not None
        if existed:
            pending = self._pending.setdefault(table, {})
            if self._undo is not None:
                self._undo.append((table, key, pending.get(key, _ABSENT)))
            pending[key] = None
        return existed

    def count(self, table: str) -> int:
        self._flush(table)
        return super().count(table)

    def range(
        self, table: str, start: bytes, end: bytes | None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        self._flush(table)
        return super().range(table, start, end, reverse)

    def _flush(self, table: str) -> None:
        pending = self._pending.pop(table, None)
        if not pending:
            return
        db = self._dbs[table]
        if self._undo:
            undo = self._undo
            for i, (name, key, previous) in enumerate(undo):
                if name == table and previous is _ABSENT:
                    value = self._txn.get(key, db=db)
                    undo[i] = (name, key, None if value is None else bytes(value))
        puts = sorted((k, v) for k, v in pending.items() if v is not None)
        if puts:
            self._txn.cursor(db=db).putmulti(puts)
        for key, value in pending.items():
            if value is None:
                self._txn.delete(key, db=db)

    def flush(self) -> None:
        for table in list(self._pending):
            self._flush(table)


class _Env:
    """One open LMDB environment, shared by every store on its path in this process."""

    def __init__(self, path: Path, map_size: int, durability: str, tables: tuple[str, ...]) -> None:
        self.path = path
        self.tables = tables
        self.durability = durability
        self.refs = 0
        self.gate = _Gate()
        self.forked = False
        self._initial_map_size = map_size
        self._resize_lock_path = path / "resize.lock"
        self._open()

    def _open_env(self, sync: bool) -> lmdb.Environment:
        for attempt in range(20):
            try:
                return lmdb.open(
                    str(self.path),
                    map_size=self._initial_map_size,
                    max_dbs=len(self.tables) + 4,
                    max_readers=MAX_READERS,
                    sync=sync,
                    metasync=sync,
                    writemap=False,
                    map_async=False,
                    meminit=False,
                    lock=True,
                    mode=FILE_MODE,
                )
            except lmdb.MapResizedError:
                # Another process grew the map between liblmdb reading the
                # size and py-lmdb's first transaction; opening again adopts it.
                if attempt == 19:
                    raise
        raise AssertionError("unreachable")

    def _open(self) -> None:
        sync = self.durability == "full"
        try:
            make_private_dir(self.path)
            self.env = self._open_env(sync)
        except lmdb.InvalidError as exc:
            raise CorruptionError(
                f"{self.path} is not a valid LMDB database", hint="restore from a backup"
            ) from exc
        except (lmdb.Error, OSError) as exc:
            raise StorageError(f"cannot open the LMDB database at {self.path}: {exc}") from exc
        try:
            # Before any transaction: reading a page past the end of a truncated
            # file through the map is a SIGBUS, not an error. The check reads
            # only the meta pages, which liblmdb has already validated.
            self._check_file_size()
            # A process killed while reading leaves its reader slot behind; clear them.
            self.env.reader_check()
            self.dbs = self._open_dbs()
        except BaseException:
            self.env.close()
            raise

    def _open_dbs(self) -> dict[str, Any]:
        dbs: dict[str, Any] = {}
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for name in self.tables:
                        dbs[name] = self.env.open_db(name.encode(), txn=txn, create=True)
                return dbs
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)
            except lmdb.Error as exc:
                raise CorruptionError(
                    f"cannot read the tables of {self.path}: {exc}", hint="restore from a backup"
                ) from exc

    def _check_file_size(self) -> None:
        data = self.path / "data.mdb"
        if not data.exists():
            return
        info = self.env.info()
        psize = self.env.stat()["psize"]
        needed = (info["last_pgno"] + 1) * psize
        if data.stat().st_size < needed:
            raise CorruptionError(
                f"{data} is {data.stat().st_size} bytes but its pages reach {needed}: the file was truncated",
                hint="restore from a backup",
            )

    def reopen_after_fork(self) -> None:
        # No transaction was live at fork (the fork handler saw to that), so
        # closing the inherited handle touches nothing the parent relies on:
        # liblmdb clears only reader slots tagged with the calling pid.
        self.env.close()
        self.gate = _Gate()
        self.forked = False
        self._open()

    # -- map size -------------------------------------------------------

    def adopt_map_size(self) -> None:
        """Take up the map size another process committed."""
        self.gate.acquire_exclusive()
        try:
            self.env.set_mapsize(0)
        finally:
            self.gate.release_exclusive()

    def grow(self) -> None:
        """Double the map (bounded steps), committed at once so others adopt it."""
        with os.fdopen(os.open(self._resize_lock_path, os.O_CREAT | os.O_RDWR, FILE_MODE), "r+b") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            self.gate.acquire_exclusive()
            try:
                self.env.set_mapsize(0)  # start from the newest committed size
                current = self.env.info()["map_size"]
                new = current + min(current, MAX_GROWTH_STEP)
                self.env.set_mapsize(new)
                # The new size reaches the meta page only with a commit; make one
                # now, while still holding the lock, so no process can grow from
                # a stale size (py-lmdb #269).
                with self.env.begin(write=True) as txn:
                    txn.put(b"map_size", str(new).encode(), db=self.dbs["meta"])
            except lmdb.MapFullError:
                pass  # the meta commit itself did not fit; the next attempt grows again
            finally:
                self.gate.release_exclusive()
                fcntl.flock(lock_file, fcntl.LOCK_UN)


_ENVS: dict[str, _Env] = {}
_ENVS_LOCK = threading.Lock()
_LIVE: weakref.WeakSet[_Env] = weakref.WeakSet()


def _before_fork() -> None:
    for env in list(_LIVE):
        # Bounded: a fork from inside a transaction must not hang forever.
        env._fork_held = env.gate.acquire_exclusive(timeout=5.0)  # type: ignore[attr-defined]


def _after_fork_parent() -> None:
    for env in list(_LIVE):
        if getattr(env, "_fork_held", False):
            env.gate.release_exclusive()


def _after_fork_child() -> None:
    for env in list(_LIVE):
        if getattr(env, "_fork_held", False):
            env.gate.release_exclusive()
        env.forked = True


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child
)


class LmdbEngine(Engine):
    name = "lmdb"
    FILES = ("data.mdb",)  # what a backup holds (lock.mdb is per host and rebuilt)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        tables: tuple[str, ...],
        durability: str = "full",
        map_size: int | None = None,
    ):
        self.path = Path(path).absolute()
        key = os.path.realpath(self.path)
        with _ENVS_LOCK:
            env = _ENVS.get(key)
            if env is None:
                env = _Env(self.path, map_size or DEFAULT_MAP_SIZE, durability, tables)
                _ENVS[key] = env
                _LIVE.add(env)
            elif env.durability != durability:
                raise StorageError(
                    f"{self.path} is already open in this process with durability={env.durability!r}",
                    hint="open it with the same durability, or share the open store",
                )
            env.refs += 1
        self._key = key
        self._env: _Env | None = env

    def _live_env(self) -> _Env:
        env = self._env
        if env is None:
            raise StoreClosed("the store is closed")
        if env.forked:
            with _ENVS_LOCK:
                if env.forked:
                    env.reopen_after_fork()
        return env

    @contextmanager
    def read(self) -> Iterator[_LmdbTxn]:
        env = self._live_env()
        env.gate.enter()
        txn = None
        try:
            for _ in range(100):
                try:
                    txn = env.env.begin(buffers=False)
                    break
                except lmdb.MapResizedError:
                    env.gate.leave()
                    try:
                        env.adopt_map_size()
                    finally:
                        env.gate.enter()
                except lmdb.ReadersFullError:
                    env.env.reader_check()
            if txn is None:
                raise StorageError("could not begin a read transaction")
            yield _LmdbTxn(txn, env.dbs)
        except lmdb.Error as exc:
            raise _translate(exc) from exc
        finally:
            if txn is not None:
                txn.abort()
            env.gate.leave()

    def write(self, fn: Callable[[WriteTxn], T]) -> T:
        env = self._live_env()
        for _ in range(200):
            action = None
            env.gate.enter()
            try:
                try:
                    txn = env.env.begin(write=True)
                except lmdb.MapResizedError:
                    action = "adopt"
                except lmdb.ReadersFullError:
                    env.env.reader_check()
                    continue
                else:
                    try:
                        wtxn = _LmdbWriteTxn(txn, env.dbs)
                        result = fn(wtxn)
                        wtxn.flush()
                        txn.commit()
                        return result
                    except lmdb.MapFullError:
                        txn.abort()
                        action = "grow"
                    except lmdb.MapResizedError:
                        txn.abort()
                        action = "adopt"
                    except BaseException:
                        txn.abort()
                        raise
            except ChatMDBError:
                raise
            except lmdb.Error as exc:
                raise _translate(exc) from exc
            finally:
                env.gate.leave()
            if action == "grow":
                env.grow()
            elif action == "adopt":
                env.adopt_map_size()
        raise StorageError("the write did not fit even after growing the map repeatedly")

    def info(self) -> dict[str, Any]:
        env = self._live_env()
        info = env.env.info()
        psize = env.env.stat()["psize"]
        data = env.path / "data.mdb"
        return {
            "file_size": data.stat().st_size if data.exists() else 0,
            "bytes_used": (info["last_pgno"] + 1) * psize,
            "map_size": info["map_size"],
            "readers": info["num_readers"],
            "max_readers": info["max_readers"],
        }

    def backup(self, dest: Path, *, compact: bool = False) -> None:
        # Always compact, whatever *compact* says: mdb_env_copy2 with
        # MDB_CP_COMPACT writes only the pages in use, renumbered, and costs
        # no more than a plain copy (which would carry the free pages along).
        env = self._live_env()
        make_private_dir(dest)
        env.gate.enter()
        try:
            # A consistent copy from one read transaction; writers keep going.
            env.env.copy(str(dest), compact=True)
            (dest / "data.mdb").chmod(FILE_MODE)
        except lmdb.Error as exc:
            raise _translate(exc) from exc
        finally:
            env.gate.leave()

    @classmethod
    def tables_in(cls, path: Path) -> set[str]:
        if not (path / "data.mdb").is_file():
            raise StorageError(f"{path} holds no LMDB database (no data.mdb)")
        try:
            # Read-only and without the lock file: nothing is created or changed.
            env = lmdb.open(str(path), readonly=True, lock=False, max_dbs=0)
        except lmdb.Error as exc:
            raise CorruptionError(f"{path} is not a valid LMDB database: {exc}") from exc
        try:
            data = path / "data.mdb"
            if data.stat().st_size < (env.info()["last_pgno"] + 1) * env.stat()["psize"]:
                raise CorruptionError(f"{data} was truncated")
            with env.begin() as txn:
                return {bytes(key).decode("utf-8", "replace") for key, _ in txn.cursor()}
        except lmdb.Error as exc:
            raise CorruptionError(f"cannot read the tables of {path}: {exc}") from exc
        finally:
            env.close()

    def check(self) -> list[str]:
        env = self._live_env()
        try:
            env._check_file_size()
        except CorruptionError as exc:
            return [str(exc)]
        return []

    def close(self) -> None:
        env, self._env = self._env, None
        if env is None:
            return
        with _ENVS_LOCK:
            env.refs -= 1
            if env.refs > 0:
                return
            _ENVS.pop(self._key, None)
            _LIVE.discard(env)
        env.gate.acquire_exclusive()
        try:
            if not env.forked:
                env.env.sync(True)
            env.env.close()
        finally:
            env.gate.release_exclusive()


def _translate(exc: lmdb.Error) -> StorageError:
    if isinstance(exc, (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError)):
        return CorruptionError(f"LMDB reports a damaged database: {exc}", hint="restore from a backup")
    if "No space left" in str(exc) or isinstance(exc, lmdb.DiskError):
        return StorageError(f"the disk is full: {exc}", hint="free space; committed data is intact")
    return StorageError(f"LMDB failed: {exc}")
