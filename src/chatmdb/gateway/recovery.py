"""Socket.IO connection state recovery, kept in the store so it survives restarts.

The protocol is the one the official JavaScript client (4.6+) speaks with the
JavaScript server:

* the CONNECT reply carries a private id next to the public one:
  ``40{"sid": ..., "pid": ...}``;
* every event sent to a room carries its offset, a string, as its last
  argument, and the client remembers the last one it saw;
* a reconnecting client sends ``{"pid", "offset"}`` in its CONNECT packet
  (merged into its auth); if the server still knows the pid, it restores the
  old sid and rooms, sends the missed room events in order, then the CONNECT
  reply with the same pid, and the client sets ``socket.recovered``.

python-socketio has no such feature (its issue #1258), and the JavaScript
server keeps this state in memory. Here the offsets are the store-wide room
event offsets that the store assigns in the transaction of each write, and
the state of each connection (pid -> sid, rooms, expiry) is a store record:
a client can recover across a restart of the server, even after SIGKILL.

A recovery that cannot be honoured (unknown or expired pid, malformed offset)
is an ordinary new connection with a new pid: the client sees ``recovered``
false and catches up with ``join {after_seq}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any

import socketio
from socketio import packet

from ..errors import ChatMDBError
from ..store import Store

logger = logging.getLogger("chatmdb.recovery")

ROOM_PREFIX = "session:"
# Room events replayed per recovery, at most; past this the client is told it
# was not recovered and pages the rest with join(after_seq).
MAX_REPLAY = 10_000
PURGE_INTERVAL = 30.0
# Replayed events sent between two looks at whether the client keeps up (and
# two turns of the event loop for everyone else).
REPLAY_SLICE = 100
# Seconds a recovered connection keeps skipping live events its replay already sent.
REPLAY_MEMORY = 10.0

_NO_OFFSET = object()


def room(session_id: str) -> str:
    """The Socket.IO room of a session: its clients get its events."""
    return ROOM_PREFIX + session_id


class _Manager(socketio.AsyncManager):  # type: ignore[misc]
    """A client manager that can hand a recovered connection its old sid."""

    def __init__(self) -> None:
        super().__init__()
        self.wanted_sid: dict[str, str] = {}  # eio sid -> sid to restore

    async def pre_connect(self, eio_sid: str, namespace: str) -> str | None:
        wanted = self.wanted_sid.pop(eio_sid, None)
        if wanted is None or self.is_connected(wanted, namespace) or self.eio_sid_from_sid(wanted, namespace):
            sid: str | None = await super().pre_connect(eio_sid, namespace)
            return sid
        # The same registration the base class makes, with the old sid.
        self.basic_enter_room(wanted, namespace, None, eio_sid=eio_sid)
        self.basic_enter_room(wanted, namespace, wanted, eio_sid=eio_sid)
        self.pending_connect.setdefault(namespace, []).append(wanted)
        return wanted


class RecoveringServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's AsyncServer with store-backed connection state recovery.

    ``window`` is how many seconds a disconnected client's state is kept
    (0 turns recovery off: no pid, no offsets). Room events must be sent with
    :meth:`emit_room_event`, which adds the offset.
    """

    def __init__(self, store: Store, window: float, **kwargs: Any) -> None:
        super().__init__(client_manager=_Manager(), **kwargs)
        self.store = store
        self.window = float(window)
        self.pids: dict[str, str] = {}  # connected sid -> its private id
        # Connections being recovered: live room events for them wait here,
        # so they arrive after the replay, in order, and never twice.
        self._replaying: dict[str, list[tuple[int, str, Any]]] = {}
        self._replayed_upto: dict[str, int] = {}
        self._base: dict[str, int] = {}  # sid -> the offset its connection started from
        self._recovering: dict[str, tuple[str, dict[str, Any]]] = {}  # sid -> (pid, state) mid-recovery
        self._purge_task: asyncio.Task[None] | None = None
        self.shutting_down = False

    @property
    def enabled(self) -> bool:
        return self.window > 0

    # -- lifecycle -----------------------------------------------------------------

    async def start_recovery(self) -> None:
        """Adopt the state a previous server left, and start purging. This method is a coroutine."""
        if not self.enabled:
            return
        now = time.time()
        # Connections saved while connected belong to a server that stopped
        # without seeing them go: their window starts now.
        await self.store.aio.expire_connections(now, orphan_expiry=now + self.window)
        self._purge_task = asyncio.create_task(self._purge_loop())

    async def stop_recovery(self) -> None:
        """Stop purging. This method is a coroutine."""
        if self._purge_task is not None:
            self._purge_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purge_task

    async def _purge_loop(self) -> None:
        # Often enough that expired states never outnumber one window's disconnects.
        interval = min(PURGE_INTERVAL, max(0.5, self.window / 2))
        while True:
            await asyncio.sleep(interval)
            try:
                removed = await self.store.aio.expire_connections(time.time())
                if removed:
                    logger.debug("purged %d expired connection states", removed)
            except ChatMDBError:
                logger.warning("purging expired connection states failed", exc_info=True)

    # -- emitting ----------------------------------------------------------------------

    async def emit_room_event(
        self, event: str, data: Any, session_id: str, offset: int | None, skip_sid: str | None = None
    ) -> None:
        """Send a room event with its offset as the last argument. This method is a coroutine."""
        to = room(session_id)
        if not self.enabled or offset is None:
            await self.emit(event, data, room=to, skip_sid=skip_sid)
            return
        skip = [skip_sid] if skip_sid else []
        if self._replaying or self._replayed_upto:
            for sid, _ in self.manager.get_participants("/", to):
                if sid in self._replaying:
                    self._replaying[sid].append((offset, event, data))
                    skip.append(sid)
                elif self._replayed_upto.get(sid, 0) >= offset:
                    skip.append(sid)  # already sent in its replay
        await self.emit(event, (data, str(offset)), room=to, skip_sid=skip or None)

    # -- connection state ----------------------------------------------------------------

    async def enter_session(self, sid: str, session_id: str) -> None:
        """Put a client in a session's room and save its rooms. This method is a coroutine."""
        await self.enter_room(sid, room(session_id))
        await self.remember(sid)

    async def leave_session(self, sid: str, session_id: str) -> None:
        """Take a client out of a session's room and save its rooms. This method is a coroutine."""
        await self.leave_room(sid, room(session_id))
        await self.remember(sid)

    async def remember(self, sid: str) -> None:
        """Save a connected client's rooms, so they survive a crash of this server.

        Call after the rooms of *sid* change. This method is a coroutine.
        """
        pid = self.pids.get(sid)
        if pid is None:
            return
        await self.store.aio.save_connection(pid, self._state(sid, expires_at=None))

    def session_rooms(self, sid: str) -> list[str]:
        """The ids of the sessions whose rooms *sid* is in."""
        return [
            r[len(ROOM_PREFIX) :]
            for r in self.manager.get_rooms(sid, "/")
            if isinstance(r, str) and r.startswith(ROOM_PREFIX)
        ]

    def _state(self, sid: str, expires_at: float | None) -> dict[str, Any]:
        rooms = self.session_rooms(sid)
        # Not the store's newest offset: an event committed but not yet sent to
        # this client would be skipped by a recovery without an offset (a client
        # that has received no room event sends none). Every event past the
        # offset the connection started from is one it may not have received.
        base = self._base.get(sid)
        return {
            "sid": sid,
            "rooms": rooms,
            "offset": self.store.last_event_offset() if base is None else base,
            "expires_at": expires_at,
            "owner": self.owner(sid),
        }

    # -- hooks for the gateway's limits ----------------------------------------------

    async def admit(self, eio_sid: str, namespace: str, auth: Any) -> bool:
        """Whether a CONNECT may go on; checked before recovery touches anything.

        A refusal must have answered the client. This method is a coroutine.
        """
        return True

    def owner(self, sid: str) -> str | None:
        """Who *sid* acts for, saved with its state: only the same one may recover it."""
        return None

    def may_resume(self, eio_sid: str, state: dict[str, Any]) -> bool:
        """Whether the CONNECT of *eio_sid*, just admitted, may take over the saved *state*.

        Called before the connection the state belongs to is replaced; a
        refusal leaves that connection, and its state, as they were.
        """
        return True

    def may_rejoin(self, sid: str, session_id: str) -> bool:
        """Whether a recovering *sid* gets session *session_id*'s room (and its missed events) back.

        Called after the connect handler accepted the connection, with the
        credential it presented this time.
        """
        return True

    def released(self, sid: str) -> None:
        """Forget *sid*: its connection was dropped before it completed."""

    def recoverable(self, eio_sid: str, reason: Any) -> bool:
        """Whether the connection that just went away keeps its state for recovery.

        Only a lost transport is recoverable: a client that said goodbye, or
        that the server sent away, starts afresh next time. A server shutting
        down is a lost transport as far as its clients can tell.
        """
        return reason != self.reason.CLIENT_DISCONNECT and (
            reason != self.reason.SERVER_DISCONNECT or self.shutting_down
        )

    async def wait_writable(self, eio_sid: str) -> None:
        """Pause a replay until the client can take more. This method is a coroutine."""
        await asyncio.sleep(0)

    # -- connection state -----------------------------------------------------------------

    async def _handle_disconnect(self, eio_sid: str, namespace: str | None, reason: Any = None) -> None:
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        pid = self.pids.pop(sid, None) if sid else None
        pending = self._recovering.pop(sid, None) if sid else None
        if pid is None and pending is not None and self.enabled:
            # Gone while its recovery was under way: put back the state the
            # recovery took, so the next attempt can still recover.
            self._replaying.pop(sid, None)
            self._replayed_upto.pop(sid, None)
            if self.recoverable(eio_sid, reason):
                with contextlib.suppress(ChatMDBError):
                    await self.store.aio.save_connection(pending[0], pending[1])
        if pid is not None and self.enabled:
            self._replaying.pop(sid, None)
            self._replayed_upto.pop(sid, None)
            try:
                if self.recoverable(eio_sid, reason):
                    state = self._state(sid, expires_at=time.time() + self.window)
                    await self.store.aio.save_connection(pid, state)
                else:
                    await self.store.aio.take_connection(pid)
            except ChatMDBError:
                logger.warning("could not save the state of connection %s", sid, exc_info=True)
        if sid:
            self._base.pop(sid, None)
        await super()._handle_disconnect(eio_sid, namespace, reason)

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        namespace = namespace or "/"
        if not await self.admit(eio_sid, namespace, data):
            return  # refused before any state was read, let alone consumed
        if not self.enabled or namespace != "/":
            await super()._handle_connect(eio_sid, namespace, data)
            return
        auth = dict(data) if isinstance(data, dict) else {}
        pid, offset = auth.pop("pid", None), auth.pop("offset", _NO_OFFSET)
        state = None
        if isinstance(pid, str) and 0 < len(pid) <= 64 and (offset is _NO_OFFSET or _is_offset(offset)):
            try:
                state = await self.store.aio.take_connection(pid)
            except ChatMDBError:
                state = None
            if state is not None and state.get("expires_at") is not None and state["expires_at"] < time.time():
                state = None
            if state is not None and not self.may_resume(eio_sid, state):
                # Another principal's connection: it is neither replaced nor
                # recovered, and its state stays for its own client.
                with contextlib.suppress(ChatMDBError):
                    await self.store.aio.save_connection(pid, state)
                state = None
        if state is not None:
            old_sid = state["sid"]
            if self.manager.is_connected(old_sid, "/"):
                # The old transport is not yet known to be gone; this one replaces it.
                await self.disconnect(old_sid)
            self.manager.wanted_sid[eio_sid] = old_sid
        else:
            pid = secrets.token_urlsafe(16)
        sid = await self.manager.pre_connect(eio_sid, namespace)
        self.manager.wanted_sid.pop(eio_sid, None)
        if sid is None:
            await self._send_packet(
                eio_sid, self.packet_class(packet.CONNECT_ERROR, data="Unable to connect", namespace=namespace)
            )
            return
        refusal: Any = None
        try:
            # The connect handler checks the token: on recovery too, always.
            accepted = await self._trigger_event("connect", namespace, sid, self.environ[eio_sid], auth or None)
        except socketio.exceptions.ConnectionRefusedError as exc:
            accepted, refusal = False, exc.error_args
        if accepted is False:
            await self._send_packet(
                eio_sid,
                self.packet_class(
                    packet.CONNECT_ERROR,
                    data=refusal or {"message": "Connection refused by server"},
                    namespace=namespace,
                ),
            )
            await self.manager.disconnect(sid, namespace, ignore_queue=True)
            return
        recovered = False
        base = self.store.last_event_offset()
        if state is not None and sid == state["sid"]:
            self._recovering[sid] = (pid, state)
            try:
                recovered = await self._replay(eio_sid, sid, state, None if offset is _NO_OFFSET else int(offset))
            finally:
                self._recovering.pop(sid, None)
            if recovered:
                base = self._replayed_upto.get(sid, base)
        if not recovered and state is not None:
            pid = secrets.token_urlsafe(16)
        if eio_sid not in self.eio.sockets:
            # The client went away while its connection was being set up.
            await self.manager.disconnect(sid, namespace, ignore_queue=True)
            self.released(sid)
            return
        self.pids[sid] = pid
        self._base[sid] = base
        await self._send_packet(
            eio_sid, self.packet_class(packet.CONNECT, {"sid": sid, "pid": pid}, namespace=namespace)
        )
        await self.manager.connect(sid, namespace)
        await self._flush(eio_sid, sid)
        with contextlib.suppress(ChatMDBError):
            await self.remember(sid)

    async def _replay(self, eio_sid: str, sid: str, state: dict[str, Any], offset: int | None) -> bool:
        """Rejoin the saved rooms and send the missed room events; False if impossible."""
        # Only the rooms the credential presented now still grants: a token
        # whose grants shrank gets neither the others' rooms nor their events.
        rooms = [r for r in state.get("rooms", []) if isinstance(r, str) and self.may_rejoin(sid, r)]
        after = offset if offset is not None else int(state.get("offset") or 0)
        # Enter the rooms and mark the connection before reading: a live event
        # emitted from now on waits in the buffer; one committed before the
        # read began is in the read; the flush drops the repeats by offset.
        self._replaying[sid] = []
        for session_id in rooms:
            self.manager.basic_enter_room(sid, "/", room(session_id))
        try:
            # In a thread: thousands of events must not hold up the other clients.
            events, more = await asyncio.to_thread(self.store.events_since, rooms, after, MAX_REPLAY)
        except ChatMDBError:
            events, more = [], True
        if more or sid not in self._replaying:  # too much, or the client left meanwhile
            # Too much to replay: start afresh; the client pages history instead.
            self._abandon(sid, rooms)
            return False
        last = after
        try:
            for i, (event_offset, _session_id, event, record) in enumerate(events):
                if i % REPLAY_SLICE == REPLAY_SLICE - 1:
                    await self.wait_writable(eio_sid)
                await self._send_packet(
                    eio_sid, self.packet_class(packet.EVENT, data=[event, record, str(event_offset)], namespace="/")
                )
                last = event_offset
        except ChatMDBError:  # the client does not read its replay
            self._abandon(sid, rooms)
            return False
        self._replayed_upto[sid] = last
        return True

    def _abandon(self, sid: str, rooms: list[str]) -> None:
        """Undo a replay that will not complete: out of its rooms, nothing buffered."""
        for session_id in rooms:
            self.manager.basic_leave_room(sid, "/", room(session_id))
        self._replaying.pop(sid, None)

    def _forget_replay(self, sid: str, upto: int) -> None:
        if self._replayed_upto.get(sid) == upto:
            del self._replayed_upto[sid]

    async def _flush(self, eio_sid: str, sid: str) -> None:
        """Send the live events that arrived during a replay, past what it sent."""
        buffered = self._replaying.pop(sid, None)
        upto = self._replayed_upto.get(sid, 0)
        # A message committed before the replay read may still be on its way to
        # the room; keep skipping what the replay sent for a little while.
        asyncio.get_running_loop().call_later(REPLAY_MEMORY, self._forget_replay, sid, upto)
        for offset, event, data in sorted(buffered or [], key=lambda item: item[0]):
            if offset > upto:
                await self._send_packet(
                    eio_sid, self.packet_class(packet.EVENT, data=[event, data, str(offset)], namespace="/")
                )


def _is_offset(value: Any) -> bool:
    return isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19
