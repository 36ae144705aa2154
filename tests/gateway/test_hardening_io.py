"""Regression tests of the gateway's hardening against clients that send or read in bad faith.

Each test reproduces a finding that was real on a previous version of the
server, against a real ``chatmdb serve`` subprocess on 127.0.0.1:

1. a chunked request body (no Content-Length) was read whole, however large;
2. a binary packet could announce any number of attachments, buffered unbounded;
3. a binary placeholder naming a missing attachment wedged its connection;
4. a client that never reads had its send queue grow without bound;
5. connection state recovery read and sent thousands of events on the event loop.

Memory is the server process's resident set (``/proc/<pid>/status``): its
peak (``VmHWM``, reset first through ``clear_refs`` where the kernel allows)
or, failing that, its ``VmRSS``, against the ``VmRSS`` before, with generous
bounds. Every wait is bounded; no assertion depends on how fast anything is,
only on the order things happen in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from chatmdb import open_store

from .conftest import BACKENDS, Client, Server, start_server, stop_and_check

MiB = 1 << 20
STEP = 10.0  # seconds: the bound of any single wait
WS_TIMEOUT = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0)

SioClients = Callable[..., Awaitable[Client]]


# -- helpers ---------------------------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """The memory lines of /proc/<pid>/status, in bytes."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


class Memory:
    """The growth of a process's resident set since this was made (its peak, where the kernel resets it)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_reset = False
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.peak_reset = True
        self.before = _status(pid)["VmRSS"]

    def growth(self) -> int:
        now = _status(self.pid)
        return (max(now["VmRSS"], now["VmHWM"]) if self.peak_reset else now["VmRSS"]) - self.before

    def check(self, bound: int) -> None:
        grown = self.growth()
        assert grown < bound, f"the server grew by {grown / MiB:.1f} MiB (bound {bound / MiB:.0f} MiB)"


def _metric(text: str, name: str, labels: str = "") -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    pattern = re.compile(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", re.MULTILINE)
    match = pattern.search(text)
    return float(match.group(1)) if match else 0.0


async def _metrics(server: Server) -> str:
    async with httpx.AsyncClient(base_url=server.url, timeout=STEP) as http:
        response = await http.get("/metrics")
        assert response.status_code == 200, response.text
        return response.text


async def _limit_count(server: Server, limit: str) -> float:
    return _metric(await _metrics(server), "chatmdb_limits_reached_total", f'{{limit="{limit}"}}')


async def _wait_for_metric(server: Server, check: Callable[[str], bool], what: str) -> str:
    """Poll /metrics (bounded) until *check* holds on its text; return it."""
    deadline = time.monotonic() + STEP
    text = await _metrics(server)
    while not check(text):
        assert time.monotonic() < deadline, f"{what} never held:\n{text}"
        await asyncio.sleep(0.05)
        text = await _metrics(server)
    return text


def _new_session(server: Server) -> str:
    with server.http() as http:
        response = http.post("/api/sessions", json={"title": "hardening"})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


def _assert_alive(server: Server) -> None:
    """The server process runs and answers."""
    assert server.proc.poll() is None, f"the server exited:\n{server.log_text()}"
    with server.http() as http:
        assert http.get("/healthz").json()["ok"] is True


class RawSocket:
    """An engine.io v4 / Socket.IO v5 client over a bare aiohttp WebSocket: every packet as sent."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def text(self) -> str:
        """The next text frame (bounded wait), answering engine.io pings on the way."""
        while True:
            message = await asyncio.wait_for(self.ws.receive(), STEP)
            if message.type is not aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"expected a text frame, got {message.type.name} {message.data!r:.200}")
            if message.data == "2":
                await self.ws.send_str("3")
                continue
            return str(message.data)

    async def connect(self, auth: dict[str, Any] | None = None) -> dict[str, Any]:
        """Socket.IO CONNECT to namespace /; return the CONNECT reply (sid, pid)."""
        opening = await self.text()
        assert opening.startswith("0{"), opening
        await self.send("40" + (json.dumps(auth) if auth is not None else ""))
        reply = await self.text()
        assert reply.startswith("40{"), reply
        return dict(json.loads(reply[2:]))

    async def call(self, ack_id: int, event: str, payload: Any) -> Any:
        """Send event *event* with ack id *ack_id*; skip other packets until its ack; return the ack's data."""
        await self.send(f"42{ack_id}" + json.dumps([event, payload]))
        return await self.ack(ack_id)

    async def ack(self, ack_id: int) -> Any:
        prefix = f"43{ack_id}["
        deadline = time.monotonic() + STEP
        while time.monotonic() < deadline:
            frame = await self.text()
            if frame.startswith(prefix):
                return json.loads(frame[len(prefix) - 1 :])[0]
        raise AssertionError(f"no ack {ack_id} within {STEP} s")


