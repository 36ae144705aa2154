"""SIGKILL a writing process at random moments: no acknowledged message is ever lost.

A child process writes with four producer threads (every tenth message sent
twice, as a retrying client would) and appends each acknowledged uuid to a
file the moment ``create_message`` returns. The parent kills it with SIGKILL
at a random moment, reopens the store and checks every acknowledged message
is there exactly once, ``seq`` is 1..n in every session, and ``verify()`` is
clean; then it starts the next child on the same database. LMDB children
start from a 1 MiB map, so kills also land while the map grows.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from _rel import check_messages, child_command

from chatmdb import open_store

KILLS_PER_CASE = 6  # x 2 backends x 2 durability levels = 24 kills
SEED = 20_261_126


def _acked(ackfile: Path) -> list[str]:
    if not ackfile.exists():
        return []
    lines = ackfile.read_text().splitlines()
    bad = [line for line in lines if line.startswith("!")]
    assert not bad, bad
    return [line.split()[0] for line in lines if line]


def _wait_for_acks(ackfile: Path, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if ackfile.exists() and ackfile.stat().st_size > 0:
            return
        assert proc.poll() is None, f"the writer exited early with {proc.returncode}"
        time.sleep(0.005)
    raise AssertionError("the writer acknowledged nothing in time")


@pytest.mark.parametrize("durability", ["full", "process"])
def test_sigkill_under_load_loses_no_acked_message(tmp_path: Path, backend: str, durability: str) -> None:
    path = tmp_path / "db"
    rng = random.Random(f"{SEED}-{backend}-{durability}")
    with open_store(path, backend=backend, durability=durability) as store:
        sids = [store.create_session(session_id=f"s{i}")["id"] for i in range(3)]
    acked: set[str] = set()
    outcomes = []
    for kill in range(KILLS_PER_CASE):
        ackfile = tmp_path / f"acks-{kill}.txt"
        args = {
            "path": str(path),
            "backend": backend,
            "durability": durability,
            "sids": sids,
            "ackfile": str(ackfile),
            "threads": 4,
            "prefix": f"k{kill}",
            "map_size": 1 << 20 if backend == "lmdb" else None,
        }
        proc = subprocess.Popen(child_command("writer", **args), stderr=subprocess.PIPE)
        try:
            if kill % 3 == 2:
                # Some kills land anywhere from start-up through opening to the first writes.
                time.sleep(rng.uniform(0.05, 0.6))
            else:
                _wait_for_acks(ackfile, proc, time.monotonic() + 60)
                time.sleep(rng.uniform(0.0, 0.4))
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            if proc.stderr:
                proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        acked_now = _acked(ackfile)
        acked.update(acked_now)
        with open_store(path, backend=backend, durability=durability) as store:
            stored = check_messages(store, sids, acked)
        outcomes.append((len(acked_now), len(stored)))
    # Most kills must have landed under load for the test to mean anything.
    assert sum(1 for new, _ in outcomes if new > 0) >= KILLS_PER_CASE // 2, outcomes
    print(f"{backend}/{durability}: {KILLS_PER_CASE} kills, acked per run {[n for n, _ in outcomes]}, "
          f"{len(acked)} acked, {outcomes[-1][1]} stored, all present once")
