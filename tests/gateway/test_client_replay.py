"""ChatClient is tested against what the server itself sent.

ChatClient fills a gap in ``seq`` from history, so a server that skipped part
of a recovery replay would still look exactly-once to the application. Here
the messages the client missed exist only as a replay: they were written while
no server ran, so no live event ever carried them. The client must get every
one from the server's replay and page none in (``ChatClient.filled == 0``).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from chatmdb import open_store
from chatmdb.client import ChatClient

from .conftest import BACKENDS, start_server, stop_and_check

WAIT = 30.0


async def _until(condition: Any, what: str) -> None:
    for _ in range(int(WAIT / 0.05)):  # bounded
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_missed_messages_arrive_as_the_servers_replay(tmp_path: Path, backend: str) -> None:
    server = start_server(tmp_path, backend)
    servers = [server]
    seen: list[dict[str, Any]] = []
    listener = ChatClient(server.url, on_message=seen.append, ack_timeout=2.0)
    try:
        with server.http() as http:
            session_id = http.post("/api/sessions", json={"title": "replay"}).json()["id"]
        await listener.connect()
        await listener.join(session_id)
        with server.http() as http:
            for i in range(3):
                response = http.post(f"/api/sessions/{session_id}/messages", json={"content": f"live {i}"})
                assert response.status_code == 201, response.text
        await _until(lambda: len(seen) == 3, "the live messages arrived")

        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(WAIT)
        server.stopped = True
        with open_store(server.db, backend=backend) as store:  # no server runs: these reach nobody live
            for i in range(5):
                store.create_message({"session_id": session_id, "content": f"missed {i}"})
        servers.append(await asyncio.to_thread(start_server, tmp_path, backend, port=server.port))
        await _until(lambda: len(seen) == 8 and listener.recovered, "the listener recovered with all 8")
    finally:
        await listener.close()
        for srv in servers:
            if not srv.stopped:
                stop_and_check(srv)
    assert [m["seq"] for m in seen] == list(range(1, 9))
    assert [m["content"] for m in seen[3:]] == [f"missed {i}" for i in range(5)]
    assert listener.filled == 0, f"{listener.filled} of the missed messages were paged in, not replayed"