@contextlib.asynccontextmanager
async def raw_socket(server: Server) -> AsyncIterator[RawSocket]:
    url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, timeout=WS_TIMEOUT) as ws:
        yield RawSocket(ws)


@pytest.fixture(scope="module", params=BACKENDS)
def io_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the default limits, per backend, for this module; its log must stay free of tracebacks."""
    server = start_server(tmp_path_factory.mktemp(f"hardening-io-{request.param}"), str(request.param))
    yield server
    stop_and_check(server)


# -- 1. request bodies are bounded while read, whatever their framing --------------------------------------

# The default limit: engine.io's max_http_buffer_size, 6 * 1 MiB + 64 KiB.
BODY_LIMIT = 6 * MiB + 64 * 1024
CHUNK = b"x" * MiB


def _chunked(total: int, head: bytes = b"", tail: bytes = b"", piece: bytes = CHUNK) -> Iterator[bytes]:
    """A body of *total* bytes of *piece* between *head* and *tail*, from a generator.

    httpx sends it chunked (Transfer-Encoding: chunked, no Content-Length).
    """
    yield head
    for _ in range(total // len(piece)):
        yield piece
    yield tail


def _post_chunked(url: str, body: Iterator[bytes], content_type: str) -> httpx.Response | None:
    """POST *body* chunked; the response, or None if the server closed the connection before answering."""
    try:
        with httpx.Client(timeout=30.0) as http:
            return http.post(url, content=body, headers={"Content-Type": content_type})
    except (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError):
        return None


def _assert_too_large(response: httpx.Response | None) -> None:
    if response is None:
        return  # closed early: refused all the same (the follow-ups check the server)
    assert "content-length" not in response.request.headers
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413, response.text[:300]
    body = response.json()
    assert body["ok"] is False and body["error"]["code"] == "too_large", body


def test_chunked_message_body_over_the_limit_is_refused_while_read(io_server: Server) -> None:
    session_id = _new_session(io_server)
    url = f"{io_server.url}/api/sessions/{session_id}/messages"
    memory = Memory(io_server.proc.pid)
    response = _post_chunked(url, _chunked(64 * MiB, b'{"content": "', b'"}'), "application/json")
    _assert_too_large(response)
    memory.check(48 * MiB)  # it was hundreds of MiB: the body was read whole before the 413
    _assert_alive(io_server)
    with io_server.http() as http:
        # A chunked body under the limit is taken whole, and stored.
        body = _chunked(MiB // 2, b'{"content": "', b'"}', piece=b"z" * (MiB // 8))
        small = http.post(url, content=body, headers={"Content-Type": "application/json"})
        assert small.status_code == 201, small.text[:300]
        assert small.request.headers.get("transfer-encoding") == "chunked"
        page = http.get(url, params={"direction": "asc"}).json()
    # Nothing of the refused body was stored.
    assert [m["seq"] for m in page["items"]] == [1]
    assert len(page["items"][0]["content"]) == MiB // 2


def test_chunked_polling_body_over_the_limit_is_refused(io_server: Server) -> None:
    base = f"{io_server.url}/socket.io/?EIO=4&transport=polling"
    with httpx.Client(timeout=STEP) as http:
        opening = http.get(base)
        assert opening.status_code == 200 and opening.text.startswith("0{"), opening.text
        sid = json.loads(opening.text[1:])["sid"]
    memory = Memory(io_server.proc.pid)
    # An engine.io payload ("4" + a Socket.IO EVENT) far over the limit, chunked.
    head = b'442["send_message",{"session_id":"x","content":"'
    response = _post_chunked(f"{base}&sid={sid}", _chunked(32 * MiB, head, b'"}]'), "text/plain;charset=UTF-8")
    _assert_too_large(response)
    memory.check(48 * MiB)
    _assert_alive(io_server)
    with httpx.Client(timeout=STEP) as http:
        # The refused body never reached engine.io: the polling connection goes on.
        connect = http.post(f"{base}&sid={sid}", content=b"40", headers={"Content-Type": "text/plain;charset=UTF-8"})
        assert connect.status_code == 200 and connect.text.lower() == "ok", connect.text
        reply = http.get(f"{base}&sid={sid}")
        assert reply.status_code == 200 and reply.text.startswith("40{"), reply.text
        # Goodbye: Socket.IO DISCONNECT, then engine.io CLOSE (records separated by \x1e).
        bye = http.post(f"{base}&sid={sid}", content=b"41\x1e1", headers={"Content-Type": "text/plain;charset=UTF-8"})
        assert bye.status_code == 200, bye.text


# -- 2. binary attachments are bounded in number and bytes --------------------------------------------------


async def _send_until_closed(raw: RawSocket, frame: bytes, frames: int) -> tuple[int, aiohttp.WSMessage | None]:
    """Send up to *frames* binary frames while reading; return how many went out and the server's close (if any)."""
    ws = raw.ws
    closed: asyncio.Future[aiohttp.WSMessage] = asyncio.get_running_loop().create_future()

    async def read() -> None:
        while True:
            message = await ws.receive()
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                closed.set_result(message)
                return
            if message.type is aiohttp.WSMsgType.TEXT and message.data == "2":
                await ws.send_str("3")

    reader = asyncio.create_task(read())
    sent = 0
    try:
        for _ in range(frames):
            if closed.done() or ws.closed:
                break
            try:
                await asyncio.wait_for(ws.send_bytes(frame), STEP)
            except (ConnectionError, aiohttp.ClientError):
                break
            sent += 1
            await asyncio.sleep(0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(closed), STEP)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
    return sent, closed.result() if closed.done() else None


