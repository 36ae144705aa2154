"""The Socket.IO events of the gateway (namespace ``/``).

Every event takes one object and answers through its ack with
``{"ok": true, "data": ...}`` or ``{"ok": false, "error": {"code", "message"}}``,
codes ``invalid``, ``not_found``, ``conflict``, ``too_large``,
``rate_limited`` (over the connection's events per second, or its sessions),
``unauthorized`` (a ``refresh`` token that does not verify, or any event past the
connection's token's ``exp``), ``forbidden``
(the connection's token does not grant it: the rule of each event is in
:data:`.auth.RULES`), ``internal``. Events (optional fields marked ``?``; the
payload models are in :mod:`.payloads`):

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
refresh               token                                                           sub, expires_at, left
====================  ==============================================================  ===============

Server events, sent only to the clients that joined the session, never to the
client whose request caused them (it has the record in its ack):
``message`` (a stored message), ``context_updated`` (a shared context),
``task_updated`` (a task). Each carries the store's offset of the event, a
string, as its last argument, for connection state recovery
(:mod:`.recovery`).

A connection whose token expires is disconnected by the server at ``exp``,
unless a ``refresh`` gave it a fresh token (of the same ``sub``) before then;
a refresh that grants fewer sessions takes the connection out of the rooms it
no longer may read (``left``).

``join`` enters the room first and reads the missed messages after, so a
message committed meanwhile arrives as an event, in ``missed``, or both (the
client deduplicates by ``seq``), never neither. Without ``after_seq``,
``missed`` is empty: history is paged with ``get_messages``.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
import typing
from collections.abc import Awaitable, Callable
from typing import Any, Final

import socketio

from ..errors import ChatMDBError, Forbidden, Unauthorized
from .auth import RULES, Principal, Rule
from .guard import GuardedServer
from .packets import MALFORMED, NOT_AN_EVENT
from .payloads import (
    AgentRef,
    CreateContext,
    CreateSession,
    CreateTask,
    GetMessages,
    Join,
    ListSessions,
    ListTasks,
    NoFields,
    Payload,
    Refresh,
    SendMessage,
    SessionRef,
    TaskRef,
    UpdateContext,
    UpdateTask,
    validate,
)
from .service import ChatService, Record

__all__ = ["PAYLOADS", "Events"]

logger = logging.getLogger("chatmdb.gateway")

Ack = dict[str, Any]
# An on_<event> method, unbound: (namespace, sid, payload) -> the ack's data.
_Handler = Callable[["Events", str, Any], Awaitable[object]]


def _ok(data: object) -> Ack:
    return {"ok": True, "data": data}


def _error(code: str, message: str) -> Ack:
    return {"ok": False, "error": {"code": code, "message": message}}


class Events(socketio.AsyncNamespace):  # type: ignore[misc]
    """The event handlers of namespace ``/``: an ``on_<event>`` method per event.

    A handler's ``payload`` annotation names the model its payload is
    validated as; :meth:`trigger_event` validates, calls the handler and
    wraps what it returns, or the error it raises, in the ack envelope.
    """

    def __init__(self, service: ChatService, server: GuardedServer) -> None:
        super().__init__("/")
        self.service = service
        self.server = server
        self.clients: set[str] = set()

    def attach(self) -> None:
        """Serve the server's namespace ``/`` with these handlers.

        Each event is registered by name in the server's handler table
        (which python-socketio consults before namespace objects), so that
        table lists exactly the public events; ``*`` takes every other
        event, which must get an (error) ack all the same.
        """
        for event in (*_ROUTES, "connect", "disconnect"):
            self.server.on(event, functools.partial(self.trigger_event, event))
        self.server.on("*", self.trigger_event)

    async def trigger_event(self, event: str, *args: Any) -> Ack | None:
        """Run the handler of *event* with *args* (the sid, then what the client sent); return the ack.

        ``connect`` and ``disconnect`` have no ack: their handlers run as
        python-socketio calls them (a refused connection raises).
        """
        route = _ROUTES.get(event)
        if route is None:
            if event == "connect":
                await self.on_connect(*args)
                return None
            if event == "disconnect":
                await self.on_disconnect(*args)
                return None
            return self._unknown(event)
        model, handler, rule = route
        # *args, not (sid, data): python-socketio passes whatever the client sent.
        if len(args) != 2 or not isinstance(args[1], dict):
            got = ", ".join(type(a).__name__ for a in args[1:]) or "nothing"
            return _error("invalid", f"{event} takes one object (dict) argument, got {got}")
        try:
            sid = args[0]
            self.server.check_rate(sid)
            payload = validate(model, args[1])
            rule.check(self.principal(sid), payload.__dict__, self.service.session_of)
            return _ok(await handler(self, sid, payload))
        except ChatMDBError as exc:
            return _error(exc.code, str(exc))
        except Exception:
            logger.exception("event %s failed", event)
            return _error("internal", "internal error")

    @staticmethod
    def _unknown(event: str) -> Ack:
        # Without an answer, an event with no handler gets no ack and the client waits forever.
        if event == MALFORMED:
            return _error("invalid", "the event's data is not valid JSON, or is nested too deeply")
        if event == NOT_AN_EVENT:
            return _error("invalid", "an event is an array that starts with the event's name")
        return _error("invalid", f"unknown event {str(event)[:60]!r}")

    # -- connections ------------------------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        # The token was checked before this runs (GuardedServer.admit); its principal now acts for sid.
        self.server.bind(sid, self.server.manager.eio_sid_from_sid(sid, "/"))
        self.clients.add(sid)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.clients.discard(sid)

    def principal(self, sid: str) -> Principal:
        """Who *sid* acts for; :class:`Forbidden` if it is not connected (any more)."""
        principal = self.server.principals.get(sid)
        if principal is None:
            raise Forbidden("this connection has no credential (it is disconnecting)")
        # The disconnect at exp is a timer, and closing takes a moment:
        # until then, the token's grants end at exp all the same.
        if principal.expires_at is not None and principal.expires_at <= time.time():
            raise Unauthorized("this connection's token expired", hint="connect again with a fresh token")
        return principal

    # -- events -----------------------------------------------------------------------------

    async def on_create_session(self, sid: str, payload: CreateSession) -> Record:
        self.principal(sid).check_create(payload.session_id)
        return await self.service.create_session(payload.title, payload.session_id, payload.metadata)

    async def on_join(self, sid: str, payload: Join) -> Record:
        session = self.service.session(payload.session_id)
        await self.server.enter_session(sid, payload.session_id)
        missed: list[Record] = []
        has_more = False
        if payload.after_seq is not None:
            missed, has_more = self.service.messages_after(payload.session_id, payload.after_seq, payload.limit)
        return {"session": session, "missed": missed, "has_more": has_more}

    async def on_leave(self, sid: str, payload: SessionRef) -> Record:
        self.service.session(payload.session_id)
        await self.server.leave_session(sid, payload.session_id)
        return {"session_id": payload.session_id}

    async def on_send_message(self, sid: str, payload: SendMessage) -> Record:
        record = self.principal(sid).stamp(payload.record(payload.session_id))
        message, _ = await self.service.post_message(record, via="socketio", origin=sid)
        return message

    async def on_get_messages(self, sid: str, payload: GetMessages) -> Record:
        return self.service.messages(
            payload.session_id,
            cursor=payload.cursor,
            limit=payload.limit,
            direction=payload.direction,
            skip=payload.skip,
        )

    async def on_list_sessions(self, sid: str, payload: ListSessions) -> list[Record]:
        return await self.service.sessions(self.principal(sid), payload.limit, payload.cursor)

    async def on_get_session(self, sid: str, payload: SessionRef) -> Record:
        return self.service.session(payload.session_id)

    async def on_list_agents(self, sid: str, payload: NoFields) -> list[Record]:
        return self.service.agents()

    async def on_get_agent(self, sid: str, payload: AgentRef) -> Record:
        return self.service.agent(payload.agent_id)

    async def on_create_context(self, sid: str, payload: CreateContext) -> Record:
        return await self.service.create_context(payload.session_id, payload.data, payload.context_id, origin=sid)

    async def on_update_context(self, sid: str, payload: UpdateContext) -> Record:
        return await self.service.update_context(payload.context_id, payload.data, payload.expected_version, origin=sid)

    async def on_list_contexts(self, sid: str, payload: SessionRef) -> list[Record]:
        return self.service.contexts(payload.session_id)

    async def on_create_task(self, sid: str, payload: CreateTask) -> Record:
        return await self.service.create_task(payload.model_dump(exclude_none=True), origin=sid)

    async def on_update_task(self, sid: str, payload: UpdateTask) -> Record:
        return await self.service.update_task(
            payload.task_id,
            state=payload.state,
            status_message=payload.status_message,
            artifacts=payload.artifacts,
            metadata=payload.metadata,
            origin=sid,
        )

    async def on_get_task(self, sid: str, payload: TaskRef) -> Record:
        return self.service.task(payload.task_id)

    async def on_list_tasks(self, sid: str, payload: ListTasks) -> list[Record]:
        return await self.service.tasks(
            self.principal(sid), payload.context_id, payload.state, payload.limit, payload.cursor
        )

    async def on_refresh(self, sid: str, payload: Refresh) -> Record:
        current = self.principal(sid)
        fresh = self.server.authenticator.authenticate(payload.token)
        if fresh.sub != current.sub:
            raise Forbidden("a refresh must present a token of the connection's own sub; connect anew to change it")
        self.server.bind(sid, principal=fresh)
        left = await self.server.confine(sid, fresh)
        return {"sub": fresh.sub, "expires_at": fresh.expires_at, "left": left}


def _routes(namespace: type[Events]) -> dict[str, tuple[type[Payload], _Handler, Rule]]:
    """Each event of *namespace*, with the model of its payload (its handler's annotation), its handler and its rule."""
    routes: dict[str, tuple[type[Payload], _Handler, Rule]] = {}
    for name, handler in inspect.getmembers(namespace, inspect.iscoroutinefunction):
        if not name.startswith("on_") or name in ("on_connect", "on_disconnect"):
            continue
        model = typing.get_type_hints(handler).get("payload")
        if not (isinstance(model, type) and issubclass(model, Payload)):
            raise TypeError(f"{namespace.__name__}.{name} must annotate its payload with a Payload model")
        rule = RULES.get(name[3:])
        if rule is None:
            raise TypeError(f"event {name[3:]!r} has no rule in chatmdb.gateway.auth.RULES: say who may send it")
        routes[name[3:]] = (model, handler, rule)
    return routes


# The public events, with their payload models: the contract the table above documents.
_ROUTES: Final = _routes(Events)
PAYLOADS: Final = {event: model for event, (model, _, _) in _ROUTES.items()}
