"""Compaction: rewrite a stopped database without the free space deleted records left.

Neither engine gives freed pages back to the file system: LMDB and SQLite keep
them for reuse, so a database that once held more keeps its size. ``compact``
writes a copy that holds only the pages in use (LMDB: ``mdb_env_copy2`` with
``MDB_CP_COMPACT``; SQLite: ``VACUUM INTO``) and puts it in place, as
carefully as a restore:

* the directory must hold a database of the named backend: its files
  (``Engine.FILES``) are checked, read-only, before anything is created;
* no store may have it open: every open store holds a shared lock on
  ``chatmdb.lock`` and compaction takes it exclusively, from before the copy
  until the compacted database is in place and verifies (the lock file
  itself is never moved), so no store opens the database meanwhile;
* the copy is written to ``.NAME.compacting-<pid>`` beside the database (inside
  it when the directory is a mount point, so that moves are renames), flushed
  to disk, opened and verified there: nothing was changed if any of that fails;
* then each database file is replaced by its compacted copy in one rename, so
  the directory always holds a complete database, the old or the new; the old
  files are kept (hard links) in ``NAME.before-compact-<time>`` until the new
  database opens and verifies in place, then removed; if it does not, they
  are put back. A SQLite WAL or shared-memory file left beside the old file is
  moved aside first: it must never meet the new one.

``Store.backup(dest, compact=True)`` is the hot variant (a compacted backup of
an open store, while writers go on); see :func:`compacted_backup`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from ..engines.base import Engine, make_private_dir
from ..errors import CorruptionError, StorageError, ValidationError
from .backup import UseLock, _engine_class, check_files, sync_dir
from .core import _open_engine, verify_unlocked
from .schema import TABLES

__all__ = ["compact", "compacted_backup"]


def compacted_backup(engine: Engine, dest: Path) -> dict[str, Any]:
    """Write a consistent copy of the engine's database without free pages into *dest*; return where and how big."""
    try:
        engine.backup(dest, compact=True)
    except OSError as exc:  # e.g. a parent of dest is a file
        raise StorageError(f"cannot write the backup to {dest}: {exc}") from exc
    size = sum(p.stat().st_size for p in dest.iterdir() if p.is_file())
    return {"path": str(dest.absolute()), "backend": engine.name, "bytes": size, "compact": True}