async def test_binary_packet_announcing_countless_attachments_is_closed_at_once(io_server: Server) -> None:
    before = await _limit_count(io_server, "binary")
    memory = Memory(io_server.proc.pid)
    async with raw_socket(io_server) as raw:
        await raw.connect()
        # A BINARY_EVENT announcing 99,999,999 attachments, then 4 MiB frames as its attachments.
        await raw.send('4599999999-["send_message",{"_placeholder":true,"num":0}]')
        sent, close = await _send_until_closed(raw, b"\x00" * (4 * MiB), 30)
    assert close is not None and close.type is aiohttp.WSMsgType.CLOSE, (
        f"the server did not close the connection (sent {sent} frames of 4 MiB; {close})"
    )
    memory.check(48 * MiB)  # it was +209 MiB, and growing while the connection stayed open
    assert await _limit_count(io_server, "binary") >= before + 1
    _assert_alive(io_server)


async def test_binary_attachments_over_their_byte_limit_are_closed(io_server: Server) -> None:
    before = await _limit_count(io_server, "binary")
    async with raw_socket(io_server) as raw:
        await raw.connect()
        # Two attachments are allowed; together they are over 1 MiB (--max-attachment-bytes).
        await raw.send('452-["send_message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]')
        sent, close = await _send_until_closed(raw, b"\x01" * (700 * 1024), 2)
    assert sent >= 1
    assert close is not None and close.type is aiohttp.WSMsgType.CLOSE, close
    assert await _limit_count(io_server, "binary") >= before + 1
    _assert_alive(io_server)


