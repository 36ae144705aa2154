"""A token, from ``--token`` or ``CHATMDB_TOKEN``, guards Socket.IO and HTTP (but /healthz), on both backends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import socketio

from .conftest import BACKENDS, Client, Server, run_node, start_server, stop_and_check

TOKEN = "t0ken-for-tests"


@pytest.fixture(params=[(backend, source) for backend in BACKENDS for source in ("flag", "env")], ids=str)
def secured(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    backend, source = request.param
    if source == "flag":
        server = start_server(tmp_path, backend, args=("--token", TOKEN), token=TOKEN)
    else:
        server = start_server(tmp_path, backend, env={"CHATMDB_TOKEN": TOKEN}, token=TOKEN)
    yield server
    stop_and_check(server)


async def test_token_is_enforced(secured: Server, sio_clients: Callable[..., Awaitable[Client]]) -> None:
    for auth in ({}, {"token": "wrong"}, {"token": 1}, {"other": TOKEN}):
        with pytest.raises(socketio.exceptions.ConnectionError):
            await sio_clients(secured, auth=auth, transports=["websocket"])
    client = await sio_clients(secured, auth={"token": TOKEN})
    assert [a["agent_id"] for a in await client.ok("list_agents", {})]

    with httpx.Client(base_url=secured.url, timeout=10) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        for path in ("/api/sessions", "/api/sessions/default", "/api/agents", "/metrics", "/openapi.json"):
            response = anonymous.get(path)
            assert response.status_code == 401, path
            assert response.json()["error"]["code"] == "unauthorized"
        for headers in ({"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}):
            assert anonymous.get("/api/sessions", headers=headers).status_code == 401
        posted = anonymous.post("/api/sessions/default/messages", json={"content": "sneaky"})
        assert posted.status_code == 401
    with secured.http() as authorized:
        assert authorized.get("/api/sessions").status_code == 200
        assert authorized.get("/api/sessions/default").json()["message_count"] == 0


def test_token_is_enforced_for_the_js_client(secured: Server) -> None:
    r = run_node("auth.mjs", secured.url, TOKEN)
    for attempt in ("none", "wrong", "not_a_string"):
        assert r[attempt]["connected"] is False, attempt
        assert r[attempt]["message"] == "unauthorized"
        assert r[attempt]["data"]["code"] == "unauthorized"
    assert r["right"] == {"connected": True, "ok": True}
