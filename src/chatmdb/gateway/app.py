"""The gateway assembled: one ASGI app, and :func:`serve` to run it under uvicorn.

The app serves Socket.IO (python-socketio ``AsyncServer``) at ``/socket.io/``,
the console's page and files (:mod:`.console`) at ``/`` and ``/console/``, and
the HTTP API of :mod:`.http` on every other path; Socket.IO and the API call the
:class:`~.service.ChatService` of one :class:`Gateway`. :func:`create_app`
builds it on an open store; :func:`serve` opens a store and runs it, and
drains it on SIGINT or SIGTERM so that every write it accepted is acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import socketio
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ValidationError
from ..metrics import Metrics
from ..store import Store, open_store
from .auth import Authenticator, JwtSettings
from .backups import BackupPolicy, BackupSchedule
from .console import Console
from .cors import CrossOrigin, OriginPolicy, http_cors
from .events import Events
from .fanout import Fanout
from .guard import GuardedServer, Limits
from .http import create_http_app
from .middleware import LOOPBACK_HOSTS, AllowedHosts, EndAbandonedPolls, LimitBody, RedactSid, WebSocketOnly
from .packets import TolerantPacket
from .retention import Retention
from .service import ChatService

__all__ = ["Gateway", "GatewayApp", "ServeOptions", "create_app", "serve"]

logger = logging.getLogger("chatmdb.gateway")

# Seconds serve() waits, at shutdown, for in-flight writes and then for clients to be disconnected.
SHUTDOWN_DRAIN_SECONDS = 10.0


class Gateway:
    """The Socket.IO server of one app, its event handlers, and the service they share with the HTTP API.

    ``sio`` is the python-socketio ``AsyncServer`` (with connection state
    recovery), ``events`` its handlers, ``service`` what they and the HTTP
    routes call. Arguments as :func:`create_app` takes them.
    """

    def __init__(
        self,
        store: Store,
        *,
        token: str | None = None,
        recovery_window: float = 120.0,
        max_http_buffer_size: int | None = None,
        close_store: bool = False,
        limits: Limits | None = None,
        allowed_hosts: Sequence[str] | None = None,
        workers: int = 1,
        worker_index: int = 0,
        retain_days: float | None = None,
        retain_messages: int | None = None,
        backups: BackupPolicy | None = None,
        jwt: JwtSettings | None = None,
        cors_origins: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(workers, int) or workers < 1 or not 0 <= worker_index < workers:
            raise ValidationError("workers must be >= 1 and worker_index in 0..workers-1")
        if token is not None and (not isinstance(token, str) or not token):
            raise ValidationError("token must be a non-empty string or None")
        if not isinstance(recovery_window, (int, float)) or recovery_window < 0:
            raise ValidationError("recovery_window must be a number of seconds >= 0")
        if max_http_buffer_size is None:
            # JSON can spell a stored byte as up to six ("\u0001"), and engine.io
            # drops the whole connection past this limit; above it, an oversized
            # message reaches the store and gets a too_large ack instead.
            max_http_buffer_size = 6 * store.max_message_size + 64 * 1024
        elif max_http_buffer_size <= store.max_message_size:
            raise ValidationError("max_http_buffer_size must be above the store's max_message_size")
        self.store = store
        self.token = token
        self.authenticator = Authenticator(token, jwt)
        self.origins = OriginPolicy(cors_origins)
        if self.origins.any and not self.authenticator.required:
            # Any web page could then read and write through its visitors' browsers.
            raise ValidationError("--cors-origins '*' needs a token or a JWT key: every site could use the server")
        self.recovery_window = float(recovery_window)
        self.max_http_buffer_size = max_http_buffer_size
        self.close_store = close_store
        # Connection state recovery as the JavaScript server does it, with its
        # state in the store (python-socketio has none: its issue #1258).
        self.limits = limits or Limits()
        # Without a token, only loopback Host names are served unless told
        # otherwise: a page on another site could otherwise reach this
        # server through DNS rebinding.
        if allowed_hosts is None and not self.authenticator.required:
            allowed_hosts = LOOPBACK_HOSTS
        self.allowed_hosts = None if allowed_hosts is None else tuple(allowed_hosts)
        self.metrics = Metrics(store, connected_clients=lambda: len(self.events.clients))
        self.sio = GuardedServer(
            store,
            self.recovery_window,
            authenticator=self.authenticator,
            limits=self.limits,
            on_limit=self.metrics.limit_reached,
            async_mode="asgi",
            # CrossOrigin refused every origin not allowed before engine.io
            # sees the request; engine.io adds the CORS headers. Credentials
            # travel in the CONNECT packet, never in cookies.
            cors_allowed_origins=self.origins.engineio,
            cors_credentials=False,
            max_http_buffer_size=max_http_buffer_size,
            logger=False,
            engineio_logger=False,
        )
        self.sio.packet_class = TolerantPacket
        self.workers = workers
        self.fanout = None
        if workers > 1:
            self.fanout = Fanout(store, self.sio, index=worker_index, workers=workers)
            # Engine.io sids name their worker ("1.Xk3..."), for operators and
            # tests; the rest is as random as engine.io's own.
            self.sio.eio.generate_id = lambda: f"{worker_index}.{secrets.token_urlsafe(12)}"
        self.service = ChatService(store, self.metrics, self.sio, self.fanout)
        self.retention = None
        if (retain_days is not None or retain_messages is not None) and worker_index == 0:
            try:  # one worker prunes for all
                self.retention = Retention(store, self.metrics, days=retain_days, messages=retain_messages)
            except ValueError as exc:
                raise ValidationError(str(exc)) from exc
        # Scheduled backups (serve --backup-dir): worker 0 takes them for all.
        self.backups = None
        if backups is not None and worker_index == 0:
            self.backups = BackupSchedule(store, backups, self.metrics)
        self.events = Events(self.service, self.sio)
        self.events.attach()
        self._drained = False

    @property
    def clients(self) -> set[str]:
        """The sids of the connected Socket.IO clients."""
        return self.events.clients

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object) -> AsyncIterator[None]:
        """The app's lifespan: adopt the recovery state a previous server left; at the end, shut down."""
        await self.sio.start_recovery()
        if self.fanout is not None:
            await self.fanout.start()
        if self.retention is not None:
            await self.retention.start()
        if self.backups is not None:
            self.backups.start()
        yield
        await self.aclose()

    async def drain(self, timeout: float = SHUTDOWN_DRAIN_SECONDS) -> None:
        """Refuse new writes, wait for the ones in flight, then disconnect every client.

        A write in flight is committed and acked before its client is
        disconnected; one that arrives later gets an error ack. Clients see a
        transport close and reconnect (to the restarted server). Bounded by
        *timeout* per step. This method is a coroutine.
        """
        if self._drained:
            return
        self._drained = True
        if self.retention is not None:
            await self.retention.stop()
        if self.backups is not None:
            self.backups.cancel()  # no new backup; one in progress is waited for below
        await self.service.drain(timeout)
        if self.fanout is not None:
            await self.fanout.stop()  # the events of the last writes reach this worker's clients
        # Let the handlers that just finished queue their acks before the close packets.
        await asyncio.sleep(0)
        # Clients of a server that stops see a lost transport: their state is
        # kept, so they recover when they reconnect to the restarted server.
        self.sio.shutting_down = True
        eio = self.sio.eio
        sids = list(eio.sockets)
        if sids:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(eio.disconnect(s) for s in sids), return_exceptions=True), timeout
                )
        if self.backups is not None:
            await self.backups.stop()  # before the store is closed: a backup in progress reads it

    async def aclose(self) -> None:
        """Shut down: drain, stop background tasks, close the store if owned. This method is a coroutine."""
        await self.drain()
        await self.sio.stop_recovery()
        await self.sio.shutdown()
        self.metrics.close()
        if self.close_store:
            # close() joins the writer thread after its last commit: not on the loop.
            await asyncio.to_thread(self.store.close)


