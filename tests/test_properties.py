"""Property-based tests: the store against a plain in-memory model of sessions and messages."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from chatmdb import Conflict, SessionNotFound, open_store

contents = st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1), st.none(), st.lists(st.booleans(), max_size=3))


class StoreModel(RuleBasedStateMachine):
    backend = "lmdb"

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="chatmdb-prop-")
        self.store = open_store(self.dir, backend=self.backend, durability="process")
        self.sessions: dict[str, list[dict[str, Any]]] = {}
        self.uuids: dict[str, str] = {}  # message uuid -> session id

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize()
    def first_session(self) -> None:
        self.new_session()

    @rule()
    def new_session(self) -> None:
        session = self.store.create_session(title=f"s{len(self.sessions)}")
        self.sessions[session["id"]] = []

    @rule(data=st.data(), content=contents, reuse=st.booleans(), agent=st.sampled_from([None, "a", "b"]))
    def create_message(self, data: st.DataObject, content: Any, reuse: bool, agent: str | None) -> None:
        sid = data.draw(st.sampled_from(sorted(self.sessions)))
        if reuse and self.uuids:
            uuid = data.draw(st.sampled_from(sorted(self.uuids)))
        else:
            uuid = f"u{len(self.uuids)}"
        payload = {"session_id": sid, "message_uuid": uuid, "content": content, "agent_id": agent}
        if uuid in self.uuids and self.uuids[uuid] != sid:
            with pytest.raises(Conflict):
                self.store.create_message(payload)
            return
        msg = self.store.create_message(payload)
        if uuid in self.uuids:
            assert msg in self.sessions[sid]  # idempotent: the stored record comes back
            return
        self.uuids[uuid] = sid
        self.sessions[sid].append(msg)
        assert msg["seq"] == len(self.sessions[sid])

    @rule()
    def unknown_session(self) -> None:
        with pytest.raises(SessionNotFound):
            self.store.create_message({"session_id": "no-such-session"})

    @rule(
        data=st.data(),
        limit=st.integers(1, 7),
        desc=st.booleans(),
        skip=st.integers(0, 4),
        cursor=st.one_of(st.none(), st.integers(0, 30)),
    )
    def page(self, data: st.DataObject, limit: int, desc: bool, skip: int, cursor: int | None) -> None:
        sid = data.draw(st.sampled_from(sorted(self.sessions)))
        model = self.sessions[sid]
        ordered = model[::-1] if desc else model
        if cursor is not None:
            ordered = [m for m in ordered if (m["seq"] < cursor if desc else m["seq"] > cursor)]
        expected = ordered[skip : skip + limit]
        got = self.store.get_session_messages(
            sid,
            skip=skip,
            limit=limit,
            cursor=None if cursor is None else str(cursor),
            direction="desc" if desc else "asc",
            include_total=True,
        )
        assert isinstance(got, dict)
        assert got["items"] == expected
        assert got["pagination"]["total"] == len(model)
        more = len(ordered) > skip + limit
        assert ("next_cursor" in got["pagination"]) == more
        if more:
            assert got["pagination"]["next_cursor"] == str(expected[-1]["seq"])

    @rule(data=st.data(), limit=st.integers(1, 5), desc=st.booleans())
    def walk(self, data: st.DataObject, limit: int, desc: bool) -> None:
        sid = data.draw(st.sampled_from(sorted(self.sessions)))
        seen: list[dict[str, Any]] = []
        cursor = None
        for _ in range(200):
            page = self.store.get_session_messages(
                sid, limit=limit, cursor=cursor, direction="desc" if desc else "asc", include_total=True
            )
            assert isinstance(page, dict)
            seen += page["items"]
            cursor = page["pagination"].get("next_cursor")
            if cursor is None:
                break
        assert seen == (self.sessions[sid][::-1] if desc else self.sessions[sid])

    @precondition(lambda self: bool(self.uuids))
    @rule(data=st.data())
    def lookup(self, data: st.DataObject) -> None:
        uuid = data.draw(st.sampled_from(sorted(self.uuids)))
        msg = self.store.get_message(uuid)
        assert msg is not None and msg in self.sessions[self.uuids[uuid]]

    @rule(agent=st.sampled_from(["a", "b"]))
    def by_agent(self, agent: str) -> None:
        expected = sorted(
            (m for msgs in self.sessions.values() for m in msgs if m.get("agent_id") == agent),
            key=lambda m: int(m["message_uuid"][1:]),
        )
        got = self.store.get_agent_messages(agent, limit=1000, direction="asc")
        assert got == expected

    @invariant()
    def counts(self) -> None:
        for sid, msgs in self.sessions.items():
            session = self.store.get_session(sid)
            assert session is not None and session["message_count"] == len(msgs)


class LmdbModel(StoreModel):
    backend = "lmdb"


class SqliteModel(StoreModel):
    backend = "sqlite"


_settings = settings(max_examples=40, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TestLmdbModel = _settings(LmdbModel).TestCase
TestSqliteModel = _settings(SqliteModel).TestCase