def compact(path: str | os.PathLike[str], backend: str) -> dict[str, Any]:
    """Compact the database in directory *path* in place; return its sizes before and after.

    The database must not be open anywhere (stop the server first). Returns
    ``{"path", "backend", "bytes_before", "bytes_after", "saved_bytes", "verify"}``,
    sizes being those of the database files (LMDB ``data.mdb``; SQLite the
    database file and its WAL).

    :raises ValidationError: *backend* is unknown, or *path* is missing, not a
        directory, a symlink, or holds no complete chatmdb database of *backend*.
    :raises StorageError: the database is in use, or the copy cannot be written
        or moved (nothing was changed).
    :raises CorruptionError: the compacted copy does not verify (nothing was
        changed; the old files are back in place if they had been replaced).
    """
    engine = _engine_class(backend)
    if not isinstance(path, (str, os.PathLike)) or not str(path) or "\x00" in str(path):
        raise ValidationError("path must name a database directory")
    target = Path(path)
    _check_files(engine, target)
    try:
        lock = UseLock(target, exclusive=True)
    except StorageError:
        raise StorageError(f"{target} is in use by a running store or server", hint="stop it, then compact") from None
    except OSError as exc:
        raise StorageError(f"cannot lock {target}: {exc}") from exc
    # Beside the target, on its file system (inside it when it is a mount point).
    inside = os.path.ismount(target)
    home, prefix = (target, ".") if inside else (target.parent, f"{target.name}.")
    staging = _unique(home / f".{prefix.strip('.') or 'db'}.compacting-{os.getpid()}")
    aside = _unique(home / f"{prefix}before-compact-{time.strftime('%Y%m%dT%H%M%S')}")
    moved: list[tuple[Path, Path]] = []  # (where it was, where it is now), undone in reverse
    try:
        try:
            missing = set(TABLES) - engine.tables_in(target)
            if missing:
                raise ValidationError(
                    f"{target} is not a chatmdb database: it lacks the tables {', '.join(sorted(missing))}"
                )
            before = _data_bytes(engine, target)
            make_private_dir(staging)
            _copy_compacted(target, backend, staging)
            _sync_tree(staging)
            report = verify_unlocked(staging, backend)
            if not report["ok"]:
                raise CorruptionError(
                    f"the compacted copy of {target} does not verify: {report['errors'][:3]}; nothing was changed",
                    hint="run chatmdb verify on the database",
                )
            make_private_dir(aside)
            for item in sorted(target.iterdir()):
                # A WAL, shared-memory or journal file of the old database file.
                if item.name not in engine.FILES and item.name.startswith(engine.FILES):
                    os.replace(item, aside / item.name)
                    moved.append((item, aside / item.name))
            for name in engine.FILES:
                try:
                    os.link(target / name, aside / name)  # the old file stays where it is until replaced
                except OSError:  # a file system without hard links: move it (a moment without the file)
                    os.replace(target / name, aside / name)
                moved.append((target / name, aside / name))
                os.replace(staging / name, target / name)  # one rename: the old file or the new, never neither
            sync_dir(target)
            report = verify_unlocked(target, backend)
            if not report["ok"]:
                raise CorruptionError(f"the compacted database at {target} does not verify: {report['errors'][:3]}")
            after = _data_bytes(engine, target)
        except BaseException as exc:
            # Put the old files back exactly as they were.
            try:
                for was, now in reversed(moved):
                    os.replace(now, was)
            except OSError as undo:
                raise StorageError(
                    f"compacting {target} failed ({exc}) and its old files could not all be put back: {undo}",
                    hint=f"the old files are in {aside}",
                ) from exc
            moved.clear()
            with contextlib.suppress(OSError):
                sync_dir(target)
            raise
    except OSError as exc:  # copying, moving or syncing files; the old database is in place
        raise StorageError(f"cannot compact {target}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not moved:  # the old files are back (or were never moved): nothing to keep
            shutil.rmtree(aside, ignore_errors=True)
        lock.release()
    shutil.rmtree(aside, ignore_errors=True)
    return {
        "path": str(target.absolute()),
        "backend": backend,
        "bytes_before": before,
        "bytes_after": after,
        "saved_bytes": before - after,
        "verify": {k: report[k] for k in ("ok", "error_count", "checked") if k in report},
    }


def _unique(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def _check_files(engine: type[Engine], target: Path) -> None:
    """Refuse, before anything is created, a path that holds no database of *engine*."""
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        raise ValidationError(f"{target} does not exist") from None
    except OSError as exc:
        raise ValidationError(f"cannot use {target}: {exc}") from exc
    if stat.S_ISLNK(mode):
        raise ValidationError(f"{target} is a symlink; name the directory it points to")
    if not stat.S_ISDIR(mode):
        raise ValidationError(f"{target} is not a directory")
    check_files(engine, target)


def _data_bytes(engine: type[Engine], directory: Path) -> int:
    """Bytes of the database files (and a SQLite WAL) in *directory*."""
    names = {*engine.FILES, *(f"{name}-wal" for name in engine.FILES)}
    return sum(p.stat().st_size for p in directory.iterdir() if p.name in names and p.is_file())


def _copy_compacted(source: Path, backend: str, dest: Path) -> None:
    # The engine alone: the store's lock is held exclusively here, and the copy
    # is of the files as they are (no migration).
    engine = _open_engine(source, backend, "full", None)
    try:
        engine.backup(dest, compact=True)
    except OSError as exc:
        raise StorageError(f"cannot write the compacted copy to {dest}: {exc}") from exc
    finally:
        engine.close()


def _sync_tree(directory: Path) -> None:
    """fsync every file of *directory*, then the directory (neither engine syncs its copy)."""
    for item in directory.iterdir():
        if item.is_file() and not item.is_symlink():
            fd = os.open(item, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    sync_dir(directory)
