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
        # In creation order (session ids are random uuids): a replayed example must draw the same sessions.
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
        sid = data.draw(st.sampled_from(list(self.sessions)))
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
        sid = data.draw(st.sampled_from(list(self.sessions)))
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
        sid = data.draw(st.sampled_from(list(self.sessions)))
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


# -- room events: events_since against a model of the event log ------------------------------------


class EventLogModel(RuleBasedStateMachine):
    """Random interleavings of messages, context and task changes and deletions; events_since,
    paged from a random offset with a random page size, must return every live event once.

    A live event is a message of a session that still exists, and the newest change of each
    context and task that still exists (carrying its record as it is now). An older change of a
    context or task may come back too, in an earlier page than its newest one, but only with the
    current record: a reader that applies the events in order ends with the current state.
    """

    backend = "lmdb"

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="chatmdb-events-")
        self.store = open_store(self.dir, backend=self.backend, durability="process")
        self.sessions: list[str] = []  # every session ever made, deleted ones too
        self.deleted: set[str] = set()
        self.log: list[tuple[int, str, str, tuple[str, str]]] = []  # offset, session, event, (kind, id)
        self.records: dict[tuple[str, str], dict[str, Any]] = {}  # current record of each live key
        self.owner: dict[tuple[str, str], str] = {}  # key -> session

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _logged(self, session_id: str, name: str, key: tuple[str, str], record: dict[str, Any]) -> None:
        offset = self.store.last_event_offset()
        assert not self.log or offset > self.log[-1][0]
        self.log.append((offset, session_id, name, key))
        self.records[key] = record
        self.owner[key] = session_id

    def _live_sessions(self) -> list[str]:
        return [s for s in self.sessions if s not in self.deleted]

    def _keys(self, kind: str) -> list[tuple[str, str]]:
        # In creation order: ids are random uuids, and a replayed example must draw the same way.
        return [k for k in self.records if k[0] == kind]

    @initialize(sizes=st.lists(st.integers(0, 12), min_size=1, max_size=3))
    def first_sessions(self, sizes: list[int]) -> None:
        # Start from sessions that already hold events, so that short runs page across several rooms.
        for size in sizes:
            self.new_session()
            for _ in range(size):
                msg = self.store.create_message({"session_id": self.sessions[-1], "content": len(self.log)})
                self._logged(self.sessions[-1], "message", ("m", msg["message_uuid"]), msg)

    @rule()
    def new_session(self) -> None:
        self.sessions.append(self.store.create_session(session_id=f"s{len(self.sessions)}")["id"])

    @precondition(lambda self: bool(self._live_sessions()))
    @rule(data=st.data(), n=st.integers(1, 12))
    def messages(self, data: st.DataObject, n: int) -> None:
        sid = data.draw(st.sampled_from(self._live_sessions()))
        for _ in range(n):
            msg = self.store.create_message({"session_id": sid, "content": len(self.log)})
            self._logged(sid, "message", ("m", msg["message_uuid"]), msg)

    @precondition(lambda self: bool(self._live_sessions()))
    @rule(data=st.data())
    def new_context(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(self._live_sessions()))
        ctx = self.store.create_shared_context(sid, {"v": 0})
        self._logged(sid, "context_updated", ("c", ctx["id"]), ctx)

    @precondition(lambda self: bool(self._keys("c")))
    @rule(data=st.data(), n=st.integers(1, 8))
    def change_context(self, data: st.DataObject, n: int) -> None:
        key = data.draw(st.sampled_from(self._keys("c")))
        for _ in range(n):
            ctx = self.store.update_shared_context(key[1], {"v": len(self.log)})
            self._logged(self.owner[key], "context_updated", key, ctx)

    @precondition(lambda self: bool(self._keys("c")))
    @rule(data=st.data())
    def delete_context(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(self._keys("c")))
        assert self.store.delete_shared_context(key[1])
        del self.records[key]

    @precondition(lambda self: bool(self._live_sessions()))
    @rule(data=st.data())
    def new_task(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(self._live_sessions()))
        task = self.store.create_task({"context_id": sid})
        self._logged(sid, "task_updated", ("t", task["id"]), task)

    @precondition(lambda self: bool(self._keys("t")))
    @rule(data=st.data(), n=st.integers(1, 8))
    def change_task(self, data: st.DataObject, n: int) -> None:
        key = data.draw(st.sampled_from(self._keys("t")))
        for _ in range(n):
            task = self.store.update_task(key[1], metadata={"v": len(self.log)})
            self._logged(self.owner[key], "task_updated", key, task)

    @precondition(lambda self: len(self._live_sessions()) > 1)
    @rule(data=st.data())
    def delete_session(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(self._live_sessions()))
        assert self.store.delete_session(sid)
        self.deleted.add(sid)
        for key in [k for k, owner in self.owner.items() if owner == sid and k in self.records]:
            del self.records[key]

    @rule(data=st.data(), limit=st.integers(1, 4))
    def page_to_the_end(self, data: st.DataObject, limit: int) -> None:
        rooms = data.draw(st.lists(st.sampled_from([*self.sessions, "never-made"]), unique=True, min_size=1))
        after = data.draw(st.integers(0, self.store.last_event_offset() + 1))
        got: list[tuple[int, str, str, dict[str, Any]]] = []
        cursor, page_size, more = after, limit, True
        for _ in range(len(self.log) + 20):  # bounded: every round returns an event or doubles the page
            events, more = self.store.events_since(rooms, cursor, page_size)
            assert len(events) <= page_size
            got += events
            if not more:
                break
            if events:
                cursor, page_size = events[-1][0], limit
            else:
                # Nothing fitted in the read (superseded changes, deleted records): a larger page reads further.
                page_size *= 2
        assert not more, "events_since kept saying more"
        self._check_read(got, set(rooms), after)

    @rule(data=st.data(), limit=st.integers(1, 4))
    def tail_to_the_end(self, data: st.DataObject, limit: int) -> None:
        # The store-wide log a gateway worker tails, for the sessions it serves.
        served = set(data.draw(st.lists(st.sampled_from(self.sessions), unique=True)))
        after = data.draw(st.integers(0, self.store.last_event_offset() + 1))
        got: list[tuple[int, str, str, dict[str, Any]]] = []
        cursor = after
        for _ in range(len(self.log) + 2):  # bounded: every page but the last moves on by at least one offset
            events, cursor_next = self.store.events_after(cursor, limit, served.__contains__)
            assert len(events) <= limit
            got += [(offset, sid, name, record) for offset, sid, name, record, _origin in events]
            if cursor_next == cursor:
                break
            assert cursor_next > cursor
            cursor = cursor_next
        assert cursor <= max(after, self.store.last_event_offset())
        self._check_read(got, served, after)

    def _check_read(self, got: list[tuple[int, str, str, dict[str, Any]]], rooms: set[str], after: int) -> None:
        newest = {key: offset for offset, _, _, key in self.log}
        live = [
            (offset, sid, name, key)
            for offset, sid, name, key in self.log
            if offset > after and sid in rooms and key in self.records and (key[0] == "m" or newest[key] == offset)
        ]
        offsets = [offset for offset, *_ in got]
        assert offsets == sorted(set(offsets)), "offsets repeat or go back"
        by_offset = {offset: (sid, name, record) for offset, sid, name, record in got}
        for offset, sid, name, key in live:  # every live event, with its current record
            assert by_offset.get(offset) == (sid, name, self.records[key]), (offset, key)
        live_offsets = {offset for offset, *_ in live}
        logged = {offset: (sid, name, key) for offset, sid, name, key in self.log}
        for offset, sid, name, record in got:
            if offset in live_offsets:
                continue
            # Not live: only an older change of a context or task still there, carrying its record as it is now.
            assert offset in logged and offset > after, offset
            logged_sid, logged_name, key = logged[offset]
            assert key[0] != "m" and key in self.records and sid in rooms, (offset, key)
            assert (sid, name, record) == (logged_sid, logged_name, self.records[key])
            assert newest[key] in live_offsets  # its newest change comes later, in a later page


