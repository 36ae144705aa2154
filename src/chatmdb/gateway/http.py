"""The HTTP API, for agents and tools that don't hold a socket (FastAPI, OpenAPI at ``/openapi.json``).

========  ===============================  ==========================================
method    path                             answer
========  ===============================  ==========================================
GET       /api/sessions                    sessions, newest first (``limit``, ``cursor``)
POST      /api/sessions                    201, the new session
GET       /api/sessions/{id}               the session
GET       /api/sessions/{id}/messages      ``{"items", "pagination"}`` (``skip``, ``limit``, ``cursor``, ``direction``)
POST      /api/sessions/{id}/messages      201, the stored message; idempotent on ``message_uuid``
GET       /api/messages/{uuid}             the message
GET       /api/agents                      agent cards
GET       /api/agents/{id}                 the agent card
GET       /healthz                         ``{"ok": true}``, never needs a token
GET       /metrics                         Prometheus text
========  ===============================  ==========================================

Errors are ``{"ok": false, "error": {"code", "message"}}`` with the status
:data:`chatmdb.errors.HTTP_STATUS` gives their code: 400 (invalid), 401
(unauthorized), 403 (forbidden: the token does not grant it; each route's
rule is in :data:`.auth.HTTP_RULES`), 404 (not_found), 409 (conflict), 413
(too_large), 503 (the server is shutting down) or 500 (internal, a bug). A POST of a message that
exists answers 201 with the stored message, as the first POST did, and the
header ``Idempotent-Replayed: true``; it is not broadcast again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, Final, Literal

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from ..errors import HTTP_STATUS, ChatMDBError, Forbidden, Unauthorized, http_status
from ..metrics import CONTENT_TYPE
from .auth import HTTP_RULES, Authenticator, Principal
from .payloads import Count, CreateSession, Direction, Id, Limit, MessageIn, SeqText, describe
from .service import ChatService, Record

__all__ = ["create_http_app"]

logger = logging.getLogger("chatmdb.http")

OPEN_PATHS = frozenset({"/healthz"})
# Who calls the paths that need no token: no grants at all.
ANONYMOUS: Final = Principal(sub=None)
# The code of an error status that comes from the framework (an unknown path, a wrong method).
_CODE_OF_STATUS: Final = {status: code for code, status in HTTP_STATUS.items()}
# The error statuses the operations declare, by code.
_DECLARED_ERRORS: Final = ("invalid", "unauthorized", "forbidden", "not_found", "conflict", "too_large", "unavailable")

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
SessionId = Annotated[Id, PathParam()]


def _caller(request: Request) -> Principal:
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise Forbidden("the request has no credential")
    return principal


# The principal of the request, as the guard middleware authenticated it.
Caller = Annotated[Principal, Depends(_caller)]


class ErrorDetail(BaseModel):
    code: str = Field(json_schema_extra={"enum": list(HTTP_STATUS)})  # the codes of the one status table
    message: str


class ErrorBody(BaseModel):
    ok: Literal[False] = False
    error: ErrorDetail


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": {"code": code, "message": message}}, status_code=status)


def _problem(exc: RequestValidationError) -> str:
    errors = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in errors):
        return "the request body is not valid JSON"
    # FastAPI locates errors in ("body" | "query" | "path", field, ...).
    return describe([{**e, "loc": tuple(e.get("loc", ()))[1:]} for e in errors], whole="the request body")


def create_http_app(service: ChatService, *, authenticator: Authenticator, lifespan: Lifespan) -> FastAPI:
    """The FastAPI app of a gateway's *service*.

    :param authenticator: when it requires a credential, every request but
        ``/healthz`` needs ``Authorization: Bearer <token>``, and each route
        checks its rule (:data:`.auth.HTTP_RULES`) against the token's grants.
    Request bodies are bounded before they reach it (:class:`.middleware.LimitBody`).
    :param lifespan: the app's lifespan: the gateway starts and stops with it.
    :raises TypeError: when a route has no rule.
    """

    async def authorize(request: Request, principal: Caller) -> None:
        route = request.scope.get("route")
        rule = HTTP_RULES.get(getattr(route, "name", ""))
        if rule is None:  # fail closed: create_http_app refuses such a route, this is a second line
            raise Forbidden("this route has no access rule")
        rule.check(principal, request.path_params, service.session_of)

    error_responses: dict[int | str, dict[str, Any]] = {
        HTTP_STATUS[code]: {"model": ErrorBody} for code in _DECLARED_ERRORS
    }
    app = FastAPI(
        title="chatmdb",
        summary="Durable chat sessions and messages for people and AI agents",
        lifespan=lifespan,
        responses=error_responses,
        dependencies=[Depends(authorize)],
    )

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path in OPEN_PATHS:
            request.state.principal = ANONYMOUS
        else:
            given = None
            if authenticator.required:
                scheme, _, given = request.headers.get("authorization", "").partition(" ")
                if scheme.lower() != "bearer":
                    return _error(401, "unauthorized", "send Authorization: Bearer <token>")
            try:
                request.state.principal = authenticator.authenticate(given and given.strip())
            except Unauthorized as exc:
                return _error(401, "unauthorized", f"{exc}; send Authorization: Bearer <token>")
        return await call_next(request)

    @app.exception_handler(ChatMDBError)
    async def on_store_error(request: Request, exc: ChatMDBError) -> JSONResponse:
        status = http_status(exc)
        if status == HTTP_STATUS["internal"]:
            logger.error("%s %s failed: %s", request.method, request.url.path, exc)
        return _error(status, exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def on_bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(HTTP_STATUS["invalid"], "invalid", _problem(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODE_OF_STATUS.get(exc.status_code, "invalid" if exc.status_code < 500 else "internal")
        response = _error(exc.status_code, code, str(exc.detail))
        # Keep the headers the error carries, such as the Allow of a 405.
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            # Starlette's Allow names the methods of the first route of the path only.
            allowed = {
                method
                for route in app.routes
                if isinstance(route, Route) and route.matches(request.scope)[0] is Match.PARTIAL
                for method in route.methods or ()
            }
            if allowed:
                response.headers["Allow"] = ", ".join(sorted(allowed))
        return response

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, Any]:
        """Liveness: answers without a token while the server runs."""
        return {"ok": True, "backend": service.store.backend}

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/api/sessions", tags=["sessions"])
    async def list_sessions(
        principal: Caller,
        limit: Annotated[Limit, Query()] = 100,
        cursor: Annotated[Id | None, Query(description="id of the last session of the previous page")] = None,
    ) -> list[Record]:
        """The sessions the token may read."""
        return await service.sessions(principal, limit, cursor)

    @app.post("/api/sessions", tags=["sessions"], status_code=201)
    async def create_session(principal: Caller, body: CreateSession | None = None) -> Record:
        """Without an admin token, the session_id must be inside the token's sessions grants."""
        body = body or CreateSession()
        principal.check_create(body.session_id)
        return await service.create_session(body.title, body.session_id, body.metadata)

    @app.get("/api/sessions/{session_id:path}/messages", tags=["messages"])
    async def get_session_messages(
        session_id: SessionId,
        skip: Annotated[Count, Query(description="messages passed over after the cursor")] = 0,
        limit: Annotated[Limit, Query()] = 100,
        cursor: Annotated[SeqText | None, Query(description="a message seq (next_cursor of the previous page)")] = None,
        direction: Direction = "desc",
    ) -> Record:
        return service.messages(session_id, cursor=cursor, limit=limit, direction=direction, skip=skip)

    @app.post("/api/sessions/{session_id:path}/messages", tags=["messages"], status_code=201)
    async def post_message(session_id: SessionId, body: MessageIn, response: Response, principal: Caller) -> Record:
        """The message is stored with ``sender``, the token's sub; an agent_id claim binds its agent_id."""
        message, created = await service.post_message(principal.stamp(body.record(session_id)), via="http")
        if not created:
            response.headers["Idempotent-Replayed"] = "true"
        return message

    # After the routes of a session's messages: a session id may hold "/" (a path parameter takes
    # it whole), so ".../messages" must reach them first.
    @app.get("/api/sessions/{session_id:path}", tags=["sessions"])
    async def get_session(session_id: SessionId) -> Record:
        return service.session(session_id)

    @app.get("/api/messages/{message_uuid}", tags=["messages"])
    async def get_message(message_uuid: Annotated[Id, PathParam()]) -> Record:
        return service.message(message_uuid)

    @app.get("/api/agents", tags=["agents"])
    async def list_agents() -> list[Record]:
        return service.agents()

    @app.get("/api/agents/{agent_id}", tags=["agents"])
    async def get_agent(agent_id: Annotated[Id, PathParam()]) -> Record:
        return service.agent(agent_id)

    for route in app.routes:
        if isinstance(route, APIRoute) and route.name not in HTTP_RULES:
            raise TypeError(f"route {route.name!r} has no rule in chatmdb.gateway.auth.HTTP_RULES: say who may call it")
    return app
