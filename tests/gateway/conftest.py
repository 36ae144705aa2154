"""Fixtures: a real ``chatmdb serve`` in a subprocess on 127.0.0.1, on each backend, and real clients.

Every wait is bounded. A server is stopped with SIGTERM and must exit 0; its
log must hold no traceback (bad input is answered, never logged as a crash).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio

REPO = Path(__file__).resolve().parents[2]
JS_DIR = REPO / "tests" / "js"
BACKENDS = ["lmdb", "sqlite"]
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0
CALL_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running ``chatmdb serve`` subprocess."""

    backend: str
    db: Path
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    token: str | None = None
    stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers(), timeout=CALL_TIMEOUT)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM the server and wait (bounded) for it to exit; return its exit code."""
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
            raise AssertionError(f"the server did not exit within {STOP_TIMEOUT} s of SIGTERM") from None


def start_server(
    workdir: Path,
    backend: str,
    *,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    token: str | None = None,
    port: int | None = None,
) -> Server:
    """Start ``python -m chatmdb serve`` on a free port and wait until ``/healthz`` answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "db"
    for attempt in range(3):
        port = port or free_port()
        log = workdir / f"server-{port}.log"
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMDB_")}
        child_env.update(env or {})
        command = [sys.executable, "-m", "chatmdb", "serve", "--db", str(db), "--backend", backend]
        command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *args]
        with log.open("wb") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=child_env, cwd=workdir)
        server = Server(backend=backend, db=db, port=port, proc=proc, log=log, token=token)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{server.url}/healthz", timeout=1.0).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
            raise AssertionError(f"the server did not answer /healthz within {START_TIMEOUT} s:\n{server.log_text()}")
        if "address already in use" not in server.log_text().lower() or attempt == 2:
            raise AssertionError(f"the server exited with {proc.returncode}:\n{server.log_text()}")
    raise AssertionError("unreachable")


def stop_and_check(server: Server) -> None:
    """Stop the server; it must exit 0 and have logged no traceback."""
    code = server.stop()
    text = server.log_text()
    assert code == 0, f"the server exited with {code} after SIGTERM:\n{text}"
    assert "Traceback" not in text, f"the server logged an exception:\n{text}"


@pytest.fixture(scope="session", params=BACKENDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per backend for the whole run; tests use their own sessions."""
    srv = start_server(tmp_path_factory.mktemp(f"gateway-{request.param}"), str(request.param))
    yield srv
    stop_and_check(srv)


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with server.http() as client:
        yield client


class Client:
    """A python-socketio AsyncClient that keeps every server event it receives, in order."""

    def __init__(self, sio: socketio.AsyncClient) -> None:
        self.sio = sio
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        for name in ("message", "context_updated", "task_updated"):
            sio.on(name, self._keeper(name))

    def _keeper(self, name: str) -> Callable[..., None]:
        def keep(data: Any, *offset: Any) -> None:
            # Room events carry their recovery offset as a last argument.
            self.events.put_nowait((name, data))

        return keep

    async def call(self, event: str, *args: Any) -> Any:
        """Emit *event* with *args* and return the ack's payload (bounded wait). This method is a coroutine."""
        data: Any = args[0] if len(args) == 1 else (tuple(args) if args else None)
        return await self.sio.call(event, data, timeout=CALL_TIMEOUT)

    async def ok(self, event: str, payload: Any) -> Any:
        """Call and return ``data``, failing the test on an error ack. This method is a coroutine."""
        ack = await self.call(event, payload)
        assert isinstance(ack, dict) and ack.get("ok") is True, f"{event} {payload!r:.200} -> {ack!r:.300}"
        return ack["data"]

    async def next_event(self) -> tuple[str, Any]:
        """The next server event received (bounded wait). This method is a coroutine."""
        return await asyncio.wait_for(self.events.get(), CALL_TIMEOUT)


Connect = Callable[..., Awaitable[Client]]


@pytest.fixture
async def sio_clients() -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """``make(server, auth=None, transports=None)`` connects a client; all disconnected at teardown."""
    clients: list[socketio.AsyncClient] = []

    async def make(target: Server, auth: Any = None, transports: list[str] | None = None) -> Client:
        if auth is None and target.token:
            auth = {"token": target.token}
        sio = socketio.AsyncClient(reconnection=False)
        clients.append(sio)
        await sio.connect(target.url, auth=auth, transports=transports, wait_timeout=CALL_TIMEOUT)
        return Client(sio)

    yield make
    for sio in clients:
        if sio.connected:
            await sio.disconnect()
        await sio.shutdown()


@pytest.fixture
def connect(server: Server, sio_clients: Callable[..., Awaitable[Client]]) -> Connect:
    """Connect python-socketio clients to the shared server of the backend under test."""

    async def make(auth: Any = None, transports: list[str] | None = None) -> Client:
        return await sio_clients(server, auth=auth, transports=transports)

    return make


@pytest.fixture
def new_session(http: httpx.Client) -> Callable[[], dict[str, Any]]:
    """Create a fresh session over HTTP, so tests sharing a server never meet."""

    def make() -> dict[str, Any]:
        response = http.post("/api/sessions", json={"title": f"test {uuid.uuid4().hex[:8]}"})
        assert response.status_code == 201, response.text
        session: dict[str, Any] = response.json()
        return session

    return make


def run_node(script: str, *args: str, timeout: float = 60.0) -> Any:
    """Run ``node tests/js/<script> args...`` and return the JSON it prints last."""
    node = shutil.which("node")
    assert node is not None, "node is not installed; `make setup` needs node and npm"
    assert (JS_DIR / "node_modules" / "socket.io-client").is_dir(), "run `make setup` to install socket.io-client"
    done = subprocess.run(
        [node, str(JS_DIR / script), *args], cwd=JS_DIR, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{script} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines, f"{script} printed nothing:\n{done.stderr}"
    return json.loads(lines[-1])


# -- raw engine.io/Socket.IO over a WebSocket: to send exactly the packets a test needs ---------


async def raw_open(http: Any, server: Server, auth: dict[str, Any] | None = None) -> Any:
    """Open a WebSocket transport (an ``aiohttp`` session's) and send CONNECT with *auth*."""
    ws = await http.ws_connect(server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket")
    assert (await asyncio.wait_for(ws.receive_str(), CALL_TIMEOUT)).startswith("0{")
    await ws.send_str("40" + (json.dumps(auth) if auth else ""))
    return ws


async def raw_until(ws: Any, prefix: str, seen: list[str] | None = None) -> str:
    """The next packet starting with *prefix*, answering pings; others go to *seen* when given."""
    while True:
        text = await asyncio.wait_for(ws.receive_str(), CALL_TIMEOUT)
        if text == "2":
            await ws.send_str("3")
        elif text.startswith(prefix):
            return str(text)
        elif seen is not None:
            seen.append(text)
