"""``chatmdb serve --workers 2``: two processes on one port and one database.

Engine.io sids name their worker ("1.Xk3..."), so a raw WebSocket client
knows which worker it reached before it connects to Socket.IO, and the tests
place clients on both workers on purpose.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from chatmdb import open_store
from chatmdb.bench.loadgen import child_pids
from chatmdb.client import ChatClient

from .conftest import BACKENDS, Server, start_server, stop_and_check

WAIT = 10.0
ATTEMPTS = 60  # connections tried to reach a given worker: each lands on one of two at random


class Raw:
    """A Socket.IO client over a raw WebSocket, as the protocol spells it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, worker: int) -> None:
        self.ws = ws
        self.worker = worker
        self.sid = ""
        self.pid = ""
        self.events: list[tuple[str, Any, str | None]] = []  # (event, record, offset)
        self._acks: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._connected = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            text = msg.data
            if text == "2":  # engine.io ping
                await self.ws.send_str("3")
            elif text.startswith("40"):
                if not self._connected.done():
                    self._connected.set_result(json.loads(text[2:]))
            elif text.startswith("44") and not self._connected.done():
                self._connected.set_exception(AssertionError(f"connect refused: {text}"))
            elif text.startswith("43"):
                body = text[2:]
                ack_id = int(body[: body.index("[")])
                future = self._acks.pop(ack_id, None)
                if future is not None and not future.done():
                    future.set_result(json.loads(body[body.index("[") :])[0])
            elif text.startswith("42"):
                name, record, *rest = json.loads(text[2:])
                self.events.append((name, record, rest[0] if rest else None))

    async def connect(self, auth: dict[str, Any] | None = None) -> dict[str, Any]:
        await self.ws.send_str("40" + (json.dumps(auth) if auth else ""))
        reply: dict[str, Any] = await asyncio.wait_for(self._connected, WAIT)
        self.sid, self.pid = reply["sid"], reply.get("pid", "")
        return reply

    async def call(self, event: str, payload: dict[str, Any]) -> Any:
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[self._next_id] = future
        await self.ws.send_str(f"42{self._next_id}" + json.dumps([event, payload]))
        return await asyncio.wait_for(future, WAIT)

    async def ok(self, event: str, payload: dict[str, Any]) -> Any:
        ack = await self.call(event, payload)
        assert ack["ok"], (event, ack)
        return ack["data"]

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def open_on(session: aiohttp.ClientSession, server: Server, worker: int) -> Raw:
    """A raw client whose engine.io transport is held by *worker* (retried until it is)."""
    url = server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    for _ in range(ATTEMPTS):
        ws = await session.ws_connect(url)
        opening = await asyncio.wait_for(ws.receive_str(), WAIT)
        assert opening.startswith("0{"), opening
        landed = int(json.loads(opening[1:])["sid"].split(".")[0])
        if landed == worker:
            return Raw(ws, worker)
        await ws.close()
    raise AssertionError(f"no connection reached worker {worker} in {ATTEMPTS} attempts")


def _session(server: Server) -> str:
    with server.http() as http:
        response = http.post("/api/sessions", json={"title": "workers"})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