async def test_small_binary_event_gets_an_invalid_ack(io_server: Server, sio_clients: SioClients) -> None:
    before = await _limit_count(io_server, "binary")
    client = await sio_clients(io_server, transports=["websocket"])
    # python-socketio sends bytes as a BINARY_EVENT with one attachment: within the limits, and answered.
    ack = await client.call("list_agents", b"\x00\x01binary")
    assert ack["ok"] is False and ack["error"]["code"] == "invalid", ack
    ack = await client.call("get_session", {"session_id": b"not text"})
    assert ack["ok"] is False and ack["error"]["code"] == "invalid", ack
    # The connection is still usable.
    assert isinstance(await client.ok("list_agents", {}), list)
    assert client.sio.connected
    assert await _limit_count(io_server, "binary") == before


# -- 3. a placeholder naming no attachment is answered, and the connection goes on ---------------------------


async def test_malformed_binary_placeholder_is_answered_and_the_connection_goes_on(io_server: Server) -> None:
    async with raw_socket(io_server) as raw:
        await raw.connect()
        # One attachment announced, ack id 0, and a placeholder for attachment 5.
        await raw.send('451-0["send_message",{"_placeholder":true,"num":5}]')
        await raw.ws.send_bytes(b"\x01\x02\x03")
        error = await raw.ack(0)
        assert error["ok"] is False and error["error"]["code"] == "invalid", error
        # The next event is an event, not taken as an attachment of the broken packet.
        agents = await raw.call(1, "list_agents", {})
        assert agents["ok"] is True and isinstance(agents["data"], list), agents
        session_id = _new_session(io_server)
        joined = await raw.call(2, "join", {"session_id": session_id})
        assert joined["ok"] is True and joined["data"]["session"]["id"] == session_id, joined
    assert "Traceback" not in io_server.log_text(), io_server.log_text()
    _assert_alive(io_server)


# -- 4. a client that does not read is dropped past its unsent bytes ---------------------------------------

SLOW_CLIENTS = 5
SENT_MESSAGES = 200
CONTENT_BYTES = 50_000


async def _join_and_stop_reading(stack: contextlib.AsyncExitStack, server: Server, session_id: str) -> RawSocket:
    raw = await stack.enter_async_context(raw_socket(server))
    await raw.connect()
    joined = await raw.call(0, "join", {"session_id": session_id})
    assert joined["ok"] is True, joined
    return raw  # and it reads nothing more: aiohttp stops reading its socket, TCP pushes back


async def _send_big_messages(sender: Client, session_id: str, count: int) -> list[Any]:
    acks = []
    for i in range(count):
        content = f"{i:04d}" + "y" * CONTENT_BYTES
        acks.append(await sender.call("send_message", {"session_id": session_id, "content": content}))
    # The sender is not hurt: every write acked, in order.
    assert all(ack.get("ok") is True for ack in acks), [a for a in acks if not a.get("ok")][:1]
    assert [ack["data"]["seq"] for ack in acks] == list(range(1, count + 1))
    return acks


async def _read_until_closed(raw: RawSocket) -> tuple[int, aiohttp.WSMessage]:
    """Read what is left for a client (bounded); return how many message events it held, and the close."""
    events = 0
    deadline = time.monotonic() + STEP
    while time.monotonic() < deadline:
        message = await asyncio.wait_for(raw.ws.receive(), STEP)
        if message.type is not aiohttp.WSMsgType.TEXT:
            return events, message
        events += message.data.startswith('42["message",')
    raise AssertionError(f"the server did not close the connection of a dropped client ({events} events read)")


