"""SIGKILL the server during a send storm: every acked message survives, once, as acked.

A real ``chatmdb serve`` (``durability=full``) takes ``send_message`` calls
from 16 python-socketio clients at once, each waiting for its ack before the
next send, into 4 sessions. At a random moment after the acks start to flow,
the server is killed with SIGKILL; it is then restarted on the same database
and port and the clients connect again. Each client first resends the
messages it never got an ack for, with the same ``message_uuid`` (as a
retrying client would), then sends new ones. After every restart the HTTP
history must hold every message acked so far exactly once, equal to its ack
(same ``seq``, same ``created_at``), with ``seq`` 1..n in every session. After
the last restart the server is stopped with SIGTERM (exit 0, no traceback) and
the store, opened directly, must agree and ``verify()`` clean.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import socketio
from _rel import check_messages

from chatmdb import open_store
from gateway.conftest import BACKENDS, Server, start_server, stop_and_check  # tests/gateway/conftest.py

KILLS = 3  # per backend
CLIENTS = 16
SESSIONS = 4
SEED = 20_261_126
ACK_TIMEOUT = 10.0
WAIT = 30.0  # bound of every wait for the storm to get going


class Storm:
    """Clients that send until stopped, keeping what was acked and what is still owed an ack."""

    def __init__(self, sids: list[str]) -> None:
        self.sids = sids
        self.acked: dict[str, dict[str, Any]] = {}
        self.unacked: dict[str, tuple[str, str]] = {}  # uuid -> (session id, content), sent without an ack yet
        self.errors: list[Any] = []
        self.new_acks = 0

    async def client(self, sio: socketio.AsyncClient, index: int, round_: int) -> None:
        mine = [uuid for uuid in self.unacked if uuid.split("-")[1] == f"c{index}"]
        n = 0
        while True:
            if mine:
                uuid = mine.pop(0)
                sid, content = self.unacked[uuid]
            else:
                uuid, sid = f"r{round_}-c{index}-{n}", self.sids[(index + n) % len(self.sids)]
                content = f"message {n} of client {index} in round {round_}"
                self.unacked[uuid] = (sid, content)
                n += 1
            payload = {"session_id": sid, "content": content, "message_uuid": uuid, "agent_id": f"agent-{index}"}
            ack = await sio.call("send_message", payload, timeout=ACK_TIMEOUT)
            if not (isinstance(ack, dict) and ack.get("ok") is True):
                self.errors.append(ack)
                return
            assert ack["data"]["message_uuid"] == uuid and ack["data"]["session_id"] == sid
            self.acked[uuid] = ack["data"]
            self.unacked.pop(uuid, None)
            self.new_acks += 1


def _history(server: Server, sid: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    with server.http() as http:
        while True:
            params: dict[str, Any] = {"direction": "asc", "limit": 1000}
            if cursor is not None:
                params["cursor"] = cursor
            response = http.get(f"/api/sessions/{sid}/messages", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            items += page["items"]
            cursor = page["pagination"].get("next_cursor")
            if cursor is None:
                return items


def _check_history(server: Server, storm: Storm) -> int:
    """Every acked message in the HTTP history once, as acked; seq 1..n. Returns the number stored."""
    stored: dict[str, dict[str, Any]] = {}
    counts: Counter[str] = Counter()
    for sid in storm.sids:
        items = _history(server, sid)
        assert [m["seq"] for m in items] == list(range(1, len(items) + 1)), f"seq of {sid} is not 1..n"
        for message in items:
            counts[message["message_uuid"]] += 1
            stored[message["message_uuid"]] = message
    repeated = [uuid for uuid, count in counts.items() if count > 1]
    assert not repeated, f"stored more than once: {repeated[:5]}"
    missing = [uuid for uuid in storm.acked if uuid not in stored]
    assert not missing, f"{len(missing)} acked messages are missing after the restart, e.g. {missing[:5]}"
    changed = [uuid for uuid, ack in storm.acked.items() if stored[uuid] != ack]
    assert not changed, f"stored differently from the ack: {changed[:5]}"
    return len(stored)


async def _connect(server: Server) -> list[socketio.AsyncClient]:
    clients = [socketio.AsyncClient(reconnection=False) for _ in range(CLIENTS)]
    await asyncio.gather(
        *(sio.connect(server.url, transports=["websocket"], wait_timeout=ACK_TIMEOUT) for sio in clients)
    )
    return clients


async def _close(clients: list[socketio.AsyncClient]) -> None:
    for sio in clients:
        if sio.connected:
            await sio.disconnect()
        await sio.shutdown()


@pytest.mark.parametrize("store_backend", BACKENDS)
async def test_sigkill_during_send_storm_loses_no_acked_message(tmp_path: Path, store_backend: str) -> None:
    rng = random.Random(f"{SEED}-{store_backend}")
    server = start_server(tmp_path, store_backend)
    with server.http() as http:
        sids = [http.post("/api/sessions", json={"session_id": f"storm-{i}"}).json()["id"] for i in range(SESSIONS)]
    storm = Storm(sids)
    rounds: list[tuple[int, int, int]] = []  # (acks in the round, retried unacked, stored after the restart)
    try:
        for round_ in range(KILLS):
            clients = await _connect(server)
            owed = len(storm.unacked)
            storm.new_acks = 0
            tasks = [asyncio.ensure_future(storm.client(sio, i, round_)) for i, sio in enumerate(clients)]
            # Kill at a random moment once the storm is under way: after some acks, then a random pause.
            threshold = rng.randint(1, 300)
            for _ in range(int(WAIT / 0.01)):
                if storm.new_acks >= threshold or all(task.done() for task in tasks):
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            assert not any(task.done() for task in tasks), [t.exception() for t in tasks if t.done()]
            server.proc.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(server.proc.wait, WAIT) == -signal.SIGKILL
            server.stopped = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await _close(clients)
            assert not storm.errors, storm.errors[:5]

            server = await asyncio.to_thread(start_server, tmp_path, store_backend, port=server.port)
            rounds.append((storm.new_acks, owed, _check_history(server, storm)))
    finally:
        if not server.stopped:
            server.stop()
    stop_and_check(server)

    with open_store(server.db, backend=store_backend) as store:
        stored = check_messages(store, sids, storm.acked)
        for uuid, ack in storm.acked.items():
            assert store.get_message(uuid) == ack
    assert len(storm.acked) >= KILLS, rounds
    assert all(new > 0 for new, _, _ in rounds), rounds
    print(
        f"{store_backend}: {KILLS} SIGKILLs, {CLIENTS} clients; acks per round {[r[0] for r in rounds]}, "
        f"unacked resent per round {[r[1] for r in rounds]}; {len(storm.acked)} acked, {len(stored)} stored, "
        f"{len(storm.unacked)} never acked; every acked message present once, as acked"
    )
