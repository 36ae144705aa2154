"""Summaries of latency samples, and what the machine and the files look like."""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class BenchFailure(AssertionError):
    """A run lost, duplicated or misordered messages: the numbers mean nothing."""


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (no interpolation)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p90, p99 and max of latencies given in seconds, in milliseconds."""
    ordered = sorted(seconds)
    return {
        "n": len(ordered),
        "median": percentile(ordered, 50) * 1000,
        "p90": percentile(ordered, 90) * 1000,
        "p99": percentile(ordered, 99) * 1000,
        "max": (ordered[-1] * 1000) if ordered else math.nan,
    }


def rss_bytes(pid: int | None = None) -> dict[str, int]:
    """Resident set size now and at its peak (VmRSS, VmHWM) of a process, in bytes."""
    out = {"rss": 0, "peak_rss": 0}
    try:
        text = Path(f"/proc/{pid or 'self'}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name == "VmRSS":
            out["rss"] = int(value.split()[0]) * 1024
        elif name == "VmHWM":
            out["peak_rss"] = int(value.split()[0]) * 1024
    return out


def dir_size(path: Path) -> dict[str, int]:
    """Apparent size and allocated bytes of the files in a database directory.

    LMDB's lock file and SQLite's shared-memory index are left out: they hold
    no data.
    """
    apparent = allocated = 0
    for item in path.rglob("*"):
        if item.is_file() and item.name not in ("lock.mdb", "resize.lock") and not item.name.endswith("-shm"):
            st = item.stat()
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return {"bytes": apparent, "allocated": allocated}


def machine(path: Path) -> dict[str, Any]:
    """nproc, CPU model, RAM, the file system the databases live on, and versions."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) * 1024
    except OSError:
        pass
    import sqlite3

    import lmdb

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_bytes": ram,
        "fs": _fs_type(path),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "lmdb": f"py-lmdb {lmdb.__version__}, liblmdb {'.'.join(map(str, lmdb.version()))}",
        "sqlite": sqlite3.sqlite_version,
    }


def _fs_type(path: Path) -> str:
    """The file system type of the mount that holds *path* (longest mount prefix)."""
    target = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3:
            point = parts[1]
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, kind = point, f"{parts[2]} ({parts[0]} on {point})"
    return kind
