"""``--cors-origins`` at the HTTP level: preflights, CORS headers, refusals, on both backends.

The browser itself is in ``tests/browser/test_cors.py``; here each header is
checked as the server sends it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import BACKENDS, CALL_TIMEOUT, Server, start_server, stop_and_check

TOKEN = "cors-test-token"
APP = "http://app.example:3000"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}


@pytest.fixture(scope="module", params=BACKENDS)
def cors(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Default ports are implied: "https://other.example:443" is "https://other.example".
    origins = f"{APP}, https://other.example:443"
    server = start_server(
        tmp_path_factory.mktemp(f"cors-{request.param}"), str(request.param),
        args=("--cors-origins", origins), env={"CHATMDB_TOKEN": TOKEN}, token=TOKEN,
    )
    yield server
    stop_and_check(server)


def _client(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=CALL_TIMEOUT)


def test_a_preflight_is_answered_for_an_allowed_origin(cors: Server) -> None:
    with _client(cors) as client:
        for origin in (APP, "https://other.example"):
            response = client.options("/api/sessions/default/messages", headers={"Origin": origin, **PREFLIGHT})
            assert response.status_code == 200, response.text
            assert response.headers["access-control-allow-origin"] == origin
            allowed = response.headers["access-control-allow-headers"].lower()
            assert "authorization" in allowed and "content-type" in allowed
            assert "POST" in response.headers["access-control-allow-methods"]
        # The request itself: its answer names the origin and shows the idempotency header.
        response = client.post(
            "/api/sessions/default/messages",
            json={"content": "from the app", "message_uuid": "cors-1"},
            headers={"Origin": APP, "Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 201
        assert response.headers["access-control-allow-origin"] == APP
        assert "idempotent-replayed" in response.headers["access-control-expose-headers"].lower()
        # A refusal from the API carries the CORS header too, so the page can read the error.
        response = client.get("/api/sessions", headers={"Origin": APP})
        assert response.status_code == 401 and response.headers["access-control-allow-origin"] == APP


def test_an_origin_not_allowed_is_refused_and_logged(cors: Server) -> None:
    evil = "http://evil.example"
    with _client(cors) as client:
        for method, path, headers in (
            ("OPTIONS", "/api/sessions", PREFLIGHT),
            ("GET", "/api/sessions", {"Authorization": f"Bearer {TOKEN}"}),
            ("GET", "/socket.io/?EIO=4&transport=polling", {}),
            ("GET", "/healthz", {}),
            # Same host, other port or scheme: other origins.
            ("GET", "/api/sessions", {"Authorization": f"Bearer {TOKEN}", "Origin": "http://app.example:3001"}),
        ):
            response = client.request(method, path, headers={"Origin": evil, **headers})
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["error"]["code"] == "forbidden"
            assert "access-control-allow-origin" not in response.headers
        posted = client.post(
            "/api/sessions/default/messages",
            json={"content": "should not be stored", "message_uuid": "cors-evil"},
            headers={"Origin": evil, "Authorization": f"Bearer {TOKEN}"},
        )
        assert posted.status_code == 403
        assert client.get("/api/messages/cors-evil", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
    assert f"serve with --cors-origins {evil} to allow it" in cors.log_text()


def test_socketio_handshakes_from_an_allowed_origin_get_cors_headers(cors: Server) -> None:
    with _client(cors) as client:
        response = client.get("/socket.io/?EIO=4&transport=polling", headers={"Origin": APP})
        assert response.status_code == 200 and response.text.startswith("0{")
        assert response.headers["access-control-allow-origin"] == APP
        # No cookies, no credentials: the token travels in the CONNECT packet.
        assert "access-control-allow-credentials" not in response.headers


def test_same_origin_and_no_origin_need_no_flag(tmp_path: Path) -> None:
    server = start_server(tmp_path, "lmdb")
    try:
        with _client(server) as client:
            own = {"Origin": server.url}
            assert client.get("/api/sessions", headers=own).status_code == 200
            assert client.get("/socket.io/?EIO=4&transport=polling", headers=own).status_code == 200
            assert client.get("/api/sessions").status_code == 200
            # localhost and 127.0.0.1 are two origins.
            other = {"Origin": server.url.replace("127.0.0.1", "localhost")}
            assert client.get("/api/sessions", headers=other).status_code == 403
            assert client.options("/api/sessions", headers={**other, **PREFLIGHT}).status_code == 403
    finally:
        stop_and_check(server)


def test_any_origin_with_a_token(tmp_path: Path) -> None:
    server = start_server(tmp_path, "sqlite", args=("--cors-origins", "*"), env={"CHATMDB_TOKEN": TOKEN}, token=TOKEN)
    try:
        with _client(server) as client:
            response = client.options("/api/sessions", headers={"Origin": "https://anywhere.example", **PREFLIGHT})
            assert response.status_code == 200 and response.headers["access-control-allow-origin"] == "*"
            response = client.get("/api/sessions", headers={"Origin": "https://anywhere.example"})
            assert response.status_code == 401  # any origin, but still the token
    finally:
        stop_and_check(server)
