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

Errors are ``{"ok": false, "error": {"code", "message"}}`` with status 400
(invalid), 401 (unauthorized), 404 (not_found), 409 (conflict), 413
(too_large), 503 (the server is shutting down) or 500 (internal, a bug).
A POST of a message that exists answers 201 with the stored message, as the
first POST did, and the header ``Idempotent-Replayed: true``; it is not
broadcast again.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

from .errors import ChatMDBError, NotFound, StoreClosed
from .metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from .gateway import Gateway

__all__ = ["create_http_app"]

logger = logging.getLogger("chatmdb.http")

STATUS = {"invalid": 400, "unauthorized": 401, "not_found": 404, "conflict": 409, "too_large": 413, "internal": 500}
_CODE_OF_STATUS = {400: "invalid", 401: "unauthorized", 404: "not_found", 409: "conflict", 413: "too_large"}
OPEN_PATHS = frozenset({"/healthz"})
# The store's rules for ids, paging and message seq cursors, declared in the OpenAPI schema.
Id = Annotated[str, PathParam(min_length=1, max_length=256)]
Limit = Annotated[int, Query(ge=1, le=1000)]


class ErrorDetail(BaseModel):
    code: Literal["invalid", "unauthorized", "not_found", "conflict", "too_large", "internal"]
    message: str


class ErrorBody(BaseModel):
    ok: Literal[False] = False
    error: ErrorDetail


class SessionIn(BaseModel):
    """A session to create; every field is optional."""

    model_config = ConfigDict(extra="forbid", strict=True)
    title: str | None = None
    session_id: str | None = Field(default=None, min_length=1, max_length=256, description="defaults to a new uuid4")
    metadata: dict[str, Any] | None = None


class MessageIn(BaseModel):
    """A message to store in the session of the path."""

    model_config = ConfigDict(extra="forbid", strict=True)
    content: str
    message_uuid: str | None = Field(
        default=None, min_length=1, max_length=256, description="makes the POST idempotent; defaults to a new uuid4"
    )
    agent_id: str | None = Field(default=None, min_length=1, max_length=256)
    role: str | None = Field(default=None, description="defaults to 'user'")
    metadata: dict[str, Any] | None = None


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": {"code": code, "message": message}}, status_code=status)


def _first_problem(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "the request is malformed"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    return f"{where}: {first.get('msg', 'invalid')}"[:300]


def create_http_app(gateway: Gateway) -> FastAPI:
    """The FastAPI app of a gateway; its lifespan shutdown shuts the gateway down."""
    store = gateway.store
    token = gateway.token.encode() if gateway.token is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.sio.start_recovery()
        yield
        await gateway.aclose()

    error_responses: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorBody} for status in (400, 401, 404, 409, 413)
    }
    app = FastAPI(
        title="chatmdb",
        summary="Durable chat sessions and messages for people and AI agents",
        lifespan=lifespan,
        responses=error_responses,
    )

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if token is not None and request.url.path not in OPEN_PATHS:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
                return _error(401, "unauthorized", "send Authorization: Bearer <token>")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > gateway.max_http_buffer_size:
            return _error(413, "too_large", f"the request body is over {gateway.max_http_buffer_size} bytes")
        return await call_next(request)

    @app.exception_handler(ChatMDBError)
    async def on_store_error(request: Request, exc: ChatMDBError) -> JSONResponse:
        if isinstance(exc, StoreClosed):
            return _error(503, "internal", str(exc))
        if exc.code == "internal":
            logger.error("%s %s failed: %s", request.method, request.url.path, exc)
        return _error(STATUS.get(exc.code, 500), exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def on_bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, "invalid", _first_problem(exc))

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

    def _timed(op: str) -> Any:
        return gateway.metrics.read_seconds.labels(op).time()

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, Any]:
        """Liveness: answers without a token while the server runs."""
        return {"ok": True, "backend": store.backend}

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(gateway.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/api/sessions", tags=["sessions"])
    async def list_sessions(
        limit: Limit = 100,
        cursor: str | None = Query(
            None, min_length=1, max_length=256, description="id of the last session of the previous page"
        ),
    ) -> list[dict[str, Any]]:
        with _timed("list_sessions"):
            return store.list_sessions(limit=limit, cursor=cursor)

    @app.post("/api/sessions", tags=["sessions"], status_code=201)
    async def create_session(body: SessionIn | None = None) -> dict[str, Any]:
        body = body or SessionIn()
        session: dict[str, Any] = await gateway.create_session(body.title, body.session_id, body.metadata)
        return session

    def _session(session_id: str) -> dict[str, Any]:
        with _timed("get_session"):
            session = store.get_session(session_id)
        if session is None:
            raise NotFound(f"no session {session_id!r:.80}")
        return session

    @app.get("/api/sessions/{session_id}", tags=["sessions"])
    async def get_session(session_id: Id) -> dict[str, Any]:
        return _session(session_id)

    @app.get("/api/sessions/{session_id}/messages", tags=["messages"])
    async def get_session_messages(
        session_id: Id,
        skip: int = Query(0, ge=0, description="messages passed over after the cursor"),
        limit: Limit = 100,
        cursor: str | None = Query(
            None, pattern="^[0-9]{1,18}$", description="a message seq (next_cursor of the previous page)"
        ),
        direction: Literal["asc", "desc"] = "desc",
    ) -> dict[str, Any]:
        _session(session_id)
        with _timed("get_session_messages"):
            page = store.get_session_messages(
                session_id, skip=skip, limit=limit, cursor=cursor, direction=direction, include_total=True
            )
        assert isinstance(page, dict)
        return page

    @app.post("/api/sessions/{session_id}/messages", tags=["messages"], status_code=201)
    async def post_message(session_id: Id, body: MessageIn, response: Response) -> dict[str, Any]:
        record = {"session_id": session_id, **body.model_dump(exclude_none=True)}
        record.setdefault("role", "user")
        message, created = await gateway.post_message(record, via="http")
        if not created:
            response.headers["Idempotent-Replayed"] = "true"
        result: dict[str, Any] = message
        return result

    @app.get("/api/messages/{message_uuid}", tags=["messages"])
    async def get_message(message_uuid: Id) -> dict[str, Any]:
        with _timed("get_message"):
            message = store.get_message(message_uuid)
        if message is None:
            raise NotFound(f"no message {message_uuid!r:.80}")
        return message

    @app.get("/api/agents", tags=["agents"])
    async def list_agents() -> list[dict[str, Any]]:
        with _timed("list_agent_cards"):
            return store.list_agent_cards()

    @app.get("/api/agents/{agent_id}", tags=["agents"])
    async def get_agent(agent_id: Id) -> dict[str, Any]:
        with _timed("get_agent_card"):
            card = store.get_agent_card(agent_id)
        if card is None:
            raise NotFound(f"no agent {agent_id!r:.80}")
        return card

    return app
