"""Per-session authorization with signed tokens (JWT), on both backends, over Socket.IO and HTTP.

Tokens are minted here with PyJWT. One principal, ``P``, holds a prefix
write grant (``<base>:mine:*``) and a read-only grant (``<base>:ro``); a third
session (``<base>:other``) it may not touch. The tables below hold every
Socket.IO event and every HTTP route with what ``P`` may and may not do;
each table is checked against what the server registers, so an event or a
route cannot be added without saying who may use it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import jwt
import pytest
import socketio

from chatmdb.gateway.events import PAYLOADS

from .conftest import BACKENDS, CALL_TIMEOUT, Client, Server, raw_open, raw_until, start_server, stop_and_check

SECRET = "a-test-secret-that-is-at-least-32-bytes-long"
ADMIN_TOKEN = "static-admin-token"
WAIT = 10.0


def mint(sub: str, **claims: Any) -> str:
    """A token signed with the server's secret (``exp`` in seconds from now when given)."""
    if "exp_in" in claims:
        claims["exp"] = int(time.time() + claims.pop("exp_in"))
    return jwt.encode({"sub": sub, **claims}, SECRET, algorithm="HS256")


@pytest.fixture(scope="module", params=BACKENDS)
def authz(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the static token (an admin) and JWTs; its ``http()`` and clients default to the admin."""
    server = start_server(
        tmp_path_factory.mktemp(f"authz-{request.param}"),
        str(request.param),
        env={"CHATMDB_JWT_SECRET": SECRET, "CHATMDB_TOKEN": ADMIN_TOKEN},
        token=ADMIN_TOKEN,
    )
    yield server
    stop_and_check(server)


Make = Callable[..., Awaitable[Client]]


@pytest.fixture
async def as_token(authz: Server, sio_clients: Make) -> Callable[[str], Awaitable[Client]]:
    async def make(token: str) -> Client:
        return await sio_clients(authz, auth={"token": token})

    return make


def bearer(server: Server, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=CALL_TIMEOUT)


@dataclass
class World:
    """Sessions, a message, a context and a task in each, made by the admin for one test."""

    base: str
    own: str  # under P's prefix write grant
    read: str  # P's read-only grant
    other: str  # no grant
    messages: dict[str, str]  # session -> a message uuid
    contexts: dict[str, str]  # session -> a context id
    tasks: dict[str, str]  # session -> a task id
    token: str  # P's token

    @property
    def prefix(self) -> str:
        return f"{self.base}:mine:"


@pytest.fixture
async def world(authz: Server, sio_clients: Make) -> World:
    admin = await sio_clients(authz)
    base = f"w{uuid.uuid4().hex[:10]}"
    own, read, other = f"{base}:mine:a", f"{base}:ro", f"{base}:other"
    messages, contexts, tasks = {}, {}, {}
    for session in (own, read, other):
        await admin.ok("create_session", {"session_id": session})
        messages[session] = (await admin.ok("send_message", {"session_id": session, "content": "setup"}))["message_uuid"]
        contexts[session] = (await admin.ok("create_context", {"session_id": session, "data": {"v": 0}}))["id"]
        tasks[session] = (await admin.ok("create_task", {"context_id": session}))["id"]
    token = mint("p", sessions=[f"{base}:mine:*"], read_sessions=[read], exp_in=600)
    return World(base, own, read, other, messages, contexts, tasks, token)


# -- Socket.IO: every event, allowed and refused --------------------------------------------

Case = tuple[Callable[[World], dict[str, Any]], str]  # (payload of a world, "ok" or an error code)

EVENT_TABLE: dict[str, list[Case]] = {
    "create_session": [
        (lambda w: {"session_id": f"{w.prefix}made"}, "ok"),
        (lambda w: {"session_id": f"{w.base}:elsewhere"}, "forbidden"),
        (lambda w: {"session_id": w.read}, "forbidden"),  # read-only: no creating there
        (lambda w: {"title": "no id"}, "forbidden"),  # a non-admin names the session
    ],
    "join": [
        (lambda w: {"session_id": w.own, "after_seq": 0}, "ok"),
        (lambda w: {"session_id": w.read, "after_seq": 0}, "ok"),
        (lambda w: {"session_id": w.other, "after_seq": 0}, "forbidden"),
        (lambda w: {"session_id": f"{w.base}:none"}, "forbidden"),  # existence is not revealed
    ],
    "leave": [
        (lambda w: {"session_id": w.read}, "ok"),
        (lambda w: {"session_id": w.other}, "forbidden"),
    ],
    "send_message": [
        (lambda w: {"session_id": w.own, "content": "mine"}, "ok"),
        (lambda w: {"session_id": w.read, "content": "no"}, "forbidden"),
        (lambda w: {"session_id": w.other, "content": "no"}, "forbidden"),
    ],
    "get_messages": [
        (lambda w: {"session_id": w.read}, "ok"),
        (lambda w: {"session_id": w.other}, "forbidden"),
    ],
    "list_sessions": [(lambda w: {}, "ok")],  # filtered: test_listings_show_only_readable_sessions
    "get_session": [
        (lambda w: {"session_id": w.read}, "ok"),
        (lambda w: {"session_id": w.other}, "forbidden"),
    ],
    "list_agents": [(lambda w: {}, "ok")],
    "get_agent": [(lambda w: {"agent_id": "phil_connors"}, "ok")],
    "create_context": [
        (lambda w: {"session_id": w.own, "data": {"v": 1}}, "ok"),
        (lambda w: {"session_id": w.read, "data": {"v": 1}}, "forbidden"),
        (lambda w: {"session_id": w.other, "data": {"v": 1}}, "forbidden"),
    ],
    "update_context": [
        (lambda w: {"context_id": w.contexts[w.own], "data": {"v": 2}}, "ok"),
        (lambda w: {"context_id": w.contexts[w.read], "data": {"v": 2}}, "forbidden"),
        (lambda w: {"context_id": w.contexts[w.other], "data": {"v": 2}}, "forbidden"),
    ],
    "list_contexts": [
        (lambda w: {"session_id": w.read}, "ok"),
        (lambda w: {"session_id": w.other}, "forbidden"),
    ],
    "create_task": [
        (lambda w: {"context_id": w.own}, "ok"),
        (lambda w: {"context_id": w.read}, "forbidden"),
        (lambda w: {"context_id": w.other}, "forbidden"),
    ],
    "update_task": [
        (lambda w: {"task_id": w.tasks[w.own], "state": "working"}, "ok"),
        (lambda w: {"task_id": w.tasks[w.read], "state": "canceled"}, "forbidden"),
        (lambda w: {"task_id": w.tasks[w.other], "state": "canceled"}, "forbidden"),
    ],
    "get_task": [
        (lambda w: {"task_id": w.tasks[w.read]}, "ok"),
        (lambda w: {"task_id": w.tasks[w.other]}, "forbidden"),
    ],
    "list_tasks": [
        (lambda w: {"context_id": w.read}, "ok"),
        (lambda w: {"context_id": w.other}, "forbidden"),
        (lambda w: {}, "ok"),  # filtered: test_listings_show_only_readable_sessions
    ],
    "refresh": [
        (lambda w: {"token": mint("p", sessions=[f"{w.base}:mine:*"], read_sessions=[w.read], exp_in=600)}, "ok"),
        (lambda w: {"token": mint("someone-else", admin=True)}, "forbidden"),
        (lambda w: {"token": "not a token"}, "unauthorized"),
    ],
}


def test_every_event_has_a_row() -> None:
    assert set(EVENT_TABLE) == set(PAYLOADS), "an event without a row in EVENT_TABLE: say who may send it"


async def test_every_event_is_confined_to_the_grants(
    authz: Server, world: World, as_token: Callable[[str], Awaitable[Client]], sio_clients: Make
) -> None:
    client = await as_token(world.token)
    for event, cases in EVENT_TABLE.items():
        for payload_of, expected in cases:
            payload = payload_of(world)
            ack = await client.call(event, payload)
            if expected == "ok":
                assert ack["ok"] is True, (event, payload, ack)
            else:
                assert ack["ok"] is False and ack["error"]["code"] == expected, (event, payload, ack)
    # What was refused changed nothing.
    admin = await sio_clients(authz)
    for session in (world.read, world.other):
        assert (await admin.ok("get_session", {"session_id": session}))["message_count"] == 1
        [context] = await admin.ok("list_contexts", {"session_id": session})
        assert context["data"] == {"v": 0} and context["version"] == 1
        task = await admin.ok("get_task", {"task_id": world.tasks[session]})
        assert task["status"]["state"] == "submitted"
        assert await admin.ok("list_tasks", {"context_id": session}) == [task]
    for session in (f"{world.base}:elsewhere", f"{world.base}:none"):
        assert (await admin.call("get_session", {"session_id": session}))["error"]["code"] == "not_found"


async def test_a_read_only_grant_receives_the_session_but_cannot_write(
    authz: Server, world: World, as_token: Callable[[str], Awaitable[Client]], sio_clients: Make
) -> None:
    reader = await as_token(world.token)
    joined = await reader.ok("join", {"session_id": world.read, "after_seq": 0})
    assert [m["content"] for m in joined["missed"]] == ["setup"]
    admin = await sio_clients(authz)
    await admin.ok("send_message", {"session_id": world.read, "content": "news"})
    event, message = await reader.next_event()
    assert (event, message["content"]) == ("message", "news")
    refused = await reader.call("send_message", {"session_id": world.read, "content": "reply"})
    assert refused["error"]["code"] == "forbidden"
    refused = await reader.call("create_context", {"session_id": world.read, "data": {}})
    assert refused["error"]["code"] == "forbidden"


async def test_prefix_grants_and_the_star(
    authz: Server, world: World, as_token: Callable[[str], Awaitable[Client]]
) -> None:
    client = await as_token(world.token)
    deep = f"{world.prefix}x:y"
    await client.ok("create_session", {"session_id": deep})
    await client.ok("send_message", {"session_id": deep, "content": "deep"})
    # The prefix is a string prefix, "<base>:mine:": "<base>:mine-2" is outside it.
    refused = await client.call("create_session", {"session_id": f"{world.base}:mine-2"})
    assert refused["error"]["code"] == "forbidden"
    everyone = await as_token(mint("reader", read_sessions=["*"]))
    for session in (world.own, world.read, world.other):
        await everyone.ok("get_messages", {"session_id": session})
    refused = await everyone.call("send_message", {"session_id": world.other, "content": "no"})
    assert refused["error"]["code"] == "forbidden"
    writer = await as_token(mint("writer", sessions=["*"]))
    await writer.ok("send_message", {"session_id": world.other, "content": "yes"})
    # "*" grants sessions, not administration: no session without an id, no metrics.
    assert (await writer.call("create_session", {}))["error"]["code"] == "forbidden"
    with bearer(authz, mint("writer", sessions=["*"])) as http:
        assert http.get("/metrics").status_code == 403


async def test_a_slash_prefix_grant_works_over_both_transports(
    authz: Server, world: World, as_token: Callable[[str], Awaitable[Client]]
) -> None:
    """Ids grouped with "/" (``team-7/*``): the HTTP routes take a session id with slashes whole."""
    token = mint("teammate", sessions=[f"{world.base}/team-7/*"])
    mine, theirs = f"{world.base}/team-7/standup", f"{world.base}/team-8/standup"
    client = await as_token(token)
    await client.ok("create_session", {"session_id": mine})
    await client.ok("send_message", {"session_id": mine, "content": "over socket.io"})
    with authz.http() as admin:
        assert admin.post("/api/sessions", json={"session_id": theirs}).status_code == 201
    with bearer(authz, token) as http:
        assert http.get(f"/api/sessions/{mine}").json()["id"] == mine
        posted = http.post(f"/api/sessions/{mine}/messages", json={"content": "over http", "role": "user"})
        assert posted.status_code == 201 and posted.json()["session_id"] == mine
        page = http.get(f"/api/sessions/{mine}/messages", params={"direction": "asc"}).json()
        assert [m["content"] for m in page["items"]] == ["over socket.io", "over http"]
        assert [s["id"] for s in http.get("/api/sessions").json()] == [mine]
        for path in (f"/api/sessions/{theirs}", f"/api/sessions/{theirs}/messages"):
            assert http.get(path).status_code == 403, path
        assert http.post(f"/api/sessions/{theirs}/messages", json={"content": "no"}).status_code == 403


async def test_listings_show_only_readable_sessions(
    authz: Server, world: World, as_token: Callable[[str], Awaitable[Client]]
) -> None:
    client = await as_token(world.token)
    for i in range(3):
        await client.ok("create_session", {"session_id": f"{world.prefix}{i}"})
    listed = await client.ok("list_sessions", {"limit": 1000})
    ids = {s["id"] for s in listed}
    assert {world.own, world.read, *(f"{world.prefix}{i}" for i in range(3))} <= ids
    assert all(i.startswith(world.prefix) or i == world.read for i in ids), ids
    # Paging one at a time by cursor walks the same sessions, each once.
    paged: list[str] = []
    cursor = None
    while True:
        page = await client.ok("list_sessions", {"limit": 1, **({"cursor": cursor} if cursor else {})})
        if not page:
            break
        paged.append(page[0]["id"])
        cursor = page[0]["id"]
    assert paged == [s["id"] for s in listed]
    refused = await client.call("list_sessions", {"cursor": world.other})
    assert refused["error"]["code"] == "forbidden"
    tasks = await client.ok("list_tasks", {"limit": 100})
    assert {t["context_id"] for t in tasks} == {world.own, world.read}
    with bearer(authz, world.token) as http:
        assert [s["id"] for s in http.get("/api/sessions", params={"limit": 1000}).json()] == [s["id"] for s in listed]


# -- HTTP: every route, allowed and refused ---------------------------------------------------

HttpCase = tuple[Callable[[World], str], Callable[[World], Any], int]  # (url, json body or None, status)

HTTP_TABLE: dict[tuple[str, str], list[HttpCase]] = {
    ("GET", "/healthz"): [(lambda w: "/healthz", lambda w: None, 200)],
    ("GET", "/metrics"): [(lambda w: "/metrics", lambda w: None, 403)],  # admins only
    ("GET", "/api/sessions"): [(lambda w: "/api/sessions", lambda w: None, 200)],
    ("POST", "/api/sessions"): [
        (lambda w: "/api/sessions", lambda w: {"session_id": f"{w.prefix}http"}, 201),
        (lambda w: "/api/sessions", lambda w: {"session_id": f"{w.base}:http"}, 403),
        (lambda w: "/api/sessions", lambda w: {}, 403),
    ],
    ("GET", "/api/sessions/{session_id}"): [
        (lambda w: f"/api/sessions/{w.read}", lambda w: None, 200),
        (lambda w: f"/api/sessions/{w.other}", lambda w: None, 403),
    ],
    ("GET", "/api/sessions/{session_id}/messages"): [
        (lambda w: f"/api/sessions/{w.read}/messages", lambda w: None, 200),
        (lambda w: f"/api/sessions/{w.other}/messages", lambda w: None, 403),
    ],
    ("POST", "/api/sessions/{session_id}/messages"): [
        (lambda w: f"/api/sessions/{w.own}/messages", lambda w: {"content": "hi"}, 201),
        (lambda w: f"/api/sessions/{w.read}/messages", lambda w: {"content": "no"}, 403),
        (lambda w: f"/api/sessions/{w.other}/messages", lambda w: {"content": "no"}, 403),
    ],
    ("GET", "/api/messages/{message_uuid}"): [
        (lambda w: f"/api/messages/{w.messages[w.read]}", lambda w: None, 200),
        (lambda w: f"/api/messages/{w.messages[w.other]}", lambda w: None, 403),
    ],
    ("GET", "/api/agents"): [(lambda w: "/api/agents", lambda w: None, 200)],
    ("GET", "/api/agents/{agent_id}"): [(lambda w: "/api/agents/phil_connors", lambda w: None, 200)],
}


async def test_every_route_is_confined_to_the_grants(authz: Server, world: World) -> None:
    with authz.http() as admin:
        paths = admin.get("/openapi.json").json()["paths"]
        routes = {(method.upper(), path) for path, methods in paths.items() for method in methods}
        assert routes == set(HTTP_TABLE), "a route without a row in HTTP_TABLE: say who may call it"
        assert admin.get("/metrics").status_code == 200
        with bearer(authz, world.token) as client:
            for (method, _), cases in HTTP_TABLE.items():
                for url_of, body_of, status in cases:
                    url, body = url_of(world), body_of(world)
                    response = client.request(method, url, json=body)
                    assert response.status_code == status, (method, url, body, response.text)
                    if status == 403:
                        assert response.json()["error"]["code"] == "forbidden"
        for session in (world.read, world.other):
            assert admin.get(f"/api/sessions/{session}").json()["message_count"] == 1
        assert admin.get(f"/api/sessions/{world.base}:http").status_code == 404
    with httpx.Client(base_url=authz.url, timeout=CALL_TIMEOUT) as anonymous:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {mint('p', exp=1)}"}):
            response = anonymous.get(f"/api/sessions/{world.read}", headers=headers)
            assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
        expired = anonymous.get("/api/sessions", headers={"Authorization": f"Bearer {mint('p', exp=1)}"})
        assert "expired" in expired.json()["error"]["message"]


# -- who wrote it: sender and agent_id ----------------------------------------------------------


async def test_sender_is_stamped_and_agent_id_bound(
    authz: Server, world: World, as_token: Callable[[str], Awaitable[Client]], sio_clients: Make
) -> None:
    watcher = await sio_clients(authz)
    await watcher.ok("join", {"session_id": world.own})
    bot = await as_token(mint("bot-sub", sessions=[world.own], agent_id="helper"))
    stored = await bot.ok("send_message", {"session_id": world.own, "content": "as bound"})
    assert (stored["sender"], stored["agent_id"]) == ("bot-sub", "helper")
    stored = await bot.ok("send_message", {"session_id": world.own, "content": "named", "agent_id": "helper"})
    assert (stored["sender"], stored["agent_id"]) == ("bot-sub", "helper")
    refused = await bot.call("send_message", {"session_id": world.own, "content": "x", "agent_id": "someone"})
    assert refused["error"]["code"] == "forbidden"
    # sender is the server's to set: a client that sends one is refused, and nothing is written.
    refused = await bot.call("send_message", {"session_id": world.own, "content": "x", "sender": "admin"})
    assert refused["error"]["code"] == "invalid" and "sender" in refused["error"]["message"]

    person = await as_token(world.token)  # no agent_id claim
    stored = await person.ok("send_message", {"session_id": world.own, "content": "plain"})
    assert stored["sender"] == "p" and "agent_id" not in stored
    refused = await person.call("send_message", {"session_id": world.own, "content": "x", "agent_id": "helper"})
    assert refused["error"]["code"] == "forbidden"

    admin = await sio_clients(authz)  # the static token: an admin without a sub
    stored = await admin.ok("send_message", {"session_id": world.own, "content": "admin", "agent_id": "anyone"})
    assert "sender" not in stored and stored["agent_id"] == "anyone"

    with bearer(authz, mint("bot-sub", sessions=[world.own], agent_id="helper")) as http:
        posted = http.post(f"/api/sessions/{world.own}/messages", json={"content": "over http"})
        assert posted.status_code == 201 and (posted.json()["sender"], posted.json()["agent_id"]) == ("bot-sub", "helper")
        refused_http = http.post(f"/api/sessions/{world.own}/messages", json={"content": "x", "sender": "admin"})
        assert refused_http.status_code == 400 and "sender" in refused_http.json()["error"]["message"]
        refused_http = http.post(f"/api/sessions/{world.own}/messages", json={"content": "x", "agent_id": "other"})
        assert refused_http.status_code == 403
        fetched = http.get(f"/api/messages/{posted.json()['message_uuid']}").json()
        assert fetched["sender"] == "bot-sub"

    # The room events and the history carry the stamp as stored.
    contents = ["as bound", "named", "plain", "admin", "over http"]
    seen = [(await watcher.next_event())[1] for _ in contents]
    assert [m["content"] for m in seen] == contents
    assert [m.get("sender") for m in seen] == ["bot-sub", "bot-sub", "p", None, "bot-sub"]
    history = await watcher.ok("get_messages", {"session_id": world.own, "direction": "asc"})
    assert [m.get("sender") for m in history["items"]] == [None, "bot-sub", "bot-sub", "p", None, "bot-sub"]


# -- expiry and refresh -------------------------------------------------------------------------


async def _disconnected(client: Client, within: float) -> bool:
    deadline = time.monotonic() + within
    while client.sio.connected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return not client.sio.connected


async def test_an_expired_token_is_refused_and_a_connection_ends_at_expiry(
    authz: Server, world: World, sio_clients: Make
) -> None:
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio_clients(authz, auth={"token": mint("p", sessions=[world.own], exp=int(time.time()) - 5)})
    client = await sio_clients(authz, auth={"token": mint("p", sessions=[world.own], exp_in=2)})
    await client.ok("join", {"session_id": world.own})
    assert await _disconnected(client, within=2 + WAIT), "the connection outlived its token"


async def test_a_refresh_keeps_the_connection_and_can_narrow_it(
    authz: Server, world: World, sio_clients: Make
) -> None:
    grants = {"sessions": [world.own], "read_sessions": [world.read]}
    client = await sio_clients(authz, auth={"token": mint("p", **grants, exp_in=2)})
    await client.ok("join", {"session_id": world.own})
    await client.ok("join", {"session_id": world.read})
    # A fresh token of another sub, or one that does not verify, changes nothing.
    assert (await client.call("refresh", {"token": mint("q", **grants, exp_in=60)}))["error"]["code"] == "forbidden"
    assert (await client.call("refresh", {"token": mint("p", exp=1)}))["error"]["code"] == "unauthorized"
    refreshed = await client.ok("refresh", {"token": mint("p", sessions=[world.own], exp_in=60)})
    assert refreshed["left"] == [world.read] and refreshed["sub"] == "p"
    # Past the first token's exp, the connection is still up and acts with the new grants.
    expired_at = time.time() + 2
    while time.time() < expired_at + 1:
        await asyncio.sleep(0.1)
    assert client.sio.connected
    await client.ok("send_message", {"session_id": world.own, "content": "still here"})
    assert (await client.call("get_messages", {"session_id": world.read}))["error"]["code"] == "forbidden"
    admin = await sio_clients(authz)
    await admin.ok("send_message", {"session_id": world.read, "content": "not for p any more"})
    await admin.ok("send_message", {"session_id": world.own, "content": "for p"})
    _, message = await client.next_event()
    assert message["content"] == "for p", "an event of a session the refreshed token does not grant arrived"


# -- recovery with a token whose grants shrank ----------------------------------------------------


@pytest.fixture
async def raw() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_recovery_restores_only_what_the_new_token_grants(
    authz: Server, world: World, raw: aiohttp.ClientSession, sio_clients: Make
) -> None:
    both = mint("p", sessions=[world.own], read_sessions=[world.read], exp_in=600)
    ws = await raw_open(raw, authz, {"token": both})
    pid = json.loads((await raw_until(ws, "40"))[2:])["pid"]
    for n, session in enumerate((world.own, world.read), start=1):
        await ws.send_str(f"42{n}" + json.dumps(["join", {"session_id": session}]))
        assert '"ok":true' in (await raw_until(ws, f"43{n}")).replace(" ", "")
    await ws.close()  # a lost transport: the state is kept
    admin = await sio_clients(authz)
    for session in (world.own, world.read):
        await admin.ok("send_message", {"session_id": session, "content": f"missed in {session}"})
    narrower = mint("p", sessions=[world.own], exp_in=600)
    back = await raw_open(raw, authz, {"token": narrower, "pid": pid})
    seen: list[str] = []
    reply = json.loads((await raw_until(back, "40", seen))[2:])
    assert reply["pid"] == pid  # recovered...
    replayed = [json.loads(p[2:])[1] for p in seen if p.startswith("42")]
    assert [m["content"] for m in replayed] == [f"missed in {world.own}"]  # ...with only the granted room
    await admin.ok("send_message", {"session_id": world.read, "content": "live, not granted"})
    await admin.ok("send_message", {"session_id": world.own, "content": "live, granted"})
    live = json.loads((await raw_until(back, "42"))[2:])
    assert live[1]["content"] == "live, granted"
    await back.close()


async def test_a_connection_ended_at_expiry_is_told_and_not_recoverable(
    authz: Server, world: World, raw: aiohttp.ClientSession
) -> None:
    ws = await raw_open(raw, authz, {"token": mint("p", sessions=[world.own], exp_in=2)})
    pid = json.loads((await raw_until(ws, "40"))[2:])["pid"]
    await ws.send_str("421" + json.dumps(["join", {"session_id": world.own}]))
    await raw_until(ws, "431")
    # The server's DISCONNECT (41), then the transport closes.
    assert await asyncio.wait_for(raw_until(ws, "41"), 2 + WAIT) == "41"
    await asyncio.wait_for(ws.receive(), WAIT)
    assert ws.closed
    back = await raw_open(raw, authz, {"token": mint("p", sessions=[world.own], exp_in=600), "pid": pid})
    assert json.loads((await raw_until(back, "40"))[2:])["pid"] != pid  # a new connection: it rejoins itself
    await back.close()


async def test_a_recovery_with_a_bad_token_is_refused_and_keeps_the_state(
    authz: Server, world: World, raw: aiohttp.ClientSession
) -> None:
    token = mint("p", sessions=[world.own], exp_in=600)
    ws = await raw_open(raw, authz, {"token": token})
    pid = json.loads((await raw_until(ws, "40"))[2:])["pid"]
    await ws.send_str("421" + json.dumps(["join", {"session_id": world.own}]))
    await raw_until(ws, "431")
    await ws.close()
    refused = await raw_open(raw, authz, {"token": mint("p", sessions=[world.own], exp=1), "pid": pid})
    assert "expired" in await raw_until(refused, "44")
    await refused.close()
    back = await raw_open(raw, authz, {"token": token, "pid": pid})
    assert json.loads((await raw_until(back, "40"))[2:])["pid"] == pid
    await back.close()


def test_jwt_settings_are_checked_at_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    for args, needle in (
        (("--jwt-secret", "short"), "at least 32 bytes"),
        (("--jwt-audience", "a"), "needs --jwt-secret"),
        (("--cors-origins", "*"), "needs a token"),
        (("--cors-origins", "example.com"), "is not an origin"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "chatmdb", "serve", "--db", str(tmp_path / "db"), "--port", "0", *args],
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode != 0 and needle in done.stderr + done.stdout, (args, done.stderr)


# -- tokens, without a server -------------------------------------------------------------------


def _pem(public_key: Any, tmp_path: Path, name: str) -> Path:
    from cryptography.hazmat.primitives import serialization

    path = tmp_path / name
    path.write_bytes(
        public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


def test_public_keys_pick_their_algorithm_and_refuse_the_other(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    from chatmdb.errors import Unauthorized, ValidationError
    from chatmdb.gateway.auth import Authenticator, JwtSettings

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    for private, algorithm, other in ((rsa_key, "RS256", ec_key), (ec_key, "ES256", rsa_key)):
        settings = JwtSettings.from_public_key(_pem(private.public_key(), tmp_path, algorithm), audience="chat", issuer="idp")
        assert settings.algorithm == algorithm
        auth = Authenticator(jwt_settings=settings)
        good = jwt.encode({"sub": "k", "aud": "chat", "iss": "idp", "sessions": ["s"]}, private, algorithm=algorithm)
        assert auth.authenticate(good).can_write("s")
        for bad in (
            jwt.encode({"sub": "k", "aud": "chat", "iss": "idp"}, other, algorithm="ES256" if algorithm == "RS256" else "RS256"),
            jwt.encode({"sub": "k", "aud": "other", "iss": "idp"}, private, algorithm=algorithm),
            jwt.encode({"sub": "k", "aud": "chat", "iss": "someone"}, private, algorithm=algorithm),
            jwt.encode({"sub": "k", "iss": "idp"}, private, algorithm=algorithm),  # aud required
            jwt.encode({"sub": "k", "aud": "chat", "iss": "idp"}, SECRET, algorithm="HS256"),  # algorithm confusion
        ):
            with pytest.raises(Unauthorized):
                auth.authenticate(bad)
    with pytest.raises(ValidationError, match="neither"):
        JwtSettings.from_public_key(_pem(ed25519.Ed25519PrivateKey.generate().public_key(), tmp_path, "ed"))
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(ValidationError, match="PEM"):
        JwtSettings.from_public_key(tmp_path / "junk.pem")


def test_malformed_claims_are_unauthorized() -> None:
    from chatmdb.errors import Unauthorized
    from chatmdb.gateway.auth import Authenticator, JwtSettings

    auth = Authenticator("static", JwtSettings.from_secret(SECRET))
    assert auth.authenticate("static").admin and auth.authenticate("static").sub is None
    for claims, needle in (
        ({}, "sub"),
        ({"sub": ""}, "sub"),
        ({"sub": "x" * 257}, "sub"),
        ({"sub": "p", "sessions": "s1"}, "sessions"),
        ({"sub": "p", "sessions": [1]}, "sessions"),
        ({"sub": "p", "read_sessions": [""]}, "read_sessions"),
        ({"sub": "p", "sessions": ["s"] * 1001}, "sessions"),
        ({"sub": "p", "admin": "yes"}, "admin"),
        ({"sub": "p", "agent_id": 7}, "agent_id"),
        ({"sub": "p", "exp": int(time.time()) - 1}, "expired"),
    ):
        with pytest.raises(Unauthorized, match=needle):
            auth.authenticate(jwt.encode(claims, SECRET, algorithm="HS256"))
    for credential in (None, "", 7, "\ud800", "a.b.c"):
        with pytest.raises(Unauthorized):
            auth.authenticate(credential)
    # Without a JWT key, a JWT is just a wrong token.
    with pytest.raises(Unauthorized):
        Authenticator("static").authenticate(mint("p", admin=True))


def test_grants_match_ids_prefixes_and_everything() -> None:
    from chatmdb.gateway.auth import Grants, Principal

    grants = Grants(["a", "team-7/*", "x*"])
    assert "a" in grants and "team-7/b" in grants and "team-7/" in grants and "xy" in grants
    assert "ab" not in grants and "team-7" not in grants and "team-8/b" not in grants and "b" not in grants
    assert "anything" in Grants(["*"]) and "anything" not in Grants()
    reader = Principal(sub="r", read=Grants(["r"]), write=Grants(["w"]))
    assert reader.can_read("r") and reader.can_read("w") and reader.can_write("w")
    assert not reader.can_write("r") and not reader.reads_all
    assert Principal(sub="all", read=Grants(["*"])).reads_all


async def test_an_admin_jwt_does_everything_and_is_named(
    authz: Server, world: World, as_token: Callable[[str], Awaitable[Client]]
) -> None:
    admin = await as_token(mint("root", admin=True))
    made = await admin.ok("create_session", {"title": "no id needed"})
    stored = await admin.ok("send_message", {"session_id": world.other, "content": "hi", "agent_id": "any"})
    assert (stored["sender"], stored["agent_id"]) == ("root", "any")
    listed = {s["id"] for s in await admin.ok("list_sessions", {"limit": 1000})}
    assert {made["id"], world.other, world.read, world.own} <= listed
    with bearer(authz, mint("root", admin=True)) as http:
        assert http.get("/metrics").status_code == 200


def test_the_public_key_flag_serves_es256(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    server = start_server(tmp_path, "sqlite", args=("--jwt-public-key", str(_pem(key.public_key(), tmp_path, "k.pem"))))
    try:
        good = jwt.encode({"sub": "k", "read_sessions": ["default"]}, key, algorithm="ES256")
        with bearer(server, good) as http:
            assert [s["id"] for s in http.get("/api/sessions").json()] == ["default"]
            assert http.post("/api/sessions/default/messages", json={"content": "x"}).status_code == 403
        with bearer(server, mint("k", admin=True)) as http:  # HS256 with a secret the server does not have
            assert http.get("/api/sessions").status_code == 401
    finally:
        stop_and_check(server)


# -- records reached by their own id: no existence oracle ----------------------------------------


async def test_a_record_of_an_ungranted_session_and_an_unknown_one_are_refused_alike(
    authz: Server, world: World, as_token: Callable[[str], Awaitable[Client]]
) -> None:
    client = await as_token(world.token)
    unknown = f"{world.base}-nothing"
    probes: list[tuple[str, Callable[[str], dict[str, Any]], str]] = [
        ("get_task", lambda key: {"task_id": key}, world.tasks[world.other]),
        ("update_task", lambda key: {"task_id": key, "state": "working"}, world.tasks[world.other]),
        ("update_context", lambda key: {"context_id": key, "data": {"v": 9}}, world.contexts[world.other]),
        ("list_tasks", lambda key: {"cursor": key}, world.tasks[world.other]),
    ]
    for event, payload_of, existing in probes:
        refusals = []
        for key in (existing, unknown):
            ack = await client.call(event, payload_of(key))
            assert ack["ok"] is False and ack["error"]["code"] == "forbidden", (event, key, ack)
            assert world.other not in ack["error"]["message"], "the refusal names the record's session"
            refusals.append(ack["error"]["message"].replace(key, "<id>"))
        assert refusals[0] == refusals[1], (event, refusals)
    with bearer(authz, world.token) as http:
        answers = [http.get(f"/api/messages/{key}") for key in (world.messages[world.other], unknown)]
        assert [a.status_code for a in answers] == [403, 403]
        assert answers[0].json()["error"]["message"].replace(world.messages[world.other], "<id>") == answers[1].json()[
            "error"
        ]["message"].replace(unknown, "<id>")
        assert world.other not in answers[0].text
        # Within its grants, an unknown record is just unknown.
        assert http.get(f"/api/messages/{world.messages[world.read]}").status_code == 200
    # A token that reads every session learns nothing by the difference: it gets not_found.
    everyone = await as_token(mint("reader", read_sessions=["*"]))
    assert (await everyone.call("get_task", {"task_id": unknown}))["error"]["code"] == "not_found"
    assert (await everyone.call("update_task", {"task_id": unknown, "state": "working"}))["error"]["code"] == "forbidden"


# -- tokens: size, clock skew, and a connection past its exp --------------------------------------


def test_an_oversized_token_is_refused_before_it_is_decoded() -> None:
    from chatmdb.errors import Unauthorized
    from chatmdb.gateway.auth import Authenticator, JwtSettings

    auth = Authenticator(jwt_settings=JwtSettings.from_secret(SECRET))
    fits = mint("p", pad="x" * 8_000)
    assert auth.authenticate(fits).sub == "p"
    huge = mint("p", pad="x" * 20_000)  # valid, but each one cached would hold this much
    with pytest.raises(Unauthorized, match="longer"):
        auth.authenticate(huge)


def test_nbf_and_iat_allow_for_clock_skew_and_exp_does_not() -> None:
    from chatmdb.errors import Unauthorized
    from chatmdb.gateway.auth import Authenticator, JwtSettings

    auth = Authenticator(jwt_settings=JwtSettings.from_secret(SECRET))
    now = int(time.time())
    # An issuer whose clock is a few seconds ahead: its fresh tokens are good here.
    assert auth.authenticate(mint("p", iat=now + 5, nbf=now + 5, exp_in=600)).sub == "p"
    for claims, needle in (
        ({"nbf": now + 600}, "not yet valid"),
        ({"iat": now + 600}, "not yet valid"),
        ({"exp": now - 1}, "expired"),  # no leeway past exp
        ({"exp": now}, "expired"),
    ):
        with pytest.raises(Unauthorized, match=needle):
            auth.authenticate(mint("p", **claims))


def test_an_exp_out_of_range_is_unauthorized_not_a_crash() -> None:
    from chatmdb.errors import Unauthorized
    from chatmdb.gateway.auth import Authenticator, JwtSettings

    auth = Authenticator(jwt_settings=JwtSettings.from_secret(SECRET))
    with pytest.raises(Unauthorized, match="exp"):
        auth.authenticate(mint("p", exp=10**400))  # a JSON integer no float holds
    assert auth.authenticate(mint("p", exp=10**17)).expires_at == 1e17  # far, but a time


async def test_a_connection_past_its_exp_is_refused_every_event(store: Any) -> None:
    from chatmdb.gateway import create_app
    from chatmdb.gateway.auth import Grants, JwtSettings, Principal

    # In process: the disconnect at exp is a timer, and until the transport is
    # closed its events arrive; past exp, the grants are gone.
    session_id = store.create_session(title="expiry")["id"]
    app = create_app(store, jwt=JwtSettings.from_secret(SECRET))
    try:
        events, principals = app.gateway.events, app.gateway.sio.principals
        principals["live"] = Principal(sub="p", write=Grants(["*"]), expires_at=time.time() + 600)
        principals["past"] = Principal(sub="p", write=Grants(["*"]), expires_at=time.time() - 1)
        live = await events.trigger_event("get_session", "live", {"session_id": session_id})
        assert live["ok"] is True, live  # type: ignore[index]
        for event, payload in (
            ("get_session", {"session_id": session_id}),
            ("send_message", {"session_id": session_id, "content": "after exp"}),
            ("refresh", {"token": mint("p", sessions=["*"], exp_in=600)}),
        ):
            ack = await events.trigger_event(event, "past", payload)
            assert ack["ok"] is False and ack["error"]["code"] == "unauthorized", (event, ack)  # type: ignore[index]
        assert store.get_session(session_id)["message_count"] == 0
    finally:
        app.gateway.metrics.close()


async def test_a_connection_is_recovered_only_by_its_own_sub(
    authz: Server, world: World, raw: aiohttp.ClientSession, sio_clients: Make
) -> None:
    mine = mint("p", sessions=[world.own], exp_in=600)
    theirs = mint("q", sessions=[world.own], exp_in=600)  # the same grants, another sub
    ws = await raw_open(raw, authz, {"token": mine})
    pid = json.loads((await raw_until(ws, "40"))[2:])["pid"]
    await ws.send_str("421" + json.dumps(["join", {"session_id": world.own}]))
    await raw_until(ws, "431")
    # While p is connected, q presenting p's pid neither ends p's connection nor takes it over.
    other = await raw_open(raw, authz, {"token": theirs, "pid": pid})
    assert json.loads((await raw_until(other, "40"))[2:])["pid"] != pid
    await other.close()
    admin = await sio_clients(authz)
    await admin.ok("send_message", {"session_id": world.own, "content": "p is still here"})
    assert json.loads((await raw_until(ws, "42"))[2:])[1]["content"] == "p is still here"
    await ws.close()  # a lost transport: the state is kept
    await admin.ok("send_message", {"session_id": world.own, "content": "missed by p"})
    # Once p is gone, q still does not recover p's rooms and missed events...
    thief = await raw_open(raw, authz, {"token": theirs, "pid": pid})
    seen: list[str] = []
    assert json.loads((await raw_until(thief, "40", seen))[2:])["pid"] != pid
    assert not [p for p in seen if p.startswith("42")]
    await thief.close()
    # ...and p, with a fresh token of its sub, still does.
    back = await raw_open(raw, authz, {"token": mint("p", sessions=[world.own], exp_in=600), "pid": pid})
    seen = []
    assert json.loads((await raw_until(back, "40", seen))[2:])["pid"] == pid
    assert "missed by p" in [json.loads(p[2:])[1]["content"] for p in seen if p.startswith("42")]
    await back.close()


async def test_at_exp_a_connection_leaves_its_rooms_before_its_transport_closes(store: Any) -> None:
    from chatmdb.gateway import create_app
    from chatmdb.gateway.auth import Grants, JwtSettings, Principal
    from chatmdb.gateway.recovery import room

    # In process: closing the transport waits for its queue to flush; a room
    # event must not join that queue once the token expired.
    app = create_app(store, jwt=JwtSettings.from_secret(SECRET))
    try:
        sio = app.gateway.sio
        sid = await sio.manager.connect("an-eio-sid", "/")
        await sio.enter_room(sid, room("s"))
        sio.principals[sid] = Principal(sub="p", read=Grants(["s"]), expires_at=time.time() - 1)
        sio._expire(sid)
        await asyncio.gather(*sio._closing)
        assert room("s") not in sio.manager.get_rooms(sid, "/")
    finally:
        app.gateway.metrics.close()


def test_an_hs256_token_keyed_with_the_public_key_is_refused(tmp_path: Path) -> None:
    import base64
    import hashlib
    import hmac

    from cryptography.hazmat.primitives.asymmetric import rsa

    from chatmdb.errors import Unauthorized
    from chatmdb.gateway.auth import Authenticator, JwtSettings

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = _pem(key.public_key(), tmp_path, "rsa.pem")
    auth = Authenticator(jwt_settings=JwtSettings.from_public_key(pem))

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    # PyJWT will not sign with a PEM as an HMAC secret; an attacker would.
    for alg in ("HS256", "none"):
        head = part(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        body = part(json.dumps({"sub": "x", "admin": True}).encode())
        signature = part(hmac.new(pem.read_bytes(), f"{head}.{body}".encode(), hashlib.sha256).digest())
        with pytest.raises(Unauthorized, match="alg"):
            auth.authenticate(f"{head}.{body}.{signature if alg != 'none' else ''}")
