"""ASGI middleware of the gateway, typed with starlette's ``Scope``, ``Receive`` and ``Send``.

* :class:`AllowedHosts` serves only the Host names it is given (DNS rebinding);
* :class:`LimitBody` bounds every request body while it is read, whatever its
  framing (a chunked body declares no length);
* :class:`EndAbandonedPolls` ends an engine.io long-poll whose client went away;
* :class:`RedactSid` keeps engine.io sids, which are credentials, out of access logs;
* :class:`WebSocketOnly` refuses engine.io long-polling when several workers serve the port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.parse
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["LOOPBACK_HOSTS", "AllowedHosts", "EndAbandonedPolls", "LimitBody", "RedactSid", "WebSocketOnly", "refuse"]

LOOPBACK_HOSTS: Final = ("localhost", "127.0.0.1", "::1")


async def refuse(send: Send, status: int, code: str, message: str) -> None:
    """Answer an HTTP request, before the app sees it, with the error envelope of *code*."""
    body = json.dumps({"ok": False, "error": {"code": code, "message": message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _host_name(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host: str = value.decode("latin-1").strip().lower()
            if host.startswith("["):  # [::1]:8000
                return host[1 : host.find("]")] if "]" in host else host
            return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return ""


class AllowedHosts:
    """Refuse requests and WebSockets whose ``Host`` is not one of *hosts*.

    ``*`` allows any; ``*.example.com`` allows that domain's subdomains.
    """

    def __init__(self, app: ASGIApp, hosts: tuple[str, ...]) -> None:
        self.app = app
        self.hosts = frozenset(h.lower() for h in hosts if not h.startswith("*."))
        self.suffixes = tuple(h[1:].lower() for h in hosts if h.startswith("*."))
        self.any = "*" in self.hosts

    def allows(self, host: str) -> bool:
        return self.any or host in self.hosts or (bool(host) and host.endswith(self.suffixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allows(_host_name(scope)):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # before accept: the handshake gets a 403
            return
        await refuse(send, 400, "invalid", "this server does not answer to that Host name (see --allowed-hosts)")


class LimitBody:
    """Read a request's body up to *limit* bytes before the app sees it; past that, answer 413.

    The app gets the body in one piece, then the rest of the request's
    messages (``http.disconnect``) as they come. GET and HEAD requests, whose
    engine.io long-polls must keep listening for a disconnect, pass through.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await refuse(send, 413, "too_large", f"the request body is over {self.limit} bytes")
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await refuse(send, 413, "too_large", f"the request body is over {self.limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            return await receive()

        await self.app(scope, replay, send)


class WebSocketOnly:
    """Refuse engine.io long-polling with a clear error: with several worker
    processes on one port, the requests of one polling session would land on
    workers that do not hold it (there is no sticky routing)."""

    def __init__(self, app: ASGIApp, workers: int, path: str = "/socket.io/") -> None:
        self.app = app
        self.path = path
        self.message = (
            f"this server runs {workers} worker processes, which serve Socket.IO over WebSocket only: "
            "connect with transports: ['websocket']"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.path):
            # As engine.io reads it (decoded): "transport=%70olling" is polling too.
            query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if query.get("transport", ["polling"])[0] != "websocket":
                await refuse(send, 400, "invalid", self.message)
                return
        await self.app(scope, receive, send)


_SID = re.compile(r"(?<=[?&]sid=)[^&\s]+")


class RedactSid(logging.Filter):
    """Replace the value of ``sid=`` in logged request paths with ``<redacted>``.

    Whoever holds an engine.io sid can read that connection's traffic over
    long-polling and write as it, so the sid must not reach log files.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_SID.sub("<redacted>", a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = _SID.sub("<redacted>", record.msg)
        return True

class EndAbandonedPolls:
    """ASGI wrapper that ends an engine.io long-poll (GET) when its client goes away.

    engine.io answers a poll when it has a packet or after its ping interval
    plus timeout (45 s), and never reads from the request meanwhile, so the
    poll of a client that closed (or vanished) holds a task that long, and
    uvicorn's shutdown waits for it. Listening for ``http.disconnect`` once
    the request body is read, and cancelling the poll before it has started
    a response, frees it at once; nothing queued for the client is lost.
    """

    def __init__(self, app: ASGIApp, path: str = "/socket.io/") -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET" or not scope["path"].startswith(self.path):
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()
        started = abandoned = False

        async def app_receive() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                body_read.set()
            return message

        async def app_send(message: Message) -> None:
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


