"""Regression tests of the hardening findings about limits, ids, recovery, secrets and Host names.

Each test reproduces a finding that was real on an earlier version, against a
real ``chatmdb serve`` on 127.0.0.1: one client's bad id failing other
clients' writes (1), a goodbye kept recoverable (5), recovery side effects
before the token check (6), files and secrets readable by other users (8),
engine.io sids in the access log (9), DNS rebinding without a token (10),
and no limits on auth failures, joining, connections, rooms or events (12).
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import stat
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from chatmdb import open_store

from .conftest import BACKENDS, CALL_TIMEOUT, Client, Server, start_server, stop_and_check

TOKEN = "hardening-t0ken"
EMOJI_ID = "\U0001f600" * 200  # 200 characters, 800 bytes in UTF-8
POLL_STEP = 0.05


# -- helpers -----------------------------------------------------------------------------------------


def _session_id(server: Server) -> str:
    with server.http() as http:
        response = http.post("/api/sessions", json={"title": f"hardening {uuid.uuid4().hex[:8]}"})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


def _limit_count(server: Server, limit: str) -> float:
    """``chatmdb_limits_reached_total{limit=...}`` as /metrics shows it now (0 when absent)."""
    with server.http() as http:
        response = http.get("/metrics")
    assert response.status_code == 200, response.text
    pattern = re.compile(r'^chatmdb_limits_reached_total\{limit="' + re.escape(limit) + r'"\} (\S+)$', re.M)
    found = pattern.search(response.text)
    return float(found.group(1)) if found else 0.0


@contextlib.contextmanager
def _running(workdir: Path, backend: str = "lmdb", **kwargs: Any) -> Iterator[Server]:
    server = start_server(workdir, backend, **kwargs)
    try:
        yield server
    finally:
        stop_and_check(server)


class RawSocket:
    """A Socket.IO client written by hand over an engine.io WebSocket: packets as text.

    Pings ("2") are answered ("3") and skipped, so only the packets a test is
    about reach it.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, opening: str) -> None:
        self.ws = ws
        self.opening = opening
        self._next_id = 0

    async def recv(self, timeout: float = CALL_TIMEOUT) -> str | None:
        """The next packet, or None once the server has closed the transport."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no packet and no close within {timeout} s")
            try:
                message = await asyncio.wait_for(self.ws.receive(), remaining)
            except TimeoutError:
                raise AssertionError(f"no packet and no close within {timeout} s") from None
            if message.type is aiohttp.WSMsgType.TEXT:
                if message.data == "2":
                    await self.ws.send_str("3")
                    continue
                return str(message.data)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return None
            if message.type is aiohttp.WSMsgType.ERROR:
                return None

    async def send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def connect(self, auth: dict[str, Any] | None = None) -> str | None:
        """Send a CONNECT to namespace / and return the reply ("40{...}" or "44{...}")."""
        await self.send("40" + (json.dumps(auth) if auth is not None else ""))
        return await self.recv()

    async def call(self, event: str, payload: Any) -> Any:
        """Emit *event* with an ack id and return the ack's payload (events received meanwhile are skipped)."""
        self._next_id += 1
        ack_id = self._next_id
        await self.send(f"42{ack_id}" + json.dumps([event, payload]))
        prefix = f"43{ack_id}"
        for _ in range(1000):  # bounded: room events may come first
            packet = await self.recv()
            assert packet is not None, f"the server closed the transport instead of acking {event}"
            assert packet != "41", f"the server disconnected this client instead of acking {event}"
            if packet.startswith(prefix) and packet[len(prefix)] == "[":
                return json.loads(packet[len(prefix) :])[0]
        raise AssertionError(f"no ack for {event}")

    @property
    def closed(self) -> bool:
        return self.ws.closed


@contextlib.asynccontextmanager
async def raw_socket(server: Server, headers: dict[str, str] | None = None) -> AsyncIterator[RawSocket]:
    """An engine.io WebSocket to *server*, its OPEN packet read; not yet connected to namespace /."""
    url = server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    timeout = aiohttp.ClientWSTimeout(ws_close=CALL_TIMEOUT)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(url, headers=headers, timeout=timeout, autoping=True) as ws,
    ):
        opening = await asyncio.wait_for(ws.receive_str(), CALL_TIMEOUT)
        assert opening.startswith("0{"), opening
        yield RawSocket(ws, opening)


