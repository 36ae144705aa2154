"""SIGTERM while clients are writing: every write is committed and acked, or refused, never half-done.

What a client must be able to rely on: a message acked before the shutdown is stored once, as
acked; one without an ack (or refused) may or may not be stored, and resending it with the same
``message_uuid`` to the restarted server stores it exactly once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from chatmdb import open_store

from .conftest import BACKENDS, CALL_TIMEOUT, Client, start_server, stop_and_check

MESSAGES = 2000
ACKED_BEFORE_SIGTERM = 100  # the signal waits for this many acks, so the run always has acked writes to check


async def _until_done(calls: Sequence[asyncio.Future[Any]], count: int) -> None:
    """Wait until *count* calls have their answer; each wait for progress is bounded."""
    while (done := sum(call.done() for call in calls)) < count:
        finished, _ = await asyncio.wait(
            [call for call in calls if not call.done()], return_when=asyncio.FIRST_COMPLETED, timeout=CALL_TIMEOUT
        )
        assert finished, f"no ack within {CALL_TIMEOUT} s after {done} of {len(calls)}"


@pytest.mark.parametrize("store_backend", BACKENDS)
async def test_sigterm_with_writes_in_flight(
    tmp_path: Path, store_backend: str, sio_clients: Callable[..., Awaitable[Client]]
) -> None:
    server = start_server(tmp_path, store_backend)
    try:
        with server.http() as http:
            sid = http.post("/api/sessions", json={"title": "shutdown"}).json()["id"]
        clients = [await sio_clients(server, transports=["websocket"]) for _ in range(3)]
        payloads = [
            {"session_id": sid, "content": f"m{i}", "message_uuid": str(uuid.uuid4())} for i in range(MESSAGES)
        ]
        calls = [
            asyncio.ensure_future(clients[i % 3].call("send_message", payload)) for i, payload in enumerate(payloads)
        ]
        await _until_done(calls, ACKED_BEFORE_SIGTERM)
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
    acked = {payload["message_uuid"]: ack["data"] for payload, ack in zip(payloads, acks, strict=True) if ack and ack["ok"]}
    assert len(acked) >= ACKED_BEFORE_SIGTERM, f"only {len(acked)} acked"

    with open_store(server.db, backend=store_backend) as store:
        assert store.verify()["ok"]
        for payload, ack in zip(payloads, acks, strict=True):
            stored = store.get_message(payload["message_uuid"])
            if ack is None:
                continue  # never acked: stored or not, the client resends it below
            if ack["ok"]:
                assert stored == ack["data"], "an acked message must be stored as acked"
            else:
                assert ack["error"]["code"] == "internal" and stored is None, ack

    # The clients resend what got no ok ack, with the same uuids, to the server restarted on the same database.
    resend = [payload for payload in payloads if payload["message_uuid"] not in acked]
    print(f"{store_backend}: {len(acked)} acked before the shutdown, {len(resend)} resent after it")
    restarted = start_server(tmp_path, store_backend)
    try:
        client = await sio_clients(restarted, transports=["websocket"])
        for payload in resend:
            ack = await client.call("send_message", payload)
            assert isinstance(ack, dict) and ack.get("ok") is True, ack
            assert ack["data"]["message_uuid"] == payload["message_uuid"]
    finally:
        stop_and_check(restarted)

    with open_store(server.db, backend=store_backend) as store:
        items: list[dict[str, Any]] = []
        cursor = None
        for _ in range(MESSAGES // 1000 + 2):  # bounded paging
            page = store.get_session_messages(sid, limit=1000, cursor=cursor, direction="asc", include_total=True)
            assert isinstance(page, dict)
            items += page["items"]
            cursor = page["pagination"].get("next_cursor")
            if cursor is None:
                break
        assert [m["seq"] for m in items] == list(range(1, MESSAGES + 1))
        stored = Counter(m["message_uuid"] for m in items)
        assert stored == Counter(p["message_uuid"] for p in payloads), "a message is missing or stored twice"
        for message in items:  # the acked ones exactly as acked: same seq, same created_at
            if message["message_uuid"] in acked:
                assert message == acked[message["message_uuid"]]
        assert store.verify()["ok"]