async def test_clients_that_never_read_are_dropped(tmp_path: Path, sio_clients: SioClients) -> None:
    server = start_server(tmp_path, "lmdb", args=("--max-unsent-bytes", str(MiB)))
    try:
        session_id = _new_session(server)
        async with contextlib.AsyncExitStack() as stack:
            slow = [await _join_and_stop_reading(stack, server, session_id) for _ in range(SLOW_CLIENTS)]
            memory = Memory(server.proc.pid)
            sender = await sio_clients(server, transports=["websocket"])
            await _send_big_messages(sender, session_id, SENT_MESSAGES)
            await _wait_for_metric(
                server,
                lambda text: _metric(text, "chatmdb_limits_reached_total", '{limit="unsent_bytes"}') >= SLOW_CLIENTS,
                f"{SLOW_CLIENTS} clients dropped for unsent bytes",
            )
            # 10 MB sent to each of 5 clients that do not read: each holds at most its 1 MiB.
            memory.check(64 * MiB)
            # The dropped clients are gone from the server's clients; the sender is there.
            await _wait_for_metric(
                server, lambda text: _metric(text, "chatmdb_connected_clients") == 1, "one client connected"
            )
            for raw in slow:
                # Reading again, a dropped client finds part of the stream, then the server's close.
                events, close = await _read_until_closed(raw)
                assert close.type is aiohttp.WSMsgType.CLOSE, close
                assert events < SENT_MESSAGES
        # The server is healthy: a fresh client catches up with what it missed.
        fresh = await sio_clients(server, transports=["websocket"])
        caught_up = await fresh.ok("join", {"session_id": session_id, "after_seq": SENT_MESSAGES - 10})
        assert [m["seq"] for m in caught_up["missed"]] == list(range(SENT_MESSAGES - 9, SENT_MESSAGES + 1))
        assert caught_up["has_more"] is False
        assert caught_up["missed"][-1]["content"].startswith(f"{SENT_MESSAGES - 1:04d}")
        await fresh.sio.disconnect()
        await sender.sio.disconnect()
    finally:
        stop_and_check(server)


async def test_a_dropped_client_that_closes_without_reading_is_not_a_crash(
    tmp_path: Path, sio_clients: SioClients
) -> None:
    # Clients dropped for not reading that then close their WebSocket (the usual
    # end of a stalled tab or agent): their closes must not be logged as crashes.
    # Several, since the server's writer of each may or may not still be stuck
    # in its last send when the close arrives.
    server = start_server(tmp_path, "lmdb", args=("--max-unsent-bytes", str(MiB)))
    try:
        session_id = _new_session(server)
        async with contextlib.AsyncExitStack() as stack:
            slow = [await _join_and_stop_reading(stack, server, session_id) for _ in range(SLOW_CLIENTS)]
            sender = await sio_clients(server, transports=["websocket"])
            await _send_big_messages(sender, session_id, SENT_MESSAGES)
            await _wait_for_metric(
                server,
                lambda text: _metric(text, "chatmdb_limits_reached_total", '{limit="unsent_bytes"}') >= SLOW_CLIENTS,
                f"{SLOW_CLIENTS} clients dropped for unsent bytes",
            )
            # Normal close handshakes, without reading what is left (bounded by ws_close).
            await asyncio.gather(*(raw.ws.close() for raw in slow))
        _assert_alive(server)
        await sender.sio.disconnect()
    finally:
        stop_and_check(server)  # no traceback in the server log


# -- 5. replays are read off the event loop and sent in slices --------------------------------------------

RECOVERING = 10
STORED = 5_000


def _write_messages(server: Server, session_id: str, count: int) -> int:
    """Write *count* messages straight into the server's store; return the store's last event offset."""
    with open_store(server.db, backend=server.backend) as store:

        def write(part: int) -> None:
            for i in range(count // 8):
                store.create_message({"session_id": session_id, "content": f"stored {part}-{i}"})

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(8)))
        events, more = store.events_since([session_id], 0, 2 * count)
        assert not more and len(events) == count
        return store.last_event_offset()


