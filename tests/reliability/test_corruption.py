"""Damaged files are detected, not served: truncations and flipped bytes.

A store of 60 known messages is copied, and each copy damaged one way. A child
process opens every copy, runs ``verify()`` and reads every message, so a
crash (LMDB maps the file; touching a page past the end of a truncated file
is a SIGBUS) shows as a failed exit instead of taking pytest down. For every
copy the store must either refuse to open, or have ``verify()`` report the
damage, or serve exactly what was written; it must never verify clean and
serve something else.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _rel import child_command

from chatmdb import open_store

PAGE = 4096
RANDOM_FLIPS = 25
SEED = 5


def _pristine(tmp_path: Path, backend: str) -> tuple[Path, dict[str, dict[str, Any]]]:
    db = tmp_path / "pristine"
    expected = {}
    with open_store(db, backend=backend) as store:
        sid = store.create_session(session_id="c")["id"]
        for i in range(60):
            data = {"session_id": sid, "message_uuid": f"m{i}", "content": f"needle-{i:04d}-" + "q" * 150}
            if i % 3 == 0:
                data["agent_id"] = "chloe"
            expected[f"m{i}"] = store.create_message(data)
    return db, expected


def _data_file(db: Path) -> Path:
    return next(p for p in db.iterdir() if p.name in ("data.mdb", "chatmdb.sqlite3"))


def _damage(pristine: Path, dest: Path, how: Callable[[bytearray], bytearray]) -> str:
    shutil.copytree(pristine, dest, ignore=shutil.ignore_patterns("lock.mdb", "resize.lock"))
    data = _data_file(dest)
    data.write_bytes(bytes(how(bytearray(data.read_bytes()))))
    return str(dest)


def _flip_all(needle: bytes, offset: int) -> Callable[[bytearray], bytearray]:
    """Flip one byte of every copy of *needle* (LMDB keeps stale copies in free pages)."""

    def how(raw: bytearray) -> bytearray:
        spots = [m.start() for m in re.finditer(re.escape(needle), raw)]
        assert spots, needle
        for at in spots:
            raw[at + offset] ^= 0x20
        return raw

    return how


def _flip_at(offset: int) -> Callable[[bytearray], bytearray]:
    def how(raw: bytearray) -> bytearray:
        raw[offset] ^= 0xFF
        return raw

    return how


def _cut_to(size: int) -> Callable[[bytearray], bytearray]:
    return lambda raw: raw[:size]


def _inspect(paths: list[str], backend: str, expected: dict[str, Any]) -> dict[int, tuple[str, str]]:
    """Judge every copy in child processes; a crash is recorded as ("CRASH", signal) and the next child goes on."""
    results: dict[int, tuple[str, str]] = {}
    start = 0
    while start < len(paths):
        done = subprocess.run(
            child_command("inspect", paths=paths, backend=backend, expected=expected, start=start),
            capture_output=True, text=True, timeout=240,
        )
        for line in done.stdout.splitlines():
            index, verdict, reads = line.split(maxsplit=2)
            results[int(index)] = (verdict, reads)
        if done.returncode == 0:
            break
        crashed = max(results, default=start - 1) + 1
        results[crashed] = ("CRASH", f"exit {done.returncode}: {done.stderr.strip()[-300:]}")
        start = crashed + 1
    return results


def test_damaged_files_are_detected_not_served(tmp_path: Path, backend: str) -> None:
    pristine, expected = _pristine(tmp_path, backend)
    size = _data_file(pristine).stat().st_size
    rng = random.Random(f"{SEED}-{backend}")
    cases: list[tuple[str, str, Callable[[bytearray], bytearray]]] = [
        # (kind, name, damage); kind says what must happen.
        ("detect", "cut to half", _cut_to(size // 2 // PAGE * PAGE)),
        ("detect", "cut by one page", _cut_to(size - PAGE)),
        ("detect", "cut mid-page", _cut_to(size - 100)),
        ("detect", "cut to three pages", _cut_to(3 * PAGE)),
        ("detect", "cut to 5000 bytes", _cut_to(5000)),
        ("detect-read", "flip in a message's text", _flip_all(b"needle-0007", 3)),
        ("detect-read", "flip just before a message's text", _flip_all(b"needle-0031", -20)),
        ("detect", "flip in the file header", _flip_at(PAGE + 16 if backend == "lmdb" else 3)),
        ("detect", "flip in the first header", _flip_at(16 if backend == "lmdb" else 0)),
    ]
    for i in range(RANDOM_FLIPS):
        cases.append(("any", f"random flip {i}", _flip_at(rng.randrange(size))))
    paths = [_damage(pristine, tmp_path / f"case{i}", how) for i, (_, _, how) in enumerate(cases)]
    results = _inspect(paths, backend, expected)

    lines = []
    for i, (kind, name, _) in enumerate(cases):
        verdict, reads = results[i]
        lines.append(f"{name}: {verdict} {reads}")
        assert verdict != "CRASH", f"{name}: the process crashed: {reads}"
        assert not (verdict == "verify-ok" and reads != "same"), f"{name}: verified clean but served {reads}"
        if kind in ("detect", "detect-read"):
            assert verdict in ("open-error", "verify-error"), f"{name}: not detected ({verdict} {reads})"
        if kind == "detect-read":
            assert reads == "error:CorruptionError", f"{name}: a read served damaged data: {reads}"
    print(f"{backend}: " + "; ".join(lines))


@pytest.mark.parametrize("cut", ["half", "page"])
def test_truncation_under_an_open_store_is_reported_by_verify(tmp_path: Path, cut: str) -> None:
    """An LMDB file truncated while a process has it open: verify() says so instead of faulting."""
    db = tmp_path / "db"
    script = (
        "import sys, os\n"
        "from chatmdb import open_store\n"
        "store = open_store(sys.argv[1])\n"
        "sid = store.create_session()['id']\n"
        "for i in range(300):\n"
        "    store.create_message({'session_id': sid, 'content': 'v' * 500})\n"
        "data = os.path.join(sys.argv[1], 'data.mdb')\n"
        "size = os.path.getsize(data)\n"
        "os.truncate(data, size // 2 if sys.argv[2] == 'half' else size - 4096)\n"
        "report = store.verify()\n"
        "print(report['ok'], report['errors'][0] if report['errors'] else '')\n"
        "os._exit(0)\n"
    )
    done = subprocess.run(
        [*child_command("inspect")[:1], "-c", script, str(db), cut], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-500:]}"
    ok, _, error = done.stdout.partition(" ")
    assert ok == "False" and "truncated" in error, done.stdout
