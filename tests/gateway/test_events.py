"""Socket.IO events against a real server, driven by python-socketio clients, on both backends."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets

from .conftest import CALL_TIMEOUT, Connect, Server


async def test_two_clients_one_sends_the_other_receives(connect: Connect, new_session: Callable[[], Any]) -> None:
    session = new_session()
    alice, bob = await connect(), await connect(transports=["websocket"])
    for client in (alice, bob):
        joined = await client.ok("join", {"session_id": session["id"]})
        assert joined["session"]["id"] == session["id"] and joined["missed"] == [] and joined["has_more"] is False

    sent = await alice.ok("send_message", {"session_id": session["id"], "content": "hello", "agent_id": "chloe"})
    assert sent["seq"] == 1 and sent["content"] == "hello" and sent["role"] == "user"
    assert sent["agent_id"] == "chloe" and sent["message_uuid"] and sent["created_at"]

    assert await bob.next_event() == ("message", sent)
    reply = await bob.ok("send_message", {"session_id": session["id"], "content": "hi", "role": "assistant"})
    assert reply["seq"] == 2
    assert await alice.next_event() == ("message", reply)
    # The sender has the record in its ack and is not sent its own message.
    assert alice.events.empty() and bob.events.empty()


async def test_retried_send_is_not_duplicated(connect: Connect, new_session: Callable[[], Any]) -> None:
    session = new_session()
    sender, receiver = await connect(), await connect()
    await receiver.ok("join", {"session_id": session["id"]})
    payload = {"session_id": session["id"], "content": "once", "message_uuid": str(uuid.uuid4())}

    first = await sender.ok("send_message", payload)
    again = await sender.ok("send_message", payload)
    # Concurrent retries, as a client resending on ack timeouts would make.
    burst = await asyncio.gather(*(sender.ok("send_message", payload) for _ in range(5)))
    assert again == first and all(ack == first for ack in burst)

    marker = await sender.ok("send_message", {"session_id": session["id"], "content": "after"})
    assert marker["seq"] == first["seq"] + 1
    # Events arrive in order: if a retry had been broadcast, it would come before the marker.
    assert await receiver.next_event() == ("message", first)
    assert await receiver.next_event() == ("message", marker)
    page = await sender.ok("get_messages", {"session_id": session["id"], "direction": "asc"})
    assert [m["content"] for m in page["items"]] == ["once", "after"]


async def test_join_after_seq_returns_exactly_the_missed_messages(
    connect: Connect, new_session: Callable[[], Any]
) -> None:
    session = new_session()
    sender = await connect()
    sent = [await sender.ok("send_message", {"session_id": session["id"], "content": f"m{i}"}) for i in range(7)]
    late = await connect()

    joined = await late.ok("join", {"session_id": session["id"], "after_seq": 3})
    assert joined["missed"] == sent[3:] and joined["has_more"] is False
    assert joined["session"]["message_count"] == 7

    capped = await late.ok("join", {"session_id": session["id"], "after_seq": 0, "limit": 4})
    assert capped["missed"] == sent[:4] and capped["has_more"] is True
    rest = await late.ok("join", {"session_id": session["id"], "after_seq": capped["missed"][-1]["seq"], "limit": 4})
    assert rest["missed"] == sent[4:] and rest["has_more"] is False

    none = await late.ok("join", {"session_id": session["id"], "after_seq": 7})
    assert none["missed"] == [] and none["has_more"] is False
    # Joined (several times): it now receives new messages, once each.
    new = await sender.ok("send_message", {"session_id": session["id"], "content": "live"})
    assert await late.next_event() == ("message", new)


async def test_history_paging_over_events_and_http_agree(
    connect: Connect, http: httpx.Client, new_session: Callable[[], Any]
) -> None:
    session = new_session()
    client = await connect()
    for i in range(23):
        await client.ok("send_message", {"session_id": session["id"], "content": f"m{i}"})

    for direction in ("desc", "asc"):
        by_event: list[dict[str, Any]] = []
        by_http: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            payload: dict[str, Any] = {"session_id": session["id"], "limit": 5, "direction": direction}
            params: dict[str, Any] = {"limit": 5, "direction": direction}
            if cursor is not None:
                payload["cursor"] = params["cursor"] = cursor
            page = await client.ok("get_messages", payload)
            response = http.get(f"/api/sessions/{session['id']}/messages", params=params)
            assert response.status_code == 200, response.text
            assert response.json() == page
            assert page["pagination"]["total"] == 23
            by_event += page["items"]
            by_http += response.json()["items"]
            cursor = page["pagination"].get("next_cursor")
            if cursor is None:
                break
        seqs = list(range(1, 24))
        assert [m["seq"] for m in by_event] == (seqs[::-1] if direction == "desc" else seqs)
        assert by_event == by_http

    skipped = await client.ok("get_messages", {"session_id": session["id"], "skip": 20, "limit": 10})
    response = http.get(f"/api/sessions/{session['id']}/messages", params={"skip": 20, "limit": 10})
    assert [m["seq"] for m in skipped["items"]] == [3, 2, 1] and response.json() == skipped


async def test_a_client_gets_only_events_of_sessions_it_joined(
    connect: Connect, new_session: Callable[[], Any]
) -> None:
    mine, other = new_session(), new_session()
    watcher, sender = await connect(), await connect()
    await watcher.ok("join", {"session_id": mine["id"]})

    await sender.ok("send_message", {"session_id": other["id"], "content": "not for you"})
    await sender.ok("create_context", {"session_id": other["id"], "data": {"k": 1}})
    await sender.ok("create_task", {"context_id": other["id"]})
    marker = await sender.ok("send_message", {"session_id": mine["id"], "content": "for you"})
    assert await watcher.next_event() == ("message", marker)

    left = await watcher.ok("leave", {"session_id": mine["id"]})
    assert left == {"session_id": mine["id"]}
    await sender.ok("send_message", {"session_id": mine["id"], "content": "after leaving"})
    await watcher.ok("join", {"session_id": other["id"]})
    marker = await sender.ok("send_message", {"session_id": other["id"], "content": "marker"})
    assert await watcher.next_event() == ("message", marker)


async def test_sessions_agents_contexts_and_tasks(connect: Connect) -> None:
    actor, watcher = await connect(), await connect()
    sid = f"s-{uuid.uuid4()}"
    session = await actor.ok("create_session", {"title": "work", "session_id": sid, "metadata": {"team": "a"}})
    assert session["id"] == sid and session["session_metadata"] == {"team": "a"}
    assert await actor.ok("get_session", {"session_id": sid}) == session
    assert any(s["id"] == sid for s in await actor.ok("list_sessions", {"limit": 1000}))
    agents = await actor.ok("list_agents", {})
    assert {a["agent_id"] for a in agents} >= {"chloe", "phil_connors"}
    assert (await actor.ok("get_agent", {"agent_id": "chloe"}))["name"] == "Chloe"
    await watcher.ok("join", {"session_id": sid})

    context = await actor.ok("create_context", {"session_id": sid, "data": {"plan": 1}, "context_id": f"c-{sid}"})
    assert context["version"] == 1
    assert await watcher.next_event() == ("context_updated", context)
    updated = await actor.ok("update_context", {"context_id": context["id"], "data": {"plan": 2}, "expected_version": 1})
    assert updated["version"] == 2 and updated["data"] == {"plan": 2}
    assert await watcher.next_event() == ("context_updated", updated)
    stale = await actor.call("update_context", {"context_id": context["id"], "data": {"plan": 3}, "expected_version": 1})
    assert stale["ok"] is False and stale["error"]["code"] == "conflict"
    assert await actor.ok("list_contexts", {"session_id": sid}) == [updated]

    task = await actor.ok("create_task", {"context_id": sid, "metadata": {"p": 1}})
    assert task["status"]["state"] == "submitted"
    assert await watcher.next_event() == ("task_updated", task)
    done = await actor.ok("update_task", {"task_id": task["id"], "state": "completed", "status_message": "ok"})
    assert done["status"]["state"] == "completed"
    assert await watcher.next_event() == ("task_updated", done)
    assert await actor.ok("get_task", {"task_id": task["id"]}) == done
    assert await actor.ok("list_tasks", {"context_id": sid}) == [done]
    assert await actor.ok("list_tasks", {"context_id": sid, "state": "working"}) == []
    terminal = await actor.call("update_task", {"task_id": task["id"], "state": "working"})
    assert terminal["ok"] is False and terminal["error"]["code"] == "conflict"
    assert watcher.events.empty()


async def test_too_large_message_is_refused_and_the_connection_stays_usable(
    connect: Connect, http: httpx.Client, new_session: Callable[[], Any]
) -> None:
    # Over long-polling this is covered by the JavaScript client (tests/js/two_clients.mjs).
    session = new_session()
    client = await connect(transports=["websocket"])
    big = "x" * (1024 * 1024 + 1024)  # over the store's default max_message_size of 1 MiB
    ack = await client.call("send_message", {"session_id": session["id"], "content": big})
    assert ack["ok"] is False and ack["error"]["code"] == "too_large", str(ack)[:300]
    assert client.sio.connected
    small = await client.ok("send_message", {"session_id": session["id"], "content": "small"})
    assert small["content"] == "small"
    assert http.get(f"/api/sessions/{session['id']}").json()["message_count"] == 1
    response = http.post(f"/api/sessions/{session['id']}/messages", json={"content": "x" * (1024 * 1024 + 1024)})
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


def _bad_payloads(sid: str) -> list[tuple[str, tuple[Any, ...], str]]:
    """(event, args, expected error code) for malformed calls of every event."""
    missing = f"missing-{uuid.uuid4()}"
    cases: list[tuple[str, tuple[Any, ...], str]] = [
        ("send_message", (), "invalid"),
        ("send_message", ("just a string",), "invalid"),
        ("send_message", ([sid, "hi"],), "invalid"),
        ("send_message", ({"session_id": sid, "content": "a"}, {"extra": 1}), "invalid"),
        ("send_message", ({"session_id": sid},), "invalid"),
        ("send_message", ({"session_id": sid, "content": 5},), "invalid"),
        ("send_message", ({"session_id": sid, "content": "a", "metadata": "m"},), "invalid"),
        ("send_message", ({"session_id": sid, "content": "a", "message_uuid": 7},), "invalid"),
        ("send_message", ({"session_id": sid, "content": "a", "role": ["user"]},), "invalid"),
        ("send_message", ({"session_id": sid, "content": "a", "sesion_id": sid},), "invalid"),
        ("send_message", ({"session_id": sid, "content": "a", "message_uuid": ""},), "invalid"),
        ("send_message", ({"session_id": sid, "content": "a", "agent_id": "x" * 300},), "invalid"),
        ("send_message", ({"session_id": missing, "content": "a"},), "not_found"),
        ("send_message", ({"session_id": "", "content": "a"},), "invalid"),
        ("send_message", ({"session_id": sid, "content": "a", "metadata": {"n": 2**70}},), "invalid"),
        ("create_session", (None,), "invalid"),
        ("create_session", ({"title": 3},), "invalid"),
        ("create_session", ({"session_id": sid},), "conflict"),
        ("create_session", ({"metadata": []},), "invalid"),
        ("create_session", ({"session_id": "x" * 1000},), "invalid"),
        ("join", ({},), "invalid"),
        ("join", ({"session_id": missing},), "not_found"),
        ("join", ({"session_id": sid, "after_seq": "3"},), "invalid"),
        ("join", ({"session_id": sid, "after_seq": -1},), "invalid"),
        ("join", ({"session_id": sid, "after_seq": True},), "invalid"),
        ("join", ({"session_id": sid, "after_seq": 0, "limit": 0},), "invalid"),
        ("join", ({"session_id": 12},), "invalid"),
        ("leave", ({"session_id": missing},), "not_found"),
        ("leave", (3,), "invalid"),
        ("get_messages", ({"session_id": missing},), "not_found"),
        ("get_messages", ({"session_id": sid, "limit": 0},), "invalid"),
        ("get_messages", ({"session_id": sid, "limit": 5000},), "invalid"),
        ("get_messages", ({"session_id": sid, "direction": "up"},), "invalid"),
        ("get_messages", ({"session_id": sid, "cursor": "abc"},), "invalid"),
        ("get_messages", ({"session_id": sid, "cursor": -4},), "invalid"),
        ("get_messages", ({"session_id": sid, "skip": -1},), "invalid"),
        ("get_messages", ({"session_id": sid, "skip": 1.5},), "invalid"),
        ("list_sessions", ({"limit": "ten"},), "invalid"),
        ("list_sessions", ({"cursor": missing},), "invalid"),
        ("list_sessions", ("nope",), "invalid"),
        ("get_session", ({"session_id": missing},), "not_found"),
        ("get_session", ({},), "invalid"),
        ("list_agents", ({"x": 1},), "invalid"),
        ("list_agents", ((),), "invalid"),
        ("get_agent", ({"agent_id": missing},), "not_found"),
        ("get_agent", ({"agent_id": None},), "invalid"),
        ("create_context", ({"session_id": missing, "data": {}},), "not_found"),
        ("create_context", ({"session_id": sid, "data": "text"},), "invalid"),
        ("create_context", ({"session_id": sid},), "invalid"),
        ("update_context", ({"context_id": missing, "data": {}},), "not_found"),
        ("update_context", ({"context_id": missing, "data": {}, "expected_version": "1"},), "invalid"),
        ("list_contexts", ({"session_id": missing},), "not_found"),
        ("create_task", ({"context_id": missing},), "not_found"),
        ("create_task", ({"context_id": sid, "status": {"state": "sleeping"}},), "invalid"),
        ("create_task", ({"context_id": sid, "artifacts": {}},), "invalid"),
        ("create_task", ({"context_id": sid, "kind": "task", "bogus": 1},), "invalid"),
        ("update_task", ({"task_id": missing, "state": "working"},), "not_found"),
        ("update_task", ({"task_id": missing},), "invalid"),
        ("update_task", ({"task_id": missing, "state": ["working"]},), "invalid"),
        ("get_task", ({"task_id": missing},), "not_found"),
        ("list_tasks", ({"state": ["working"]},), "invalid"),
        ("list_tasks", ({"state": "sleeping"},), "invalid"),
        ("list_tasks", ({"limit": 1000},), "invalid"),
        ("no_such_event", ({},), "invalid"),
    ]
    return cases


async def test_bad_payloads_get_error_acks_and_change_nothing(
    connect: Connect, http: httpx.Client, new_session: Callable[[], Any]
) -> None:
    session = new_session()
    sid = session["id"]
    client, watcher = await connect(), await connect()
    await watcher.ok("join", {"session_id": sid})
    before_sessions = http.get("/api/sessions", params={"limit": 1000}).json()
    before_tasks = await client.ok("list_tasks", {"limit": 100})

    failures = []
    for event, args, code in _bad_payloads(sid):
        ack = await client.call(event, *args)
        if not (
            isinstance(ack, dict)
            and ack.get("ok") is False
            and ack["error"].get("code") == code
            and isinstance(ack["error"].get("message"), str)
        ):
            failures.append((event, args, code, ack))
    assert not failures, "\n".join(f"{e} {a!r:.120}: wanted {c}, got {k!r:.200}" for e, a, c, k in failures)

    assert client.sio.connected
    assert http.get(f"/api/sessions/{sid}").json() == session
    assert http.get("/api/sessions", params={"limit": 1000}).json() == before_sessions
    assert await client.ok("list_contexts", {"session_id": sid}) == []
    assert await client.ok("list_tasks", {"limit": 100}) == before_tasks
    marker = await client.ok("send_message", {"session_id": sid, "content": "still fine"})
    assert marker["seq"] == 1
    assert await watcher.next_event() == ("message", marker)


@pytest.mark.parametrize("count", [40])
async def test_concurrent_senders_get_contiguous_seqs(
    connect: Connect, http: httpx.Client, new_session: Callable[[], Any], count: int
) -> None:
    session = new_session()
    clients = [await connect() for _ in range(4)]
    acks = await asyncio.gather(
        *(
            clients[i % 4].ok("send_message", {"session_id": session["id"], "content": f"c{i}"})
            for i in range(count)
        )
    )
    assert sorted(a["seq"] for a in acks) == list(range(1, count + 1))
    assert http.get(f"/api/sessions/{session['id']}").json()["message_count"] == count


async def test_undecodable_event_packets_get_an_error_ack(server: Server) -> None:
    # Raw Socket.IO frames over engine.io's websocket: what no well-behaved client library sends.
    url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket"
    async with websockets.connect(url, open_timeout=CALL_TIMEOUT) as ws:

        async def receive() -> str:
            while True:
                frame = await asyncio.wait_for(ws.recv(), CALL_TIMEOUT)
                assert isinstance(frame, str)
                if frame == "2":  # engine.io ping
                    await ws.send("3")
                    continue
                return frame

        assert (await receive()).startswith("0{")
        await ws.send("40")
        assert (await receive()).startswith("40{")
        deep = "[" * 50_000 + "]" * 50_000
        for ack_id, data in ((1, f'["send_message",{deep}]'), (2, '["send_message",{"session_id":'), (3, deep)):
            await ws.send(f"42{ack_id}{data}")
            frame = await receive()
            assert frame.startswith(f"43{ack_id}["), frame[:100]
            ack = json.loads(frame[len(f"43{ack_id}") :])[0]
            assert ack["ok"] is False and ack["error"]["code"] == "invalid"
        await ws.send('424["list_agents",{}]')
        assert json.loads((await receive())[3:])[0]["ok"] is True
