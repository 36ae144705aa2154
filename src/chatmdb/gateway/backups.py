"""Scheduled hot backups while the gateway serves (``chatmdb serve --backup-dir DIR``).

Every ``--backup-every`` the schedule takes a hot backup of the store
(:meth:`Store.backup`: one read transaction, writers go on) into
``DIR/chatmdb-<UTC time>`` (``chatmdb-20261129T215500Z``; ``-1``, ``-2``...
if that name is taken), and:

* writes it as ``DIR/.chatmdb-<time>.partial-<pid>`` first, opens that copy
  and verifies it (:func:`open_store` + ``verify()``), and only then renames
  it to its final name: a folder named ``chatmdb-<time>`` is a complete,
  verified backup. A copy that fails is deleted;
* keeps the newest ``--backup-keep`` of them, deleting older folders whose
  names match its own pattern (nothing else in DIR is touched), never the
  one it just made. One DIR per database: two servers backing up into one
  DIR would prune each other's backups;
* exports ``chatmdb_last_backup_timestamp_seconds``, ``chatmdb_last_backup_bytes``,
  ``chatmdb_last_backup_duration_seconds``, ``chatmdb_backups_total`` and
  ``chatmdb_backup_failures_total`` at ``/metrics``.

The copy and the verification run in a thread of their own, never on the
event loop, so serving goes on meanwhile. A backup that fails (DIR not
writable, disk full, a copy that does not verify) is logged, counted, and
tried again at the next period; it never stops the server. The first backup
is due one period after the newest one in DIR (at once if there is none), so
restarting the server neither skips nor repeats one. At shutdown the
schedule is cancelled; a backup in progress is finished (the store is closed
only after it) and, unverified, discarded. With several workers, worker 0
alone runs the schedule.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import logging
import math
import os
import re
import shutil
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..engines.base import make_private_dir
from ..errors import CorruptionError, ValidationError
from ..metrics import BackupMetrics, Metrics
from ..store import Store, open_store

__all__ = ["BackupPolicy", "BackupSchedule", "parse_duration"]

logger = logging.getLogger("chatmdb.gateway.backups")

PREFIX: Final = "chatmdb-"
_STAMP: Final = "%Y%m%dT%H%M%SZ"
NAME: Final = re.compile(r"chatmdb-(\d{8}T\d{6}Z)(?:-(\d+))?")
PARTIAL: Final = re.compile(r"\.chatmdb-\d{8}T\d{6}Z(?:-\d+)?\.partial-(\d+)")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART: Final = re.compile(r"(\d+)([smhd])")


def parse_duration(text: str) -> float:
    """Seconds in a duration like ``30s``, ``10m``, ``1h``, ``1d`` or ``1h30m``.

    :raises ValidationError: anything else, or a duration of 0.
    """
    if not isinstance(text, str):
        raise ValidationError(f"a duration must be text like 30s, 10m or 1h, not {type(text).__name__}")
    spec = text.strip().lower()
    parts = _PART.findall(spec)
    if not spec or "".join(n + u for n, u in parts) != spec:
        raise ValidationError(f"{text!r} is not a duration: write it like 30s, 10m, 1h, 1d or 1h30m")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValidationError(f"a duration must be longer than 0, not {text!r}")
    return float(seconds)


@dataclass(frozen=True)
class BackupPolicy:
    """Where scheduled backups go, how often they are taken, and how many are kept."""

    directory: Path
    every: float = 3600.0  # seconds
    keep: int = 24

    def __post_init__(self) -> None:
        if not isinstance(self.directory, (str, os.PathLike)) or not str(self.directory):
            raise ValidationError("the backup directory must be a path")
        if "\x00" in str(self.directory):
            raise ValidationError("the backup directory must be a path")
        object.__setattr__(self, "directory", Path(self.directory))
        every = self.every
        if isinstance(every, bool) or not isinstance(every, (int, float)) or not math.isfinite(every) or every <= 0:
            raise ValidationError("the backup period must be a number of seconds > 0")
        if isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 1:
            raise ValidationError("the number of backups kept must be an integer >= 1")

    def check_outside(self, db_path: str | os.PathLike[str]) -> None:
        """Refuse a backup directory inside the database directory (or the database directory itself)."""
        directory, db = self.directory.resolve(), Path(db_path).resolve()
        if directory == db or db in directory.parents:
            raise ValidationError(
                f"the backup directory {self.directory} is inside the database directory {db_path}",
                hint="put the backups elsewhere: a restore or compaction replaces the database directory",
            )


def own_backups(directory: Path) -> list[Path]:
    """The backup folders this schedule made in *directory* (by their name), oldest first."""
    found: list[tuple[str, int, Path]] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = NAME.fullmatch(entry.name)
        if match is None:
            continue
        try:
            if not stat.S_ISDIR(entry.lstat().st_mode):  # a symlink is never ours
                continue
        except OSError:
            continue
        found.append((match.group(1), int(match.group(2) or 0), entry))
    return [path for _, _, path in sorted(found)]


def taken_at(backup: Path) -> float:
    """The time in a backup folder's name, as Unix time."""
    match = NAME.fullmatch(backup.name)
    if match is None:
        raise ValueError(f"{backup.name} is not a backup folder name")
    return float(calendar.timegm(time.strptime(match.group(1), _STAMP)))


