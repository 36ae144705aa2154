"""Several processes on one database: writers and pagers at once, and readers killed mid-read."""

from __future__ import annotations

import json
import multiprocessing
import re
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

from _rel import check_messages, child_command

from chatmdb import Store, open_store

PROCESSES = 4
PER_PROCESS = 300


def test_four_processes_write_and_page(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "db"
    with open_store(path, backend=backend) as store:
        sids = [store.create_session(session_id=f"s{i}")["id"] for i in range(3)]
    procs = [
        subprocess.Popen(
            child_command("mp-writer", path=str(path), backend=backend, sids=sids, worker=w, count=PER_PROCESS),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(PROCESSES)
    ]
    acked: list[str] = []
    walks = 0
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
        report = json.loads(out)
        assert report["problems"] == []
        acked += report["acked"]
        walks += report["walks"]
    assert len(acked) == len(set(acked)) == PROCESSES * PER_PROCESS
    assert walks >= PROCESSES
    with open_store(path, backend=backend) as store:
        stored = check_messages(store, sids, acked)
    assert stored == set(acked), "a message nobody wrote was stored"


KILLED_READERS = 200
PER_WAVE = 20
# The first process to open an LMDB environment sizes its reader table for
# everyone. A helper process opens it first with room for one wave and one
# slot more (which this process's cached read transaction may keep), so each
# wave of killed readers leaves the table full or one short of full, and the
# 200 killed readers overrun it ten times over: every slot is reclaimed, often.
TEST_MAX_READERS = PER_WAVE + 1
HOLDER = (
    "import sys, lmdb\n"
    "env = lmdb.open(sys.argv[1], max_readers=int(sys.argv[2]), max_dbs=16)\n"
    "print('open', flush=True)\n"
    "sys.stdin.read()\n"
)


def _slot_pids(store: object) -> list[int]:
    """The pid in every taken slot of the LMDB reader table."""
    table = store.engine._env.env.readers()  # type: ignore[attr-defined]
    return [int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s", table, re.MULTILINE)]


def _dead_reader_pids(store: object, pids: list[int]) -> set[int]:
    return set(_slot_pids(store)) & set(pids)


def _read_into(store: Store, out: list[object]) -> None:
    out.append(store.get_message("first"))


def test_killed_readers_slots_are_reclaimed(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "db"
    if backend == "lmdb":
        # liblmdb allows one open of an environment per process, so another
        # process creates it with the small reader table and holds it until
        # this one has it open too.
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path), str(TEST_MAX_READERS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout and holder.stdin
        assert holder.stdout.readline().strip() == "open"
        store = open_store(path, backend=backend)
        holder.communicate("", timeout=30)
        assert store.stats()["max_readers"] == TEST_MAX_READERS
    else:
        store = open_store(path, backend=backend)
    sid = store.create_session(session_id="r")["id"]
    store.create_message({"session_id": sid, "message_uuid": "first"})
    zygote = subprocess.Popen(
        child_command("reader-zygote", path=str(path), backend=backend, sid=sid, per_wave=PER_WAVE),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert zygote.stdin and zygote.stdout
    killed = 0
    try:
        for wave in range(KILLED_READERS // PER_WAVE):
            zygote.stdin.write("wave\n")
            zygote.stdin.flush()
            line = zygote.stdout.readline().split()
            assert line[:1] == ["held"], (line, zygote.stderr.read() if zygote.stderr and zygote.poll() is not None else "")
            pids = [int(p) for p in line[1:]]
            if backend == "lmdb":
                assert _dead_reader_pids(store, pids) == set(pids)
            zygote.stdin.write("kill\n")
            zygote.stdin.flush()
            assert zygote.stdout.readline().strip() == "killed"
            killed += len(pids)
            if backend == "lmdb":
                # Their slots are still taken: the table is full but for at most one.
                assert _dead_reader_pids(store, pids) == set(pids)
                assert len(_slot_pids(store)) >= TEST_MAX_READERS - 1
            # Two reads at once in this long-lived process (opened before the
            # kills, so its open-time cleanup cannot help): at least one needs
            # a slot the dead readers hold, so they must be reclaimed.
            inner: list[object] = []
            with store.engine.read() as txn:
                reader = threading.Thread(target=_read_into, args=(store, inner))
                reader.start()
                reader.join(timeout=60)
                assert txn.get("meta", b"session_n") is not None
            assert inner and inner[0] is not None
            if backend == "lmdb":
                assert _dead_reader_pids(store, pids) == set()
            store.create_message({"session_id": sid, "message_uuid": f"after-wave-{wave}"})
        zygote.stdin.write("stop\n")
        zygote.stdin.flush()
        assert zygote.wait(timeout=60) == 0
    finally:
        if zygote.poll() is None:
            zygote.kill()
            zygote.wait()
        zygote.stdin.close()
        zygote.stdout.close()
        if zygote.stderr:
            zygote.stderr.close()
    assert killed == KILLED_READERS
    # A fresh process can read and write too.
    store.close()
    with open_store(path, backend=backend) as again:
        check_messages(again, [sid], ["first", *(f"after-wave-{w}" for w in range(KILLED_READERS // PER_WAVE))])
        if backend == "sqlite":
            # Dead readers must not pin the write-ahead log either.
            conn = again.engine._conn()  # type: ignore[attr-defined]
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0


def _read_in_child(store: Store, held: Any, release: Any) -> None:
    # The child inherits an open store; its read transaction must be on an environment of its own.
    with store.engine.read() as txn:
        txn.get("meta", b"format")
        held.set()
        release.wait(60)
    store.close()


def test_a_forked_child_reads_through_its_own_lmdb_environment(tmp_path: Path) -> None:
    """liblmdb tags each reader slot with the pid of the process that opened the environment.

    A child that used the environment it inherited would hold its read transaction in a slot
    tagged with the parent's pid: a slot that reader_check() can never clear once the child
    dies, and a lock table the parent believes it owns. So the slot of the child's read must
    carry the child's own pid (its results alone cannot tell the two apart).
    """
    with open_store(tmp_path / "db", backend="lmdb") as store:
        store.create_session(session_id="s")
        with store.engine.read():
            pass  # the parent has used the environment before the fork
        ctx = multiprocessing.get_context("fork")
        held, release = ctx.Event(), ctx.Event()
        with warnings.catch_warnings():
            # Python 3.12+ warns about forking a process with threads (the store's writer): this test means to.
            warnings.simplefilter("ignore", DeprecationWarning)
            child = ctx.Process(target=_read_in_child, args=(store, held, release))
            child.start()
        try:
            assert held.wait(60), "the child did not begin its read"
            env = store.engine._live_env().env  # type: ignore[attr-defined]
            slots = [line.split() for line in env.readers().splitlines()[1:]]
            pids = {int(slot[0]) for slot in slots if slot}
            assert child.pid in pids, f"no reader slot of the child {child.pid}: {env.readers()}"
        finally:
            release.set()
            child.join(60)
        assert child.exitcode == 0
        assert store.get_session("s") is not None and store.verify()["ok"]
