"""Hot backup of an open store, and restore of a backup in place of a database.

A backup is a consistent copy made from one read transaction while writers
go on. Restore is the dangerous direction, so it checks before it touches
anything:

* the source must hold a complete chatmdb database of the named backend: the
  engine's files (``Engine.FILES``), as regular files (a symlink is refused,
  never followed), with every table of :data:`~chatmdb.store.schema.TABLES`,
  and a format this version reads;
* those files are copied to a staging directory beside the target (never
  anything else of the source), opened there and verified;
* no store may have the target open: every open store holds a shared lock on
  ``chatmdb.lock`` in its directory, and restore takes it exclusively;
* the replaced database is kept as ``PATH.before-restore-<time>`` until the
  restored one has been moved in and verifies; if it does not, it is put back.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any, Final

from ..engines.base import FILE_MODE, Engine, make_private_dir
from ..errors import StorageError, ValidationError
from .rules import show
from .schema import TABLES

USE_LOCK: Final = "chatmdb.lock"


class UseLock:
    """A lock on ``chatmdb.lock`` in a database directory: shared by every open
    store, exclusive for a restore, so neither can happen under the other."""

    def __init__(self, directory: Path, *, exclusive: bool) -> None:
        self._fd = os.open(directory / USE_LOCK, os.O_CREAT | os.O_RDWR, FILE_MODE)
        try:
            fcntl.flock(self._fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            if exclusive:
                raise StorageError(
                    f"{directory} is in use by a running store or server", hint="stop it, then restore"
                ) from None
            raise StorageError(f"{directory} is being restored", hint="open it when the restore has finished") from None

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = -1


def check_dest(dest_dir: Any) -> Path:
    """A backup directory: a path that does not exist or is an empty directory."""
    if not isinstance(dest_dir, (str, os.PathLike)) or not str(dest_dir):
        raise ValidationError(f"dest_dir must name a directory, not {show(dest_dir)}")
    dest = Path(dest_dir)
    try:
        occupied = dest.exists() and (not dest.is_dir() or any(dest.iterdir()))
    except (OSError, ValueError) as exc:  # an embedded NUL, an unencodable name, no permission
        raise ValidationError(f"cannot use {show(str(dest))} as a backup directory: {exc}") from exc
    if occupied:
        raise ValidationError(f"{dest} exists and is not an empty directory")
    return dest


def backup(engine: Engine, dest: Path) -> dict[str, Any]:
    """Write a consistent copy of the engine's database into *dest*; return where and how big."""
    try:
        engine.backup(dest)
    except OSError as exc:  # e.g. a parent of dest is a file
        raise StorageError(f"cannot write the backup to {dest}: {exc}") from exc
    size = sum(p.stat().st_size for p in dest.iterdir() if p.is_file())
    return {"path": str(dest.absolute()), "backend": engine.name, "bytes": size}


def _engine_class(backend: str) -> type[Engine]:
    if backend == "lmdb":
        from ..engines.lmdb_engine import LmdbEngine

        return LmdbEngine
    if backend == "sqlite":
        from ..engines.sqlite_engine import SqliteEngine

        return SqliteEngine
    raise ValidationError(f"backend must be 'lmdb' or 'sqlite', not {show(backend)}")


def _stage(engine: type[Engine], source: Path, staging: Path) -> None:
    """Copy the database files of *source* into *staging*, refusing anything that is not one."""
    try:
        if not stat.S_ISDIR(source.lstat().st_mode):
            raise ValidationError(f"{source} is not a backup directory (a symlink is not followed)")
    except FileNotFoundError:
        raise ValidationError(f"{source} does not exist") from None
    check_files(engine, source)
    for name in engine.FILES:
        shutil.copyfile(source / name, staging / name, follow_symlinks=False)
        (staging / name).chmod(FILE_MODE)
    missing = set(TABLES) - engine.tables_in(staging)
    if missing:
        raise ValidationError(f"{source} is not a chatmdb database: it lacks the tables {', '.join(sorted(missing))}")