class BackupSchedule:
    """Takes a backup of *store* every ``policy.every`` seconds while the loop runs.

    :meth:`start` on the event loop starts it, :meth:`cancel` stops it from
    starting another, and :meth:`stop` (a coroutine) waits for the one in
    progress; the store must stay open until it returns. :meth:`take` takes
    one backup now (in the calling thread).
    """

    def __init__(self, store: Store, policy: BackupPolicy, metrics: Metrics) -> None:
        policy.check_outside(store.path)
        self.store = store
        self.policy = policy
        self.metrics = BackupMetrics(metrics.registry)
        self._stopping = threading.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the schedule on the running loop."""
        if self._task is not None or self._stopping.is_set():
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chatmdb-backup")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="chatmdb-backups")

    def cancel(self) -> None:
        """Take no more backups (the one in progress, if any, is finished and discarded)."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Cancel the schedule and wait until no backup is in progress. This method is a coroutine."""
        self.cancel()
        task, self._task = self._task, None
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        executor, self._executor = self._executor, None
        if executor is not None:
            # The thread finishes the copy it is writing: the store must not be closed under it.
            await asyncio.to_thread(executor.shutdown, wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        delay = await loop.run_in_executor(self._executor, self._resume)
        while not self._stopping.is_set():
            await asyncio.sleep(delay)
            started = time.monotonic()
            await loop.run_in_executor(self._executor, self.take)
            # A backup that took longer than the period is followed by the next at once.
            delay = max(0.0, started + self.policy.every - time.monotonic())

    def _resume(self) -> float:
        """Clear what an interrupted backup left, adopt the newest backup in DIR; return seconds until one is due."""
        try:
            directory = self.policy.directory
            self._clear_partials(directory)
            backups = own_backups(directory)
            if not backups:
                return 0.0
            newest = backups[-1]
            at = taken_at(newest)
            self.metrics.found(at, _size(newest, self.store.engine.FILES))
            return min(self.policy.every, max(0.0, at + self.policy.every - time.time()))
        except Exception as exc:  # DIR unreadable, say: the first backup will tell
            logger.debug("cannot read the backup directory: %s", exc)
            return 0.0

    def _clear_partials(self, directory: Path) -> None:
        try:
            entries = list(directory.iterdir())
        except OSError:
            return
        for entry in entries:
            match = PARTIAL.fullmatch(entry.name)
            if match is None or entry.is_symlink() or not entry.is_dir():
                continue
            pid = int(match.group(1))
            if pid != os.getpid() and _alive(pid):
                continue  # another process is writing it
            shutil.rmtree(entry, ignore_errors=True)

    def take(self) -> dict[str, Any] | None:
        """Take one backup now, verify it, keep the newest ``keep``; return what :meth:`Store.backup`
        returned, with ``path`` its final place, or None if it failed (logged and counted) or was cancelled.
        """
        directory = self.policy.directory
        started = time.monotonic()
        at = time.time()
        partial: Path | None = None
        try:
            make_private_dir(directory)
            name = _free_name(directory, at)
            partial = directory / f".{name}.partial-{os.getpid()}"
            result = self.store.backup(partial)
            if self._stopping.is_set():
                return None  # shutting down: not verified, so not kept
            report = _verify(partial, self.store.backend)
            if not report["ok"]:
                raise CorruptionError(f"the backup does not verify: {report['errors'][:3]}")
            _drop_extras(partial, self.store.engine.FILES)
            final = directory / name
            partial.rename(final)
            partial = None
            _sync_dir(directory)
        except Exception as exc:
            self.metrics.failed()
            logger.error("scheduled backup into %s failed: %s", directory, exc)
            return None
        finally:
            if partial is not None:
                shutil.rmtree(partial, ignore_errors=True)
        seconds = time.monotonic() - started
        self.metrics.succeeded(at, int(result["bytes"]), seconds)
        logger.info("backup %s written and verified: %d bytes in %.2f s", final, result["bytes"], seconds)
        self._prune(final)
        return {**result, "path": str(final.absolute())}

    def _prune(self, newest: Path) -> None:
        """Delete the oldest of this schedule's backups beyond ``keep``; never *newest*."""
        others = [p for p in own_backups(self.policy.directory) if p != newest]
        for old in others[: max(0, len(others) - (self.policy.keep - 1))]:
            try:
                shutil.rmtree(old)
            except OSError as exc:
                logger.warning("cannot delete the old backup %s: %s", old, exc)


def _free_name(directory: Path, at: float) -> str:
    """A new backup's name: its time, and a number past those of the same second (names sort as they were made)."""
    stamp = time.strftime(_STAMP, time.gmtime(at))
    numbers = [
        int(match.group(2) or 0)
        for entry in own_backups(directory)
        if (match := NAME.fullmatch(entry.name)) is not None and match.group(1) == stamp
    ]
    n = max(numbers) + 1 if numbers else 0
    while True:
        name = PREFIX + stamp + (f"-{n}" if n else "")
        if not (directory / name).exists() and not (directory / name).is_symlink():
            return name
        n += 1


def _verify(directory: Path, backend: str) -> dict[str, Any]:
    with open_store(directory, backend=backend, durability="process") as copy:
        return copy.verify()


def _size(backup: Path, files: tuple[str, ...]) -> int:
    return sum(p.stat().st_size for p in backup.iterdir() if p.name in files and p.is_file() and not p.is_symlink())


def _drop_extras(backup: Path, files: tuple[str, ...]) -> None:
    """Remove what opening the copy left beside its database files (lock files): a backup holds the database alone."""
    for item in backup.iterdir():
        if item.name not in files and item.is_file() and not item.is_symlink():
            item.unlink()


def _sync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
