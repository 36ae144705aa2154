"""Limits that keep one client from hurting the others, at the Socket.IO layer.

:class:`GuardedServer` is the recovering Socket.IO server with the gateway's
per-connection and server-wide limits (:class:`Limits`): a connection cap, a
deadline to join namespace ``/``, a token check before anything of a
recovery is touched and a bound on refused attempts, no binary packets, a
bound on the bytes queued for a client that does not read, and a rate of
events per connection. Each limit reached is counted (``on_limit``) and, for
events, answered with a ``rate_limited`` ack.

It also holds each connection's :class:`~.auth.Principal`: set when its
CONNECT is admitted, replaced by a ``refresh``, and dropped when it
disconnects, when its token expires (one timer per connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from socketio import packet

from ..errors import RateLimited, Unauthorized
from ..store import Store
from .auth import Authenticator, Principal
from .recovery import RecoveringServer, room

__all__ = ["GuardedServer", "Limits"]

logger = logging.getLogger("chatmdb.gateway")


def _limit(default: int | float, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Limits:
    """The gateway's limits, each protecting the other clients from one.

    ``chatmdb serve`` has a flag for each (``--max-connections`` ...), and
    ``/metrics`` counts each time one is reached (``chatmdb_limits_reached_total``).
    """

    max_connections: int = _limit(10_000, "Engine.IO connections at once; the next handshake is refused.")
    connect_timeout: float = _limit(20.0, "Seconds a transport may stay open without connecting to namespace /.")
    max_auth_failures: int = _limit(3, "Refused CONNECTs (a wrong token) on one transport before it is closed.")
    max_rooms: int = _limit(1_000, "Sessions one connection may be in at once; joining another is rate_limited.")
    events_per_second: float = _limit(500.0, "Events one connection may send per second, sustained...")
    event_burst: int = _limit(1_000, "...and at once; past them an event is answered rate_limited.")
    max_unsent_bytes: int = _limit(16 << 20, "Bytes queued for a client that does not read; past them it is dropped (it can recover).")
    max_attachments: int = _limit(10, "Binary attachments one packet may announce (chatmdb's events take none).")
    max_attachment_bytes: int = _limit(1 << 20, "Bytes of one packet's binary attachments.")

    def __post_init__(self) -> None:
        whole = ("max_connections", "max_auth_failures", "max_rooms", "event_burst", "max_unsent_bytes")
        for name in (*whole, "max_attachments", "max_attachment_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, not {value!r}")
        for name in ("connect_timeout", "events_per_second"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"{name} must be a number > 0, not {value!r}")


_BINARY_KINDS: Final = (str(packet.BINARY_EVENT), str(packet.BINARY_ACK))
_DISCONNECT: Final = str(packet.DISCONNECT)


def _announced(header: str) -> int | None:
    """The attachment count a binary packet's header announces ("51-[...]": 1), or None."""
    digits = header[1 : header.find("-")] if "-" in header else ""
    return int(digits) if digits.isascii() and digits.isdigit() and len(digits) < 10 else None


def _size(item: Any) -> int:
    data = getattr(item, "data", None)
    return len(data) if isinstance(data, (str, bytes)) else 1


class _SendQueue(asyncio.Queue[Any]):
    """An engine.io socket's queue of packets to send, bounded in bytes.

    Past the bound, the packet is dropped and ``overflow`` is called once: the
    connection is then closed (it can recover later). One packet is always
    accepted into an empty queue, whatever its size.
    """

    def __init__(self, limit: int, overflow: Callable[[_SendQueue], None]) -> None:
        super().__init__()
        self.bytes = 0
        self.over = False
        self._limit = limit
        self._overflow = overflow

    def put_nowait(self, item: Any) -> None:
        if item is None:  # the sentinel that ends a transport's writer: always delivered
            super().put_nowait(item)
            return
        if self.over:
            return
        size = _size(item)
        if self.bytes + size > self._limit and self.qsize() > 0:
            self.over = True
            self._overflow(self)
            return
        self.bytes += size
        super().put_nowait(item)

    def get_nowait(self) -> Any:
        item = super().get_nowait()
        self.bytes -= _size(item)
        return item

    def discard(self) -> None:
        """Drop every queued packet (their client is gone) and release the transport's writer."""
        with contextlib.suppress(asyncio.QueueEmpty, ValueError):
            while True:
                self.get_nowait()
                self.task_done()
        super().put_nowait(None)


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float) -> None:
        self.tokens = tokens
        self.stamp = time.monotonic()


