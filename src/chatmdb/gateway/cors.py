"""Which web origins may use the gateway: Socket.IO and the HTTP API alike.

A browser sends ``Origin`` with every cross-origin request and WebSocket
handshake. By default only the server's own origin is served (scheme and
``Host`` as the request names them: ``http://localhost:8000`` and
``http://127.0.0.1:8000`` are two origins); ``--cors-origins`` adds others, or
``*`` for any. :class:`CrossOrigin` refuses every other origin before the
request reaches Socket.IO or the HTTP API, and logs the first refusal of each
origin with the flag that would allow it. The CORS headers themselves are
engine.io's (Socket.IO) and starlette's ``CORSMiddleware`` (:func:`http_cors`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ValidationError
from .middleware import refuse

__all__ = ["CrossOrigin", "OriginPolicy", "http_cors"]

logger = logging.getLogger("chatmdb.gateway")

# Distinct refused origins logged, at most: a flood of made-up origins must not flood the log.
MAX_LOGGED: Final = 100
_DEFAULT_PORTS: Final = {"http": "80", "https": "443"}


def _origin_text(origin: str) -> str:
    """An origin as browsers send it: lower-case scheme and host, no default port, no trailing slash."""
    return origin.strip().rstrip("/").lower()


class OriginPolicy:
    """The origins served besides the server's own.

    :param origins: origins such as ``https://app.example.com`` (scheme, host,
        port if not the default), or ``["*"]`` for any; None or empty: the
        server's own origin only.
    :raises ValidationError: for a value that is not an origin.
    """

    def __init__(self, origins: Sequence[str] | None = None) -> None:
        origins = [o for o in (origins or ()) if o.strip()]
        self.any = "*" in origins
        if self.any and len(origins) > 1:
            raise ValidationError("--cors-origins takes '*' alone, or a list of origins")
        allowed: set[str] = set()
        for origin in origins if not self.any else ():
            text = _origin_text(origin)
            scheme, sep, rest = text.partition("://")
            if scheme not in _DEFAULT_PORTS or not sep or not rest or "/" in rest:
                raise ValidationError(f"{origin!r} is not an origin: write it as scheme://host[:port], like https://app.example.com")
            host, _, port = rest.rpartition(":") if rest.rsplit(":", 1)[-1].isdigit() else (rest, "", "")
            allowed.add(f"{scheme}://{host}" if port == _DEFAULT_PORTS[scheme] else text)
        self.origins = frozenset(allowed)
        self.configured = self.any or bool(self.origins)
        self._logged: set[str] = set()

    def allows(self, origin: str, scope: Scope) -> bool:
        """Whether a request of *scope* from *origin* may go on: the server's own origin, or one allowed."""
        text = _origin_text(origin)
        return self.any or text in self.origins or text == _own_origin(scope)

    def refused(self, origin: str) -> None:
        """Log the first refusal of *origin*, with the flag that allows it."""
        if origin in self._logged or len(self._logged) >= MAX_LOGGED:
            return
        self._logged.add(origin)
        logger.warning(
            "refused a request from the web origin %r: serve with --cors-origins %s to allow it",
            origin[:200],
            _origin_text(origin)[:200],
        )

    def engineio(self, origin: str | None, environ: dict[str, Any]) -> bool:
        """engine.io's ``cors_allowed_origins`` hook: :class:`CrossOrigin` let only allowed origins through.

        engine.io then answers them with its CORS headers.
        """
        return origin is not None


def _own_origin(scope: Scope) -> str:
    given = str(scope.get("scheme") or "http")
    scheme = {"ws": "http", "wss": "https"}.get(given, given)
    host = ""
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host = value.decode("latin-1").strip().lower()
            break
    default = _DEFAULT_PORTS.get(scheme)
    if default is not None and host.endswith(":" + default) and not host.endswith("]"):
        host = host[: -len(default) - 1]
    return f"{scheme}://{host}"


def _origin(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"origin":
            text: str = value.decode("latin-1")
            return text
    return None


class CrossOrigin:
    """Refuse requests and WebSocket handshakes from web origins the policy does not allow (403).

    Requests without ``Origin`` (tools, servers, the node and Python clients)
    are not from a web page and pass.
    """

    def __init__(self, app: ASGIApp, policy: OriginPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        origin = _origin(scope)
        if origin is None or self.policy.allows(origin, scope):
            await self.app(scope, receive, send)
            return
        self.policy.refused(origin)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # before accept: the handshake gets a 403
            return
        message = f"the web origin {origin[:200]!r} is not allowed: the server must be started with --cors-origins"
        await refuse(send, 403, "forbidden", message)


def http_cors(app: ASGIApp, policy: OriginPolicy) -> ASGIApp:
    """*app* (the HTTP API) with the CORS headers and preflight answers of *policy*'s origins."""
    if not policy.configured:
        return app
    return CORSMiddleware(
        app,
        allow_origins=["*"] if policy.any else sorted(policy.origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=["Idempotent-Replayed"],
        max_age=600,
    )
