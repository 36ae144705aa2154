"""What the gateway does, whichever transport asked: the Socket.IO events and the HTTP API both call it.

Writes are awaited on the store's group-commit writer (``store.aio``), and
what a write logged as a room event is then broadcast to the session's
clients, so every client either sees a write or was not in the room when it
committed. Reads are microseconds and run inline, timed for the metrics.

Writes in flight are counted: :meth:`ChatService.drain` refuses new ones and
waits for those, so a shutdown acks every write it accepted.

The transports authorize a caller before calling (:mod:`.auth`); listings
take a ``visible`` test and return only what it passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Protocol

from ..errors import NotFound, StoreClosed
from ..metrics import Metrics
from ..store import Store
from .auth import Principal, check_through
from .fanout import Fanout

__all__ = ["Broadcaster", "ChatService", "Record"]

logger = logging.getLogger("chatmdb.gateway")

Record = dict[str, Any]


class Broadcaster(Protocol):
    """Sends a room event to the clients of a session (the Socket.IO server)."""

    async def emit_room_event(
        self, event: str, data: Record, session_id: str, offset: int | None, skip_sid: str | None = None
    ) -> None: ...


class _InFlight:
    """The count of writes in flight; entering refuses a write once draining.

    A plain context manager: entering and leaving never wait, so a write
    pays no extra await for being counted.
    """

    def __init__(self) -> None:
        self.accepting = True
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def __enter__(self) -> None:
        if not self.accepting:
            raise StoreClosed("the server is shutting down", hint="retry after it restarts")
        self.count += 1
        self.idle.clear()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.count -= 1
        if self.count == 0:
            self.idle.set()


class ChatService:
    """Reads, and writes that broadcast what they logged, on one store.

    *origin*, where a write takes one, is the Socket.IO sid of the client
    whose request caused it: it has the record in its ack and is not sent
    the broadcast.
    """

    def __init__(self, store: Store, metrics: Metrics, broadcaster: Broadcaster, fanout: Fanout | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self._broadcaster = broadcaster
        # With several workers, every room event reaches clients through the
        # store's event log (the fanout), in offset order, on every worker.
        self._fanout = fanout
        self._in_flight = _InFlight()
        # Bound once: a labelled child costs a dict lookup and a lock per call.
        self._written = {via: metrics.messages_written.labels(via) for via in ("socketio", "http")}

    # -- reads ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reading(self, op: str) -> Iterator[None]:
        """Time a read as *op* in the metrics."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.metrics.read_seconds.labels(op).observe(time.perf_counter() - started)

    def find(self, lookup: Callable[[str], Record | None], key: str, what: str) -> Record:
        """The record ``lookup(key)`` returns, timed under the lookup's name; :class:`NotFound` for None."""
        with self.reading(lookup.__name__):
            record = lookup(key)
        if record is None:
            raise NotFound(f"no {what} {key!r:.80}")
        return record

    def session(self, session_id: str) -> Record:
        """The session, or :class:`NotFound`."""
        return self.find(self.store.get_session, session_id, "session")

    async def sessions(self, principal: Principal, limit: int, cursor: str | None) -> list[Record]:
        """A page of the sessions *principal* may read, newest first (``cursor``: the last id of the
        previous page). One confined to some sessions is listed through its grants, off the event
        loop, so it costs what it may see, not what the store holds. This method is a coroutine.
        """
        if principal.reads_all:
            with self.reading("list_sessions"):
                return self.store.list_sessions(limit=limit, cursor=cursor)
        if cursor is not None:
            principal.check_read(cursor)
        with self.reading("list_sessions"):
            return await asyncio.to_thread(self.store.list_sessions_named, *principal.readable, limit, cursor)

    def session_of(self, kind: str, key: str) -> str:
        """The session of a ``context``, ``task`` or ``message``; :class:`NotFound` for an unknown one."""
        if kind == "context":
            return str(self.context(key)["session_id"])
        if kind == "task":
            return str(self.task(key)["context_id"])
        if kind == "message":
            return str(self.message(key)["session_id"])
        raise ValueError(f"no record kind {kind!r} names a session")

    def messages(self, session_id: str, *, cursor: str | int | None, limit: int, direction: str, skip: int) -> Record:
        """A page of a known session's messages: ``{"items", "pagination"}``; :class:`NotFound` for no session."""
        self.session(session_id)
        with self.reading("get_session_messages"):
            page = self.store.get_session_messages(
                session_id, skip=skip, limit=limit, cursor=cursor, direction=direction, include_total=True
            )
        assert isinstance(page, dict)
        return page

    def messages_after(self, session_id: str, after_seq: int, limit: int) -> tuple[list[Record], bool]:
        with self.reading("get_messages_after"):
            return self.store.get_messages_after(session_id, after_seq, limit=limit)

    def message(self, message_uuid: str) -> Record:
        return self.find(self.store.get_message, message_uuid, "message")

    def agents(self) -> list[Record]:
        with self.reading("list_agent_cards"):
            return self.store.list_agent_cards()

    def agent(self, agent_id: str) -> Record:
        return self.find(self.store.get_agent_card, agent_id, "agent")

    def contexts(self, session_id: str) -> list[Record]:
        """A known session's shared contexts; :class:`NotFound` for no session."""
        self.session(session_id)
        with self.reading("list_session_contexts"):
            return self.store.list_session_contexts(session_id)

    def context(self, context_id: str) -> Record:
        return self.find(self.store.get_shared_context, context_id, "context")

    def task(self, task_id: str) -> Record:
        return self.find(self.store.get_task, task_id, "task")

    async def tasks(
        self, principal: Principal, context_id: str | None, state: str | None, limit: int, cursor: str | None
    ) -> list[Record]:
        """A page of the tasks *principal* may read, of one session (*context_id*) or of all it may
        read, newest status change first, as :meth:`sessions` confines them. This method is a coroutine."""
        if context_id is not None:
            principal.check_read(context_id)
        if cursor is not None:
            check_through(principal, "read", "task", cursor, self.session_of)
        if principal.reads_all or context_id is not None:
            with self.reading("list_tasks"):
                return self.store.list_tasks(context_id=context_id, state=state, limit=limit, cursor=cursor)
        with self.reading("list_tasks"):
            return await asyncio.to_thread(self.store.list_tasks_named, *principal.readable, state, limit, cursor)

    # -- writes -----------------------------------------------------------------------------

    async def create_session(
        self, title: str | None = None, session_id: str | None = None, metadata: Record | None = None
    ) -> Record:
        """Create a session and return it. This method is a coroutine."""
        with self._in_flight:
            session: Record = await self.store.aio.create_session(title=title, session_id=session_id, metadata=metadata)
        return session

    async def post_message(self, record: Record, via: str, origin: str | None = None) -> tuple[Record, bool]:
        """Store a message, then broadcast it to its session if this call stored it.

        Returns ``(message, created)``; ``created`` is False for a retry of a
        stored ``message_uuid``, which broadcasts nothing. *via* labels the
        metrics (``socketio``, ``http``). This method is a coroutine.
        """
        with self._in_flight:
            message, created, offset = await self.store.aio.create_message_outcome(record, origin)
            if created:
                written = self._written.get(via) or self.metrics.messages_written.labels(via)
                written.inc()
                await self._broadcast("message", message, message["session_id"], offset, origin)
        return message, created

    async def create_context(
        self, session_id: str, data: Record, context_id: str | None = None, origin: str | None = None
    ) -> Record:
        """Create a shared context and broadcast it. This method is a coroutine."""
        with self._in_flight:
            context, _, offset = await self.store.aio.create_shared_context_outcome(session_id, data, context_id, origin)
            await self._broadcast("context_updated", context, context["session_id"], offset, origin)
        return context

    async def update_context(
        self, context_id: str, data: Record, expected_version: int | None = None, origin: str | None = None
    ) -> Record:
        """Replace a shared context's data and broadcast it. This method is a coroutine."""
        with self._in_flight:
            context, _, offset = await self.store.aio.update_shared_context_outcome(
                context_id, data, expected_version, origin
            )
            await self._broadcast("context_updated", context, context["session_id"], offset, origin)
        return context

    async def create_task(self, task: Record, origin: str | None = None) -> Record:
        """Create an A2A task (its ``context_id`` names a session) and broadcast it. This method is a coroutine."""
        with self._in_flight:
            created, _, offset = await self.store.aio.create_task_outcome(task, origin)
            await self._broadcast("task_updated", created, created["context_id"], offset, origin)
        return created

    async def update_task(
        self,
        task_id: str,
        state: str | None = None,
        status_message: Any = None,
        artifacts: list[Any] | None = None,
        metadata: Record | None = None,
        origin: str | None = None,
    ) -> Record:
        """Change a task and broadcast it. This method is a coroutine."""
        with self._in_flight:
            task, _, offset = await self.store.aio.update_task_outcome(
                task_id, state=state, status_message=status_message, artifacts=artifacts, metadata=metadata, origin=origin
            )
            await self._broadcast("task_updated", task, task["context_id"], offset, origin)
        return task

    async def _broadcast(
        self, event: str, data: Record, session_id: str, offset: int | None, origin: str | None
    ) -> None:
        """Send a room event to every client of a session but *origin*; *offset* is for recovery."""
        if self._fanout is not None:
            self._fanout.committed()
            return
        try:
            await self._broadcaster.emit_room_event(event, data, session_id, offset, skip_sid=origin)
        except Exception:
            # The write is committed and acked; a failed fan-out must not turn
            # that into an error for the writer. Clients catch up with join.
            logger.exception("emitting %s to session %r failed", event, session_id)

    # -- shutdown -----------------------------------------------------------------------------

    async def drain(self, timeout: float) -> None:
        """Refuse new writes and wait, at most *timeout* seconds, for those in flight. This method is a coroutine."""
        self._in_flight.accepting = False
        try:
            await asyncio.wait_for(self._in_flight.idle.wait(), timeout)
        except TimeoutError:
            logger.warning("%d write(s) still in flight after %.0f s of shutdown", self._in_flight.count, timeout)