class GatewayApp:
    """The ASGI app of a :class:`Gateway` (``.gateway``): Socket.IO at ``/socket.io/``, the console
    (:mod:`.console`) at ``/`` and ``/console/``, the HTTP API elsewhere."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        http = http_cors(
            create_http_app(gateway.service, authenticator=gateway.authenticator, lifespan=gateway.lifespan),
            gateway.origins,
        )
        app: ASGIApp = LimitBody(
            EndAbandonedPolls(socketio.ASGIApp(gateway.sio, other_asgi_app=Console(http))), gateway.max_http_buffer_size
        )
        if gateway.workers > 1:
            app = WebSocketOnly(app, gateway.workers)
        app = CrossOrigin(app, gateway.origins)
        if gateway.allowed_hosts is not None:
            app = AllowedHosts(app, gateway.allowed_hosts)
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def create_app(
    store: Store,
    *,
    token: str | None = None,
    recovery_window: float = 120.0,
    max_http_buffer_size: int | None = None,
    close_store: bool = False,
    limits: Limits | None = None,
    allowed_hosts: Sequence[str] | None = None,
    workers: int = 1,
    worker_index: int = 0,
    retain_days: float | None = None,
    retain_messages: int | None = None,
    backups: BackupPolicy | None = None,
    jwt: JwtSettings | None = None,
    cors_origins: Sequence[str] | None = None,
) -> GatewayApp:
    """Build the ASGI app: Socket.IO at ``/socket.io/``, the HTTP API everywhere else.

    :param store: an open store; the app does not close it unless *close_store*.
    :param token: when set, Socket.IO clients must connect with
        ``auth={"token": token}`` and HTTP requests (but ``/healthz``) must
        carry ``Authorization: Bearer <token>``; it acts as an administrator.
    :param jwt: when set, a JWT verified with it is accepted where the token
        is, with the grants of its claims (see :mod:`.auth`).
    :param cors_origins: web origins allowed besides the server's own
        (``["*"]``: any, only with a token or *jwt*); see :mod:`.cors`.
    :param recovery_window: seconds a disconnected client's state is kept for
        connection state recovery (0 turns recovery off; see :mod:`.recovery`).
    :param max_http_buffer_size: engine.io's largest accepted packet; must
        sit above the store's ``max_message_size`` (default: far above it).
    :param close_store: close the store when the app shuts down (lifespan).
    :param limits: the per-connection and server-wide limits (default :class:`Limits()`).
    :param allowed_hosts: the Host names served (``*`` for any); by default
        any with a token or *jwt*, only loopback names without.
    :param workers: how many worker processes serve this database (see
        :mod:`.fanout`); with more than one, room events go through the
        store's event log and long-polling is refused.
    :param worker_index: this worker's number, 0..workers-1.
    :param retain_days: prune messages older than this while serving (see :mod:`.retention`).
    :param retain_messages: keep at most this many of each session's newest messages.
    :param backups: take scheduled hot backups while serving (see :mod:`.backups`);
        with several workers, worker 0 takes them.
    :returns: the ASGI application; its :class:`Gateway` is ``app.gateway``.
    :raises ValidationError: on bad arguments.
    """
    gateway = Gateway(
        store,
        token=token,
        recovery_window=recovery_window,
        max_http_buffer_size=max_http_buffer_size,
        close_store=close_store,
        limits=limits,
        allowed_hosts=allowed_hosts,
        workers=workers,
        worker_index=worker_index,
        retain_days=retain_days,
        retain_messages=retain_messages,
        backups=backups,
        jwt=jwt,
        cors_origins=cors_origins,
    )
    return GatewayApp(gateway)


class _Server(uvicorn.Server):
    """uvicorn, but clients are drained before connections are closed.

    uvicorn closes websockets (and waits out long-polls) before the app's
    lifespan shutdown runs, which would drop the acks of writes in flight;
    draining first gets them committed and acked.
    """

    def __init__(self, config: uvicorn.Config, gateway: Gateway, announce: bool = True) -> None:
        super().__init__(config)
        self._gateway = gateway
        self._announce = announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._announce:
            # Beside uvicorn's "running on" line, in its format: the address a person opens.
            port = self.config.port
            if not port and self.servers and self.servers[0].sockets:
                port = self.servers[0].sockets[0].getsockname()[1]
            logging.getLogger("uvicorn.error").info("The console: open %s", console_url(self.config.host, port))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if not self.force_exit:
            await self._gateway.drain()
        await super().shutdown(sockets)


def console_url(host: str, port: int) -> str:
    """The console's address on a server bound to *host*: a wildcard address is opened as loopback."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def _fastest_loop() -> str:
    return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # uvicorn re-raises the signal it shut down on, after restoring the handler
    # it found; with the default handler the process would die of SIGTERM after
    # a clean shutdown. Exiting here lets the finally blocks close the store.
    raise SystemExit(0)


