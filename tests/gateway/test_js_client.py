"""The official JavaScript client (socket.io-client, pinned in tests/js) against a real server, on both backends."""

from __future__ import annotations

from typing import Any

import httpx

from .conftest import Server, run_node


def _error_code(ack: dict[str, Any]) -> str:
    assert ack["ok"] is False, ack
    return str(ack["error"]["code"])


def test_two_js_clients(server: Server, http: httpx.Client) -> None:
    r = run_node("two_clients.mjs", server.url)
    sid = r["session"]["id"]
    assert all(join["ok"] and join["data"]["missed"] == [] for join in r["joins"])

    first, retry, second = r["first"]["data"], r["retry"]["data"], r["second"]["data"]
    assert first["seq"] == 1 and second["seq"] == 2
    assert retry == first, "a retry with the same message_uuid must ack the stored message"
    # The other client got each stored record once, in order; the retry was not broadcast again.
    assert r["received"] == [first, second]
    assert r["catch_up"]["data"]["missed"] == [second] and r["catch_up"]["data"]["has_more"] is False
    assert r["history"]["data"]["items"] == [first]
    assert r["history"]["data"]["pagination"]["next_cursor"] == "1"

    assert {name: _error_code(ack) for name, ack in r["bad"].items()} == {
        "no_args": "invalid",
        "string": "invalid",
        "two_args": "invalid",
        "wrong_type": "invalid",
        "unknown_session": "not_found",
        "join_missing": "not_found",
        "join_bad_seq": "invalid",
        "get_messages_bad_limit": "invalid",
        "unknown_event": "invalid",
    }
    for transport in ("polling", "websocket"):
        outcome = r["too_large"][transport]
        assert _error_code(outcome["ack"]) == "too_large", transport
        assert outcome["after"]["ok"] is True and outcome["connected"] is True, transport
    assert r["alice_received"] == ["after polling", "after websocket"]

    # What the clients saw is what is stored.
    page = http.get(f"/api/sessions/{sid}/messages", params={"direction": "asc"}).json()
    assert r["final_count"] == page["pagination"]["total"] == 4
    assert [m["content"] for m in page["items"]] == ["hello", "second", "after polling", "after websocket"]
    assert page["items"][:2] == [first, second]
