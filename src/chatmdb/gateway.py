"""The gateway: a Socket.IO server that persists every message before it acks it.

One ASGI app serves the Socket.IO events (python-socketio ``AsyncServer``,
namespace ``/``) and, for every other path, the HTTP API of
:mod:`chatmdb.http_api`. :func:`create_app` builds it on an open store;
:func:`serve` opens a store and runs it under uvicorn.

Every event takes one object and answers through its ack with
``{"ok": true, "data": ...}`` or ``{"ok": false, "error": {"code", "message"}}``,
codes ``invalid``, ``not_found``, ``conflict``, ``unauthorized``,
``too_large``, ``internal``. Events (optional fields marked ``?``):

====================  ==============================================================  ===============
event                 payload                                                         data
====================  ==============================================================  ===============
create_session        title?, session_id?, metadata?                                  the session
join                  session_id, after_seq?, limit?                                  session, missed, has_more
leave                 session_id                                                      session_id
send_message          session_id, content, message_uuid?, agent_id?, role?, metadata? the stored message
get_messages          session_id, cursor?, limit?, direction?, skip?                  items, pagination
list_sessions         limit?, cursor?                                                 [session]
get_session           session_id                                                      the session
list_agents           (nothing)                                                       [agent card]
get_agent             agent_id                                                        the agent card
create_context        session_id, data, context_id?                                   the context
update_context        context_id, data, expected_version?                             the context
list_contexts         session_id                                                      [context]
create_task           context_id, id?, status?, artifacts?, history?, metadata?       the task
update_task           task_id, state?, status_message?, artifacts?, metadata?         the task
get_task              task_id                                                         the task
list_tasks            context_id?, state?, limit?, cursor?                            [task]
====================  ==============================================================  ===============

Server events, sent only to the clients that joined the session, never to the
client whose request caused them (it has the record in its ack):
``message`` (a stored message), ``context_updated`` (a shared context),
``task_updated`` (a task).

``join`` enters the room first and reads the missed messages after, so a
message committed meanwhile arrives as an event, in ``missed``, or both (the
client deduplicates by ``seq``), never neither. Without ``after_seq``,
``missed`` is empty: history is paged with ``get_messages``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import FrameType
from typing import Any

import socketio
import uvicorn

from ._recovery import ROOM_PREFIX, RecoveringServer
from .errors import ChatMDBError, NotFound, StoreClosed, ValidationError
from .metrics import Metrics
from .store import Store, open_store

__all__ = ["Gateway", "create_app", "serve"]

logger = logging.getLogger("chatmdb.gateway")

DEFAULT_JOIN_LIMIT = 100
# Seconds serve() waits, at shutdown, for in-flight writes and then for clients to be disconnected.
SHUTDOWN_DRAIN_SECONDS = 10.0

Payload = dict[str, Any]
Handler = Callable[[str, Payload], Awaitable[Any]]

# Field types of event payloads. The store validates values (lengths, ranges,
# Unicode); these checks keep wrong types from reaching it as TypeErrors.
_STR, _INT, _DICT, _LIST, _ANY = "a string", "an integer", "an object", "an array", "any value"
_SEQ_CURSOR = "a string or an integer"


# The event name an undecodable EVENT packet is delivered as (no client can emit it by accident).
_MALFORMED = "\x00malformed"
# The event name an EVENT packet without a usable event name is delivered as.
_NOT_AN_EVENT = "\x00not-an-event"


class _TolerantPacket(socketio.packet.Packet):  # type: ignore[misc]
    """A Socket.IO packet whose undecodable EVENT data becomes an event the gateway answers.

    python-socketio decodes a packet's JSON before any handler runs; a syntax
    error or a nesting deep enough to exhaust the recursion limit would be an
    exception in the server log and no ack. The ack id is parsed before the
    data, so the client still gets an ``invalid`` error ack.
    """

    def decode(self, encoded_packet: Any) -> int:
        events = (socketio.packet.EVENT, socketio.packet.BINARY_EVENT)
        try:
            count: int = super().decode(encoded_packet)
        except (ValueError, RecursionError):  # json.JSONDecodeError is a ValueError
            if self.packet_type == socketio.packet.CONNECT:
                self.data = None  # undecodable auth: a connection without auth (and without recovery)
                return 0
            if self.packet_type not in events:
                raise
            self.data = [_MALFORMED]
            return 0
        if self.packet_type in events and not _is_event(self.data):
            # No name, a name that is not a string (unhashable ones crash the
            # dispatch), or one of the server's own connect/disconnect/catch-all
            # handlers, which must never run on a client's say-so.
            self.data = [_NOT_AN_EVENT]
        return count


def _is_event(data: Any) -> bool:
    return (
        isinstance(data, list)
        and bool(data)
        and isinstance(data[0], str)
        and data[0] not in socketio.AsyncServer.reserved_events
        and data[0] != "*"
    )


def _room(session_id: str) -> str:
    return ROOM_PREFIX + session_id


def _ok(data: Any) -> Payload:
    return {"ok": True, "data": data}


def _error(code: str, message: str) -> Payload:
    return {"ok": False, "error": {"code": code, "message": message}}


def _type_ok(value: Any, kind: str) -> bool:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    return {
        _STR: isinstance(value, str),
        _INT: is_int,
        _DICT: isinstance(value, dict),
        _LIST: isinstance(value, list),
        _SEQ_CURSOR: is_int or isinstance(value, str),
        _ANY: True,
    }[kind]


def _fields(data: Payload, required: dict[str, str], optional: dict[str, str] | None = None) -> Payload:
    """Check an event payload's fields and types; return them without the nulls.

    Unknown fields are refused, so a misspelt ``sesion_id`` is an error rather
    than a silently ignored value. Raises :class:`ValidationError`.
    """
    optional = optional or {}
    unknown = [name for name in data if name not in required and name not in optional]
    if unknown:
        raise ValidationError(f"unknown field(s): {', '.join(repr(str(n))[:60] for n in unknown[:5])}")
    out: Payload = {}
    for name, kind in {**required, **optional}.items():
        value = data.get(name)
        if value is None:
            if name in required:
                raise ValidationError(f"{name} is required")
            continue
        if not _type_ok(value, kind):
            raise ValidationError(f"{name} must be {kind}, not {type(value).__name__}")
        out[name] = value
    return out


class Gateway:
    """The Socket.IO server of one app, with the operations it shares with the HTTP API.

    ``sio`` is the python-socketio ``AsyncServer``. Writes are awaited on the
    store's group-commit writer (``store.aio``); reads are microseconds and
    run inline.
    """

    def __init__(
        self,
        store: Store,
        *,
        token: str | None = None,
        recovery_window: float = 120.0,
        max_http_buffer_size: int | None = None,
        close_store: bool = False,
    ) -> None:
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
        self.recovery_window = float(recovery_window)
        self.max_http_buffer_size = max_http_buffer_size
        self.close_store = close_store
        # Connection state recovery as the JavaScript server does it, with its
        # state in the store (python-socketio has none: its issue #1258).
        self.sio = RecoveringServer(
            store,
            self.recovery_window,
            async_mode="asgi",
            max_http_buffer_size=max_http_buffer_size,
            logger=False,
            engineio_logger=False,
        )
        self.sio.packet_class = _TolerantPacket
        self.clients: set[str] = set()
        self.metrics = Metrics(store, connected_clients=lambda: len(self.clients))
        self._accepting = True
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._drained = False
        self._register()

    # -- plumbing -------------------------------------------------------------

    def _register(self) -> None:
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        handlers: dict[str, Handler] = {
            "create_session": self.ev_create_session,
            "join": self.ev_join,
            "leave": self.ev_leave,
            "send_message": self.ev_send_message,
            "get_messages": self.ev_get_messages,
            "list_sessions": self.ev_list_sessions,
            "get_session": self.ev_get_session,
            "list_agents": self.ev_list_agents,
            "get_agent": self.ev_get_agent,
            "create_context": self.ev_create_context,
            "update_context": self.ev_update_context,
            "list_contexts": self.ev_list_contexts,
            "create_task": self.ev_create_task,
            "update_task": self.ev_update_task,
            "get_task": self.ev_get_task,
            "list_tasks": self.ev_list_tasks,
        }
        for event, handler in handlers.items():
            self.sio.on(event, self._wrap(event, handler))
        self.sio.on("*", self._on_unknown_event)

    def _wrap(self, event: str, handler: Handler) -> Callable[..., Awaitable[Payload]]:
        # *args, not (sid, data): python-socketio passes whatever the client
        # sent, and a signature mismatch would be a TypeError in the log.
        async def on_event(sid: str, *args: Any) -> Payload:
            if len(args) != 1 or not isinstance(args[0], dict):
                got = "nothing" if not args else ", ".join(type(a).__name__ for a in args)
                return _error("invalid", f"{event} takes one object (dict) argument, got {got}")
            try:
                return _ok(await handler(sid, args[0]))
            except ChatMDBError as exc:
                return _error(exc.code, str(exc))
            except Exception:
                logger.exception("event %s failed", event)
                return _error("internal", "internal error")

        on_event.__name__ = f"on_{event}"
        return on_event

    async def _on_unknown_event(self, event: str, sid: str, *args: Any) -> Payload:
        # Without this, an event with no handler gets no ack and the client waits forever.
        if event == _MALFORMED:
            return _error("invalid", "the event's data is not valid JSON, or is nested too deeply")
        if event == _NOT_AN_EVENT:
            return _error("invalid", "an event is an array that starts with the event's name")
        return _error("invalid", f"unknown event {str(event)[:60]!r}")

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if self.token is not None:
            given = auth.get("token") if isinstance(auth, dict) else None
            if not isinstance(given, str) or not hmac.compare_digest(given.encode(), self.token.encode()):
                raise socketio.exceptions.ConnectionRefusedError(
                    "unauthorized", {"code": "unauthorized", "message": "a valid auth token is required"}
                )
        self.clients.add(sid)

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.clients.discard(sid)

    async def _emit_to_session(
        self, event: str, data: Any, session_id: str, offset: int | None, skip_sid: str | None = None
    ) -> None:
        """Send a server event to every client in a session's room (but *skip_sid*).

        The one place that emits to rooms; *offset* is the store's offset of
        the event, sent as its last argument for connection state recovery.
        This method is a coroutine.
        """
        try:
            await self.sio.emit_room_event(event, data, session_id, offset, skip_sid=skip_sid)
        except Exception:
            # The write is committed and acked; a failed fan-out must not turn
            # that into an error for the writer. Clients catch up with join.
            logger.exception("emitting %s to session %r failed", event, session_id)

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[None]:
        """Count a write in flight, so shutdown can wait for it; refuse writes once draining."""
        if not self._accepting:
            raise StoreClosed("the server is shutting down", hint="retry after it restarts")
        self._inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    @contextlib.contextmanager
    def _reading(self, op: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.metrics.read_seconds.labels(op).observe(time.perf_counter() - started)

    def _session(self, session_id: str) -> dict[str, Any]:
        with self._reading("get_session"):
            session = self.store.get_session(session_id)
        if session is None:
            raise NotFound(f"no session {session_id!r:.80}")
        return session

    async def drain(self, timeout: float = SHUTDOWN_DRAIN_SECONDS) -> None:
        """Refuse new writes, wait for the ones in flight, then disconnect every client.

        A write in flight is committed and acked before its client is
        disconnected; one that arrives later gets an error ack. Clients see a
        transport close and reconnect (to the restarted server). Bounded by
        *timeout* per step. This method is a coroutine.
        """
        self._accepting = False
        if self._drained:
            return
        self._drained = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            logger.warning("%d write(s) still in flight after %.0f s of shutdown", self._inflight, timeout)
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

    async def aclose(self) -> None:
        """Shut down: drain, stop background tasks, close the store if owned. This method is a coroutine."""
        await self.drain()
        await self.sio.stop_recovery()
        await self.sio.shutdown()
        self.metrics.close()
        if self.close_store:
            # close() joins the writer thread after its last commit: not on the loop.
            await asyncio.to_thread(self.store.close)

    # -- operations shared with the HTTP API -------------------------------------

    async def create_session(self, title: str | None, session_id: str | None, metadata: dict[str, Any] | None) -> Any:
        """Create a session and return it. This method is a coroutine."""
        async with self._writing():
            return await self.store.aio.create_session(title=title, session_id=session_id, metadata=metadata)

    async def post_message(self, record: dict[str, Any], via: str, skip_sid: str | None = None) -> tuple[Any, bool]:
        """Store a message, then broadcast it to its session if this call stored it.

        Returns ``(message, created)``; ``created`` is False for a retry of a
        stored ``message_uuid``, which broadcasts nothing. This method is a coroutine.
        """
        if record.get("message_uuid") == "":
            # The store takes "" for "make one up", which would turn every
            # retry of such a client into a new message.
            raise ValidationError("message_uuid must not be empty; leave it out to have one generated")
        async with self._writing():
            message, created, offset = await self.store.aio.outcome("create_message", record)
            if created:
                self.metrics.messages_written.labels(via).inc()
                await self._emit_to_session("message", message, message["session_id"], offset, skip_sid=skip_sid)
        return message, created

    # -- events ----------------------------------------------------------------

    async def ev_create_session(self, sid: str, data: Payload) -> Any:
        f = _fields(data, {}, {"title": _STR, "session_id": _STR, "metadata": _DICT})
        return await self.create_session(f.get("title"), f.get("session_id"), f.get("metadata"))

    async def ev_join(self, sid: str, data: Payload) -> Any:
        f = _fields(data, {"session_id": _STR}, {"after_seq": _INT, "limit": _INT})
        session = self._session(f["session_id"])
        await self.sio.enter_room(sid, _room(f["session_id"]))
        await self.sio.remember(sid)
        missed: list[dict[str, Any]] = []
        has_more = False
        if "after_seq" in f:
            with self._reading("get_messages_after"):
                missed, has_more = self.store.get_messages_after(
                    f["session_id"], f["after_seq"], limit=f.get("limit", DEFAULT_JOIN_LIMIT)
                )
        return {"session": session, "missed": missed, "has_more": has_more}

    async def ev_leave(self, sid: str, data: Payload) -> Any:
        f = _fields(data, {"session_id": _STR})
        self._session(f["session_id"])
        await self.sio.leave_room(sid, _room(f["session_id"]))
        await self.sio.remember(sid)
        return {"session_id": f["session_id"]}

    async def ev_send_message(self, sid: str, data: Payload) -> Any:
        f = _fields(
            data,
            {"session_id": _STR, "content": _STR},
            {"message_uuid": _STR, "agent_id": _STR, "role": _STR, "metadata": _DICT},
        )
        f.setdefault("role", "user")
        message, _ = await self.post_message(f, via="socketio", skip_sid=sid)
        return message

    async def ev_get_messages(self, sid: str, data: Payload) -> Any:
        f = _fields(
            data, {"session_id": _STR}, {"cursor": _SEQ_CURSOR, "limit": _INT, "direction": _STR, "skip": _INT}
        )
        self._session(f["session_id"])
        with self._reading("get_session_messages"):
            return self.store.get_session_messages(**f, include_total=True)

    async def ev_list_sessions(self, sid: str, data: Payload) -> Any:
        f = _fields(data, {}, {"limit": _INT, "cursor": _STR})
        with self._reading("list_sessions"):
            return self.store.list_sessions(**f)

    async def ev_get_session(self, sid: str, data: Payload) -> Any:
        return self._session(_fields(data, {"session_id": _STR})["session_id"])

    async def ev_list_agents(self, sid: str, data: Payload) -> Any:
        _fields(data, {})
        with self._reading("list_agent_cards"):
            return self.store.list_agent_cards()

    async def ev_get_agent(self, sid: str, data: Payload) -> Any:
        agent_id = _fields(data, {"agent_id": _STR})["agent_id"]
        with self._reading("get_agent_card"):
            card = self.store.get_agent_card(agent_id)
        if card is None:
            raise NotFound(f"no agent {agent_id!r:.80}")
        return card

    async def ev_create_context(self, sid: str, data: Payload) -> Any:
        f = _fields(data, {"session_id": _STR, "data": _DICT}, {"context_id": _STR})
        async with self._writing():
            context, _, offset = await self.store.aio.outcome("create_shared_context", **f)
            await self._emit_to_session("context_updated", context, context["session_id"], offset, skip_sid=sid)
        return context

    async def ev_update_context(self, sid: str, data: Payload) -> Any:
        f = _fields(data, {"context_id": _STR, "data": _DICT}, {"expected_version": _INT})
        async with self._writing():
            context, _, offset = await self.store.aio.outcome("update_shared_context", **f)
            await self._emit_to_session("context_updated", context, context["session_id"], offset, skip_sid=sid)
        return context

    async def ev_list_contexts(self, sid: str, data: Payload) -> Any:
        f = _fields(data, {"session_id": _STR})
        self._session(f["session_id"])
        with self._reading("list_session_contexts"):
            return self.store.list_session_contexts(f["session_id"])

    async def ev_create_task(self, sid: str, data: Payload) -> Any:
        f = _fields(
            data,
            {"context_id": _STR},
            {"id": _STR, "status": _DICT, "artifacts": _LIST, "history": _LIST, "metadata": _DICT},
        )
        async with self._writing():
            task, _, offset = await self.store.aio.outcome("create_task", f)
            await self._emit_to_session("task_updated", task, task["context_id"], offset, skip_sid=sid)
        return task

    async def ev_update_task(self, sid: str, data: Payload) -> Any:
        f = _fields(
            data,
            {"task_id": _STR},
            {"state": _STR, "status_message": _ANY, "artifacts": _LIST, "metadata": _DICT},
        )
        async with self._writing():
            task, _, offset = await self.store.aio.outcome("update_task", **f)
            await self._emit_to_session("task_updated", task, task["context_id"], offset, skip_sid=sid)
        return task

    async def ev_get_task(self, sid: str, data: Payload) -> Any:
        task_id = _fields(data, {"task_id": _STR})["task_id"]
        with self._reading("get_task"):
            task = self.store.get_task(task_id)
        if task is None:
            raise NotFound(f"no task {task_id!r:.80}")
        return task

    async def ev_list_tasks(self, sid: str, data: Payload) -> Any:
        f = _fields(data, {}, {"context_id": _STR, "state": _STR, "limit": _INT, "cursor": _STR})
        with self._reading("list_tasks"):
            return self.store.list_tasks(**f)


class _EndAbandonedPolls:
    """ASGI wrapper that ends an engine.io long-poll (GET) when its client goes away.

    engine.io answers a poll when it has a packet or after its ping interval
    plus timeout (45 s), and never reads from the request meanwhile, so the
    poll of a client that closed (or vanished) holds a task that long, and
    uvicorn's shutdown waits for it. Listening for ``http.disconnect`` once
    the request body is read, and cancelling the poll before it has started
    a response, frees it at once; nothing queued for the client is lost.
    """

    def __init__(self, app: Any, path: str = "/socket.io/") -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET" or not scope["path"].startswith(self.path):
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()
        started = abandoned = False

        async def app_receive() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                body_read.set()
            return message

        async def app_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        poll = asyncio.ensure_future(self.app(scope, app_receive, app_send))

        async def watch() -> None:
            await body_read.wait()
            while (await receive())["type"] != "http.disconnect":
                pass
            nonlocal abandoned
            if not started:
                abandoned = True
                poll.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await poll
        except asyncio.CancelledError:
            if not abandoned:
                raise  # this request itself was cancelled, not just the poll
        finally:
            watcher.cancel()


def _build(
    store: Store,
    *,
    token: str | None = None,
    recovery_window: float = 120.0,
    max_http_buffer_size: int | None = None,
    close_store: bool = False,
) -> tuple[Any, Gateway]:
    from .http_api import create_http_app

    gateway = Gateway(
        store,
        token=token,
        recovery_window=recovery_window,
        max_http_buffer_size=max_http_buffer_size,
        close_store=close_store,
    )
    app = socketio.ASGIApp(gateway.sio, other_asgi_app=create_http_app(gateway))
    return _EndAbandonedPolls(app), gateway


def create_app(
    store: Store,
    *,
    token: str | None = None,
    recovery_window: float = 120.0,
    max_http_buffer_size: int | None = None,
    close_store: bool = False,
) -> Any:
    """Build the ASGI app: Socket.IO at ``/socket.io/``, the HTTP API everywhere else.

    :param store: an open store; the app does not close it unless *close_store*.
    :param token: when set, Socket.IO clients must connect with
        ``auth={"token": token}`` and HTTP requests (but ``/healthz``) must
        carry ``Authorization: Bearer <token>``.
    :param recovery_window: seconds a disconnected client's state is kept for
        connection state recovery (kept for it; see the module notes).
    :param max_http_buffer_size: engine.io's largest accepted packet; must
        sit above the store's ``max_message_size`` (default: far above it).
    :param close_store: close the store when the app shuts down (lifespan).
    :returns: the ASGI application; its ``Gateway`` is ``app.gateway``.
    :raises ValidationError: on bad arguments.
    """
    app, gateway = _build(
        store,
        token=token,
        recovery_window=recovery_window,
        max_http_buffer_size=max_http_buffer_size,
        close_store=close_store,
    )
    app.gateway = gateway
    return app


class _Server(uvicorn.Server):
    """uvicorn, but clients are drained before connections are closed.

    uvicorn closes websockets (and waits out long-polls) before the app's
    lifespan shutdown runs, which would drop the acks of writes in flight;
    draining first gets them committed and acked.
    """

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self._gateway = gateway

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if not self.force_exit:
            await self._gateway.drain()
        await super().shutdown(sockets)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    # uvicorn re-raises the signal it shut down on, after restoring the handler
    # it found; with the default handler the process would die of SIGTERM after
    # a clean shutdown. Exiting here lets the finally blocks close the store.
    raise SystemExit(0)


def serve(
    *,
    db_path: str,
    backend: str = "lmdb",
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    durability: str = "full",
    recovery_window: float = 120.0,
    log_level: str = "info",
) -> None:
    """Open the store at *db_path* and serve the gateway on it until SIGINT or SIGTERM.

    On a signal: new writes are refused, writes in flight are committed and
    acked, clients are disconnected (they reconnect to the next server), then
    the store is closed after its writer's last commit.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    store = open_store(db_path, backend=backend, durability=durability)
    try:
        store.init_database()
        app, gateway = _build(store, token=token, recovery_window=recovery_window, close_store=True)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            lifespan="on",
            # uvicorn's own websocket frame limit must not undercut engine.io's.
            ws_max_size=max(16 * 1024 * 1024, gateway.max_http_buffer_size + 64 * 1024),
            timeout_graceful_shutdown=int(SHUTDOWN_DRAIN_SECONDS),
        )
        _Server(config, gateway).run()
    finally:
        store.close()