@dataclass(frozen=True)
class ServeOptions:
    """What :func:`serve` runs, as ``chatmdb serve`` takes it."""

    db_path: str
    backend: str = "lmdb"
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    durability: str = "full"
    recovery_window: float = 120.0
    log_level: str = "info"
    limits: Limits | None = None
    allowed_hosts: Sequence[str] | None = None
    ws_deflate: bool = False
    workers: int = 1
    retain_days: float | None = None
    retain_messages: int | None = None
    backups: BackupPolicy | None = None
    jwt: JwtSettings | None = None
    cors_origins: Sequence[str] | None = None


def serve(**options: Any) -> None:
    """Open the store and serve the gateway on it until SIGINT or SIGTERM (options: :class:`ServeOptions`).

    On a signal: new writes are refused, writes in flight are committed and
    acked, clients are disconnected (they reconnect to the next server), then
    the store is closed after its writer's last commit. With ``workers`` > 1,
    this process supervises that many worker processes on the same port and
    database: it forwards the signal to each, and restarts one that dies.
    """
    opts = ServeOptions(**options)
    if opts.workers == 1:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _exit_cleanly)
        _serve_worker(opts, 0)
    else:
        _supervise(opts)


def _serve_worker(opts: ServeOptions, index: int) -> None:
    sockets = None
    if opts.workers > 1:
        # Every worker listens on the port itself; the kernel spreads new
        # connections over them (SO_REUSEPORT).
        family = socket.AF_INET6 if ":" in opts.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((opts.host, opts.port))
        sockets = [sock]
    store = open_store(opts.db_path, backend=opts.backend, durability=opts.durability)
    try:
        store.init_database()
        app = create_app(
            store,
            token=opts.token,
            recovery_window=opts.recovery_window,
            close_store=True,
            limits=opts.limits,
            allowed_hosts=opts.allowed_hosts,
            workers=opts.workers,
            worker_index=index,
            retain_days=opts.retain_days,
            retain_messages=opts.retain_messages,
            backups=opts.backups,
            jwt=opts.jwt,
            cors_origins=opts.cors_origins,
        )
        config = uvicorn.Config(
            app,
            host=opts.host,
            port=opts.port,
            log_level=opts.log_level,
            lifespan="on",
            # uvicorn's own websocket frame limit must not undercut engine.io's.
            ws_max_size=max(16 * 1024 * 1024, app.gateway.max_http_buffer_size + 64 * 1024),
            # Measured on this workload (BENCHMARKS.md): uvloop and httptools
            # cut the CPU of every frame; per-message deflate costs more CPU
            # than it saves bytes on chat frames of a few hundred bytes.
            loop=_fastest_loop(),
            http="httptools" if importlib.util.find_spec("httptools") else "h11",
            # Not the legacy "websockets" protocol: a client that stops reading
            # leaves a send waiting for the socket to drain, and its close (or
            # a keepalive ping) then fails an assertion inside websockets.
            ws="websockets-sansio",
            ws_per_message_deflate=opts.ws_deflate,
            timeout_graceful_shutdown=int(SHUTDOWN_DRAIN_SECONDS),
        )
        # uvicorn's access log prints each request's query string, and a
        # long-poll's names the engine.io sid: a credential.
        for name in ("uvicorn.access", "uvicorn.error"):  # the latter logs WebSocket upgrades
            logging.getLogger(name).addFilter(RedactSid())
        _Server(config, app.gateway, announce=index == 0).run(sockets=sockets)
    finally:
        store.close()