def _payload(packet: str | None, kind: str) -> Any:
    assert packet is not None and packet.startswith(kind), f"expected a {kind!r} packet, got {packet!r:.300}"
    return json.loads(packet[len(kind) :])


# -- 1: one client's bad id fails only its own write ----------------------------------------------------

HONEST = 320
BAD = 30


async def test_emoji_ids_fail_only_their_own_writes(server: Server) -> None:
    session_id = _session_id(server)
    honest = [{"content": f"honest {i}", "message_uuid": f"honest-{uuid.uuid4()}"} for i in range(HONEST)]
    # At the limit: 64 emoji are 256 bytes, a valid id.
    honest.append({"content": "at the limit", "message_uuid": "\U0001f600" * 64})
    bad: list[dict[str, Any]] = []
    for i in range(BAD):
        if i % 3 == 0:
            bad.append({"content": f"bad {i}", "message_uuid": EMOJI_ID[: 200 - i]})  # still over 256 bytes
        elif i % 3 == 1:
            bad.append({"content": f"bad {i}", "agent_id": EMOJI_ID, "message_uuid": f"bad-{uuid.uuid4()}"})
        else:
            bad.append({"content": f"bad {i}", "message_uuid": "\U0001f600" * 65})  # 260 bytes, 65 characters
    # Interleave, so that bad writes land in the same group commits as honest ones.
    bodies: list[tuple[bool, dict[str, Any]]] = [(True, body) for body in honest]
    step = len(bodies) // BAD
    for i, body in enumerate(bad):
        bodies.insert(i * (step + 1), (False, body))

    path = f"/api/sessions/{session_id}/messages"
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=server.url, headers=server.headers(), timeout=60, limits=limits) as http:
        responses = await asyncio.gather(*(http.post(path, json=body) for _, body in bodies))

        # The honest writes first: they must not fail with the bad ones batched with them.
        failed = [
            (body["content"], response.status_code, response.text[:200])
            for (is_honest, body), response in zip(bodies, responses, strict=True)
            if is_honest and response.status_code != 201
        ]
        assert not failed, f"{len(failed)} honest writes failed, e.g. {failed[:3]}"
        for (is_honest, body), response in zip(bodies, responses, strict=True):
            if is_honest:
                assert response.json()["message_uuid"] == body["message_uuid"]
            else:
                assert response.status_code == 400, (body["content"], response.status_code, response.text[:300])
                assert response.json()["error"]["code"] == "invalid", response.text

        history = await http.get(path, params={"limit": 1000, "direction": "asc"})
    assert history.status_code == 200, history.text
    items = history.json()["items"]
    assert sorted(m["message_uuid"] for m in items) == sorted(body["message_uuid"] for body in honest)
    assert [m["seq"] for m in items] == list(range(1, len(honest) + 1))
    assert not any(m.get("agent_id") == EMOJI_ID for m in items)


# -- 5: a goodbye is not recoverable -------------------------------------------------------------------

# python-socketio's disconnect() on long-polling waits for its pending poll, which
# python-engineio leaves open after the client's close until something is sent
# or the transport is closed: a ping (25 s) or, here sooner, the connect deadline.
POLLING_ARGS = ("--connect-timeout", "2")


def _saved_connections(server: Server) -> int:
    with open_store(server.db, backend=server.backend) as store:
        return int(store.stats()["saved_connections"])


