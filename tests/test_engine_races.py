"""LMDB map-size races between processes, each provoked deterministically.

Another process that grows the map can be anywhere in its growth when this one
acts. Each test here holds the other process at one point of a real liblmdb
run (by running it to completion first, or by holding the environment's own
reader-table mutex) so the interleaving that matters happens every time.
"""

from __future__ import annotations

import contextlib
import ctypes
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatmdb import open_store

MiB = 1 << 20
WAIT = 60.0  # bound on every wait for another process


def run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=WAIT)


def test_growth_starts_from_the_size_another_process_committed(tmp_path: Path) -> None:
    """Growing from this process's own, stale, size would shrink the map another process set
    (py-lmdb #269: processes resizing from different sizes have corrupted databases)."""
    path = tmp_path / "db"
    with open_store(path, backend="lmdb", map_size=MiB, durability="process") as store:
        store.create_session(session_id="s")
        assert store.engine.info()["map_size"] == MiB
        # Another process commits a 4 MiB map, and exits, while this one still maps 1 MiB.
        other = run(
            "import sys; from chatmdb import open_store\n"
            "with open_store(sys.argv[1], backend='lmdb', map_size=4 << 20) as s: s.create_session(session_id='o')",
            str(path),
        )
        assert other.returncode == 0, other.stderr
        assert store.engine.info()["map_size"] == MiB  # nothing has made this process adopt it yet
        # Fill this process's 1 MiB map: the write that does not fit makes it grow.
        for _ in range(200):
            store.create_message({"session_id": "s", "content": "x" * 20_000})
            grown = store.engine.info()["map_size"]
            if grown != MiB:
                break
        else:
            pytest.fail("the map never grew after 200 messages of 20 kB (4 MB)")
        assert grown == 2 * 4 * MiB, f"grew to {grown}: not from the 4 MiB another process committed"
        assert store.verify()["ok"]


# The second process: opens the environment with a large map, then takes the reader-table
# mutex that liblmdb locks when a process registers its first read transaction (the
# pthread mutex at offset 8 of lock.mdb, after the magic and the format words), says so,
# and on "go" commits pages past a 1 MiB map and lets the mutex go.
GROWER = r"""
import ctypes, mmap, os, sys
import lmdb

path = sys.argv[1]
env = lmdb.open(path, map_size=64 << 20, max_dbs=64)
meta = env.open_db(b"meta", create=False)
fd = os.open(os.path.join(path, "lock.mdb"), os.O_RDWR)
shared = mmap.mmap(fd, 0, mmap.MAP_SHARED)
assert int.from_bytes(shared[:4], "little") == 0xBEEFC0DE, "not an LMDB lock file"
mutex = ctypes.c_void_p(ctypes.addressof(ctypes.c_char.from_buffer(shared)) + 8)
libc = ctypes.CDLL(None, use_errno=True)
assert libc.pthread_mutex_lock(mutex) == 0
print("held", flush=True)
assert sys.stdin.readline().strip() == "go"
with env.begin(write=True) as txn:  # a writer needs only the writer mutex
    txn.put(b"ballast", b"x" * (4 << 20), db=meta)
with env.begin(write=True) as txn:  # gone again, but the file now reaches past 4 MiB
    txn.delete(b"ballast", db=meta)
assert libc.pthread_mutex_unlock(mutex) == 0
print("grown", flush=True)
"""

OPENER = r"""
import sys
from chatmdb import open_store
with open_store(sys.argv[1], backend="lmdb", map_size=1 << 20) as store:
    print(store.get_session("s")["id"], store.verify()["ok"], store.engine.info()["map_size"] > 4 << 20)
"""


def _blocked_on_a_futex(pid: int) -> bool:
    try:
        return "futex" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="needs /proc/<pid>/wchan (Linux)")
def test_open_adopts_a_map_grown_between_reading_the_size_and_the_first_read(tmp_path: Path) -> None:
    """lmdb.open() sizes the map from the file, then begins a read transaction; a process that
    grows the map and writes past it in between makes that read fail with MapResizedError.
    Opening again must adopt the new size instead of failing the open."""
    assert ctypes.CDLL(None).pthread_mutex_lock  # glibc's, as liblmdb uses it
    path = tmp_path / "db"
    with open_store(path, backend="lmdb", map_size=MiB) as store:
        store.create_session(session_id="s")
    with contextlib.ExitStack() as stack:
        grower = stack.enter_context(
            subprocess.Popen(
                [sys.executable, "-c", GROWER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
        )
        stack.callback(_kill, grower)
        assert grower.stdout is not None and grower.stdin is not None
        assert grower.stdout.readline().strip() == "held"
        opener = stack.enter_context(
            subprocess.Popen(
                [sys.executable, "-c", OPENER, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
        stack.callback(_kill, opener)
        # The opener has read the 1 MiB size and waits for the mutex, at its first read transaction.
        deadline = time.monotonic() + WAIT
        while not _blocked_on_a_futex(opener.pid):
            assert opener.poll() is None, opener.communicate()
            assert time.monotonic() < deadline, "the opener never reached the reader-table mutex"
            time.sleep(0.01)
        grower.stdin.write("go\n")
        grower.stdin.flush()
        assert grower.stdout.readline().strip() == "grown"
        out, err = opener.communicate(timeout=WAIT)
        assert opener.returncode == 0, err[-2000:]
        assert out.split() == ["s", "True", "True"]
        assert grower.wait(WAIT) == 0


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(WAIT)