async def _lose_transport(server: Server, session_id: str) -> tuple[str, str]:
    """Connect over a raw WebSocket, join the session, and drop the transport; return (sid, pid)."""
    async with raw_socket(server) as raw:
        reply = await raw.connect()
        joined = await raw.call(0, "join", {"session_id": session_id})
        assert joined["ok"] is True, joined
    return str(reply["sid"]), str(reply["pid"])


class Recovery:
    """One client reconnecting with its pid and offset "0", counting the replayed events before the CONNECT reply."""

    def __init__(self, server: Server, pid: str, first_replayed: asyncio.Event) -> None:
        self.server = server
        self.pid = pid
        self.first_replayed = first_replayed
        self.replayed: list[str] = []  # the offsets of the replayed message events, in order
        self.reply: dict[str, Any] = {}
        self.done_at = 0.0

    async def run(self) -> None:
        async with raw_socket(self.server) as raw:
            opening = await raw.text()
            assert opening.startswith("0{"), opening
            await raw.send("40" + json.dumps({"pid": self.pid, "offset": "0"}))
            deadline = time.monotonic() + 4 * STEP
            while time.monotonic() < deadline:
                frame = await raw.text()
                if frame.startswith("40{"):
                    self.done_at = time.monotonic()
                    self.reply = json.loads(frame[2:])
                    return
                assert frame.startswith('42["message",'), frame[:200]
                _name, message, offset = json.loads(frame[2:])
                assert message["content"].startswith("stored ")
                self.replayed.append(offset)
                self.first_replayed.set()
            raise AssertionError(f"no CONNECT reply after {len(self.replayed)} replayed events")


async def test_recoveries_do_not_hold_up_other_clients(tmp_path: Path, sio_clients: SioClients) -> None:
    server = start_server(tmp_path, "lmdb")
    try:
        session_id = _new_session(server)
        last_offset = await asyncio.to_thread(_write_messages, server, session_id, STORED)
        probe = await sio_clients(server, transports=["websocket"])
        lost = [await _lose_transport(server, session_id) for _ in range(RECOVERING)]
        # Their transports are gone (and their states saved) before they come back.
        await _wait_for_metric(
            server, lambda text: _metric(text, "chatmdb_connected_clients") == 1, "the lost clients disconnected"
        )
        first_replayed = asyncio.Event()
        recoveries = [Recovery(server, pid, first_replayed) for _, pid in lost]
        started = time.monotonic()
        tasks = [asyncio.create_task(r.run()) for r in recoveries]
        try:
            await asyncio.wait_for(first_replayed.wait(), STEP)
            # While the ten replays run, another client's request is answered.
            session = await probe.ok("get_session", {"session_id": session_id})
            probe_at = time.monotonic()
            await asyncio.wait_for(asyncio.gather(*tasks), 6 * STEP)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert session["id"] == session_id
        for (sid, pid), r in zip(lost, recoveries, strict=True):
            # Recovered: the same sid and pid, and every message after offset 0 replayed once, in order.
            assert r.reply == {"sid": sid, "pid": pid}, (r.reply, sid, pid)
            assert len(r.replayed) == STORED
            offsets = [int(o) for o in r.replayed]
            assert offsets == sorted(set(offsets)) and offsets[-1] == last_offset
        # Answered while the replays were still going: before the last of them ended
        # and, since they take turns in slices, before any of them ended. (Replayed
        # whole on the event loop, one after another, the first replays ended first.)
        ended = sorted(r.done_at - started for r in recoveries)
        assert probe_at - started < ended[0] <= ended[-1], (
            f"the probe's ack came {probe_at - started:.3f} s in; the recoveries ended at {[round(t, 3) for t in ended]}"
        )
    finally:
        stop_and_check(server)