async def _wait_saved(server: Server, expected: int) -> list[int]:
    """Poll the saved connection states until there are *expected* (bounded); return what was seen."""
    seen: list[int] = []
    for _ in range(int(CALL_TIMEOUT / POLL_STEP)):
        seen.append(await asyncio.to_thread(_saved_connections, server))
        if seen[-1] == expected:
            break
        await asyncio.sleep(POLL_STEP)
    return seen


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_client_that_says_goodbye_is_not_recoverable(
    tmp_path: Path, backend: str, sio_clients: Callable[..., Awaitable[Client]]
) -> None:
    server = start_server(tmp_path, backend, args=POLLING_ARGS)
    try:
        session_id = _session_id(server)
        before = await asyncio.to_thread(_saved_connections, server)
        # On long-polling: over a WebSocket, python-socketio's disconnect() closes the
        # socket before its write loop has sent the DISCONNECT it queued, so the
        # server sees only a lost transport (and rightly keeps the state).
        client = await sio_clients(server, transports=["polling"])
        await client.ok("join", {"session_id": session_id})
        seen = await _wait_saved(server, before + 1)
        assert seen[-1] == before + 1, f"a connected client's state was not saved: {seen[-5:]}"
        await client.sio.disconnect()  # a Socket.IO DISCONNECT: a goodbye
        seen = await _wait_saved(server, before)
        assert seen[-1] == before, f"the state of a client that said goodbye was kept: {seen[-5:]}"

        # The same with a hand-written client: after "41", its pid recovers nothing.
        async with raw_socket(server) as sock:
            first = _payload(await sock.connect(), "40")
            joined = await sock.call("join", {"session_id": session_id})
            assert joined["ok"] is True, joined
            await sock.send("41")
            # The server answers a goodbye by closing the transport, or the client closes it.
        seen = await _wait_saved(server, before)
        assert seen[-1] == before, f"the state of a client that said goodbye was kept: {seen[-5:]}"
        async with raw_socket(server) as sock:
            again = _payload(await sock.connect({"pid": first["pid"], "offset": "0"}), "40")
            assert again["sid"] != first["sid"], "a client that said goodbye was recovered"
            assert again["pid"] != first["pid"]
    finally:
        await asyncio.to_thread(stop_and_check, server)


# -- 6: a wrong token touches nothing of a recovery ---------------------------------------------------


async def test_wrong_token_with_a_victims_pid_changes_nothing(tmp_path: Path) -> None:
    server = start_server(tmp_path, "lmdb", env={"CHATMDB_TOKEN": TOKEN}, token=TOKEN)
    try:
        session_id = _session_id(server)
        async with raw_socket(server) as victim:
            connected = _payload(await victim.connect({"token": TOKEN}), "40")
            sid, pid = connected["sid"], connected["pid"]
            joined = await victim.call("join", {"session_id": session_id})
            assert joined["ok"] is True, joined

            async with raw_socket(server) as attacker:
                refused = _payload(await attacker.connect({"token": "wrong", "pid": pid, "offset": "0"}), "44")
                assert refused["data"]["code"] == "unauthorized", refused
                # Without a token at all, the same.
                refused = _payload(await attacker.connect({"pid": pid, "offset": "0"}), "44")
                assert refused["data"]["code"] == "unauthorized", refused

            # The victim is still connected, and still in its session's room.
            got = await victim.call("get_session", {"session_id": session_id})
            assert got["ok"] is True and got["data"]["id"] == session_id, got
            assert not victim.closed
            # Its transport is lost (closed by the client, no Socket.IO DISCONNECT).

        # A message is sent while it is away; then it comes back with its pid and the right token.
        with server.http() as http:
            posted = http.post(f"/api/sessions/{session_id}/messages", json={"content": "while away"})
            assert posted.status_code == 201, posted.text
        async with raw_socket(server) as victim:
            await victim.send("40" + json.dumps({"token": TOKEN, "pid": pid}))
            replayed: list[Any] = []
            reply = None
            for _ in range(100):  # bounded: the missed events come first, then the CONNECT reply
                packet = await victim.recv()
                assert packet is not None, "the server closed the recovering victim's transport"
                if packet.startswith("42"):
                    replayed.append(json.loads(packet[2:]))
                    continue
                reply = packet
                break
            recovered = _payload(reply, "40")
            assert recovered["sid"] == sid, "the victim was not recovered with its sid"
            assert [(e[0], e[1]["content"]) for e in replayed] == [("message", "while away")]
            got = await victim.call("get_session", {"session_id": session_id})
            assert got["ok"] is True, got
    finally:
        await asyncio.to_thread(stop_and_check, server)


# -- 8: databases and tokens are private -----------------------------------------------------------


def _modes(db: Path) -> dict[str, int]:
    modes = {".": stat.S_IMODE(db.stat().st_mode)}
    for root, dirs, files in os.walk(db):
        for name in dirs + files:
            path = Path(root, name)
            modes[str(path.relative_to(db))] = stat.S_IMODE(path.stat().st_mode)
    return modes


