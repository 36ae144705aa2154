"""A web app on another origin, in headless Chromium, using the gateway with the official JS client.

The page is served from its own port on 127.0.0.1 (another origin than the
gateway's), loads the browser build of ``socket.io-client`` from there, and
connects to the gateway with a JWT; it also calls the HTTP API with
``fetch`` and an ``Authorization`` header, which makes Chromium send a
preflight. With ``--cors-origins`` naming the page's origin both work; without
it both are refused, and the server log says which flag allows the origin.
"""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from playwright.sync_api import Browser

from gateway.conftest import BACKENDS, Server, free_port, start_server, stop_and_check

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "tests" / "js" / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
SECRET = "a-browser-test-secret-of-at-least-32-bytes"
PAGE = "<!doctype html><title>another origin</title><script src=socket.io.min.js></script><p>app</p>"

# Runs in the page: connect with the official client, call an event, then the HTTP API.
USE_GATEWAY = """
async ([url, token, transports]) => {
  const socket = io(url, { auth: { token }, transports, reconnection: false, timeout: 5000 });
  const result = await new Promise((resolve) => {
    socket.on("connect", () => resolve({ connected: true }));
    socket.on("connect_error", (err) => resolve({ connected: false, message: err.message }));
  });
  if (result.connected) {
    result.ack = await socket.timeout(5000).emitWithAck("list_sessions", {});
  }
  socket.disconnect();
  let http;
  try {
    const response = await fetch(url + "/api/sessions", { headers: { Authorization: "Bearer " + token } });
    http = { status: response.status, body: await response.json() };
  } catch (err) {
    http = { error: String(err) };
  }
  return { socket: result, http };
}
"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def page_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A static web app on its own origin (another port of 127.0.0.1)."""
    assert CLIENT.is_file(), "run `make setup`: it installs socket.io-client under tests/js"
    root = tmp_path_factory.mktemp("web-app")
    (root / "index.html").write_text(PAGE)
    (root / "socket.io.min.js").write_bytes(CLIENT.read_bytes())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(10)


def _gateway(tmp_path: Path, backend: str, *args: str) -> Server:
    return start_server(tmp_path, backend, args=args, env={"CHATMDB_JWT_SECRET": SECRET})


def _use(browser: Browser, origin: str, gateway: Server, transports: list[str]) -> dict[str, Any]:
    token = jwt.encode({"sub": "web-user", "read_sessions": ["default"], "exp": int(time.time()) + 600}, SECRET)
    page = browser.new_page()
    try:
        page.goto(f"{origin}/index.html")
        result: dict[str, Any] = page.evaluate(USE_GATEWAY, [gateway.url, token, transports])
        return result
    finally:
        page.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_page_on_another_origin_connects_with_cors_origins(
    browser: Browser, page_origin: str, tmp_path: Path, backend: str
) -> None:
    gateway = _gateway(tmp_path, backend, "--cors-origins", page_origin)
    try:
        for transports in (["polling", "websocket"], ["websocket"]):
            result = _use(browser, page_origin, gateway, transports)
            assert result["socket"]["connected"] is True, (transports, result)
            # The token's grants apply: it reads "default" only.
            assert [s["id"] for s in result["socket"]["ack"]["data"]] == ["default"], result
            assert result["http"]["status"] == 200, result
            assert [s["id"] for s in result["http"]["body"]] == ["default"], result
    finally:
        stop_and_check(gateway)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_page_on_another_origin_is_refused_without_it(
    browser: Browser, page_origin: str, tmp_path: Path, backend: str
) -> None:
    gateway = _gateway(tmp_path, backend)
    try:
        for transports in (["polling", "websocket"], ["websocket"]):
            result = _use(browser, page_origin, gateway, transports)
            assert result["socket"]["connected"] is False, (transports, result)
            assert "error" in result["http"], result  # the preflight was refused: fetch fails
        log = gateway.log_text()
        assert f"serve with --cors-origins {page_origin} to allow it" in log, log
    finally:
        stop_and_check(gateway)
