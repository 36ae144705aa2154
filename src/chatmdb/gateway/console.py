"""The console: a page in the browser to watch the sessions and talk in them, at ``/`` and ``/console``.

The page and its files are static, in ``console_static/`` beside this module,
and served from there under ``/console/``:

=========================  ====================================================
path                       file
=========================  ====================================================
/, /console, /console/     ``index.html``
/console/console.js        the console (plain JavaScript, no build step)
/console/console.css       its style sheet
/console/favicon.svg       its icon
/console/socket.io.min.js  the official Socket.IO browser client (and its ``.map``)
=========================  ====================================================

``socket.io.min.js`` is not in the repository: ``make setup`` installs the
``socket.io-client`` npm package pinned by ``web/package-lock.json`` and copies
its browser build here, so an installed package carries it. Without it the
server still serves, and the page says how to get it.

The page speaks only the gateway's Socket.IO events, ``/metrics`` and
``/healthz``. Its files are public whether or not the server has a token (the
page asks for the token; everything it calls needs it). Every answer forbids
framing and content sniffing, and the page's Content-Security-Policy lets it
load scripts and styles and connect to this origin only, and makes the
browser refuse every string-to-markup sink (``innerHTML`` and its kin, by
Trusted Types), so chat content could not become markup, let alone run.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
from importlib.resources.abc import Traversable
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["CLIENT", "CONTENT_SECURITY_POLICY", "PAGE_PATHS", "Console"]

logger = logging.getLogger("chatmdb.gateway")

PAGE_PATHS: Final = frozenset({"/", "/console", "/console/"})
PREFIX: Final = "/console/"
CLIENT: Final = "socket.io.min.js"
# Every file served, by URL name, with its content type: nothing else under /console/ is.
FILES: Final = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    CLIENT: "text/javascript; charset=utf-8",
    f"{CLIENT}.map": "application/json",
}
CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",  # includes ws:// and wss:// of this origin
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        # No string ever becomes markup or script: innerHTML and its kin throw instead (Trusted Types).
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
MISSING_CLIENT: Final = (
    f"the Socket.IO browser client ({CLIENT}) is not installed: run `make setup`, which copies it from "
    "the socket.io-client npm package (web/package.json) into src/chatmdb/gateway/console_static/"
)
_SECURITY_HEADERS: Final = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    # Revalidate every time (the ETag makes that a 304): a new version is seen at once.
    (b"cache-control", b"no-cache"),
)


def static_files() -> Traversable:
    """The folder of the console's files in the installed package."""
    return importlib.resources.files(__package__ or "chatmdb.gateway") / "console_static"


class Console:
    """ASGI app that serves the console's page and files, and passes every other request to *app*.

    Only ``GET`` and ``HEAD`` of the console's paths are answered here (other
    methods get 405); files are read once, when first asked for, from
    *directory* (default: the package's ``console_static``). A missing file
    is looked for again at each request, so ``make setup`` run while the
    server serves is picked up.
    """

    def __init__(self, app: ASGIApp, directory: Traversable | None = None) -> None:
        self.app = app
        self.directory = directory if directory is not None else static_files()
        self._cache: dict[str, tuple[bytes, bytes]] = {}  # name -> (body, etag)
        if not (self.directory / CLIENT).is_file():
            logger.warning("the console cannot connect: %s", MISSING_CLIENT)

    def _name(self, path: str) -> str | None:
        if path in PAGE_PATHS:
            return "index.html"
        if path.startswith(PREFIX):
            return path[len(PREFIX) :]
        return None

    def _read(self, name: str) -> tuple[bytes, bytes] | None:
        cached = self._cache.get(name)
        if cached is None:
            resource = self.directory / name
            if not resource.is_file():
                return None
            body = resource.read_bytes()
            cached = body, b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
            self._cache[name] = cached
        return cached

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = self._name(scope["path"]) if scope["type"] == "http" else None
        if name is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _answer(
                send, 405, _error("invalid", "the console answers GET and HEAD only"), (b"allow", b"GET, HEAD")
            )
            return
        content_type = FILES.get(name)
        found = self._read(name) if content_type is not None else None
        if content_type is None or found is None:
            message = MISSING_CLIENT if name in (CLIENT, f"{CLIENT}.map") else f"no console file {name[:80]!r}"
            await _answer(send, 404, _error("not_found", message))
            return
        body, etag = found
        headers = [(b"content-type", content_type.encode()), (b"etag", etag), *_SECURITY_HEADERS]
        if any(key == b"if-none-match" and etag in value for key, value in scope.get("headers", ())):
            await _answer(send, 304, b"", *headers, head=True)
            return
        await _answer(send, 200, body, *headers, head=scope["method"] == "HEAD")


def _error(code: str, message: str) -> bytes:
    return json.dumps({"ok": False, "error": {"code": code, "message": message}}).encode()


async def _answer(send: Send, status: int, body: bytes, *headers: tuple[bytes, bytes], head: bool = False) -> None:
    """Send one whole response; a JSON error unless *headers* name a content type."""
    names = {name for name, _ in headers}
    start = list(headers)
    if b"content-type" not in names:
        start += [(b"content-type", b"application/json"), *_SECURITY_HEADERS]
    if status != 304:
        start.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": b"" if head else body})
