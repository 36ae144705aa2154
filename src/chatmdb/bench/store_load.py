"""Workloads through the public Store API: writes (1), reads at scale (3), mixed load (4).

Every write run records what each ``create_message`` call returned and checks
it against the database afterwards (:func:`check_writes`): every session's
acknowledged seqs are exactly base+1..message_count, with no gap and no
duplicate, and the store holds exactly as many messages as were acknowledged.

Reproduce with ``chatmdb bench --only write`` (or ``--only reads,mixed``).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import random
import shutil
import threading
import time
import uuid as uuidlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store import Store, open_store
from ..store import codec as _codec
from ._stats import BenchFailure, dir_size, rss_bytes, summarize

MESSAGE_BYTES = 300


@dataclass(frozen=True)
class Variant:
    """One way of running a backend, at that backend's best practice."""

    key: str
    label: str
    backend: str
    group_commit: bool


VARIANTS = (
    Variant("lmdb", "LMDB, group commit", "lmdb", True),
    Variant("sqlite-txn", "SQLite, one txn per message", "sqlite", False),
    Variant("sqlite-batched", "SQLite, same batching", "sqlite", True),
)


def content_for(size: int = MESSAGE_BYTES) -> str:
    """Message text sized so the stored record (envelope, fields, checksum) is about *size* bytes."""
    probe = {
        "session_id": "s0000",
        "role": "user",
        "sender_id": "user-000",
        "content": "",
        "message_uuid": str(uuidlib.uuid4()),
        "created_at": "2026-01-01T00:00:00.000000+00:00",
        "seq": 1000,
    }
    overhead = len(_codec.encode([{"g": 100_000}, probe]))
    words = "the quick brown fox jumps over the lazy dog and files a status report "
    return (words * (size // len(words) + 1))[: max(size - overhead - 2, 1)]


def session_ids(count: int) -> list[str]:
    return [f"s{i:04d}" for i in range(count)]


def make_sessions(path: Path, backend: str, count: int) -> list[str]:
    """A fresh database holding *count* empty sessions (setup, not measured)."""
    ids = session_ids(count)
    with open_store(path, backend=backend, durability="process", group_commit=False) as store:
        for sid in ids:
            store.create_session(title=sid, session_id=sid)
    return ids


# -- workload 1: write throughput -------------------------------------------------------


@dataclass
class _Window:
    warm_end: float = 0.0
    deadline: float = 0.0


def _produce(
    store: Store, sessions: Sequence[str], content: str, window: _Window, seed: int, out: dict[str, Any]
) -> None:
    """Call create_message until the deadline; keep latencies after warm-up and every ack."""
    rng = random.Random(seed)
    latencies: list[float] = []
    acked: list[tuple[str, int]] = []
    in_window = 0
    sender = f"user-{seed % 1000:03d}"
    clock = time.perf_counter
    while True:
        sid = sessions[rng.randrange(len(sessions))]
        started = clock()
        if started >= window.deadline:
            break
        message = store.create_message({"session_id": sid, "role": "user", "sender_id": sender, "content": content})
        ended = clock()
        acked.append((sid, message["seq"]))
        if started >= window.warm_end:
            latencies.append(ended - started)
        if window.warm_end <= ended <= window.deadline:
            in_window += 1
    out["latencies"] = latencies
    out["acked"] = acked
    out["in_window"] = in_window


def _run_threads(
    store: Store, sessions: Sequence[str], content: str, threads: int, warmup: float, seconds: float, seed: int,
    start_at: float | None = None,
) -> dict[str, Any]:
    """Run *threads* producers against one store; return merged latencies, acks, in-window count."""
    window = _Window()
    go = threading.Event()
    outs: list[dict[str, Any]] = [{} for _ in range(threads)]
    errors: list[BaseException] = []

    def body(k: int) -> None:
        go.wait()
        try:
            _produce(store, sessions, content, window, seed * 10_000 + k, outs[k])
        except BaseException as exc:  # surfaced below: a failed write fails the run
            errors.append(exc)

    workers = [threading.Thread(target=body, args=(k,), daemon=True) for k in range(threads)]
    for w in workers:
        w.start()
    begin = time.perf_counter() if start_at is None else start_at
    window.warm_end = begin + warmup
    window.deadline = window.warm_end + seconds
    go.set()
    for w in workers:
        w.join()
    if errors:
        raise BenchFailure(f"a producer failed: {errors[0]!r}") from errors[0]
    return {
        "latencies": [x for o in outs for x in o["latencies"]],
        "acked": [x for o in outs for x in o["acked"]],
        "in_window": sum(o["in_window"] for o in outs),
    }


def _write_process(
    path: str, backend: str, durability: str, group_commit: bool, sessions: list[str], content: str,
    threads: int, warmup: float, seconds: float, seed: int, ready: Any, go: Any, start: Any, results: Any,
) -> None:
    """One of several writer processes (spawned): its own store, *threads* producers."""
    try:
        store = open_store(path, backend=backend, durability=durability, group_commit=group_commit)
        ready.put(None)
        go.wait()
        with store:
            out = _run_threads(store, sessions, content, threads, warmup, seconds, seed, start_at=start.value)
        results.put(out)
    except BaseException as exc:
        results.put({"error": repr(exc)})
        raise


def check_writes(store: Store, acked: Sequence[tuple[str, int]], base: dict[str, int]) -> int:
    """Fail loudly unless every acknowledged message is stored once, in seq order, and nothing else is.

    *base* is each session's message count before the run. Returns the number
    of messages checked.
    """
    by_session: dict[str, list[int]] = defaultdict(list)
    for sid, seq in acked:
        by_session[sid].append(seq)
    problems: list[str] = []
    for sid, before in base.items():
        seqs = sorted(by_session.get(sid, []))
        session = store.get_session(sid)
        count = -1 if session is None else session["message_count"]
        expected = list(range(before + 1, before + len(seqs) + 1))
        if seqs != expected:
            dups = len(seqs) - len(set(seqs))
            problems.append(f"session {sid}: acked seqs are not {before + 1}..{before + len(seqs)} ({dups} duplicates)")
        if count != before + len(seqs):
            problems.append(f"session {sid}: stores {count} messages, {before} + {len(seqs)} acknowledged")
        if len(problems) > 10:
            break
    unknown = set(by_session) - set(base)
    if unknown:
        problems.append(f"acks name sessions that were not set up: {sorted(unknown)[:5]}")
    stored = store.stats()["messages"]
    if stored != sum(base.values()) + len(acked):
        problems.append(f"the store holds {stored} messages, expected {sum(base.values())} + {len(acked)} acknowledged")
    if problems:
        raise BenchFailure("messages lost or duplicated:\n  " + "\n  ".join(problems))
    return len(acked)


def write_cell(
    workdir: Path, variant: Variant, durability: str, producers: int, processes: int, *,
    sessions: int, warmup: float, seconds: float, seed: int,
) -> dict[str, Any]:
    """Workload 1, one cell: *producers* threads (spread over *processes*) on a fresh database."""
    path = workdir / f"write-{variant.key}-{durability}-{producers}x{processes}"
    ids = make_sessions(path, variant.backend, sessions)
    content = content_for()
    if processes == 1:
        store = open_store(path, backend=variant.backend, durability=durability, group_commit=variant.group_commit)
        with store:
            out = _run_threads(store, ids, content, producers, warmup, seconds, seed)
        merged = out
    else:
        merged = _run_processes(path, variant, durability, ids, content, producers, processes, warmup, seconds, seed)
    with open_store(path, backend=variant.backend, durability=durability) as store:
        checked = check_writes(store, merged["acked"], dict.fromkeys(ids, 0))
    size = dir_size(path)
    shutil.rmtree(path, ignore_errors=True)
    return {
        "variant": variant.key,
        "label": variant.label,
        "backend": variant.backend,
        "group_commit": variant.group_commit,
        "durability": durability,
        "producers": producers,
        "processes": processes,
        "msgs_per_s": merged["in_window"] / seconds,
        "latency_ms": summarize(merged["latencies"]),
        "messages_checked": checked,
        "db": size,
        "rss": rss_bytes(),
    }


def _run_processes(
    path: Path, variant: Variant, durability: str, ids: list[str], content: str, producers: int, processes: int,
    warmup: float, seconds: float, seed: int,
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")  # an open LMDB environment must never cross fork()
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    start = ctx.Value("d", 0.0)
    per = producers // processes
    procs = [
        ctx.Process(
            target=_write_process,
            args=(str(path), variant.backend, durability, variant.group_commit, ids, content, per, warmup, seconds,
                  seed * 100 + p, ready, go, start, results),
            daemon=True,
        )
        for p in range(processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    # perf_counter is CLOCK_MONOTONIC on Linux, one clock for every process.
    start.value = time.perf_counter() + 0.1
    go.set()
    outs = [results.get(timeout=seconds + warmup + 300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    failed = [o["error"] for o in outs if "error" in o]
    if failed:
        raise BenchFailure(f"a writer process failed: {failed[0]}")
    return {
        "latencies": [x for o in outs for x in o["latencies"]],
        "acked": [tuple(x) for o in outs for x in o["acked"]],
        "in_window": sum(o["in_window"] for o in outs),
    }


# -- workload 3: reads at scale ---------------------------------------------------------


def build_database(path: str, backend: str, sessions: int, messages: int, seed: int) -> dict[str, Any]:
    """Fill a fresh database with *messages* spread round-robin over *sessions* (setup, not measured).

    Writes go through ``store.aio.create_message`` at ``durability="process"``
    with thousands in flight, so the group-commit writer commits them in large
    batches; the records are exactly what the store writes in service.
    Returns a sample of message uuids for lookups, and the build time.
    """
    rng = random.Random(seed)
    ids = make_sessions(Path(path), backend, sessions)
    content = content_for()
    sample: list[str] = []
    started = time.perf_counter()

    async def fill(store: Store) -> None:
        chunk: list[Any] = []
        for i in range(messages):
            message_uuid = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
            if rng.random() < 20_000 / messages:
                sample.append(message_uuid)
            data = {
                "session_id": ids[i % sessions], "role": "user", "sender_id": f"user-{i % 97:03d}",
                "content": content, "message_uuid": message_uuid,
            }
            chunk.append(store.aio.create_message(data))
            if len(chunk) >= 4096:
                await asyncio.gather(*chunk)
                chunk = []
        await asyncio.gather(*chunk)

    with open_store(path, backend=backend, durability="process", max_batch=4096) as store:
        asyncio.run(fill(store))
        stats = store.stats()
    if stats["messages"] != messages:
        raise BenchFailure(f"built {stats['messages']} messages, wanted {messages}")
    return {"sample": sample, "build_s": time.perf_counter() - started, "sessions": ids}


def build_databases(paths: dict[str, Path], sessions: int, messages: int, seed: int) -> dict[str, dict[str, Any]]:
    """Build one database per backend, in parallel spawned processes (the machine has spare cores)."""
    with ProcessPoolExecutor(max_workers=len(paths), mp_context=mp.get_context("spawn")) as pool:
        futures = {b: pool.submit(build_database, str(p), b, sessions, messages, seed) for b, p in paths.items()}
        built = {b: f.result() for b, f in futures.items()}
    # The build leaves ~1 GB of dirty pages (durability "process" does not
    # fsync); without this the kernel writes them back during the first
    # measured reads, which put 5 ms into one backend's p99 in a full run.
    os.sync()
    return built


def _timed(fn: Callable[[int], None], seconds: float, warmup: float, min_ops: int = 200) -> list[float]:
    """Call fn(i) repeatedly for *seconds* after *warmup*; latencies of the measured calls."""
    clock = time.perf_counter
    end_warm = clock() + warmup
    i = 0
    while clock() < end_warm:
        fn(i)
        i += 1
    samples: list[float] = []
    deadline = clock() + seconds
    while True:
        t0 = clock()
        if t0 >= deadline and len(samples) >= min_ops:
            break
        fn(i)
        samples.append(clock() - t0)
        i += 1
    return samples


def read_cells(
    path: Path, backend: str, built: dict[str, Any], messages: int, *, seconds: float, warmup: float, seed: int
) -> list[dict[str, Any]]:
    """Workload 3: newest page, deep cursor page and uuid lookup, each checked as it runs."""
    rng = random.Random(seed)
    ids: list[str] = built["sessions"]
    sample: list[str] = built["sample"]
    per_session = messages // len(ids)
    rows: list[dict[str, Any]] = []
    with open_store(path, backend=backend, durability="process") as store:

        def newest(_: int) -> None:
            sid = ids[rng.randrange(len(ids))]
            page = store.get_session_messages(sid, limit=50)
            assert isinstance(page, list)
            if len(page) != min(50, per_session) or page[0]["seq"] != per_session or page[0]["session_id"] != sid:
                raise BenchFailure(f"newest page of {sid} is wrong: {[m['seq'] for m in page][:5]}")

        def deep(_: int) -> None:
            sid = ids[rng.randrange(len(ids))]
            cursor = rng.randint(min(51, per_session), max(per_session // 2, 51))
            page = store.get_session_messages(sid, limit=50, cursor=str(cursor))
            assert isinstance(page, list)
            want = list(range(cursor - 1, max(cursor - 51, 0), -1))
            if [m["seq"] for m in page] != want:
                raise BenchFailure(f"cursor page of {sid} after {cursor} is wrong")

        def lookup(_: int) -> None:
            wanted = sample[rng.randrange(len(sample))]
            message = store.get_message(wanted)
            if message is None or message["message_uuid"] != wanted:
                raise BenchFailure(f"get_message({wanted}) did not return it")

        for op, fn in (
            ("get_session_messages(limit=50), newest", newest),
            ("get_session_messages(limit=50), deep cursor", deep),
            ("get_message(uuid)", lookup),
        ):
            rows.append({"backend": backend, "op": op, "messages": messages, "sessions": len(ids), "latency_ms": summarize(
                _timed(fn, seconds, warmup))})
    size = dir_size(path)
    for row in rows:
        row["db"] = size
        row["rss"] = rss_bytes()
    return rows


# -- workload 4: mixed load -------------------------------------------------------------


def mixed_cell(
    path: Path, backend: str, sessions: Sequence[str], *, writers: int, readers: int, read_rate: float,
    warmup: float, seconds: float, seed: int,
) -> dict[str, Any]:
    """Workload 4: *readers* threads page history at *read_rate* pages/s in all while *writers* append
    at durability full."""
    content = content_for()
    with open_store(path, backend=backend, durability="full") as store:
        base = {sid: store.get_session(sid)["message_count"] for sid in sessions}  # type: ignore[index]
        read_lat: list[float] = []
        stop = threading.Event()
        read_errors: list[BaseException] = []
        window = _Window()

        # Readers are paced (a chat server pages history on request, it does not
        # spin): unpaced reader threads would measure GIL contention, not storage.
        interval = readers / read_rate

        def reader(k: int) -> None:
            rng = random.Random(seed * 7 + k)
            mine: list[float] = []
            due = time.perf_counter() + interval * k / readers
            try:
                while not stop.is_set():
                    pause = due - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                    due = max(due + interval, time.perf_counter() - interval)
                    sid = sessions[rng.randrange(len(sessions))]
                    cursor = None if rng.random() < 0.5 else str(rng.randint(2, max(base[sid], 2)))
                    t0 = time.perf_counter()
                    page = store.get_session_messages(sid, limit=50, cursor=cursor)
                    t1 = time.perf_counter()
                    assert isinstance(page, list)
                    seqs = [m["seq"] for m in page]
                    if seqs != sorted(seqs, reverse=True) or len(set(seqs)) != len(seqs):
                        raise BenchFailure(f"a page of {sid} is out of order: {seqs[:5]}")
                    if window.warm_end <= t0 and t1 <= window.deadline:
                        mine.append(t1 - t0)
            except BaseException as exc:
                read_errors.append(exc)
            read_lat.extend(mine)

        threads = [threading.Thread(target=reader, args=(k,), daemon=True) for k in range(readers)]
        now = time.perf_counter()
        window.warm_end, window.deadline = now + warmup, now + warmup + seconds
        for t in threads:
            t.start()
        out = _run_threads(store, sessions, content, writers, warmup, seconds, seed, start_at=now)
        stop.set()
        for t in threads:
            t.join()
        if read_errors:
            raise BenchFailure(f"a reader failed: {read_errors[0]!r}") from read_errors[0]
        checked = check_writes(store, out["acked"], base)
    return {
        "backend": backend,
        "writers": writers,
        "readers": readers,
        "writes_per_s": out["in_window"] / seconds,
        "write_latency_ms": summarize(out["latencies"]),
        "read_rate_target": read_rate,
        "reads_per_s": len(read_lat) / seconds,
        "read_latency_ms": summarize(read_lat),
        "messages_checked": checked,
        "db": dir_size(path),
        "rss": rss_bytes(),
    }