# Seconds to wait before restarting a worker that died, growing while workers die young.
RESTART_BACKOFF = (0.1, 0.5, 2.0, 5.0)


def _supervise(opts: ServeOptions) -> None:
    """Run *opts.workers* worker processes; restart any that dies until a signal stops them all."""
    if opts.port == 0:
        raise ValidationError("several workers need a fixed port")
    # The database is created (and migrated) once, here, before any worker
    # opens it; no store or thread of this process survives into the forks.
    with open_store(opts.db_path, backend=opts.backend, durability=opts.durability) as store:
        store.init_database()
    children: dict[int, tuple[int, float]] = {}  # pid -> (index, started)
    stopping = False

    stop_signals = {signal.SIGINT, signal.SIGTERM}

    def spawn(index: int) -> None:
        # Signals wait until the child is in the books (the parent) or has its
        # own handlers (the child): one arriving in between would be lost.
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
            raise
        if pid == 0:  # the worker
            code = 1
            try:
                for sig in stop_signals:
                    signal.signal(sig, _exit_cleanly)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)
                _serve_worker(opts, index)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 0
            except BaseException:
                logger.exception("worker %d failed", index)
            finally:
                os._exit(code)
        children[pid] = (index, time.monotonic())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    for index in range(opts.workers):
        spawn(index)
    young_deaths = 0
    failed = False
    while children:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid not in children:
            continue
        index, started = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            failed = failed or code != 0
            continue
        young_deaths = young_deaths + 1 if time.monotonic() - started < 5 else 0
        delay = RESTART_BACKOFF[min(young_deaths, len(RESTART_BACKOFF) - 1)]
        logger.warning("worker %d (pid %d) exited with %d; restarting it in %.1f s", index, pid, code, delay)
        time.sleep(delay)
        if not stopping:
            spawn(index)
    if failed:
        raise SystemExit(1)
