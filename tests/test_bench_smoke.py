"""The benchmark runs end to end at tiny sizes, and its loss/duplicate check bites.

Run with: .venv/bin/pytest tests/test_bench_smoke.py
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from chatmdb import open_store
from chatmdb.bench import BenchFailure, Config, report, run, store_load
from chatmdb.bench.store_load import Variant, check_writes, make_sessions

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
    assert all(r["rounds"] == 1 and r["msgs_per_s_rounds"] == [r["msgs_per_s"]] for r in results["write"])
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


def test_write_rounds_real(tmp_path: Path) -> None:
    """Two real rounds of the three variants in one small cell: the new keys, and the report shows the range."""
    cfg = Config.quick(tmp_path, workloads=("write",), **{**TINY, "processes": 1}, write_rounds=2)
    lines: list[str] = []
    results = run(cfg, emit=lines.append)
    rows = results["write"]
    assert [r["variant"] for r in rows] == ["lmdb", "sqlite-txn", "sqlite-batched"]
    for r in rows:
        assert r["rounds"] == 2 and len(r["msgs_per_s_rounds"]) == 2
        assert r["msgs_per_s"] == min(r["msgs_per_s_rounds"]) > 0  # the lower middle of two
        assert r["messages_checked"] > 0 and r["latency_ms"]["n"] > 0
    assert sum("round 1/2" in line for line in lines) == sum("round 2/2" in line for line in lines) == 3
    assert all("/6 " in line for line in lines if line.startswith("[") and "round" in line)
    text = (tmp_path / "report.md").read_text()
    assert "median of 2 side-by-side rounds" in text
    lo, hi = min(rows[0]["msgs_per_s_rounds"]), max(rows[0]["msgs_per_s_rounds"])
    assert f"({report._n(lo)}-{report._n(hi)})" in text


def _fake_cell(rates: dict[tuple[str, int], list[float]], calls: list[tuple[str, str, int, int, int]]) -> Any:
    """A write_cell that returns *rates*[variant, producers][round] msg/s and records its calls."""

    def write_cell(workdir: Path, variant: Variant, durability: str, producers: int, processes: int, *,
                   sessions: int, warmup: float, seconds: float, seed: int) -> dict[str, Any]:
        done = sum(1 for c in calls if c[:3] == (variant.key, durability, producers))
        calls.append((variant.key, durability, producers, processes, seed))
        rate = rates[variant.key, producers][done]
        return {"variant": variant.key, "label": variant.label, "backend": variant.backend,
                "group_commit": variant.group_commit, "durability": durability, "producers": producers,
                "processes": processes, "msgs_per_s": rate,
                "latency_ms": {"n": 10, "median": rate / 1000, "p90": 1.0, "p99": 2.0, "max": 3.0},
                "messages_checked": 100 + done, "db": {"bytes": int(rate), "allocated": int(rate)},
                "rss": {"rss": int(rate), "peak_rss": int(rate)}}

    return write_cell


@pytest.mark.parametrize("rounds", [3, 4])
def test_write_rounds_order_and_medians(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rounds: int) -> None:
    """Every round visits every cell, a cell's variants side by side; the row is the median round's."""
    rates = {("lmdb", 1): [900.0, 300.0, 600.0, 100.0], ("sqlite-txn", 1): [50.0, 70.0, 60.0, 40.0],
             ("sqlite-batched", 1): [5.0, 5.0, 5.0, 5.0],
             ("lmdb", 32): [9000.0, 11000.0, 10000.0, 8000.0], ("sqlite-txn", 32): [3500.0, 2500.0, 3000.0, 4000.0],
             ("sqlite-batched", 32): [6000.0, 7000.0, 6500.0, 7500.0]}
    calls: list[tuple[str, str, int, int, int]] = []
    monkeypatch.setattr(store_load, "write_cell", _fake_cell(rates, calls))
    lines: list[str] = []
    cfg = Config.quick(tmp_path, workloads=("write",), durabilities=("full", "process"), producers=(1, 32),
                       processes=1, write_rounds=rounds)
    results = run(cfg, emit=lines.append)

    variants = ["lmdb", "sqlite-txn", "sqlite-batched"]
    assert [c[:3] for c in calls] == [(v, d, p) for d in ("full", "process") for _ in range(rounds)
                                      for p in (1, 32) for v in variants]
    assert len({c[4] for c in calls}) == len(calls)  # a seed of its own for every run
    steps = [line for line in lines if line.startswith("[") and not line.startswith("[  ...")]
    assert len(steps) == len(calls) and all(f"/{len(calls)} " in line for line in steps)
    assert [line.split("round ")[1].split(":")[0] for line in steps] == [
        f"{r}/{rounds}" for _ in ("full", "process") for r in range(1, rounds + 1) for _ in range(6)]

    rows = results["write"]
    assert [(r["durability"], r["producers"], r["variant"]) for r in rows] == [
        (d, p, v) for d in ("full", "process") for p in (1, 32) for v in variants]
    for row in rows:
        each = rates[row["variant"], row["producers"]][:rounds]
        median = sorted(each)[(rounds - 1) // 2]
        assert row["rounds"] == rounds and row["msgs_per_s_rounds"] == each
        assert row["msgs_per_s"] == median
        assert row["latency_ms"]["median"] == median / 1000 and row["db"]["bytes"] == int(median)  # that round's
        assert row["messages_checked"] == sum(100 + i for i in range(rounds))
    lmdb32 = next(r for r in rows if r["variant"] == "lmdb" and r["producers"] == 32)
    assert lmdb32["msgs_per_s"] == (10000.0 if rounds == 3 else 9000.0)

    written = [f for f in results["files"] if f["workload"].startswith("write")]
    assert [f["db_bytes"] for f in written] == [int(sorted(rates[v, 32][:rounds])[(rounds - 1) // 2])
                                                for v in variants]

    text = (tmp_path / "report.md").read_text()
    assert f"median of {rounds} side-by-side rounds" in text
    assert ("| 32 | 10,000 (9,000-11,000) | 3,000 (2,500-3,500) |" if rounds == 3
            else "| 32 | 9,000 (8,000-11,000) | 3,000 (2,500-4,000) |") in text
    target = next(t for t in results["targets"] if "3x SQLite" in t["target"])
    assert target["met"] is True and target["measured"].startswith("3.3x" if rounds == 3 else "3.0x")
    assert f"medians of {rounds} rounds; round by round" in target["measured"]


def test_report_of_single_round_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A results.json from before the rounds (no `rounds` keys) renders as before: one number a cell."""
    rates = {(v, 32): [r] for v, r in (("lmdb", 10000.0), ("sqlite-txn", 4000.0), ("sqlite-batched", 5000.0))}
    monkeypatch.setattr(store_load, "write_cell", _fake_cell(rates, []))
    cfg = Config.quick(tmp_path, workloads=("write",), durabilities=("full",), producers=(32,), processes=1)
    results = json.loads(json.dumps(run(cfg, emit=lambda line: None), default=str))
    for row in results["write"]:
        del row["rounds"], row["msgs_per_s_rounds"]
    text = report.markdown(results)
    assert "### Write throughput, durability `full` (messages/s)\n" in text
    assert "| 32 | 10,000 | 4,000 | 5,000 | 2.5x | 2.00x |" in text
    assert "rounds" not in text
    target = next(t for t in report.targets(results) if "3x SQLite" in t["target"])
    assert target["measured"] == "2.5x (10,000 vs 4,000 msg/s)" and target["met"] is False
