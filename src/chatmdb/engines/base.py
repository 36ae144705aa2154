"""The backend contract: an ordered key-value engine with transactions.

A backend implements four operations on named tables of byte keys kept in
byte order (``get``, ``put``, ``delete``, ``range``) inside read and write
transactions, a savepoint inside a write transaction, plus ``close``,
``info``, ``backup`` and ``check``. The tables are the store's to name
(:data:`chatmdb.store.schema.TABLES`); the engine creates them at open.
Everything above it (records, indexes, sequence numbers, validation) lives
once in :mod:`chatmdb.store`, so LMDB and SQLite behave identically by
construction and the conformance suite holds each engine to that.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")



class ReadTxn(Protocol):
    """A consistent snapshot; valid only inside its ``with`` block."""

    def get(self, table: str, key: bytes) -> bytes | None: ...

    def range(
        self, table: str, start: bytes, end: bytes | None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield (key, value) with ``start <= key < end`` in key order (or reversed)."""
        ...

    def count(self, table: str) -> int: ...


class WriteTxn(ReadTxn, Protocol):
    def put(self, table: str, key: bytes, value: bytes) -> None: ...

    def delete(self, table: str, key: bytes) -> bool: ...

    def savepoint(self) -> AbstractContextManager[None]:
        """A block whose writes are undone, and the rest of the transaction kept, if it raises.

        The group-commit writer runs each caller's operation in one, so an
        operation that fails after its first write leaves nothing of itself
        in the batch it shares with others. Savepoints do not nest.
        """
        ...


class Engine(abc.ABC):
    """An open database. Implementations must be safe to share between threads."""

    name: str
    path: Path
    FILES: tuple[str, ...]  # the files of a database, as a backup holds them

    @abc.abstractmethod
    def read(self) -> AbstractContextManager[ReadTxn]:
        """Begin a read transaction (a snapshot) for a ``with`` block."""

    @abc.abstractmethod
    def write(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run *fn* in one write transaction and commit; return its result.

        The result is returned only after the commit reached the configured
        durability. If *fn* raises, nothing it wrote is kept. The engine may
        run *fn* more than once (after growing its map), so *fn* must derive
        everything from the transaction it is given. Engine failures raise
        :class:`~chatmdb.errors.StorageError`.
        """

    @abc.abstractmethod
    def info(self) -> dict[str, Any]:
        """Sizes: ``file_size``, ``bytes_used``, ``map_size`` (None if unbounded)."""

    @abc.abstractmethod
    def backup(self, dest: Path, *, compact: bool = False) -> None:
        """Write a consistent copy of the database into the directory *dest*.

        With *compact*, the copy holds only the pages in use (the free space
        deleted records left is not copied), at the cost of a slower copy. An
        engine whose copy is always compact (LMDB) ignores the flag.
        """

    @abc.abstractmethod
    def check(self) -> list[str]:
        """Engine-level integrity problems (empty when none)."""

    @classmethod
    @abc.abstractmethod
    def tables_in(cls, path: Path) -> set[str]:
        """The tables of the database in directory *path*, read without creating
        or changing anything (for checking a backup before restoring it).

        :raises StorageError: *path* holds no database of this engine.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the files; the engine cannot be used afterwards."""


# Databases hold chat content and are for their owner alone: new database
# directories are created 0700 and files 0600, whatever the umask.
DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(path: Path) -> None:
    """Create *path* (and its parents) if missing; a new last component is 0700."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key that starts with *prefix*."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
