"""Retention: prune() removes a prefix of each session's messages, and everything stays exact."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from _util import snapshot
from chatmdb import Store, ValidationError


def _fill(store: Store, session_id: str, count: int, **fields: Any) -> list[dict[str, Any]]:
    return [store.create_message({"session_id": session_id, "content": str(i), **fields}) for i in range(count)]


def _seqs(page: Any) -> list[int]:
    items = page["items"] if isinstance(page, dict) else page
    return [m["seq"] for m in items]


def test_keep_last_removes_a_prefix_and_paging_stays_exact(store: Store) -> None:
    store.create_session(session_id="s")
    sent = _fill(store, "s", 10, agent_id="a")
    assert store.prune(keep_last=4) == {"pruned": 6, "sessions": 1}
    assert _seqs(store.get_session_messages("s", direction="asc")) == [7, 8, 9, 10]
    assert _seqs(store.get_session_messages("s", direction="desc")) == [10, 9, 8, 7]
    assert _seqs(store.get_session_messages("s", direction="asc", skip=1)) == [8, 9, 10]
    assert _seqs(store.get_session_messages("s", direction="desc", skip=1)) == [9, 8, 7]
    assert _seqs(store.get_session_messages("s", direction="asc", cursor="2")) == [7, 8, 9, 10]
    page = store.get_session_messages("s", limit=3, direction="desc", include_total=True)
    assert isinstance(page, dict) and page["pagination"]["total"] == 4 and page["pagination"]["next_cursor"] == "8"
    rest = store.get_session_messages("s", limit=3, direction="desc", cursor="8", include_total=True)
    assert isinstance(rest, dict) and _seqs(rest) == [7] and "next_cursor" not in rest["pagination"]
    assert store.get_messages_after("s", 0) == (store.get_session_messages("s", direction="asc"), False)
    assert store.get_message(sent[0]["message_uuid"]) is None
    assert [m["seq"] for m in store.get_agent_messages("a", direction="asc")] == [7, 8, 9, 10]
    assert [o for o, *_ in store.events_after(0)[0]] == [m["seq"] for m in sent[6:]]  # one event per message
    assert [e[3]["seq"] for e in store.events_since(["s"], 0)[0]] == [7, 8, 9, 10]
    assert store.create_message({"session_id": "s"})["seq"] == 11  # seq numbers are never reused
    assert store.stats()["pruned_messages"] == 6 and store.stats()["messages"] == 5
    assert store.verify()["ok"], store.verify()["errors"]
    assert store.prune(keep_last=4) == {"pruned": 1, "sessions": 1}


def test_older_than_stops_at_the_first_message_to_keep(store: Store) -> None:
    store.create_session(session_id="s")
    for created in ("2020-01-01T00:00:00+00:00", "2020-06-01T00:00:00", "2030-01-01T00:00:00+00:00", "2020-07-01T00:00:00Z"):
        store.create_message({"session_id": "s", "created_at": created})
    # A young message in the middle keeps the ones after it: what goes is always a prefix.
    assert store.prune(older_than="2024-01-01T00:00:00+00:00")["pruned"] == 2
    assert _seqs(store.get_session_messages("s", direction="asc")) == [3, 4]
    assert store.prune(older_than=datetime(2040, 1, 1, tzinfo=UTC))["pruned"] == 2
    assert store.get_session_messages("s") == [] and store.verify()["ok"]


def test_either_rule_removes(store: Store) -> None:
    store.create_session(session_id="s")
    store.create_message({"session_id": "s", "created_at": "2020-01-01T00:00:00+00:00"})
    _fill(store, "s", 5)
    # The first is old; of the five recent ones, two are past the newest three.
    assert store.prune(older_than="2024-01-01T00:00:00+00:00", keep_last=3)["pruned"] == 3
    assert _seqs(store.get_session_messages("s", direction="asc")) == [4, 5, 6]


def test_every_session_in_small_transactions_or_one_session(store: Store) -> None:
    for sid in ("a", "b", "c"):
        store.create_session(session_id=sid)
        _fill(store, sid, 7)
    batches: list[int] = []
    store.commit_listeners.append(lambda size, _: batches.append(size))
    assert store.prune(keep_last=2, session_id="b", batch=2) == {"pruned": 5, "sessions": 1}
    assert [len(store.get_session_messages(s)) for s in ("a", "b", "c")] == [7, 2, 7]  # type: ignore[arg-type]
    assert store.prune(keep_last=0, batch=3) == {"pruned": 16, "sessions": 3}
    assert all(store.get_session(s)["message_count"] == 7 for s in ("a", "b", "c"))  # type: ignore[index]
    assert store.verify()["ok"]


def test_bad_arguments_change_nothing(store: Store) -> None:
    store.create_session(session_id="s")
    _fill(store, "s", 3)
    before = snapshot(store)
    for kwargs in ({}, {"keep_last": -1}, {"keep_last": "2"}, {"older_than": "yesterday"}, {"older_than": 5},
                   {"keep_last": 1, "session_id": ""}, {"keep_last": 1, "batch": 0}):
        with pytest.raises(ValidationError):
            store.prune(**kwargs)  # type: ignore[arg-type]
    assert store.prune(keep_last=1, session_id="missing") == {"pruned": 0, "sessions": 0}
    assert snapshot(store) == before