def check_files(engine: type[Engine], directory: Path) -> None:
    """Raise ValidationError unless *directory* holds every file of a database of *engine*,
    as regular files (a symlink is refused, never followed)."""
    for name in engine.FILES:
        try:
            mode = (directory / name).lstat().st_mode
        except FileNotFoundError:
            raise ValidationError(
                f"{directory} holds no {engine.name} database: {name} is missing", hint="check the path and --backend"
            ) from None
        if not stat.S_ISREG(mode):
            raise ValidationError(f"{directory / name} is not a regular file (a symlink is not followed)")


def sync_dir(directory: Path) -> None:
    """fsync a directory, so the renames in it are durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _verify(directory: Path, backend: str) -> dict[str, Any]:
    from .core import verify_unlocked  # the facade opens; this module only moves files

    return verify_unlocked(directory, backend)


def _unique(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def _move_all(names: list[str], source: Path, dest: Path, moved: list[tuple[Path, Path]]) -> None:
    for name in names:
        os.replace(source / name, dest / name)
        moved.append((source / name, dest / name))


def _undo(moved: list[tuple[Path, Path]]) -> None:
    for source, dest in reversed(moved):
        os.replace(dest, source)
    moved.clear()


def restore(source: str | os.PathLike[str], dest: str | os.PathLike[str], *, backend: str, force: bool) -> dict[str, Any]:
    """Replace the database at *dest* by the backup at *source*; return the restored one's ``verify()`` report.

    The database's files are moved, not its directory, so *dest* may be a
    mount point, and the exclusive lock on ``dest/chatmdb.lock`` is held from
    the first check to the last: no store opens *dest* meanwhile.

    :raises ValidationError: *source* is not a complete database of *backend*,
        *dest* holds a database and *force* is not set, or a path is a symlink.
    :raises StorageError: *dest* is in use, or the files cannot be moved.
    :raises CorruptionError: the backup does not verify (nothing was replaced).
    """
    engine = _engine_class(backend)
    src, target = Path(source), Path(dest)
    if target.is_symlink():
        raise ValidationError(f"{target} is a symlink; name the directory it points to")
    if target.exists() and not target.is_dir():
        raise ValidationError(f"{target} is not a directory")
    existed = target.is_dir()
    occupied = existed and any(p.name != USE_LOCK for p in target.iterdir())
    if occupied and not force:
        raise ValidationError(f"{target} holds a database; pass --force to replace it")
    make_private_dir(target)
    lock = UseLock(target, exclusive=True)  # refused while any store has it open
    # Staging and the replaced files live beside the target on its file
    # system (inside it when it is a mount point), so moves are renames.
    inside = os.path.ismount(target)
    home = target if inside else target.parent
    prefix = "." if inside else f"{target.name}."
    staging = _unique(home / f".{prefix.strip('.') or 'db'}.restoring-{os.getpid()}")
    kept = _unique(home / f"{prefix}before-restore-{time.strftime('%Y%m%dT%H%M%S')}")
    moved_out: list[tuple[Path, Path]] = []
    moved_in: list[tuple[Path, Path]] = []
    try:
        make_private_dir(staging)
        _stage(engine, src, staging)
        report = _verify(staging, backend)
        if not report["ok"]:
            raise StorageError(f"the backup at {src} does not verify: {report['errors'][:3]}")
        skip = {USE_LOCK, staging.name, kept.name}
        make_private_dir(kept)
        _move_all([p.name for p in target.iterdir() if p.name not in skip], target, kept, moved_out)
        _move_all([p.name for p in staging.iterdir() if p.name != USE_LOCK], staging, target, moved_in)
        report = _verify(target, backend)
        if not report["ok"]:
            raise StorageError(f"the restored database at {target} does not verify: {report['errors'][:3]}")
    except BaseException:
        # Put the replaced database back exactly as it was.
        _undo(moved_in)
        _undo(moved_out)
        shutil.rmtree(kept, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        lock.release()
        if not existed and not any(p.name != USE_LOCK for p in target.iterdir()):
            shutil.rmtree(target, ignore_errors=True)  # nothing was restored into a directory made for it
    shutil.rmtree(kept, ignore_errors=True)
    return report
