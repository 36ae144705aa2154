"""The HTTP API against a real server, on both backends."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx

from .conftest import Connect


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, f"{response.status_code} {response.text[:300]}"
    body = response.json()
    assert body["ok"] is False and body["error"]["code"] == code and isinstance(body["error"]["message"], str)


def test_sessions_messages_and_agents(http: httpx.Client) -> None:
    sid = f"h-{uuid.uuid4()}"
    created = http.post("/api/sessions", json={"title": "over http", "session_id": sid, "metadata": {"a": 1}})
    assert created.status_code == 201 and created.json()["id"] == sid
    assert http.get(f"/api/sessions/{sid}").json() == created.json()
    assert sid in [s["id"] for s in http.get("/api/sessions", params={"limit": 1000}).json()]
    anonymous = http.post("/api/sessions")
    assert anonymous.status_code == 201 and anonymous.json()["title"] is None

    posted = http.post(f"/api/sessions/{sid}/messages", json={"content": "hi", "agent_id": "phil_connors"})
    assert posted.status_code == 201
    message = posted.json()
    assert message["seq"] == 1 and message["role"] == "user" and message["session_id"] == sid
    assert http.get(f"/api/messages/{message['message_uuid']}").json() == message
    page = http.get(f"/api/sessions/{sid}/messages").json()
    assert page["items"] == [message] and page["pagination"]["total"] == 1

    agents = http.get("/api/agents").json()
    assert [a["agent_id"] for a in agents] == sorted(a["agent_id"] for a in agents)
    assert http.get("/api/agents/chloe").json()["name"] == "Chloe"


async def test_post_message_is_idempotent_and_broadcast(
    http: httpx.Client, connect: Connect, new_session: Callable[[], Any]
) -> None:
    session = new_session()
    listener = await connect()
    await listener.ok("join", {"session_id": session["id"]})
    body = {"content": "from a tool", "message_uuid": str(uuid.uuid4()), "metadata": {"k": [1, 2]}}

    first = http.post(f"/api/sessions/{session['id']}/messages", json=body)
    retry = http.post(f"/api/sessions/{session['id']}/messages", json=body)
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json() and retry.headers.get("idempotent-replayed") == "true"
    assert "idempotent-replayed" not in first.headers

    marker = http.post(f"/api/sessions/{session['id']}/messages", json={"content": "marker"}).json()
    assert await listener.next_event() == ("message", first.json())
    assert await listener.next_event() == ("message", marker)
    assert marker["seq"] == 2


def test_bad_requests_get_json_errors_and_change_nothing(http: httpx.Client, new_session: Callable[[], Any]) -> None:
    session = new_session()
    sid = session["id"]
    missing = f"missing-{uuid.uuid4()}"
    before = http.get("/api/sessions", params={"limit": 1000}).json()
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("GET", f"/api/sessions/{missing}", {}, 404, "not_found"),
        ("GET", f"/api/sessions/{missing}/messages", {}, 404, "not_found"),
        ("GET", f"/api/messages/{missing}", {}, 404, "not_found"),
        ("GET", f"/api/agents/{missing}", {}, 404, "not_found"),
        ("GET", "/api/nothing-here", {}, 404, "not_found"),
        ("GET", "/api/sessions", {"params": {"limit": "ten"}}, 400, "invalid"),
        ("GET", "/api/sessions", {"params": {"limit": 0}}, 400, "invalid"),
        ("GET", "/api/sessions", {"params": {"limit": 10**30}}, 400, "invalid"),
        ("GET", "/api/sessions", {"params": {"cursor": missing}}, 400, "invalid"),
        ("GET", f"/api/sessions/{sid}/messages", {"params": {"limit": -1}}, 400, "invalid"),
        ("GET", f"/api/sessions/{sid}/messages", {"params": {"limit": 1001}}, 400, "invalid"),
        ("GET", f"/api/sessions/{sid}/messages", {"params": {"skip": "x"}}, 400, "invalid"),
        ("GET", f"/api/sessions/{sid}/messages", {"params": {"direction": "up"}}, 400, "invalid"),
        ("GET", f"/api/sessions/{sid}/messages", {"params": {"cursor": "-3"}}, 400, "invalid"),
        ("GET", f"/api/sessions/{sid}/messages", {"params": {"cursor": "9" * 30}}, 400, "invalid"),
        ("POST", "/api/sessions", {"json": {"session_id": sid}}, 409, "conflict"),
        ("POST", "/api/sessions", {"json": {"title": 5}}, 400, "invalid"),
        ("POST", "/api/sessions", {"json": {"sesion_id": "typo"}}, 400, "invalid"),
        ("POST", "/api/sessions", {"json": ["not", "an", "object"]}, 400, "invalid"),
        ("POST", "/api/sessions", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "invalid"),
        ("POST", "/api/sessions", {"json": {"session_id": "x" * 300}}, 400, "invalid"),
        ("POST", "/api/sessions", {"json": {"metadata": {"deep": [[[[1]]]] * 3, "n": 2**80}}}, 400, "invalid"),
        ("POST", f"/api/sessions/{sid}/messages", {"json": {}}, 400, "invalid"),
        ("POST", f"/api/sessions/{sid}/messages", {"json": {"content": 1}}, 400, "invalid"),
        ("POST", f"/api/sessions/{sid}/messages", {"json": {"content": "a", "metadata": []}}, 400, "invalid"),
        ("POST", f"/api/sessions/{sid}/messages", {"json": {"content": "a", "message_uuid": ""}}, 400, "invalid"),
        ("POST", f"/api/sessions/{sid}/messages", {"json": {"content": "a", "seq": 9}}, 400, "invalid"),
        ("POST", f"/api/sessions/{sid}/messages", {"json": {"content": "a", "created_at": "x"}}, 400, "invalid"),
        ("POST", f"/api/sessions/{sid}/messages", {"content": b"", "headers": {"content-type": "application/json"}}, 400, "invalid"),
        ("POST", f"/api/sessions/{missing}/messages", {"json": {"content": "a"}}, 404, "not_found"),
        ("POST", f"/api/sessions/{sid}/messages", {"json": {"content": "a" * (1024 * 1024 + 10)}}, 413, "too_large"),
        ("DELETE", f"/api/sessions/{sid}", {}, 405, "invalid"),
    ]
    failures = []
    for method, path, kwargs, status, code in cases:
        response = http.request(method, path, **kwargs)
        try:
            assert_error(response, status, code)
        except (AssertionError, ValueError, KeyError) as exc:
            failures.append(f"{method} {path} {kwargs!r:.100}: {exc}")
    assert not failures, "\n".join(failures)
    assert http.get(f"/api/sessions/{sid}").json() == session
    assert http.get("/api/sessions", params={"limit": 1000}).json() == before


def test_uuid_of_another_session_is_a_conflict(http: httpx.Client, new_session: Callable[[], Any]) -> None:
    one, two = new_session(), new_session()
    body = {"content": "x", "message_uuid": str(uuid.uuid4())}
    assert http.post(f"/api/sessions/{one['id']}/messages", json=body).status_code == 201
    assert_error(http.post(f"/api/sessions/{two['id']}/messages", json=body), 409, "conflict")


def test_openapi_schema_lists_the_endpoints(http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()
    paths = schema["paths"]
    for path, methods in {
        "/api/sessions": {"get", "post"},
        "/api/sessions/{session_id}": {"get"},
        "/api/sessions/{session_id}/messages": {"get", "post"},
        "/api/messages/{message_uuid}": {"get"},
        "/api/agents": {"get"},
        "/api/agents/{agent_id}": {"get"},
        "/healthz": {"get"},
        "/metrics": {"get"},
    }.items():
        assert methods <= set(paths[path]), path
    assert "201" in paths["/api/sessions/{session_id}/messages"]["post"]["responses"]
    assert "404" in paths["/api/sessions/{session_id}"]["get"]["responses"]


async def test_metrics(http: httpx.Client, connect: Connect, new_session: Callable[[], Any]) -> None:
    session = new_session()
    client = await connect()
    await client.ok("send_message", {"session_id": session["id"], "content": "counted"})
    http.post(f"/api/sessions/{session['id']}/messages", json={"content": "also counted"})
    http.get(f"/api/sessions/{session['id']}/messages")
    response = http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for line in response.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    assert samples['chatmdb_messages_written_total{via="socketio"}'] >= 1
    assert samples['chatmdb_messages_written_total{via="http"}'] >= 1
    assert samples["chatmdb_write_batch_size_count"] >= 2
    assert samples["chatmdb_commit_seconds_count"] >= 2
    assert samples['chatmdb_read_seconds_count{op="get_session_messages"}'] >= 1
    assert samples["chatmdb_connected_clients"] >= 1
    backend = http.get("/healthz").json()["backend"]
    assert samples[f'chatmdb_store_used_bytes{{backend="{backend}"}}'] > 0
    if backend == "lmdb":
        assert samples['chatmdb_store_map_bytes{backend="lmdb"}'] > 0
        assert 0 < samples['chatmdb_store_map_used_ratio{backend="lmdb"}'] < 1


def test_healthz(http: httpx.Client) -> None:
    assert http.get("/healthz").json()["ok"] is True
