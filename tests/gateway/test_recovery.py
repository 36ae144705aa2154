"""Connection state recovery that survives restarts, with the official JS client and ChatClient."""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatmdb import open_store
from chatmdb.client import ChatClient

from .conftest import BACKENDS, JS_DIR, Server, start_server, stop_and_check

STEP_TIMEOUT = 30.0


def _session(server: Server) -> str:
    with server.http() as http:
        response = http.post("/api/sessions", json={"title": "recovery"})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


def run_recovery_js(
    server: Server, session_id: str, meanwhile: Callable[[], None], env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run recovery.mjs; call *meanwhile* while its transport is closed; return what it saw.

    *env* is added to node's environment (``CHATMDB_TRANSPORT=polling`` for long-polling).
    """
    node = shutil.which("node")
    assert node is not None, "node is not installed"
    args = [node, str(JS_DIR / "recovery.mjs"), server.url, session_id] + ([server.token] if server.token else [])
    child_env = None if env is None else {**os.environ, **env}
    proc = subprocess.Popen(
        args,
        cwd=JS_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        ready, _, _ = select.select([proc.stdout], [], [], STEP_TIMEOUT)
        assert ready, "recovery.mjs did not reach its away phase in time"
        line = proc.stdout.readline()
        assert json.loads(line) == {"phase": "away"}, line + (proc.stderr.read() if proc.stderr else "")
        meanwhile()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, f"recovery.mjs failed:\n{out}\n{err}"
    return dict(json.loads(out.strip().splitlines()[-1]))


def _check_recovered(r: dict[str, Any]) -> None:
    assert r["first_connect_recovered"] is False
    assert r["recovered"] is True and r["same_id"] is True
    contents = [m["content"] for m in r["seen"]]
    # Missed events replayed once, in order, before the CONNECT reply; then live ones.
    assert [m["content"] for m in r["seen_at_connect"]] == ["before", "away 1", "away 2", "away 3"]
    assert contents == ["before", "away 1", "away 2", "away 3", "after"]
    assert [m["seq"] for m in r["seen"]] == [1, 2, 3, 4, 5]
    offsets = [int(m["offset"]) for m in r["seen"]]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


def test_js_client_recovers_after_transport_close(server: Server) -> None:
    _check_recovered(run_recovery_js(server, _session(server), lambda: None))


def test_js_client_on_polling_recovers_after_closing_its_transport(server: Server) -> None:
    # socket.io.engine.close() on long-polling sends an engine.io close packet,
    # which python-engineio reports as a client disconnect: it is still a lost
    # transport (no Socket.IO DISCONNECT), so the client must be recovered.
    _check_recovered(run_recovery_js(server, _session(server), lambda: None, env={"CHATMDB_TRANSPORT": "polling"}))


@pytest.mark.parametrize("backend", BACKENDS)
def test_js_client_recovers_across_a_restart(tmp_path: Path, backend: str) -> None:
    first = start_server(tmp_path, backend)
    servers = [first]

    def restart() -> None:
        stop_and_check(first)
        servers.append(start_server(tmp_path, backend, port=first.port))

    try:
        _check_recovered(run_recovery_js(first, _session(first), restart))
    finally:
        for srv in servers:
            if not srv.stopped:
                stop_and_check(srv)


def test_js_client_after_the_window_catches_up_with_join(tmp_path: Path) -> None:
    server = start_server(tmp_path, "lmdb", args=("--recovery-window", "0.5"))
    try:
        r = run_recovery_js(server, _session(server), lambda: __import__("time").sleep(1.5))
    finally:
        stop_and_check(server)
    assert r["recovered"] is False and r["same_id"] is False
    assert [m["content"] for m in r["catch_up"]["data"]["missed"]] == ["away 1", "away 2", "away 3"]
    assert [m["content"] for m in r["seen"]] == ["before", "after"]


def test_recovery_window_zero_turns_it_off(tmp_path: Path) -> None:
    server = start_server(tmp_path, "lmdb", args=("--recovery-window", "0"))
    try:
        r = run_recovery_js(server, _session(server), lambda: None)
    finally:
        stop_and_check(server)
    assert r["recovered"] is False
    assert all(m["offset"] is None for m in r["seen"])


# -- ChatClient ------------------------------------------------------------------------------

MESSAGES = 1000


@pytest.mark.parametrize("backend", BACKENDS)
async def test_chat_client_exactly_once_across_sigkill(tmp_path: Path, backend: str) -> None:
    server = start_server(tmp_path, backend)
    servers = [server]
    session_id = _session(server)
    seen: list[dict[str, Any]] = []
    listener = ChatClient(server.url, on_message=lambda m: seen.append(m), ack_timeout=2.0)
    sender = ChatClient(server.url, ack_timeout=2.0)
    kills = 0
    try:
        await listener.connect()
        await sender.connect()
        await listener.join(session_id)
        sent: list[dict[str, Any]] = []

        async def send_all() -> None:
            for i in range(MESSAGES):
                sent.append(await sender.send_message(session_id, f"m{i}", message_uuid=f"uuid-{i}"))

        sending = asyncio.create_task(send_all())
        for threshold in (MESSAGES // 3, 2 * MESSAGES // 3):
            for _ in range(600):
                if len(sent) >= threshold or sending.done():
                    break
                await asyncio.sleep(0.05)
            victim = servers[-1]
            victim.proc.send_signal(signal.SIGKILL)
            victim.proc.wait(10)
            victim.stopped = True
            kills += 1
            servers.append(await asyncio.to_thread(start_server, tmp_path, backend, port=server.port))
        await asyncio.wait_for(sending, 120)
        for _ in range(600):
            if len(seen) >= MESSAGES:
                break
            await asyncio.sleep(0.05)
    finally:
        await sender.close()
        await listener.close()
        for srv in servers:
            if not srv.stopped:
                stop_and_check(srv)
    assert kills == 2
    assert [m["message_uuid"] for m in sent] == [f"uuid-{i}" for i in range(MESSAGES)]
    # The listener's handler saw each message once, in order.
    assert [m["seq"] for m in seen] == list(range(1, MESSAGES + 1))
    assert [m["message_uuid"] for m in seen] == [f"uuid-{i}" for i in range(MESSAGES)]
    # ...each as the server's own event, live or replayed when the listener recovered: the client
    # paged none in from history, which would hide a server that skipped part of a replay.
    assert listener.recovered and listener.filled == 0, f"recovered={listener.recovered}, filled={listener.filled}"
    # Stored exactly once each.
    with open_store(tmp_path / "db", backend=backend) as store:
        page = store.get_session_messages(session_id, limit=1000, direction="asc", include_total=True)
        assert isinstance(page, dict)
        assert page["pagination"]["total"] == MESSAGES
        assert [m["message_uuid"] for m in page["items"]] == [f"uuid-{i}" for i in range(MESSAGES)]
        assert store.verify()["ok"]



async def _lose_transport(url: str) -> str:
    """Connect over a raw WebSocket, take the CONNECT reply, and drop the transport."""
    import aiohttp

    ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        opening = await asyncio.wait_for(ws.receive_str(), 10)
        assert opening.startswith("0{")
        await ws.send_str("40")
        reply = await asyncio.wait_for(ws.receive_str(), 10)
        assert reply.startswith("40{")
        return str(json.loads(reply[2:])["pid"])


async def test_expired_states_are_purged_under_churn(tmp_path: Path) -> None:
    server = start_server(tmp_path, "lmdb", args=("--recovery-window", "2"))
    try:
        pids = [await _lose_transport(server.url) for _ in range(150)]
        assert len(set(pids)) == 150
        with open_store(server.db) as store:
            counts = [store.stats()["saved_connections"]]
            for _ in range(150):  # bounded: 15 s
                await asyncio.sleep(0.1)
                counts.append(store.stats()["saved_connections"])
                if counts[-1] == 0:
                    break
    finally:
        stop_and_check(server)
    assert 0 < max(counts) <= 150, counts[:5]
    assert counts[-1] == 0, f"expired connection states were not purged: {counts[-5:]}"
