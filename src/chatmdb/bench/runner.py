"""Run the workloads in order, each backend in turn, and write the report.

Example: chatmdb bench --quick --out ./bench-results
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from . import engine_ceiling, gateway_load, report, store_load
from ._stats import machine, rss_bytes

WORKLOADS = ("write", "raw", "reads", "mixed", "gateway")


@dataclass(frozen=True)
class Config:
    """Sizes and durations of one run; :meth:`full` and :meth:`quick` are the two presets."""

    mode: str
    out_dir: Path
    workloads: tuple[str, ...] = WORKLOADS
    backends: tuple[str, ...] = ("lmdb", "sqlite")
    durabilities: tuple[str, ...] = ("full", "process")
    producers: tuple[int, ...] = (1, 8, 32, 128)
    processes: int = 4  # writer processes of the multi-process cell, sharing `process_producers`
    process_producers: int = 32
    sessions: int = 1000
    warmup: float = 0.5  # seconds discarded at the start of every timed run
    write_seconds: float = 3.0
    write_rounds: int = 3  # every write cell this many times, side by side; the report shows the medians
    raw_batches: tuple[int, ...] = (1, 100, 1000)
    raw_seconds: float = 2.0
    read_messages: int = 1_000_000
    read_seconds: float = 4.0
    mixed_writers: int = 8
    mixed_readers: int = 4
    mixed_read_rate: float = 2000.0  # pages/s over all readers
    mixed_seconds: float = 4.0
    gateway_clients: int = 16  # closed loop: every client sends, into sessions of two
    gateway_sessions: int = 8
    gateway_rate: float = 1000.0  # open loop: messages/s offered in all...
    gateway_open_clients: int = 100  # ...by this many clients
    gateway_open_sessions: int = 50
    gateway_workers: int = 0  # the multi-worker rows; 0: one per core
    gateway_warmup: float = 1.0
    gateway_seconds: float = 5.0
    seed: int = 20261126
    keep: bool = False  # keep the databases under out_dir/work for inspection
    command: str = "chatmdb bench"

    @classmethod
    def full(cls, out_dir: Path, **changes: Any) -> Config:
        return replace(cls(mode="full", out_dir=out_dir), **changes)

    @classmethod
    def quick(cls, out_dir: Path, **changes: Any) -> Config:
        return replace(
            cls(
                mode="quick", out_dir=out_dir, producers=(1, 32), warmup=0.3, write_seconds=1.0,
                write_rounds=1, raw_batches=(1, 100), raw_seconds=0.6, read_messages=100_000, read_seconds=1.0,
                mixed_seconds=1.5, gateway_seconds=2.0, gateway_warmup=0.5, command="chatmdb bench --quick",
            ),
            **changes,
        )


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _Progress:
    def __init__(self, total: int, emit: Callable[[str], None]) -> None:
        self.total, self.done, self.emit = total, 0, emit
        self.started = time.monotonic()

    def step(self, what: str, result: str = "") -> None:
        self.done += 1
        elapsed = int(time.monotonic() - self.started)
        self.emit(f"[{self.done:>3}/{self.total} {elapsed // 60}:{elapsed % 60:02d}] {what}{': ' + result if result else ''}")

    def note(self, what: str) -> None:
        elapsed = int(time.monotonic() - self.started)
        self.emit(f"[  ... {elapsed // 60}:{elapsed % 60:02d}] {what}")


def _median_round(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The row of a write cell measured in the rounds *runs* (in round order), and its median round.

    ``msgs_per_s``, ``latency_ms``, ``db`` and ``rss`` are those of the round whose throughput is the
    median (the lower of the middle two for an even count); ``messages_checked`` adds up every round.
    """
    middle = sorted(runs, key=lambda r: r["msgs_per_s"])[(len(runs) - 1) // 2]  # stable: ties keep round order
    row = {**middle, "messages_checked": sum(r["messages_checked"] for r in runs), "rounds": len(runs),
           "msgs_per_s_rounds": [float(r["msgs_per_s"]) for r in runs]}
    return row, middle


def _write_label(durability: str, variant: store_load.Variant, producers: int, processes: int) -> str:
    """How progress lines name a write cell."""
    where = f" in {processes} procs" if processes > 1 else ""
    return f"write {durability:7} {variant.label:28} {producers:>3} producers{where}"


def run(cfg: Config, emit: Callable[[str], None] = _stderr) -> dict[str, Any]:
    """Run every workload of *cfg*; write results.json, report.md and bench.png into cfg.out_dir.

    Raises :class:`~chatmdb.bench.BenchFailure` as soon as a run loses,
    duplicates or misorders a message.
    """
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    variants = [v for v in store_load.VARIANTS if v.backend in cfg.backends]
    cells = [(p, 1) for p in cfg.producers] + ([(cfg.process_producers, cfg.processes)] if cfg.processes > 1 else [])
    want = set(cfg.workloads)
    if cfg.write_rounds < 1:
        raise ValueError(f"write_rounds must be at least 1, not {cfg.write_rounds}")
    rounds = cfg.write_rounds
    gateway_ok = importlib.util.find_spec("chatmdb.gateway") is not None
    total = (
        ("write" in want) * len(cfg.durabilities) * rounds * len(cells) * len(variants)
        + ("raw" in want) * len(cfg.backends) * len(cfg.durabilities) * len(cfg.raw_batches)
        + ("reads" in want or "mixed" in want) * (1 + len(cfg.backends))
        + ("mixed" in want) * len(cfg.backends)
        + ("gateway" in want and gateway_ok) * 2 * len(gateway_load.servers(cfg.gateway_workers or os.cpu_count() or 1))
    )
    progress = _Progress(total, emit)
    results: dict[str, Any] = {"write": [], "raw": [], "reads": [], "mixed": [], "gateway": [], "files": [],
                               "skipped": []}
    started = time.monotonic()
    seed = cfg.seed

    def files(workload: str, backend: str, messages: int, db: dict[str, int], rss: dict[str, int]) -> None:
        results["files"].append({"workload": workload, "backend": backend, "messages": messages,
                                 "db_bytes": db["bytes"], "db_allocated": db["allocated"], **rss})

    if "write" in want:
        # Round by round, the variants of a cell next to each other: a slow spell of the machine then
        # hits one round of every variant rather than every round of one, and the medians compare.
        for durability in cfg.durabilities:
            runs: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
            for round_ in range(1, rounds + 1):
                for producers, processes in cells:
                    for variant in variants:
                        seed += 1
                        row = store_load.write_cell(
                            work, variant, durability, producers, processes, sessions=cfg.sessions,
                            warmup=cfg.warmup, seconds=cfg.write_seconds, seed=seed,
                        )
                        runs.setdefault((producers, processes, variant.key), []).append(row)
                        lat = row["latency_ms"]
                        progress.step(
                            _write_label(durability, variant, producers, processes) + f", round {round_}/{rounds}",
                            f"{row['msgs_per_s']:>9,.0f} msg/s, median {lat['median']:.2f} ms,"
                            f" p99 {lat['p99']:.2f} ms, {row['messages_checked']:,} checked",
                        )
            for producers, processes in cells:
                for variant in variants:
                    row, middle = _median_round(runs[producers, processes, variant.key])
                    results["write"].append(row)
                    if rounds > 1:
                        each = ", ".join(f"{x:,.0f}" for x in row["msgs_per_s_rounds"])
                        progress.note(_write_label(durability, variant, producers, processes)
                                      + f": median {row['msgs_per_s']:,.0f} msg/s of {each}")
                    if durability == cfg.durabilities[0] and (producers, processes) == max(cells):
                        # The database and memory of the median round, and the messages that round wrote.
                        files(f"write ({variant.label}, {producers} producers)", variant.backend,
                              middle["messages_checked"], row["db"], row["rss"])

    if "raw" in want:
        for backend in cfg.backends:
            for durability in cfg.durabilities:
                for batch in cfg.raw_batches:
                    measure = engine_ceiling.raw_lmdb if backend == "lmdb" else engine_ceiling.raw_sqlite
                    row = measure(work / f"raw-{backend}-{durability}-{batch}", durability, batch, cfg.raw_seconds,
                                  cfg.warmup)
                    results["raw"].append(row)
                    progress.step(f"raw {backend:6} {durability:7} batch {batch:>4}",
                                  f"{row['msgs_per_s']:>9,.0f} msg/s, commit p99 {row['commit_latency_ms']['p99']:.2f} ms")

    if "reads" in want or "mixed" in want:
        paths = {b: work / f"reads-{b}" for b in cfg.backends}
        progress.note(f"building {len(paths)} databases of {cfg.read_messages:,} messages in parallel (setup)")
        built = store_load.build_databases(paths, cfg.sessions, cfg.read_messages, seed)
        progress.step("build", ", ".join(f"{b} {v['build_s']:.0f} s" for b, v in built.items()))
        results["build"] = {b: {"seconds": v["build_s"], "messages": cfg.read_messages} for b, v in built.items()}
        for backend in cfg.backends:
            if "reads" in want:
                rows = store_load.read_cells(paths[backend], backend, built[backend], cfg.read_messages,
                                             seconds=cfg.read_seconds, warmup=cfg.warmup, seed=seed)
                results["reads"].extend(rows)
                files("reads", backend, cfg.read_messages, rows[0]["db"], rows[0]["rss"])
                progress.step(f"reads {backend}", "; ".join(
                    f"{r['op'].split(',')[-1].strip()} p50 {r['latency_ms']['median']:.3f} p99 "
                    f"{r['latency_ms']['p99']:.3f} ms" for r in rows))
            else:
                progress.step(f"reads {backend}", "skipped")
        if "mixed" in want:
            for backend in cfg.backends:
                row = store_load.mixed_cell(
                    paths[backend], backend, built[backend]["sessions"], writers=cfg.mixed_writers,
                    readers=cfg.mixed_readers, read_rate=cfg.mixed_read_rate, warmup=cfg.warmup, seconds=cfg.mixed_seconds, seed=seed,
                )
                results["mixed"].append(row)
                files("mixed", backend, cfg.read_messages + row["messages_checked"], row["db"], row["rss"])
                progress.step(
                    f"mixed {backend}",
                    f"{row['writes_per_s']:,.0f} writes/s (p99 {row['write_latency_ms']['p99']:.2f} ms), "
                    f"{row['reads_per_s']:,.0f} reads/s (p99 {row['read_latency_ms']['p99']:.2f} ms)",
                )
        for path in paths.values():
            if not cfg.keep:
                shutil.rmtree(path, ignore_errors=True)

    if "gateway" in want and not gateway_ok:
        results["skipped"].append("gateway: chatmdb.gateway is not installed")
        emit("gateway workload skipped: chatmdb.gateway is not installed")
    elif "gateway" in want:
        workers = cfg.gateway_workers or os.cpu_count() or 1
        for server in gateway_load.servers(workers):
            rows = gateway_load.gateway_cells(
                work, server, closed=(cfg.gateway_clients, cfg.gateway_sessions),
                open_=(cfg.gateway_rate, cfg.gateway_open_clients, cfg.gateway_open_sessions),
                warmup=cfg.gateway_warmup, seconds=cfg.gateway_seconds,
            )
            results["gateway"].extend(rows)
            files(f"gateway ({server.name})", rows[0]["backend"], rows[-1]["messages_checked"], rows[0]["db"],
                  rows[0]["server_rss"])
            for row in rows:
                ms = row["ack_ms"] or {"p50": 0.0, "p99": 0.0}
                progress.step(f"gateway {server.name}, {row['load']}",
                              f"{row['acked_per_s']:,.0f} acked msg/s, ack p50 {ms['p50']:.1f} p99 {ms['p99']:.1f} ms, "
                              f"{row['cpu_ms_per_msg']:.3f} ms server CPU/msg")

    results["meta"] = {
        "command": cfg.command,
        "mode": cfg.mode,
        "elapsed_s": time.monotonic() - started,
        "machine": machine(work),
        "config": {k: v for k, v in asdict(cfg).items() if k != "out_dir"},
        "message_bytes": store_load.MESSAGE_BYTES,
        "bench_rss": rss_bytes(),
    }
    results["targets"] = report.targets(results)
    if not cfg.keep:
        shutil.rmtree(work, ignore_errors=True)
    text = report.markdown(results)
    (out / "report.md").write_text(text)
    report.write_json(results, out / "results.json")
    report.plot(results, out / "bench.png")
    return results
