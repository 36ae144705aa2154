"""Room events across gateway workers: each worker tails the store's event log.

With ``chatmdb serve --workers N``, N processes serve one port and share one
database, and a client's session may have members on every worker. No
broker is needed on one machine: every room event is already logged, in
the write's own transaction, in the store-wide event log (``event_order``:
offset -> session, event, record, origin). Each worker reads that log from
its last offset, in order, and sends each event to its own clients in the
session's room, except the client whose request caused it (the event's
origin). A worker's own writes go through the same path, so the clients of
every worker see a session's events in offset order, exactly once.

A worker that commits wakes the others with a datagram on a Unix socket of
the abstract namespace (named after the database and the worker's index,
so a restarted worker gets the same name); a short poll catches whatever a
lost wake-up missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
from typing import Final

from ..store import Store
from .recovery import RecoveringServer, room

__all__ = ["Fanout"]

logger = logging.getLogger("chatmdb.gateway")

PAGE: Final = 500  # events read at once
POLL_SECONDS: Final = 0.05  # the longest a missed wake-up can delay an event


def _address(store: Store, index: int) -> str:
    digest = hashlib.sha256(os.path.realpath(store.path).encode()).hexdigest()[:24]
    return f"\0chatmdb-{digest}-{index}"


class Fanout:
    """Sends this worker's clients the room events of the store-wide log, from where it starts."""

    def __init__(self, store: Store, server: RecoveringServer, *, index: int, workers: int) -> None:
        self._store = store
        self._server = server
        self.cursor = store.last_event_offset()  # events before this worker started are not live
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._sock.bind(_address(store, index))
        self._peers = [_address(store, i) for i in range(workers) if i != index]

    async def start(self) -> None:
        """Start tailing. This method is a coroutine."""
        asyncio.get_running_loop().add_reader(self._sock.fileno(), self._on_datagram)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Deliver what is logged, then stop. This method is a coroutine."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self.deliver()
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()

    def committed(self) -> None:
        """A write of this worker logged a room event: deliver it here, and wake the other workers."""
        self._wake.set()
        for peer in self._peers:
            with contextlib.suppress(OSError):  # a peer that is not running (yet): it polls
                self._sock.sendto(b"!", peer)

    def _on_datagram(self) -> None:
        with contextlib.suppress(OSError):
            while self._sock.recv(64):
                pass
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            self._wake.clear()
            try:
                await self.deliver()
            except Exception:  # the tail must outlive any one failure, or this worker goes quiet
                logger.exception("delivering room events failed; retrying")

    def _has_members(self, session_id: str) -> bool:
        return bool(self._server.manager.rooms.get("/", {}).get(room(session_id)))

    async def deliver(self) -> None:
        """Send every event logged since the last delivery, in offset order. This method is a coroutine."""
        server = self._server
        while True:
            before = self.cursor
            # Only sessions with a client of this worker: the others' records are not even read.
            events, last = self._store.events_after(before, PAGE, self._has_members)
            if last == before:
                return
            for offset, session_id, event, record, origin in events:
                self.cursor = offset  # per event: a delivery cut short resumes after the last sent
                try:
                    await server.emit_room_event(event, record, session_id, offset, skip_sid=origin)
                except Exception:
                    logger.exception("emitting %s to session %r failed", event, session_id)
            self.cursor = last  # past superseded and deleted ones too
