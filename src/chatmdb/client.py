"""A Socket.IO client for agents: at-least-once sends, exactly-once in-order delivery.

:class:`ChatClient` wraps python-socketio's ``AsyncClient``:

* :meth:`ChatClient.send_message` resends with the same ``message_uuid`` until
  the gateway acknowledges the commit, across timeouts, disconnections and
  server restarts; the gateway stores a uuid once, so retries never duplicate.
* Every message of the sessions the client joined reaches the application's
  ``on_message`` callback exactly once and in ``seq`` order, its own included:
  duplicates (retries, replays) are dropped by ``seq`` and gaps are filled
  from history before anything past them is handed over.
* After a reconnect it asks for connection state recovery with the last event
  offset it saw; when the server cannot recover the connection, it re-joins
  each session with ``after_seq`` and pages in what it missed.

Example::

    async def show(message):
        print(message["seq"], message["content"])

    client = ChatClient("http://127.0.0.1:8000", on_message=show)
    await client.connect()
    await client.join(session_id)
    await client.send_message(session_id, "hello")
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

from .errors import ChatMDBError
from .store.rules import new_uuid

__all__ = ["ChatClient", "ChatClientError"]

MessageHandler = Callable[[dict[str, Any]], Awaitable[None] | None]
EventHandler = Callable[[str, dict[str, Any]], Awaitable[None] | None]

# Errors that a later attempt can get past: the server was shutting down or failed.
_RETRYABLE = {"internal"}
_ROOM_EVENTS = ("message", "context_updated", "task_updated")


class ChatClientError(ChatMDBError):
    """The gateway answered a request with an error; ``code`` is its error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Socket(socketio.AsyncClient):  # type: ignore[misc]
    """An AsyncClient that reports the CONNECT reply, whose ``pid`` it would drop."""

    def __init__(self, on_connect_packet: Callable[[dict[str, Any]], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_connect_packet = on_connect_packet

    async def _handle_connect(self, namespace: str | None, data: Any) -> None:
        if (namespace or "/") == "/" and isinstance(data, dict):
            self._on_connect_packet(data)
        await super()._handle_connect(namespace, data)


class ChatClient:
    """An agent's connection to a chatmdb gateway."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        on_message: MessageHandler | None = None,
        on_event: EventHandler | None = None,
        ack_timeout: float = 5.0,
        send_deadline: float = 300.0,
        transports: list[str] | None = None,
        page_size: int = 500,
    ) -> None:
        self.url = url
        self.token = token
        self.on_message = on_message
        self.on_event = on_event
        self.ack_timeout = ack_timeout
        self.send_deadline = send_deadline
        self.page_size = page_size
        self.transports = transports or ["websocket"]
        self.recovered = False
        self.last_offset: str | None = None
        self.sessions: dict[str, int] = {}  # joined session id -> last seq delivered
        # Messages delivered from history pages rather than from the server's own events (live,
        # replayed on recovery, or a join's missed list): a gap the server left, or more than a join held.
        self.filled = 0
        self._pid: str | None = None
        self._pending_pid: str | None = None
        self._connected = asyncio.Event()
        self._deliver_lock = asyncio.Lock()
        self._resync_task: asyncio.Task[None] | None = None
        self._closing = False
        self.sio = _Socket(
            self._connect_packet,
            reconnection=True,
            reconnection_attempts=0,
            reconnection_delay=0.2,
            reconnection_delay_max=2.0,
        )
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        for event in _ROOM_EVENTS:
            self.sio.on(event, self._room_handler(event))

    # -- connection -------------------------------------------------------------------

    def _auth(self) -> dict[str, Any]:
        auth: dict[str, Any] = {}
        if self.token:
            auth["token"] = self.token
        if self._pid:
            auth["pid"] = self._pid
            if self.last_offset is not None:
                auth["offset"] = self.last_offset
        return auth

    def _connect_packet(self, data: dict[str, Any]) -> None:
        self._pending_pid = data.get("pid") if isinstance(data.get("pid"), str) else None

    async def connect(self, timeout: float = 30.0) -> None:
        """Connect, retrying until *timeout* seconds pass. This method is a coroutine."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await self.sio.connect(
                    self.url, auth=self._auth, transports=self.transports, wait_timeout=max(1.0, deadline - loop.time())
                )
                break
            except socketio.exceptions.ConnectionError:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.2)
        await asyncio.wait_for(self._connected.wait(), max(0.1, deadline - loop.time()))

    async def close(self) -> None:
        """Disconnect for good. This method is a coroutine."""
        self._closing = True
        if self._resync_task is not None:
            self._resync_task.cancel()
        await self.sio.disconnect()

    async def _on_connect(self) -> None:
        previous, self._pid = self._pid, self._pending_pid
        self.recovered = previous is not None and previous == self._pid
        self._connected.set()
        if not self.recovered and self.sessions:
            # Not recovered: the server forgot our rooms; rejoin and page in what we missed.
            self._resync_task = asyncio.create_task(self._resync())

    async def _on_disconnect(self, *reason: Any) -> None:
        self._connected.clear()

    async def wait_connected(self, timeout: float) -> None:
        """Wait until connected (after a reconnect). This method is a coroutine."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    # -- requests -----------------------------------------------------------------------

    async def call(self, event: str, payload: dict[str, Any], timeout: float | None = None) -> Any:
        """Send one request and return its ``data``; raise ChatClientError on an error ack.

        This method is a coroutine.
        """
        ack = await self.sio.call(event, payload, timeout=timeout or self.ack_timeout)
        if not isinstance(ack, dict) or "ok" not in ack:
            raise ChatClientError("internal", f"unexpected answer to {event}: {ack!r:.100}")
        if not ack["ok"]:
            error = ack.get("error") or {}
            raise ChatClientError(str(error.get("code", "internal")), str(error.get("message", "")))
        return ack.get("data")

    async def create_session(self, title: str | None = None, **fields: Any) -> dict[str, Any]:
        """Create a session. This method is a coroutine."""
        result: dict[str, Any] = await self.call("create_session", {"title": title, **fields})
        return result

    async def join(self, session_id: str, after_seq: int | None = None) -> dict[str, Any]:
        """Join a session's room and deliver what came after *after_seq*. This method is a coroutine.

        Without *after_seq*, delivery starts with the next message.
        """
        request: dict[str, Any] = {"session_id": session_id}
        if after_seq is not None:
            request["after_seq"] = after_seq
        data = await self.call("join", request)
        session = data["session"]
        async with self._deliver_lock:
            if session_id not in self.sessions:
                self.sessions[session_id] = session["message_count"] if after_seq is None else after_seq
        if after_seq is not None:
            await self._deliver_batch(session_id, data["missed"])
            if data.get("has_more"):
                await self._fill(session_id)
        result: dict[str, Any] = session
        return result

    async def leave(self, session_id: str) -> None:
        """Leave a session's room. This method is a coroutine."""
        await self.call("leave", {"session_id": session_id})
        self.sessions.pop(session_id, None)

    async def send_message(
        self, session_id: str, content: Any, *, message_uuid: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Send a message and return the stored record once the gateway committed it.

        Resends with the same ``message_uuid`` across timeouts, disconnections
        and server restarts until ``send_deadline`` seconds pass (then raises
        TimeoutError); the gateway stores it once. Errors about the message
        itself (invalid, not_found, too_large, conflict) raise ChatClientError
        at once. This method is a coroutine.
        """
        payload = {**fields, "session_id": session_id, "content": content, "message_uuid": message_uuid or new_uuid()}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.send_deadline
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"message {payload['message_uuid']} was not acknowledged in {self.send_deadline}s")
            try:
                if not self._connected.is_set():
                    await asyncio.wait_for(self._connected.wait(), remaining)
                    continue
                message: dict[str, Any] = await self.call("send_message", payload, timeout=min(self.ack_timeout, remaining))
            except ChatClientError as exc:
                if exc.code not in _RETRYABLE:
                    raise
                await asyncio.sleep(0.1)
                continue
            except (TimeoutError, socketio.exceptions.SocketIOError):
                await asyncio.sleep(0.05)
                continue
            if session_id in self.sessions:
                await self._deliver_batch(session_id, [message])
            return message

    # -- delivery --------------------------------------------------------------------------

    def _room_handler(self, event: str) -> Callable[..., Awaitable[None]]:
        async def handler(data: Any = None, *extra: Any) -> None:
            # The gateway appends the event's offset as the last argument; the
            # application never sees it.
            if extra and isinstance(extra[-1], str):
                self.last_offset = extra[-1]
            if not isinstance(data, dict):
                return
            if event == "message":
                session_id = data.get("session_id")
                if isinstance(session_id, str) and session_id in self.sessions:
                    await self._deliver_batch(session_id, [data])
            elif self.on_event is not None:
                await _maybe_await(self.on_event(event, data))

        return handler

    async def _deliver_batch(self, session_id: str, messages: list[dict[str, Any]]) -> None:
        for message in sorted(messages, key=lambda m: int(m.get("seq", 0))):
            await self._deliver(session_id, message)

    async def _deliver(self, session_id: str, message: dict[str, Any]) -> None:
        seq = message.get("seq")
        if not isinstance(seq, int):
            return
        async with self._deliver_lock:
            last = self.sessions.get(session_id)
            if last is None or seq <= last:
                return  # a duplicate from a retry or a replay
            if seq > last + 1:
                # A gap: something was missed. Page it in from history first.
                await self._fill_locked(session_id, upto=seq - 1)
                last = self.sessions[session_id]
                if seq <= last:
                    return
            self.sessions[session_id] = seq
            if self.on_message is not None:
                await _maybe_await(self.on_message(message))

    async def _fill(self, session_id: str) -> None:
        async with self._deliver_lock:
            await self._fill_locked(session_id, upto=None)

    async def _fill_locked(self, session_id: str, upto: int | None) -> None:
        for _ in range(100_000):
            last = self.sessions[session_id]
            if upto is not None and last >= upto:
                return
            page = await self.call(
                "get_messages",
                {"session_id": session_id, "cursor": str(last), "direction": "asc", "limit": self.page_size},
            )
            items = page["items"]
            for message in items:
                if message["seq"] == self.sessions[session_id] + 1:
                    self.sessions[session_id] = message["seq"]
                    self.filled += 1
                    if self.on_message is not None:
                        await _maybe_await(self.on_message(message))
            if not items or "next_cursor" not in page["pagination"]:
                return

    async def _resync(self) -> None:
        for session_id in list(self.sessions):
            for _ in range(50):
                try:
                    data = await self.call("join", {"session_id": session_id, "after_seq": self.sessions[session_id]})
                    await self._deliver_batch(session_id, data["missed"])
                    if data.get("has_more"):
                        await self._fill(session_id)
                    break
                except (TimeoutError, socketio.exceptions.SocketIOError, ChatClientError):
                    if self._closing:
                        return
                    await asyncio.sleep(0.2)


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result
