"""Workload 5: through the Socket.IO gateway, with clients in other processes.

``chatmdb serve`` runs as its own process; N python-socketio ``AsyncClient``s,
spread over several spawned processes, join shared sessions. Half of each
session's members send ``send_message`` in a closed loop (next message after
the ack), everyone receives the ``message`` broadcasts. Measured: acked
messages/s, ack latency, and delivery completeness: every acknowledged
message must reach every other member of its session exactly once, and the
database must hold exactly the acknowledged messages, seq-contiguous.

Reproduce with ``chatmdb bench --only gateway``.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import queue
import signal
import socket
import subprocess
import sys
import time
import uuid as uuidlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from ..store import open_store
from ._stats import BenchFailure, dir_size, rss_bytes, summarize
from .store_load import check_writes, content_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(db: Path, backend: str, durability: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``chatmdb serve`` and wait until it accepts connections; return it and its URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMDB_")}
    cmd = [sys.executable, "-m", "chatmdb", "serve", "--db", str(db), "--port", str(port), "--backend", backend,
           "--durability", durability, "--log-level", "warning"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchFailure(f"the gateway exited with {proc.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise BenchFailure(f"the gateway did not listen on port {port} within 60 s; see {log}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _ack_data(ack: Any, what: str) -> dict[str, Any]:
    if not isinstance(ack, dict) or not ack.get("ok") or not isinstance(ack.get("data"), dict):
        raise BenchFailure(f"{what} was not acknowledged as ok: {ack!r:.200}")
    data: dict[str, Any] = ack["data"]
    return data


async def _create_sessions(url: str, count: int) -> list[str]:
    import socketio

    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, transports=["websocket"], wait_timeout=30)
    try:
        ids = []
        for i in range(count):
            ack = await client.call("create_session", {"title": f"bench {i}"}, timeout=30)
            ids.append(str(_ack_data(ack, "create_session")["id"]))
        return ids
    finally:
        await client.disconnect()


def _client_process(url: str, plan: list[tuple[int, str, bool]], content: str, ready: Any, go: Any,
                    start: Any, warmup: float, seconds: float, results: Any, expected: Any) -> None:
    """Run the clients *plan* names ((index, session, sends?)) in one event loop."""
    try:
        asyncio.run(_clients(url, plan, content, ready, go, start, warmup, seconds, results, expected))
    except BaseException as exc:
        results.put({"error": repr(exc)})
        raise


async def _clients(url: str, plan: list[tuple[int, str, bool]], content: str, ready: Any, go: Any, start: Any,
                   warmup: float, seconds: float, results: Any, expected: Any) -> None:
    import socketio

    loop = asyncio.get_running_loop()
    received: dict[int, list[str]] = {index: [] for index, _, _ in plan}
    clients: dict[int, Any] = {}
    for index, sid, _ in plan:
        client = socketio.AsyncClient(reconnection=False)
        mine = received[index]

        # *extra: a server with connection state recovery appends an offset argument.
        def on_message(data: Any, *extra: Any, mine: list[str] = mine) -> None:
            message = data.get("data", data) if isinstance(data, dict) else {}
            mine.append(f"{message.get('session_id')}|{message.get('message_uuid')}")

        client.on("message", on_message)
        await client.connect(url, transports=["websocket"], wait_timeout=30)
        ack = await client.call("join", {"session_id": sid}, timeout=30)
        if isinstance(ack, dict) and ack.get("ok") is False:
            raise BenchFailure(f"join {sid} was refused: {ack!r:.200}")
        clients[index] = client
    ready.put(None)
    await loop.run_in_executor(None, go.wait)
    warm_end = start.value + warmup
    deadline = warm_end + seconds
    now = time.perf_counter
    await asyncio.sleep(max(0.0, start.value - now()))

    async def send(index: int, sid: str) -> list[tuple[str, str, int, float, float, float]]:
        client, sent = clients[index], []
        while (t0 := now()) < deadline:
            message_uuid = str(uuidlib.uuid4())
            ack = await client.call(
                "send_message", {"session_id": sid, "content": content, "message_uuid": message_uuid}, timeout=60
            )
            t1 = now()
            data = _ack_data(ack, "send_message")
            if data.get("message_uuid") != message_uuid or data.get("session_id") != sid:
                raise BenchFailure(f"the ack names another message: {data!r:.200}")
            sent.append((sid, message_uuid, int(data["seq"]), t0, t1, float(index)))
        return sent

    sends = await asyncio.gather(*(send(index, sid) for index, sid, sender in plan if sender))
    results.put({"acked": [row for rows in sends for row in rows], "warm_end": warm_end, "deadline": deadline})
    want: dict[int, int] = await loop.run_in_executor(None, expected.get)
    give_up = now() + 30
    while now() < give_up and any(len(received[i]) < n for i, n in want.items()):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # a duplicate would arrive right behind the last expected message
    results.put({"received": received})
    for client in clients.values():
        await client.disconnect()


def gateway_cell(workdir: Path, name: str, backend: str, durability: str, db: Path, *, clients: int,
                 processes: int, sessions: int, warmup: float, seconds: float) -> dict[str, Any]:
    """One gateway run; fails loudly on any lost, duplicated or misrouted message."""
    proc, url = start_server(db, backend, durability, workdir / f"gateway-{name}.log")
    try:
        session_ids = asyncio.run(_create_sessions(url, sessions))
        members: dict[str, list[int]] = defaultdict(list)
        plans: list[list[tuple[int, str, bool]]] = [[] for _ in range(processes)]
        for i in range(clients):
            sid = session_ids[i % sessions]
            members[sid].append(i)
            plans[i % processes].append((i, sid, (i // sessions) % 2 == 0))
        ctx = mp.get_context("spawn")
        ready, results, go, start = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
        expects = [ctx.Queue() for _ in plans]
        content = content_for()
        procs = [
            ctx.Process(target=_client_process, args=(url, plan, content, ready, go, start, warmup, seconds, results,
                                                      expects[k]), daemon=True)
            for k, plan in enumerate(plans)
        ]
        for proc_ in procs:
            proc_.start()
        try:
            for _ in procs:
                _get(ready, 120, results)
            start.value = time.perf_counter() + 0.2
            go.set()
            phase1 = [_get(results, warmup + seconds + 120) for _ in procs]
            acked = [tuple(row) for out in phase1 for row in out["acked"]]
            by_session = Counter(row[0] for row in acked)
            by_sender = Counter(int(row[5]) for row in acked)
            for k, plan in enumerate(plans):
                expects[k].put({i: by_session[sid] - by_sender[i] for i, sid, _ in plan})
            phase2 = [_get(results, 120) for _ in procs]
        finally:
            for proc_ in procs:
                proc_.join(timeout=30)
                if proc_.is_alive():
                    proc_.kill()
        server_rss = rss_bytes(proc.pid)
    finally:
        stop_server(proc)
    received: dict[int, list[str]] = {}
    for out in phase2:
        received.update({int(k): v for k, v in out["received"].items()})
    delivered = _check_delivery(acked, members, received)
    with open_store(db, backend=backend, durability=durability) as store:
        checked = check_writes(store, [(row[0], row[2]) for row in acked], dict.fromkeys(session_ids, 0))
    warm_end, deadline = phase1[0]["warm_end"], phase1[0]["deadline"]
    in_window = [row for row in acked if warm_end <= row[3] and row[4] <= deadline]
    return {
        "name": name,
        "backend": backend,
        "durability": durability,
        "db_path_fs": str(db),
        "clients": clients,
        "senders": sum(1 for plan in plans for _, _, s in plan if s),
        "sessions": sessions,
        "client_processes": processes,
        "acked_per_s": sum(1 for row in acked if warm_end <= row[4] <= deadline) / seconds,
        "ack_latency_ms": summarize([row[4] - row[3] for row in in_window]),
        "messages_checked": checked,
        "deliveries_checked": delivered,
        "db": dir_size(db),
        "server_rss": server_rss,
    }


def _get(q: Any, timeout: float, errors: Any = None) -> Any:
    try:
        item = q.get(timeout=timeout)
    except queue.Empty:
        detail = ""
        if errors is not None:
            with contextlib.suppress(queue.Empty):
                detail = f": {errors.get_nowait()}"
        raise BenchFailure(f"a client process did not answer within {timeout:.0f} s{detail}") from None
    if isinstance(item, dict) and "error" in item:
        raise BenchFailure(f"a client process failed: {item['error']}")
    return item


def _check_delivery(acked: list[tuple[Any, ...]], members: dict[str, list[int]], received: dict[int, list[str]]) -> int:
    """Every acked message reached every other member of its session exactly once, and nothing else arrived."""
    problems: list[str] = []
    expected: dict[int, Counter[str]] = defaultdict(Counter)
    for sid, message_uuid, _seq, _t0, _t1, sender in acked:
        for member in members[sid]:
            if member != int(sender):
                expected[member][f"{sid}|{message_uuid}"] += 1
    total = 0
    for member, got_list in received.items():
        got = Counter(got_list)
        want = expected.get(member, Counter())
        missing = want - got
        extra = got - want
        total += sum(want.values())
        if missing:
            problems.append(f"client {member} missed {sum(missing.values())} acked messages")
        if extra:
            problems.append(f"client {member} got {sum(extra.values())} duplicate or foreign messages")
    if problems:
        raise BenchFailure("gateway delivery is incomplete:\n  " + "\n  ".join(problems[:10]))
    return total
