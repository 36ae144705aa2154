"""The benchmark runs end to end at tiny sizes, and its loss/duplicate check bites.

Run with: .venv/bin/pytest tests/test_bench_smoke.py
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from chatmdb import open_store
from chatmdb.bench import BenchFailure, Config, run
from chatmdb.bench.store_load import check_writes, make_sessions

TINY = {
    "durabilities": ("process",),
    "producers": (2,),
    "processes": 2,
    "process_producers": 2,
    "sessions": 20,
    "warmup": 0.05,
    "write_seconds": 0.2,
    "raw_batches": (10,),
    "raw_seconds": 0.1,
    "read_messages": 2_000,
    "read_seconds": 0.1,
    "mixed_seconds": 0.2,
    "mixed_read_rate": 200.0,
}


def test_store_workloads(tmp_path: Path) -> None:
    cfg = Config.quick(tmp_path, workloads=("write", "raw", "reads", "mixed"), **TINY)
    results = run(cfg, emit=lambda line: None)
    assert {r["variant"] for r in results["write"]} == {"lmdb", "sqlite-txn", "sqlite-batched"}
    assert all(r["messages_checked"] > 0 and r["msgs_per_s"] > 0 for r in results["write"])
    assert {r["backend"] for r in results["raw"]} == {"lmdb", "sqlite"}
    assert len(results["reads"]) == 6 and len(results["mixed"]) == 2
    for name in ("results.json", "report.md", "bench.png"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["meta"]["machine"]["nproc"] >= 1
    assert "LMDB, group commit" in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "work").exists()


@pytest.mark.skipif(importlib.util.find_spec("chatmdb.gateway") is None, reason="no gateway")
def test_gateway_workload(tmp_path: Path) -> None:
    cfg = Config.quick(
        tmp_path, workloads=("gateway",), gateway_clients=4, gateway_sessions=2, gateway_seconds=0.5,
        gateway_warmup=0.1, gateway_rate=100.0, gateway_open_clients=4, gateway_open_sessions=2, gateway_workers=2,
    )
    results = run(cfg, emit=lambda line: None)
    # The status quo, chatmdb on SQLite and LMDB with 1 and 2 workers; each closed and open loop.
    assert {(r["server"], r["load"]) for r in results["gateway"]} == {
        (s, load) for s in ("statusquo", "sqlite-1", "lmdb-1", "sqlite-2", "lmdb-2")
        for load in ("closed loop", "100 msg/s offered")
    }
    for row in results["gateway"]:
        assert row["acked_per_s"] > 0 and row["deliveries"] > 0 and row["cpu_ms_per_msg"] > 0
        assert row["missing"] == row["duplicates"] == row["foreign"] == 0
    assert sum(r["messages_checked"] for r in results["gateway"]) == sum(r["acked"] for r in results["gateway"])
    assert "server CPU ms/msg" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("backend", ["lmdb", "sqlite"])
def test_check_fails_loudly(tmp_path: Path, backend: str) -> None:
    ids = make_sessions(tmp_path / "db", backend, 2)
    with open_store(tmp_path / "db", backend=backend) as store:
        acked = [(ids[0], store.create_message({"session_id": ids[0], "content": "x"})["seq"]) for _ in range(3)]
        assert check_writes(store, acked, dict.fromkeys(ids, 0)) == 3
        with pytest.raises(BenchFailure, match="lost or duplicated"):
            check_writes(store, [*acked, acked[-1]], dict.fromkeys(ids, 0))  # one ack twice
        with pytest.raises(BenchFailure, match="lost or duplicated"):
            check_writes(store, acked[:2], dict.fromkeys(ids, 0))  # a stored message nobody acked