async def _wait_for(condition: Any, what: str) -> None:
    for _ in range(int(WAIT / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(params=BACKENDS)
def workers(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    server = start_server(tmp_path, str(request.param), args=("--workers", "2"))
    yield server
    stop_and_check(server)


async def test_events_reach_every_worker_once_and_in_order(workers: Server, http_session: aiohttp.ClientSession) -> None:
    session_id = _session(workers)
    clients = [await open_on(http_session, workers, w) for w in (0, 0, 1, 1)]
    for client in clients:
        await client.connect()
        await client.ok("join", {"session_id": session_id})
    sent: list[tuple[int, int]] = []  # (sender, seq)
    for round_ in range(10):
        for i, client in enumerate(clients):
            message = await client.ok("send_message", {"session_id": session_id, "content": f"{i}-{round_}"})
            sent.append((i, message["seq"]))
    assert [seq for _, seq in sent] == list(range(1, 41))
    for i, client in enumerate(clients):
        want = [seq for sender, seq in sent if sender != i]
        expected = len(want)
        await _wait_for(lambda c=client, n=expected: len(c.events) >= n, f"client {i}'s messages")
        await asyncio.sleep(0.1)  # a duplicate would come right behind
        got = [record["seq"] for name, record, _ in client.events if name == "message"]
        assert got == want, f"client {i} on worker {client.worker}: {got}"
        offsets = [int(offset) for _, _, offset in client.events if offset is not None]
        assert offsets == sorted(offsets) and len(offsets) == len(got)
    # Contexts and tasks too, across workers, not back to their writer.
    context = await clients[0].ok("create_context", {"session_id": session_id, "data": {"v": 1}})
    await clients[2].ok("update_context", {"context_id": context["id"], "data": {"v": 2}})
    await _wait_for(lambda: sum(1 for e in clients[3].events if e[0] == "context_updated") == 2, "context events")
    assert [e[1]["version"] for e in clients[3].events if e[0] == "context_updated"] in ([1, 2], [2, 2])
    # Worker 0 learns of the update from the log, after worker 1 delivered it to its own clients.
    await _wait_for(lambda: any(e[0] == "context_updated" for e in clients[0].events), "the update on worker 0")
    await asyncio.sleep(0.1)  # a duplicate, or its own create, would come right behind
    assert sum(1 for e in clients[0].events if e[0] == "context_updated") == 1  # only the other's update
    for client in clients:
        await client.close()


async def test_a_client_recovers_on_the_other_worker(workers: Server, http_session: aiohttp.ClientSession) -> None:
    session_id = _session(workers)
    subject = await open_on(http_session, workers, 0)
    await subject.connect()
    await subject.ok("join", {"session_id": session_id})
    sender = await open_on(http_session, workers, 1)
    await sender.connect()
    await sender.ok("send_message", {"session_id": session_id, "content": "seen"})
    await _wait_for(lambda: len(subject.events) == 1, "the first message")
    offset, old_sid, pid = subject.events[-1][2], subject.sid, subject.pid
    await subject.close()  # a lost transport
    missed = [(await sender.ok("send_message", {"session_id": session_id, "content": f"missed {i}"}))["seq"] for i in range(3)]
    back = await open_on(http_session, workers, 1)
    reply = await back.connect({"pid": pid, "offset": offset})
    assert reply["sid"] == old_sid and reply["pid"] == pid  # recovered: same id
    assert [record["seq"] for _, record, _ in back.events] == missed  # replayed before the CONNECT reply, once
    live = await sender.ok("send_message", {"session_id": session_id, "content": "live"})
    await _wait_for(lambda: len(back.events) == 4, "the live message")
    await asyncio.sleep(0.1)
    assert [record["seq"] for _, record, _ in back.events] == [*missed, live["seq"]]
    await back.close()
    await sender.close()


def test_long_polling_is_refused_with_a_clear_error(workers: Server) -> None:
    for query in ("transport=polling", "transport=%70olling", ""):  # as engine.io decodes it; polling by default
        response = httpx.get(f"{workers.url}/socket.io/?EIO=4&{query}", timeout=WAIT)
        assert response.status_code == 400, query
        assert "websocket" in response.json()["error"]["message"]
    assert httpx.get(f"{workers.url}/healthz", timeout=WAIT).status_code == 200


def _worker_pids(server: Server) -> list[int]:
    return child_pids(server.proc.pid)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_sigkill_of_a_worker_under_load_loses_nothing_acked(tmp_path: Path, backend: str) -> None:
    server = start_server(tmp_path, backend, args=("--workers", "2"))
    try:
        session_id = _session(server)
        senders = [ChatClient(server.url, ack_timeout=2.0) for _ in range(4)]
        for client in senders:
            await client.connect()
        acked: list[dict[str, Any]] = []

        async def send(k: int, client: ChatClient) -> None:
            for i in range(150):
                acked.append(await client.send_message(session_id, f"{k}-{i}", message_uuid=f"u{k}-{i}"))

        sending = asyncio.gather(*(send(k, c) for k, c in enumerate(senders)))
        await _wait_for(lambda: len(acked) >= 100, "the first acks")
        before = _worker_pids(server)
        assert len(before) == 2, before
        os.kill(before[0], signal.SIGKILL)
        await asyncio.wait_for(sending, 120)
        await _wait_for(lambda: len(_worker_pids(server)) == 2, "the restarted worker")
        assert before[0] not in _worker_pids(server)
        for client in senders:
            await client.close()
    finally:
        stop_and_check(server)
    assert len(acked) == 600
    with open_store(tmp_path / "db", backend=backend) as store:
        page = store.get_session_messages(session_id, limit=1000, direction="asc", include_total=True)
        assert isinstance(page, dict)
        stored = [m["message_uuid"] for m in page["items"]]
        assert sorted(stored) == sorted(m["message_uuid"] for m in acked)  # each acked message, once
        assert [m["seq"] for m in page["items"]] == list(range(1, 601))
        assert store.verify()["ok"]