@pytest.mark.parametrize("backend", BACKENDS)
def test_database_files_are_private(tmp_path: Path, backend: str) -> None:
    previous = os.umask(0o022)  # the usual umask, which would leave new files readable by all
    try:
        server = start_server(tmp_path / "work", backend)
    finally:
        os.umask(previous)
    try:
        session_id = _session_id(server)
        with server.http() as http:
            for i in range(20):
                response = http.post(f"/api/sessions/{session_id}/messages", json={"content": f"private {i}"})
                assert response.status_code == 201, response.text
        running = _modes(server.db)
    finally:
        stop_and_check(server)
    stopped = _modes(server.db)
    for modes in (running, stopped):
        assert len(modes) > 1, f"no database files in {server.db}"
        wrong = {
            name: oct(mode)
            for name, mode in modes.items()
            if mode != (0o700 if (server.db / name).is_dir() or name == "." else 0o600)
        }
        assert not wrong, f"database paths readable or writable by others: {wrong}"


def test_token_file_keeps_the_token_off_the_command_line(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with _running(tmp_path / "work", args=("--token-file", str(token_file)), token=TOKEN) as server:
        with server.http() as authorized:
            assert authorized.get("/api/sessions").status_code == 200
        with httpx.Client(base_url=server.url, timeout=CALL_TIMEOUT) as anonymous:
            assert anonymous.get("/api/sessions").status_code == 401
            assert anonymous.get("/api/sessions", headers={"Authorization": "Bearer wrong"}).status_code == 401
        cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
        assert b"--token-file" in cmdline  # the right process
        assert TOKEN.encode() not in cmdline
    assert "CHATMDB_TOKEN" not in server.log_text(), server.log_text()


def test_token_on_the_command_line_warns(tmp_path: Path) -> None:
    with _running(tmp_path, args=("--token", TOKEN), token=TOKEN) as server, server.http() as authorized:
        assert authorized.get("/api/sessions").status_code == 200
    log = server.log_text()
    assert "CHATMDB_TOKEN" in log and "--token" in log, log


def test_token_from_the_environment_works_without_a_warning(tmp_path: Path) -> None:
    with _running(tmp_path, env={"CHATMDB_TOKEN": TOKEN}, token=TOKEN) as server:
        with server.http() as authorized:
            assert authorized.get("/api/sessions").status_code == 200
        with httpx.Client(base_url=server.url, timeout=CALL_TIMEOUT) as anonymous:
            assert anonymous.get("/api/sessions").status_code == 401
        assert TOKEN.encode() not in Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
    log = server.log_text()
    assert "CHATMDB_TOKEN" not in log and "warning" not in log.lower(), log


# -- 9: engine.io sids stay out of the access log -------------------------------------------------------


async def test_polling_sids_are_redacted_in_the_access_log(
    tmp_path: Path, sio_clients: Callable[..., Awaitable[Client]]
) -> None:
    server = start_server(tmp_path, "lmdb", args=("--log-level", "info", *POLLING_ARGS))
    try:
        session_id = _session_id(server)
        client = await sio_clients(server, transports=["polling"])
        eio_sid = client.sio.eio.sid
        assert isinstance(eio_sid, str) and eio_sid
        await client.ok("join", {"session_id": session_id})
        await client.ok("get_session", {"session_id": session_id})
        await client.sio.disconnect()
    finally:
        await asyncio.to_thread(stop_and_check, server)
    log = server.log_text()
    assert "/socket.io/" in log, f"no access log lines at --log-level info:\n{log}"
    assert eio_sid not in log, f"the engine.io sid {eio_sid} is in the server log:\n{log}"
    assert "sid=<redacted>" in log, log


# -- 10: Host names (DNS rebinding) ---------------------------------------------------------------------

EVIL = "rebind.evil.example"


async def _ws_refused(server: Server, host: str) -> bool:
    """Whether a WebSocket handshake to engine.io with *host* as Host is refused."""
    try:
        async with raw_socket(server, headers={"Host": host}):
            return False
    except aiohttp.WSServerHandshakeError:
        return True


async def test_without_a_token_only_loopback_host_names_are_served(tmp_path: Path) -> None:
    server = start_server(tmp_path, "lmdb")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=CALL_TIMEOUT) as http:
            for path in ("/healthz", "/api/sessions", "/socket.io/?EIO=4&transport=polling"):
                for host in (EVIL, f"{EVIL}:{server.port}", f"127.0.0.1.{EVIL}", ""):
                    response = await http.get(path, headers={"Host": host})
                    assert response.status_code == 400, (path, host, response.status_code)
                    assert response.json()["error"]["code"] == "invalid"
            for path in ("/healthz", "/api/sessions"):
                for host in (
                    f"127.0.0.1:{server.port}",
                    f"localhost:{server.port}",
                    "LOCALHOST",
                    f"[::1]:{server.port}",
                ):
                    response = await http.get(path, headers={"Host": host})
                    assert response.status_code == 200, (path, host, response.text)
        assert await _ws_refused(server, EVIL)
        assert not await _ws_refused(server, f"localhost:{server.port}")
    finally:
        await asyncio.to_thread(stop_and_check, server)


