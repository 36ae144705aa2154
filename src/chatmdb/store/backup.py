"""Hot backup of an open store, and restore of a backup into a directory.

A backup is a consistent copy made from one read transaction while writers
go on; restore checks that the copy verifies before and after it replaces
a database. Which files make up a database is the engine's to say
(``Engine.FILES``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ..engines.base import Engine
from ..errors import StorageError, ValidationError
from .rules import show


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


def copy_database(files: tuple[str, ...], source: Path, dest: Path, *, force: bool) -> None:
    """Put the database *files* of *source* in place of the database at *dest*.

    :raises ValidationError: *dest* holds something and *force* is not set.
    """
    if dest.exists() and any(dest.iterdir()):
        if not force:
            raise ValidationError(f"{dest} holds a database; pass force to replace it")
        shutil.rmtree(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in files:
        item = source / name
        if item.is_file():
            shutil.copy2(item, dest / name)
