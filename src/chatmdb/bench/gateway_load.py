"""Workload 5: through the Socket.IO gateway, side by side with the server it replaces.

Each server runs as its own process on loopback and is driven by the node
load generator (:mod:`.loadgen`: the official ``socket.io-client``, WebSocket
transport, every client in a session with another, each acked message
broadcast to the others), first in a closed loop (saturation), then in an
open loop at a fixed offered rate. Measured: acked messages/s, ack latency,
and the server's CPU time per acked message (all its processes, from
``/proc``). Servers:

* the status quo (:mod:`.statusquo`): python-socketio under uvicorn's
  defaults, one SQLite transaction per message and a read-back, as an
  application's old ``db.py`` did;
* ``chatmdb serve`` on SQLite and on LMDB, with one worker process and with
  several.

Every run checks that each acked message is stored exactly once and reached
every other member of its session exactly once.

Reproduce with ``chatmdb bench --only gateway``.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store import open_store
from ._stats import BenchFailure, dir_size, rss_bytes
from .loadgen import node_available, run_load
from .store_load import check_writes


@dataclass(frozen=True)
class GatewayServer:
    key: str
    name: str
    backend: str | None  # None: the status quo
    workers: int = 1


def servers(workers: int) -> list[GatewayServer]:
    rows = [
        GatewayServer("statusquo", "status quo: python-socketio, sqlite3 txn per message", None),
        GatewayServer("sqlite-1", "chatmdb, SQLite", "sqlite"),
        GatewayServer("lmdb-1", "chatmdb, LMDB", "lmdb"),
    ]
    if workers > 1:
        rows += [
            GatewayServer(f"sqlite-{workers}", f"chatmdb, SQLite, {workers} workers", "sqlite", workers),
            GatewayServer(f"lmdb-{workers}", f"chatmdb, LMDB, {workers} workers", "lmdb", workers),
        ]
    return rows


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(server: GatewayServer, db: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start *server* on a free port and wait until it accepts connections; return it and its URL."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMDB_")}
    if server.backend is None:
        cmd = [sys.executable, "-m", "chatmdb.bench.statusquo", "--db", str(db), "--port", str(port)]
    else:
        cmd = [sys.executable, "-m", "chatmdb", "serve", "--db", str(db), "--port", str(port), "--backend",
               server.backend, "--durability", "full", "--log-level", "warning", "--workers", str(server.workers)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchFailure(f"{server.name} exited with {proc.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise BenchFailure(f"{server.name} did not listen on port {port} within 60 s; see {log}")
    time.sleep(0.5 if server.workers > 1 else 0.1)  # every worker listening
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _check_statusquo(db: Path, acked: list[list[Any]]) -> int:
    conn = sqlite3.connect(db / "app.sqlite3")
    try:
        stored = Counter(row[0] for row in conn.execute("SELECT message_uuid FROM messages"))
    finally:
        conn.close()
    want = Counter(str(row[1]) for row in acked)
    if stored != want:
        raise BenchFailure(f"the status quo lost or duplicated messages: {sum((want - stored).values())} missing")
    return len(acked)


def gateway_cells(workdir: Path, server: GatewayServer, *, closed: tuple[int, int], open_: tuple[float, int, int],
                  warmup: float, seconds: float) -> list[dict[str, Any]]:
    """The closed-loop and open-loop runs of one server on a fresh database; checked, or BenchFailure."""
    if not node_available():
        raise BenchFailure("the gateway workload needs node and tests/js/node_modules: run `make setup`")
    db = workdir / f"gateway-{server.key}"
    proc, url = start(server, db, workdir / f"gateway-{server.key}.log")
    rows: list[dict[str, Any]] = []
    acked: list[list[Any]] = []
    try:
        rate, open_clients, open_sessions = open_
        loads = [("closed loop", *closed, 0.0), (f"{rate:,.0f} msg/s offered", open_clients, open_sessions, rate)]
        for load, n_clients, n_sessions, n_rate in loads:
            result = run_load(url, proc.pid, clients=int(n_clients), sessions=int(n_sessions), warmup=warmup,
                              seconds=seconds, rate=float(n_rate))
            acked.extend(result.pop("acked_messages"))
            rows.append({
                "server": server.key, "name": server.name, "backend": server.backend or "sqlite3",
                "workers": server.workers, "load": load, **result,
            })
        server_rss = rss_bytes(proc.pid)
    finally:
        stop(proc)
    if server.backend is None:
        checked = _check_statusquo(db, acked)
    else:
        with open_store(db, backend=server.backend) as store:
            sessions_used = {str(row[0]) for row in acked}
            checked = check_writes(store, [(str(r[0]), int(r[2])) for r in acked], dict.fromkeys(sessions_used, 0))
    for row in rows:
        row["messages_checked"] = checked if row is rows[-1] else 0
        row["db"] = dir_size(db)
        row["server_rss"] = server_rss
    return rows