async def test_allowed_hosts_are_served_and_others_refused(tmp_path: Path) -> None:
    # 127.0.0.1 is listed too: the test harness checks /healthz on it.
    server = start_server(tmp_path, "lmdb", args=("--allowed-hosts", "chat.example.com, 127.0.0.1"))
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=CALL_TIMEOUT) as http:
            for path in ("/healthz", "/api/sessions"):
                assert (await http.get(path, headers={"Host": "chat.example.com"})).status_code == 200
                assert (await http.get(path, headers={"Host": "Chat.Example.Com:443"})).status_code == 200
                assert (await http.get(path, headers={"Host": EVIL})).status_code == 400
                assert (await http.get(path, headers={"Host": f"evil.chat.example.com.{EVIL}"})).status_code == 400
        assert await _ws_refused(server, EVIL)
        assert not await _ws_refused(server, "chat.example.com")
    finally:
        await asyncio.to_thread(stop_and_check, server)


async def test_with_a_token_any_host_name_is_served(tmp_path: Path) -> None:
    server = start_server(tmp_path, "lmdb", env={"CHATMDB_TOKEN": TOKEN}, token=TOKEN)
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers(), timeout=CALL_TIMEOUT) as http:
            for host in (EVIL, "chat.example.com", f"127.0.0.1:{server.port}"):
                assert (await http.get("/healthz", headers={"Host": host})).status_code == 200
                assert (await http.get("/api/sessions", headers={"Host": host})).status_code == 200
        async with raw_socket(server, headers={"Host": EVIL}) as sock:
            _payload(await sock.connect({"token": TOKEN}), "40")
    finally:
        await asyncio.to_thread(stop_and_check, server)


# -- 12: limits -------------------------------------------------------------------------------------------


async def test_token_guessing_closes_the_transport(tmp_path: Path) -> None:
    server = start_server(
        tmp_path, "lmdb", env={"CHATMDB_TOKEN": TOKEN}, token=TOKEN, args=("--max-auth-failures", "3")
    )
    try:
        refusals = 0
        closed = False
        async with raw_socket(server) as guesser:
            for attempt in range(10):  # bounded: the server must close well before
                await guesser.send("40" + json.dumps({"token": f"guess-{attempt}"}))
                packet = await guesser.recv()
                if packet is None:
                    closed = True
                    break
                assert _payload(packet, "44")["data"]["code"] == "unauthorized"
                refusals += 1
            if not closed:
                closed = await guesser.recv(timeout=2.0) is None
        assert closed, f"the transport stayed open after {refusals} refused CONNECTs"
        assert refusals == 3, f"{refusals} CONNECT_ERRORs before the close, not 3"
        assert _limit_count(server, "auth_failures") >= 1
        # The right token still connects on a new transport.
        async with raw_socket(server) as honest:
            _payload(await honest.connect({"token": TOKEN}), "40")
    finally:
        await asyncio.to_thread(stop_and_check, server)


async def test_a_transport_that_never_connects_is_closed(tmp_path: Path) -> None:
    server = start_server(tmp_path, "lmdb", args=("--connect-timeout", "1"))
    try:
        session_id = _session_id(server)
        async with raw_socket(server) as idle, raw_socket(server) as active:
            _payload(await active.connect(), "40")
            assert await idle.recv(timeout=5.0) is None, "a transport that never sent CONNECT was kept open"
            # One that connected in time is not affected by the deadline.
            got = await active.call("get_session", {"session_id": session_id})
            assert got["ok"] is True, got
        assert _limit_count(server, "connect_timeout") >= 1
    finally:
        await asyncio.to_thread(stop_and_check, server)