class LmdbEventLog(EventLogModel):
    backend = "lmdb"


class SqliteEventLog(EventLogModel):
    backend = "sqlite"


_events_settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestLmdbEventLog = _events_settings(LmdbEventLog).TestCase
TestSqliteEventLog = _events_settings(SqliteEventLog).TestCase


def test_events_since_does_not_page_past_a_room_it_read_only_in_part(tmp_path: Any, backend: str) -> None:
    """An interleaving the model rarely draws: room a's read is capped by superseded changes
    just before a message, room b's read reaches further. The page must end before what a's
    read left out, or the next page (after its last offset) skips a's message."""
    with open_store(tmp_path / "db", backend=backend) as store:
        a, b = store.create_session(session_id="a")["id"], store.create_session(session_id="b")["id"]
        ctx = store.create_shared_context(a, {"v": 0})  # offset 1
        for v in range(11):
            store.update_shared_context(ctx["id"], {"v": v + 1})  # 2..12
        store.create_message({"session_id": a, "content": "a's message"})  # 13: past a's read of 12 (limit 2)
        for i in range(13):
            store.create_message({"session_id": b, "content": i})  # 14..26
        seen: list[tuple[int, str]] = []
        after, more = 0, True
        for _ in range(40):  # bounded
            events, more = store.events_since([a, b], after, 2)
            seen += [(offset, name) for offset, _, name, _ in events]
            if not more:
                break
            after = events[-1][0]
        assert not more
        assert (13, "message") in seen, seen
        assert [o for o, name in seen if name == "message"] == list(range(13, 27))