class GuardedServer(RecoveringServer):
    """The recovering Socket.IO server of the gateway, with its limits.

    :param authenticator: checks the ``auth.token`` of every CONNECT, before
        anything else, recovery included.
    :param on_limit: called with a limit's name each time one is reached.
    """

    def __init__(
        self,
        store: Store,
        window: float,
        *,
        authenticator: Authenticator,
        limits: Limits,
        on_limit: Callable[[str], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(store, window, **kwargs)
        self.authenticator = authenticator
        self.principals: dict[str, Principal] = {}  # sid -> who it acts for
        self._admitted: dict[str, Principal] = {}  # eio sid -> the principal of its admitted CONNECT
        self._expiry: dict[str, asyncio.TimerHandle] = {}  # sid -> the disconnect at its token's exp
        self.limits = limits
        self._on_limit = on_limit
        self._auth_failures: dict[str, int] = {}  # eio sid -> refused CONNECTs
        self._attachment_bytes: dict[str, int] = {}  # eio sid -> bytes of a binary packet's attachments
        self._goodbyes: set[str] = set()  # eio sids that sent a Socket.IO DISCONNECT
        self._dropped: set[str] = set()  # eio sids closed for not reading
        self._buckets: dict[str, _Bucket] = {}  # sid -> its event allowance
        self._closing: set[asyncio.Task[None]] = set()  # transports being closed (held until done)
        self.eio.create_queue = self._create_queue

    # -- transports ------------------------------------------------------------------

    def _create_queue(self, *args: Any, **kwargs: Any) -> _SendQueue:
        return _SendQueue(self.limits.max_unsent_bytes, self._on_overflow)

    def _on_overflow(self, queue: _SendQueue) -> None:
        for eio_sid, sock in list(self.eio.sockets.items()):
            if sock.queue is queue:
                self._on_limit("unsent_bytes")
                logger.info("dropping a client that does not read: over %d unsent bytes", self.limits.max_unsent_bytes)
                self._dropped.add(eio_sid)
                self._close_soon(eio_sid)
                return

    async def close_transport(self, eio_sid: str, flush: float = 0.0) -> None:
        """Close a client's engine.io connection, discarding what is still queued for it.

        Unlike engine.io's own disconnect, this never waits on a client that
        does not read: at most *flush* seconds for the queue to be sent
        (a refusal the client should see). This method is a coroutine.
        """
        sock = self.eio.sockets.get(eio_sid)
        if sock is None:
            return
        deadline = time.monotonic() + flush
        while flush and not sock.closed and sock.queue.qsize() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        reason = self.reason.TRANSPORT_ERROR
        with contextlib.suppress(Exception):
            await sock.close(wait=False, abort=True, reason=reason)
        self.eio.sockets.pop(eio_sid, None)
        queue = sock.queue
        if isinstance(queue, _SendQueue):
            queue.discard()

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        if len(self.eio.sockets) > self.limits.max_connections:
            self._on_limit("connections")
            return "the server is at its connection limit; retry later"
        await super()._handle_eio_connect(eio_sid, environ)
        asyncio.get_running_loop().call_later(self.limits.connect_timeout, self._check_joined, eio_sid)
        return None

    def _check_joined(self, eio_sid: str) -> None:
        sock = self.eio.sockets.get(eio_sid)
        if sock is not None and not sock.closed and self.manager.sid_from_eio_sid(eio_sid, "/") is None:
            self._on_limit("connect_timeout")
            self._close_soon(eio_sid)

    def _close_soon(self, eio_sid: str) -> None:
        task = asyncio.ensure_future(self.close_transport(eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        pending = self._binary_packet.get(eio_sid)
        if pending is not None:
            await self._attachment(eio_sid, pending, data)
            return
        if not isinstance(data, str) or not data:
            # A binary frame that no binary packet announced: not Socket.IO.
            self._on_limit("binary")
            await self.close_transport(eio_sid)
            return
        kind = data[0]
        if kind in _BINARY_KINDS:
            # python-socketio buffers the attachments a binary packet announces,
            # however many; chatmdb's events carry none, so allow only a few.
            count = _announced(data)
            if count is None or not 1 <= count <= self.limits.max_attachments:
                self._on_limit("binary")
                await self.close_transport(eio_sid)
                return
        elif kind == _DISCONNECT:
            self._goodbyes.add(eio_sid)  # a deliberate goodbye: its state is not kept
        await super()._handle_eio_message(eio_sid, data)

    async def _attachment(self, eio_sid: str, pending: Any, data: Any) -> None:
        total = self._attachment_bytes.get(eio_sid, 0) + (len(data) if isinstance(data, (bytes, str)) else 0)
        if not isinstance(data, bytes) or total > self.limits.max_attachment_bytes:
            self._on_limit("binary")
            await self.close_transport(eio_sid)
            return
        self._attachment_bytes[eio_sid] = total
        try:
            await super()._handle_eio_message(eio_sid, data)
        except (IndexError, KeyError, TypeError, ValueError):
            # A placeholder that names no attachment: python-socketio would keep
            # the broken packet and take every later message as its attachment.
            self._binary_packet.pop(eio_sid, None)
            if pending.id is not None:
                error = {"ok": False, "error": {"code": "invalid", "message": "a binary placeholder names no attachment"}}
                await self._send_packet(
                    eio_sid, self.packet_class(packet.ACK, namespace=pending.namespace or "/", data=[error], id=pending.id)
                )
        if eio_sid not in self._binary_packet:
            self._attachment_bytes.pop(eio_sid, None)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any = None) -> None:
        sock = self.eio.sockets.get(eio_sid)
        if reason == self.reason.CLIENT_DISCONNECT and sock is not None:
            # The client closed its engine.io session; python-engineio would
            # hold its pending long-poll until the ping timeout. Answer it now.
            with contextlib.suppress(Exception):
                sock.queue.put_nowait(None)
        try:
            await super()._handle_eio_disconnect(eio_sid, reason)
        finally:
            self._auth_failures.pop(eio_sid, None)
            self._admitted.pop(eio_sid, None)
            self._attachment_bytes.pop(eio_sid, None)
            self._goodbyes.discard(eio_sid)
            self._dropped.discard(eio_sid)

    # -- connections -------------------------------------------------------------------

    async def admit(self, eio_sid: str, namespace: str, auth: Any) -> bool:
        try:
            principal = self.authenticator.authenticate(auth.get("token") if isinstance(auth, dict) else None)
        except Unauthorized as exc:
            refusal = str(exc)
        else:
            self._admitted[eio_sid] = principal
            return True
        await self._send_packet(
            eio_sid,
            self.packet_class(
                packet.CONNECT_ERROR,
                data={"message": "unauthorized", "data": {"code": "unauthorized", "message": refusal}},
                namespace=namespace,
            ),
        )
        failures = self._auth_failures.get(eio_sid, 0) + 1
        self._auth_failures[eio_sid] = failures
        if failures >= self.limits.max_auth_failures:
            self._on_limit("auth_failures")
            await self.close_transport(eio_sid, flush=1.0)  # the last refusal is sent, then the close
        return False

    def bind(self, sid: str, eio_sid: str | None = None, principal: Principal | None = None) -> Principal:
        """Make *principal* (by default, the one *eio_sid*'s CONNECT was admitted as) act for *sid*.

        Schedules the disconnect at its token's ``exp``, replacing any
        earlier one. Returns the principal.
        """
        if principal is None:
            principal = self._admitted.pop(eio_sid or "", None)
            if principal is None:  # not admitted: admit() runs before every connect handler
                raise Unauthorized("the connection was not admitted")
        self.principals[sid] = principal
        timer = self._expiry.pop(sid, None)
        if timer is not None:
            timer.cancel()
        if principal.expires_at is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, principal.expires_at - time.time())
            self._expiry[sid] = loop.call_at(loop.time() + delay, self._expire, sid)
        return principal

    def _expire(self, sid: str) -> None:
        self._expiry.pop(sid, None)
        principal = self.principals.get(sid)
        if principal is None or principal.expires_at is None:
            return
        if principal.expires_at > time.time():  # the loop's clock ran ahead of the wall clock
            self.bind(sid, principal=principal)
            return
        eio_sid = self.manager.eio_sid_from_sid(sid, "/")
        if eio_sid is None:
            self.released(sid)
            return
        logger.info("disconnecting %s: its token expired without a refresh", principal.sub)
        task = asyncio.ensure_future(self._end_expired(sid, eio_sid))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _end_expired(self, sid: str, eio_sid: str) -> None:
        # A goodbye from the server: the client is told (a Socket.IO
        # DISCONNECT, so it does not reconnect with the expired token), its
        # state is not kept for recovery, and closing the transport runs the
        # same clean-up as any disconnect. Its rooms are left first: no room
        # event is sent to it while the transport flushes and closes.
        self._goodbyes.add(eio_sid)
        for session_id in self.session_rooms(sid):
            await self.leave_room(sid, room(session_id))
        await self._send_packet(eio_sid, self.packet_class(packet.DISCONNECT, namespace="/"))
        await self.close_transport(eio_sid, flush=1.0)

    async def confine(self, sid: str, principal: Principal) -> list[str]:
        """Take *sid* out of the sessions *principal* may not read; return their ids. This method is a coroutine."""
        left = [session_id for session_id in self.session_rooms(sid) if not principal.can_read(session_id)]
        for session_id in left:
            await self.leave_room(sid, room(session_id))
        if left:
            await self.remember(sid)
        return left

    def owner(self, sid: str) -> str | None:
        principal = self.principals.get(sid)
        return None if principal is None else principal.sub

    def may_resume(self, eio_sid: str, state: dict[str, Any]) -> bool:
        # The pid is its client's secret, and a token of another sub that
        # learned it would get no more than that token's grants; still, it
        # must neither end that client's connection nor take over its state.
        if "owner" not in state:  # saved before owners were recorded
            return True
        admitted = self._admitted.get(eio_sid)
        return admitted is not None and admitted.sub == state["owner"]

    def may_rejoin(self, sid: str, session_id: str) -> bool:
        principal = self.principals.get(sid)
        return principal is not None and principal.can_read(session_id)

    def released(self, sid: str) -> None:
        self.principals.pop(sid, None)
        timer = self._expiry.pop(sid, None)
        if timer is not None:
            timer.cancel()

    def recoverable(self, eio_sid: str, reason: Any) -> bool:
        # As the JavaScript server decides: only a Socket.IO DISCONNECT packet
        # is a goodbye. python-engineio reports a client's engine.io close
        # (what the JS client sends when its polling transport is closed) as
        # a client disconnect too, but that is a lost transport.
        if eio_sid in self._goodbyes:
            return False
        if eio_sid in self._dropped:
            return True  # closed for not reading: it may come back and catch up
        if reason == self.reason.SERVER_DISCONNECT:
            return self.shutting_down
        return True

    async def _handle_disconnect(self, eio_sid: str, namespace: str | None, reason: Any = None) -> None:
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace or "/")
        try:
            await super()._handle_disconnect(eio_sid, namespace, reason)
        finally:
            if sid is not None:
                self._buckets.pop(sid, None)
                self.released(sid)

    # -- events ---------------------------------------------------------------------------

    def check_rate(self, sid: str) -> None:
        """Take one event from *sid*'s allowance; raise :class:`RateLimited` if it has none left."""
        limits = self.limits
        bucket = self._buckets.get(sid)
        if bucket is None:
            bucket = self._buckets[sid] = _Bucket(limits.event_burst)
        now = time.monotonic()
        bucket.tokens = min(limits.event_burst, bucket.tokens + (now - bucket.stamp) * limits.events_per_second)
        bucket.stamp = now
        if bucket.tokens < 1:
            self._on_limit("events_per_second")
            raise RateLimited(
                f"over {limits.events_per_second:g} events per second on this connection",
                hint="slow down and retry",
            )
        bucket.tokens -= 1

    async def enter_session(self, sid: str, session_id: str) -> None:
        rooms = self.manager.get_rooms(sid, "/")
        if room(session_id) not in rooms and len(rooms) - 1 >= self.limits.max_rooms:  # less the sid's own room
            self._on_limit("rooms")
            raise RateLimited(
                f"this connection is in {self.limits.max_rooms} sessions, the most allowed",
                hint="leave a session before joining another",
            )
        await super().enter_session(sid, session_id)

    async def wait_writable(self, eio_sid: str) -> None:
        # A replay waits while the client has half its allowance unread, so a
        # long catch-up is paced by the client instead of dropping it.
        sock = self.eio.sockets.get(eio_sid)
        queue = getattr(sock, "queue", None)
        deadline = time.monotonic() + self.limits.connect_timeout
        while isinstance(queue, _SendQueue) and queue.bytes > self.limits.max_unsent_bytes // 2:
            if time.monotonic() > deadline or queue.over:
                raise RateLimited("the client does not read its replay")
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)
