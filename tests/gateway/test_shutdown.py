"""SIGTERM while clients are writing: every write is committed and acked, or refused, never half-done."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from chatmdb import open_store

from .conftest import BACKENDS, CALL_TIMEOUT, Client, start_server


@pytest.mark.parametrize("store_backend", BACKENDS)
async def test_sigterm_with_writes_in_flight(
    tmp_path: Path, store_backend: str, sio_clients: Callable[..., Awaitable[Client]]
) -> None:
    server = start_server(tmp_path, store_backend)
    try:
        with server.http() as http:
            sid = http.post("/api/sessions", json={"title": "shutdown"}).json()["id"]
        clients = [await sio_clients(server, transports=["websocket"]) for _ in range(3)]
        payloads = [{"session_id": sid, "content": f"m{i}", "message_uuid": str(uuid.uuid4())} for i in range(300)]
        calls = [
            asyncio.ensure_future(clients[i % 3].call("send_message", payload)) for i, payload in enumerate(payloads)
        ]
        # Signal once writes are flowing, so that others are still queued or in flight.
        await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED, timeout=CALL_TIMEOUT)
        code = await asyncio.to_thread(server.stop)
    finally:
        if not server.stopped:
            server.stop()
    log = server.log_text()
    assert code == 0, log
    assert "Traceback" not in log, log

    # Acks travel before the close, so once a client has seen the close, every ack it will get has come.
    for _ in range(int(CALL_TIMEOUT / 0.05)):
        if not any(client.sio.connected for client in clients):
            break
        await asyncio.sleep(0.05)
    assert not any(client.sio.connected for client in clients), "the server left a client connected"
    acks: list[Any] = []
    for call in calls:
        if call.done() and call.exception() is None:
            acks.append(call.result())
        else:
            call.cancel()
            acks.append(None)
    await asyncio.gather(*calls, return_exceptions=True)

    with open_store(server.db, backend=store_backend) as store:
        assert store.verify()["ok"]
        page = store.get_session_messages(sid, limit=1000, direction="asc", include_total=True)
        assert isinstance(page, dict)
        assert [m["seq"] for m in page["items"]] == list(range(1, len(page["items"]) + 1))
        for payload, ack in zip(payloads, acks, strict=True):
            stored = store.get_message(payload["message_uuid"])
            if ack is None:
                continue  # never acked: stored or not, the client retries with the same uuid
            if ack["ok"]:
                assert stored == ack["data"], "an acked message must be stored as acked"
            else:
                assert ack["error"]["code"] == "internal" and stored is None, ack
    acked = sum(1 for ack in acks if ack and ack["ok"])
    assert acked >= 1