async def _polling_handshake(http: httpx.AsyncClient) -> httpx.Response:
    return await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})


async def test_connections_are_capped(tmp_path: Path) -> None:
    server = start_server(tmp_path, "lmdb", args=("--max-connections", "5"))
    try:
        async with (
            contextlib.AsyncExitStack() as stack,
            httpx.AsyncClient(base_url=server.url, timeout=CALL_TIMEOUT) as http,
        ):
            sockets = [await stack.enter_async_context(raw_socket(server)) for _ in range(5)]
            for sock in sockets:
                _payload(await sock.connect(), "40")
            refused = await _polling_handshake(http)
            assert 400 <= refused.status_code < 500, (refused.status_code, refused.text)
            with pytest.raises(aiohttp.WSServerHandshakeError):
                async with raw_socket(server):
                    pass
            assert _limit_count(server, "connections") >= 2

            await sockets[0].ws.close()
            accepted = None
            for _ in range(int(CALL_TIMEOUT / POLL_STEP)):  # bounded: until the server has seen the close
                with contextlib.suppress(aiohttp.WSServerHandshakeError):
                    accepted = await stack.enter_async_context(raw_socket(server))
                    break
                await asyncio.sleep(POLL_STEP)
            assert accepted is not None, "no new connection was accepted after one closed"
            _payload(await accepted.connect(), "40")
            # Full again.
            assert 400 <= (await _polling_handshake(http)).status_code < 500
    finally:
        await asyncio.to_thread(stop_and_check, server)


def _rate_limited(ack: Any) -> bool:
    return isinstance(ack, dict) and ack.get("ok") is False and ack.get("error", {}).get("code") == "rate_limited"


async def test_sessions_per_connection_are_capped(
    tmp_path: Path, sio_clients: Callable[..., Awaitable[Client]]
) -> None:
    server = start_server(tmp_path, "lmdb", args=("--max-rooms", "3"))
    try:
        sessions = [_session_id(server) for _ in range(4)]
        client = await sio_clients(server, transports=["websocket"])
        for session_id in sessions[:3]:
            await client.ok("join", {"session_id": session_id})
        ack = await client.call("join", {"session_id": sessions[3]})
        assert _rate_limited(ack), ack
        await client.ok("join", {"session_id": sessions[0]})  # already in it: not another room
        await client.ok("leave", {"session_id": sessions[1]})
        await client.ok("join", {"session_id": sessions[3]})
        assert _rate_limited(await client.call("join", {"session_id": sessions[1]}))
        # A second connection has its own allowance.
        other = await sio_clients(server, transports=["websocket"])
        for session_id in sessions[1:]:
            await other.ok("join", {"session_id": session_id})
        assert _limit_count(server, "rooms") >= 2
    finally:
        await asyncio.to_thread(stop_and_check, server)


async def test_events_per_connection_are_rate_limited(
    tmp_path: Path, sio_clients: Callable[..., Awaitable[Client]]
) -> None:
    server = start_server(tmp_path, "lmdb", args=("--events-per-second", "5", "--event-burst", "5"))
    try:
        session_id = _session_id(server)
        flooder = await sio_clients(server, transports=["websocket"])
        other = await sio_clients(server, transports=["websocket"])
        payload = {"session_id": session_id}
        acks = await asyncio.gather(*(flooder.call("get_session", payload) for _ in range(20)))
        limited = [ack for ack in acks if _rate_limited(ack)]
        served = [ack for ack in acks if isinstance(ack, dict) and ack.get("ok") is True]
        assert len(limited) + len(served) == len(acks), acks
        assert len(limited) >= 10, f"only {len(limited)} of 20 rapid events were rate_limited"
        assert len(served) >= 5, f"the burst of 5 was not served: {len(served)} ok"
        assert all(ack["data"]["id"] == session_id for ack in served)
        # Another connection is not limited by the first one's flood.
        others = await asyncio.gather(*(other.call("get_session", payload) for _ in range(5)))
        assert all(isinstance(ack, dict) and ack.get("ok") is True for ack in others), others
        assert _limit_count(server, "events_per_second") >= len(limited)
    finally:
        await asyncio.to_thread(stop_and_check, server)
