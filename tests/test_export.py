"""Export, import and migrate: JSON Lines out of a store and back in, on both backends and across them.

Round trips must give the same lines (after the header, which says when) and
the same answers from every read method; ids, seq numbers, timestamps,
context versions and task states survive; a malformed line stops an import
naming its line and leaves the target as it was; the CLI does the same.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chatmdb
from _util import snapshot
from chatmdb import TASK_STATES, TERMINAL_STATES, Store, ValidationError, open_store
from chatmdb.store import export as export_module
from chatmdb.store.export import check_export, export, export_lines, import_, migrate

OTHER = {"lmdb": "sqlite", "sqlite": "lmdb"}


# -- helpers -------------------------------------------------------------------------------


def export_text(store: Store) -> str:
    out = io.StringIO()
    export(store, out)
    return out.getvalue()


def body(text: str) -> list[str]:
    """The lines of an export after its header (which holds the time it was made)."""
    lines = text.split("\n")
    assert json.loads(lines[0])["chatmdb_export"] == 1
    return lines[1:]


def view(store: Store) -> dict[str, Any]:
    """What every read method answers about everything in the store."""
    sessions = store.list_sessions(limit=1000)
    out: dict[str, Any] = {
        "sessions": sessions,
        "agents": store.list_agent_cards(),
        "tasks": store.list_tasks(limit=100),
        "tasks_by_state": {state: store.list_tasks(state=state, limit=100) for state in TASK_STATES},
        "messages": {},
        "contexts": {},
        "by_agent": {},
    }
    agent_ids = set()
    for session in sessions:
        sid = session["id"]
        page = store.get_session_messages(sid, limit=1000, direction="asc", include_total=True)
        out["messages"][sid] = page
        out["contexts"][sid] = store.list_session_contexts(sid)
        out.setdefault("tasks_of", {})[sid] = store.list_tasks(context_id=sid, limit=100)
        agent_ids |= {m["agent_id"] for m in page["items"] if m.get("agent_id")}  # type: ignore[call-overload]
    for agent_id in sorted(agent_ids):
        out["by_agent"][agent_id] = store.get_agent_messages(agent_id, limit=1000, direction="asc")
    return out


def fill(store: Store) -> None:
    """A bit of everything: unicode, a large message, interleaved agents, versions, every task state,
    retention, a deleted session and card."""
    store.init_database()
    store.create_session(title="née 🚀 \u2028 line", session_id="s-ünïcode", metadata={"deep": {"a": [1, 2.5, None, {"b": "ü"}]}})
    store.create_session(title=None, session_id="s2")
    gone = store.create_session(session_id="gone")
    store.create_message({"session_id": "gone", "content": "bye"})
    for i in range(12):
        store.create_message({"session_id": "s-ünïcode", "content": f"hé {i}", "agent_id": "chloe" if i % 3 else None, "meta": {"i": i}})
        store.create_message({"session_id": "s2", "content": f"two {i}", "agent_id": "chloe" if i % 2 else "phil_connors"})
    store.create_message({"session_id": "s2", "content": "Ω" * 200_000, "role": "assistant"})
    store.upsert_agent_card({"id": "custom", "name": "Custom ✨", "skills": [{"id": "x", "tags": ["a", {"b": None}]}]})
    store.upsert_agent_card({"id": "doomed", "name": "Doomed"})
    store.delete_agent_card("doomed")
    store.delete_session(gone["id"])
    store.create_shared_context("s2", {"v": 1}, context_id="ctx-b")
    store.create_shared_context("s-ünïcode", {"v": 1}, context_id="ctx-a")
    for v in range(2, 5):
        store.update_shared_context("ctx-b", {"v": v, "nested": {"list": list(range(v))}})
    for i, state in enumerate(TASK_STATES):
        store.create_task({"id": f"task-{state}", "context_id": "s2" if i % 2 else "s-ünïcode", "status": {"state": state}})
    store.update_task("task-submitted", state="working", status_message={"text": "on it"}, artifacts=[{"a": 1}])
    store.update_task("task-working", state="completed", metadata={"done": True})
    store.update_task("task-submitted", status_message={"text": "still"})
    store.prune(keep_last=8, session_id="s-ünïcode")


def check_still_works(store: Store) -> None:
    """An imported store goes on numbering where its export left off."""
    for session in store.list_sessions(limit=1000):
        added = store.create_message({"session_id": session["id"], "content": "after"})
        assert added["seq"] == session["message_count"] + 1
    context = store.list_session_contexts("s2")[0]
    assert store.update_shared_context(context["id"], {"v": 99}, expected_version=context["version"])["version"] == context["version"] + 1
    store.create_shared_context("s2", {"new": True})
    assert store.update_task("task-input-required", state="working")["status"]["state"] == "working"
    assert store.list_tasks(limit=1)[0]["id"] == "task-input-required"
    assert store.verify()["ok"]


def no_leftovers(parent: Path) -> None:
    assert not [p.name for p in parent.iterdir() if ".importing-" in p.name or ".replaced-" in p.name or ".partial-" in p.name]


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["lmdb", "sqlite"])
def test_round_trip_keeps_everything(tmp_path: Path, backend: str, target: str) -> None:
    with open_store(tmp_path / "src", backend=backend) as source:
        fill(source)
        text = export_text(source)
        before = view(source)
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["format_version"] == chatmdb.FORMAT_VERSION
    assert lines[-1] == {"kind": "end", "counts": {"sessions": 3, "messages": 21, "agents": 3, "contexts": 2, "tasks": 9}}
    kinds = [line.get("kind") for line in lines[1:-1]]
    assert kinds == sorted(kinds, key=["session", "message", "agent", "context", "task"].index)
    # Each session's messages in seq order; the pruned session says where it starts.
    pruned = [line for line in lines if line.get("kind") == "session" and "pruned" in line]
    assert [(p["record"]["id"], p["pruned"]) for p in pruned] == [("s-ünïcode", 4)]
    seqs = [line["record"]["seq"] for line in lines if line.get("kind") == "message" and line["record"]["session_id"] == "s-ünïcode"]
    assert seqs == list(range(5, 13))

    result = import_(tmp_path / "dst", io.StringIO(text), backend=target)
    assert result["imported"] == lines[-1]["counts"] and result["verify"]["ok"]
    no_leftovers(tmp_path)
    with open_store(tmp_path / "dst", backend=target) as imported:
        assert body(export_text(imported)) == body(text)
        assert view(imported) == before
        assert imported.stats()["format_version"] == chatmdb.FORMAT_VERSION
        check_still_works(imported)


def test_export_writes_through_a_text_stream_in_one_pass(tmp_path: Path, backend: str) -> None:
    with open_store(tmp_path / "db", backend=backend) as store:
        store.create_session(session_id="s")
        for i in range(2500):  # more than one progress step
            store.create_message({"session_id": "s", "message_uuid": f"m{i}"})
        calls: list[tuple[int, int | None]] = []
        counts = export(store, io.StringIO(), progress=lambda done, total: calls.append((done, total)))
    assert counts == {"sessions": 1, "messages": 2500, "agents": 0, "contexts": 0, "tasks": 0}
    assert calls == [(1000, 2501), (2000, 2501), (2501, 2501)]


_text = st.text(st.characters(codec="utf-8"), max_size=30)
_ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_text, children, max_size=3),
    max_leaves=12,
)
_objects = st.dictionaries(_text, _json, max_size=3)


@st.composite
def contents(draw: st.DrawFn) -> dict[str, Any]:
    sids = draw(st.lists(_ids, min_size=1, max_size=3, unique=True))
    agents = draw(st.lists(_ids, max_size=3, unique=True))
    where = st.integers(0, len(sids) - 1)
    agent = st.none() | st.sampled_from(agents) if agents else st.none()
    return {
        "sessions": [(sid, draw(st.none() | _text), draw(_objects)) for sid in sids],
        "agents": [(aid, draw(_text.filter(bool) | st.just("a")), draw(_json)) for aid in agents],
        "messages": draw(st.lists(st.tuples(where, _text, agent, _objects, st.sampled_from([0, 0, 0, 0, 250_000])), max_size=12)),
        "contexts": draw(st.lists(st.tuples(where, _objects, st.lists(_objects, max_size=2)), max_size=3)),
        "tasks": draw(
            st.lists(st.tuples(where, st.sampled_from(TASK_STATES), st.lists(st.sampled_from(TASK_STATES), max_size=2), _objects), max_size=5)
        ),
        "keep_last": draw(st.none() | st.integers(0, 3)),
    }


def build(store: Store, world: dict[str, Any]) -> None:
    sids = [sid for sid, _, _ in world["sessions"]]
    for sid, title, metadata in world["sessions"]:
        store.create_session(title=title, session_id=sid, metadata=metadata)
    for aid, name, extra in world["agents"]:
        store.upsert_agent_card({"id": aid, "name": name, "extra": extra})
    for where, text, agent, metadata, big in world["messages"]:
        store.create_message({"session_id": sids[where], "content": text + "ü" * big, "agent_id": agent, "metadata": metadata})
    for where, data, updates in world["contexts"]:
        context = store.create_shared_context(sids[where], data)
        for update in updates:
            store.update_shared_context(context["id"], update)
    for where, state, changes, metadata in world["tasks"]:
        task = store.create_task({"context_id": sids[where], "status": {"state": state}, "metadata": metadata})
        for change in changes:
            if task["status"]["state"] not in TERMINAL_STATES:
                task = store.update_task(task["id"], state=change, status_message={"to": change}, artifacts=[metadata])
    if world["keep_last"] is not None:
        store.prune(keep_last=world["keep_last"], session_id=sids[0])


@pytest.mark.parametrize("source_backend", ["lmdb", "sqlite"])
@settings(max_examples=20, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(world=contents())
def test_generated_contents_survive_a_trip_across_backends(tmp_path_factory: pytest.TempPathFactory, source_backend: str, world: dict[str, Any]) -> None:
    base = tmp_path_factory.mktemp("trip")
    with open_store(base / "a", backend=source_backend, durability="process") as source:
        build(source, world)
        text = export_text(source)
        expected = view(source)
    result = import_(base / "b", io.StringIO(text), backend=OTHER[source_backend])
    assert result["verify"]["ok"]
    with open_store(base / "b", backend=OTHER[source_backend], durability="process") as copy:
        again = export_text(copy)
        assert body(again) == body(text)
        assert view(copy) == expected
    # ...and back into the backend it came from.
    import_(base / "c", io.StringIO(again), backend=source_backend)
    with open_store(base / "c", backend=source_backend, durability="process") as back:
        assert body(export_text(back)) == body(text)


def test_migrate_pipes_an_export_into_an_import(tmp_path: Path, backend: str) -> None:
    with open_store(tmp_path / "src", backend=backend) as source:
        fill(source)
        expected = view(source)
        result = migrate(source, tmp_path / "dst", backend=OTHER[backend])
        assert result["source"]["exported"] == result["imported"]
        with pytest.raises(ValidationError, match="into itself"):
            migrate(source, tmp_path / "src", backend=backend)
        text = export_text(source)
    with open_store(tmp_path / "dst", backend=OTHER[backend]) as copy:
        assert view(copy) == expected
        assert body(export_text(copy)) == body(text)


# -- consistency while writers run ------------------------------------------------------


class SlowOut(io.StringIO):
    """An output that takes its time, so that writers run while the export reads."""

    def write(self, text: str) -> int:
        time.sleep(0.001)
        return super().write(text)


def test_an_export_while_writers_run_is_one_consistent_snapshot(tmp_path: Path, backend: str) -> None:
    store = open_store(tmp_path / "db", backend=backend, durability="process")
    sids = [store.create_session(session_id=f"s{i}")["id"] for i in range(3)]
    context = store.create_shared_context("s0", {"n": 0}, context_id="ctx")
    for i in range(300):
        store.create_message({"session_id": sids[i % 3], "message_uuid": f"pre-{i}", "agent_id": "bot"})
    acked: list[str] = []
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        i = 0
        try:
            while not stop.is_set():
                message = store.create_message({"session_id": sids[i % 3], "message_uuid": f"w-{i}", "agent_id": "bot"})
                acked.append(message["message_uuid"])
                if i % 10 == 0:
                    store.update_shared_context("ctx", {"n": i})
                    store.create_task({"context_id": sids[i % 3], "id": f"t-{i}"})
                i += 1
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(acked) < 20:
            time.sleep(0.005)
        before = len(acked)
        out = SlowOut()
        export(store, out)
        during = len(acked) - before
    finally:
        stop.set()
        writer.join(timeout=60)
    assert not errors, errors
    assert during > 0, "the writer did not run during the export"
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    sessions = {line["record"]["id"]: line["record"] for line in lines if line.get("kind") == "session"}
    uuids = [line["record"]["message_uuid"] for line in lines if line.get("kind") == "message"]
    # Every message acked before the export began is in it, nothing that was never acked is.
    assert set(uuids) >= {f"pre-{i}" for i in range(300)} | set(acked[:before])
    assert set(uuids) <= {f"pre-{i}" for i in range(300)} | set(acked)
    assert sum(s["message_count"] for s in sessions.values()) == len(uuids)
    versions = [line["record"]["version"] for line in lines if line.get("kind") == "context"]
    assert versions and versions[0] >= context["version"]
    # The import checks every count, seq and reference of the snapshot, then verifies.
    result = import_(tmp_path / "copy", io.StringIO(out.getvalue()), backend=OTHER[backend])
    assert result["imported"]["messages"] == len(uuids) and result["verify"]["ok"]
    store.close()


# -- importing into an open store, merging ------------------------------------------------


def test_import_into_an_open_store_needs_it_empty_and_empties_it_again_on_failure(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_module, "BATCH_RECORDS", 4)  # several transactions before the bad line
    with open_store(tmp_path / "src", backend=backend) as source:
        fill(source)
        text = export_text(source)
    with open_store(tmp_path / "dst", backend=OTHER[backend]) as store:
        # A failure late in the file, after batches were written, leaves it as it was.
        store.create_session(session_id="tmp")
        store.delete_session("tmp")  # counters moved on; tables empty
        empty = snapshot(store)
        lines = text.split("\n")
        broken = "\n".join([*lines[:-3], '{"kind": "task", "record": {"id": "x"}}', *lines[-2:]])
        written: list[int] = []
        with pytest.raises(ValidationError, match=rf"^line {len(lines) - 2}: the task record lacks 'context_id'"):
            import_(store, io.StringIO(broken), progress=lambda done, total: written.append(done))
        assert len(written) > 5  # batches were committed before the bad line was read
        assert snapshot(store) == empty
        import_(store, io.StringIO(text))
        assert body(export_text(store)) == body(text)
        with pytest.raises(ValidationError, match="not empty") as refused:
            import_(store, io.StringIO(text))
        assert "merge" in str(refused.value)


def test_merge_skips_the_ids_it_holds_and_appends_the_rest(tmp_path: Path, backend: str) -> None:
    with open_store(tmp_path / "src", backend=backend) as source:
        fill(source)
        first = export_text(source)
        source.create_message({"session_id": "s2", "content": "new in s2", "message_uuid": "late"})
        source.create_session(session_id="s3")
        source.create_message({"session_id": "s3", "content": "new session"})
        source.create_task({"context_id": "s3", "id": "t3"})
        second = export_text(source)
        expected = view(source)
    import_(tmp_path / "dst", io.StringIO(first), backend=backend)
    with open_store(tmp_path / "dst", backend=backend) as target:
        target.create_message({"session_id": "s-ünïcode", "content": "only here"})  # takes seq 13
        result = import_(target, io.StringIO(second), merge=True)
        assert result["imported"] == {"sessions": 1, "messages": 2, "agents": 0, "contexts": 0, "tasks": 1}
        assert result["skipped"] == {"sessions": 3, "messages": 21, "agents": 3, "contexts": 2, "tasks": 9}
        assert set(result["skipped_ids"]["sessions"]) == {"default", "s-ünïcode", "s2"}
        assert "task-completed" in result["skipped_ids"]["tasks"] and result["renumbered_messages"] == 0
        assert result["verify"]["ok"]
        merged = view(target)
        assert merged["messages"]["s2"] == expected["messages"]["s2"]
        assert merged["messages"]["s3"] == expected["messages"]["s3"]
        assert target.get_message("late")["seq"] == 14  # type: ignore[index]
        # A message whose seq the target has taken is appended after it.
        lines = second.split("\n")
        extra = json.loads(next(line for line in lines if '"message_uuid":"late"' in line))["record"]
        extra.update(message_uuid="later", session_id="s-ünïcode", seq=13)
        again = import_(target, io.StringIO(_export_of([_session_line(target, "s-ünïcode", 13), extra])), merge=True)
        assert again["renumbered_messages"] == 1 and target.get_message("later")["seq"] == 14  # type: ignore[index]


def _session_line(store: Store, sid: str, count: int) -> dict[str, Any]:
    session = store.get_session(sid)
    assert session is not None
    return {**session, "message_count": count, "_pruned": 12}


def _export_of(records: list[dict[str, Any]]) -> str:
    """A hand-made export of a session (``_pruned`` says how many of its messages went) and messages."""
    lines = [json.dumps({"chatmdb_export": 1, "format_version": chatmdb.FORMAT_VERSION, "created_at": "2026-01-01T00:00:00+00:00"})]
    counts = dict.fromkeys(["sessions", "messages", "agents", "contexts", "tasks"], 0)
    for record in records:
        if "_pruned" in record:
            pruned = record.pop("_pruned")
            lines.append(json.dumps({"kind": "session", "record": record, "pruned": pruned}))
            counts["sessions"] += 1
        else:
            lines.append(json.dumps({"kind": "message", "record": record}))
            counts["messages"] += 1
    lines.append(json.dumps({"kind": "end", "counts": counts}))
    return "\n".join(lines) + "\n"


# -- bad input ------------------------------------------------------------------------------

# (what to do to the lines of a good export, the error expected). The good export
# (below) is: 1 header, 2 session, 3-5 messages, 6 agent, 7 context, 8 task, 9 end.


def _good() -> list[str]:
    session = {"id": "s", "title": "t", "created_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-01T00:00:00+00:00",
               "session_metadata": {}, "message_count": 3, "last_message_at": "2026-01-01T00:00:03+00:00"}
    messages = [{"session_id": "s", "message_uuid": f"m{i}", "created_at": f"2026-01-01T00:00:0{i}+00:00", "seq": i, "agent_id": "a"} for i in (1, 2, 3)]
    agent = {"id": "a", "agent_id": "a", "name": "A", "created_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-01T00:00:00+00:00"}
    context = {"id": "c", "session_id": "s", "data": {}, "version": 7, "created_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-02T00:00:00+00:00"}
    task = {"id": "t", "context_id": "s", "kind": "task", "status": {"state": "rejected", "timestamp": "2026-01-03T00:00:00+00:00"},
            "artifacts": [], "history": [], "metadata": {}}
    rows = [{"chatmdb_export": 1, "format_version": chatmdb.FORMAT_VERSION, "created_at": "2026-01-04T00:00:00+00:00"},
            {"kind": "session", "record": session}, *({"kind": "message", "record": m} for m in messages),
            {"kind": "agent", "record": agent}, {"kind": "context", "record": context}, {"kind": "task", "record": task},
            {"kind": "end", "counts": {"sessions": 1, "messages": 3, "agents": 1, "contexts": 1, "tasks": 1}}]
    return [json.dumps(row, ensure_ascii=False) for row in rows]


def _replace(n: int, text: str) -> Any:
    return lambda lines: [*lines[: n - 1], text, *lines[n:]]


def _edit(n: int, change: Any) -> Any:
    def edit(lines: list[str]) -> list[str]:
        row = json.loads(lines[n - 1])
        change(row)
        return [*lines[: n - 1], json.dumps(row), *lines[n:]]

    return edit


BAD = {
    "truncated line": (lambda lines: [*lines[:3], lines[3][:25]], r"^line 4: not valid JSON"),
    "truncated at a line end": (lambda lines: lines[:6], r"ends at line 6 without its end line: it is truncated"),
    "empty": (lambda lines: [], r"the input is empty"),
    "not an export": (lambda lines: lines[1:], r"^line 1: this is not a chatmdb export"),
    "newer format": (_edit(1, lambda r: r.update(format_version=chatmdb.FORMAT_VERSION + 1)), rf"^line 1: the export is of on-disk format {chatmdb.FORMAT_VERSION + 1}, newer"),
    "newer export version": (_edit(1, lambda r: r.update(chatmdb_export=2)), r"^line 1: export version 2 is not supported"),
    "not an object": (_replace(3, "[1, 2]"), r"^line 3: a line must be a JSON object, not list"),
    "unknown kind": (_edit(6, lambda r: r.update(kind="robot")), r"^line 6: unknown kind 'robot'"),
    "no record": (_edit(6, lambda r: r.pop("record")), r"^line 6: the agent line has no 'record' object"),
    "missing field": (_edit(7, lambda r: r["record"].pop("version")), r"^line 7: the context record lacks 'version'"),
    "wrong type": (_edit(4, lambda r: r["record"].update(seq="2")), r"^line 4: seq must be an integer, not str"),
    "seq gap": (_edit(4, lambda r: r["record"].update(seq=3)), r"^line 4: message 'm2' has seq 3 where session 's' goes on at seq 2"),
    "too few messages": (lambda lines: [*lines[:3], *lines[4:]], r"^line 4: message 'm3' has seq 3 where"),
    "undeclared session": (_edit(8, lambda r: r["record"].update(context_id="nope")), r"^line 8: context_id 'nope' names no session"),
    "id too long": (_edit(6, lambda r: r["record"].update(id="é" * 200, agent_id="é" * 200)), r"^line 6: id must be 1 to 256 bytes"),
    "bad state": (_edit(8, lambda r: r["record"]["status"].update(state="done")), r"^line 8: state must be one of"),
    "bad timestamp": (_edit(2, lambda r: r["record"].update(created_at="yesterday")), r"^line 2: created_at is not an ISO 8601 timestamp"),
    "lone surrogate": (_replace(6, '{"kind": "agent", "record": {"id": "a", "name": "\\ud800", "created_at": "2026-01-01T00:00:00", "updated_at": "2026-01-01T00:00:00"}}'), r"^line 6: the agent record.name is not valid Unicode"),
    "NaN": (_replace(7, '{"kind": "context", "record": {"id": "c", "session_id": "s", "data": {"x": NaN}, "version": 1, "created_at": "2026-01-01T00:00:00", "updated_at": "2026-01-01T00:00:00"}}'), r"^line 7: not valid JSON \(NaN"),
    "duplicate message": (_edit(5, lambda r: r["record"].update(message_uuid="m1")), r"^line 5: message_uuid 'm1' appears twice"),
    "duplicate session": (lambda lines: [lines[0], lines[1], *lines[1:]], r"^line 3: session 's' appears twice \(first on line 2\)"),
    "end miscounts": (_edit(9, lambda r: r["counts"].update(tasks=2)), r"^line 9: the end line counts 2 tasks but the export holds 1"),
    "data after the end": (lambda lines: [*lines, lines[2]], r"^line 10: data after the end line"),
    "integer past 64 bits": (_edit(3, lambda r: r["record"].update(big=2**64)), r"^line 3: the message record.big is an integer outside 64 bits"),
    "infinite number": (_replace(7, '{"kind": "context", "record": {"id": "c", "session_id": "s", "data": {"x": -1e999}, "version": 1, "created_at": "2026-01-01T00:00:00", "updated_at": "2026-01-01T00:00:00"}}'), r"^line 7: not valid JSON \(-1e999 is too large a number to store\)"),
    "nested too deep": (_edit(7, lambda r: r["record"].update(data={"x": json.loads("[" * 70 + "]" * 70)})), r"^line 7: the context record.data.x(\[0\])+ is nested deeper than 64 levels"),
    "message count": (_edit(2, lambda r: r["record"].update(message_count=4)), r"^line 2: session 's' has message_count 4 but the export holds its messages only up to seq 3"),
}


def test_a_good_hand_made_export_imports(tmp_path: Path, backend: str) -> None:
    text = "\n".join(_good()) + "\n"
    assert check_export(io.StringIO(text)) == {"sessions": 1, "messages": 3, "agents": 1, "contexts": 1, "tasks": 1}
    import_(tmp_path / "db", io.StringIO(text), backend=backend)
    with open_store(tmp_path / "db", backend=backend) as store:
        assert store.get_shared_context("c")["version"] == 7  # type: ignore[index]
        assert store.get_task("t")["status"] == {"state": "rejected", "timestamp": "2026-01-03T00:00:00+00:00"}  # type: ignore[index]
        assert store.get_session("s")["last_message_at"] == "2026-01-01T00:00:03+00:00"  # type: ignore[index]
        assert [m["seq"] for m in store.get_agent_messages("a", direction="asc")] == [1, 2, 3]


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_export_is_refused_naming_its_line_and_nothing_is_written(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export_module, "STAGED_BATCH_RECORDS", 2)  # bad lines come after committed batches
    mangle, expected = BAD[case]
    text = "\n".join(mangle(_good()))
    for backend in ("lmdb", "sqlite"):
        target = tmp_path / backend
        with pytest.raises(ValidationError, match=expected):
            import_(target, io.StringIO(text), backend=backend)
        assert not target.exists()
        no_leftovers(tmp_path)
    if case != "duplicate message":  # found by the writer, not the reader
        with pytest.raises(ValidationError, match=expected):
            check_export(io.StringIO(text))


def test_lines_must_be_text(tmp_path: Path) -> None:
    data = ("\n".join(_good()) + "\n").encode()
    with pytest.raises(ValidationError, match=r"^line 1: lines must be text, not bytes"):
        import_(tmp_path / "db", io.BytesIO(data))  # type: ignore[arg-type]
    assert not (tmp_path / "db").exists()


def test_a_non_empty_target_is_refused_unchanged(tmp_path: Path, backend: str) -> None:
    text = "\n".join(_good()) + "\n"
    with open_store(tmp_path / "db", backend=backend) as store:
        store.init_database()
        before = snapshot(store)
    with pytest.raises(ValidationError, match=r"holds a database with records \(sessions, agents\).*--merge"):
        import_(tmp_path / "db", io.StringIO(text), backend=backend)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValidationError, match="holds files that are not a"):
        import_(tmp_path / "other", io.StringIO(text), backend=backend)
    with open_store(tmp_path / "db", backend=backend) as store:
        assert snapshot(store) == before
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_an_empty_database_is_replaced_and_one_in_use_is_not(tmp_path: Path, backend: str) -> None:
    text = "\n".join(_good()) + "\n"
    open_store(tmp_path / "db", backend=backend).close()  # exists, empty
    with open_store(tmp_path / "busy", backend=backend), pytest.raises(chatmdb.StorageError, match="in use"):
        import_(tmp_path / "busy", io.StringIO(text), backend=backend)
    import_(tmp_path / "db", io.StringIO(text), backend=backend)
    no_leftovers(tmp_path)
    with open_store(tmp_path / "db", backend=backend) as store:
        assert store.stats()["messages"] == 3
    with open_store(tmp_path / "busy", backend=backend) as store:
        assert store.stats()["sessions"] == 0


def test_export_lines_is_closed_with_its_transaction(tmp_path: Path, backend: str) -> None:
    with open_store(tmp_path / "db", backend=backend) as store:
        store.create_session(session_id="s")
        lines = export_lines(store)
        next(lines)
        lines.close()  # the read transaction ends; writes go on
        store.create_message({"session_id": "s"})
        assert store.verify()["ok"]


# -- the commands -----------------------------------------------------------------------------


def chatmdb_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatmdb", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        input=stdin,
        timeout=120,
    )


def test_cli_export_import_and_migrate(tmp_path: Path, backend: str) -> None:
    src, dst, moved = tmp_path / "src", tmp_path / "dst", tmp_path / "moved"
    with open_store(src, backend=backend) as store:
        fill(store)
    done = chatmdb_cli("export", "--db", str(src), "--backend", backend, "-o", str(tmp_path / "x.jsonl"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["exported"]["messages"] == 21
    assert (tmp_path / "x.jsonl").stat().st_mode & 0o777 == 0o600
    text = (tmp_path / "x.jsonl").read_text(encoding="utf-8")
    done = chatmdb_cli("import", "--db", str(dst), "--backend", OTHER[backend], str(tmp_path / "x.jsonl"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["imported"]["messages"] == 21
    done = chatmdb_cli("export", "--db", str(dst), "--backend", OTHER[backend])  # to stdout, counts to stderr
    assert done.returncode == 0, done.stderr
    assert body(done.stdout) == body(text) and '"exported"' in done.stderr
    done = chatmdb_cli("migrate", "--from", f"{OTHER[backend]}:{dst}", "--to", f"{backend}:{moved}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verify"]["ok"] is True
    with open_store(moved, backend=backend) as store:
        assert body(export_text(store)) == body(text)
    no_leftovers(tmp_path)


def test_cli_bad_input_is_a_clear_message_and_exit_1(tmp_path: Path) -> None:
    good = "\n".join(_good()) + "\n"
    (tmp_path / "good.jsonl").write_text(good, encoding="utf-8")
    lines = _good()
    (tmp_path / "cut.jsonl").write_text("\n".join([*lines[:4], lines[4][:30]]), encoding="utf-8")
    newer = json.dumps({"chatmdb_export": 1, "format_version": chatmdb.FORMAT_VERSION + 1, "created_at": "2026-01-01T00:00:00"})
    (tmp_path / "newer.jsonl").write_text("\n".join([newer, *lines[1:]]) + "\n", encoding="utf-8")
    target = tmp_path / "db"

    done = chatmdb_cli("import", "--db", str(target), str(tmp_path / "missing.jsonl"))
    assert done.returncode == 1 and "cannot read" in done.stderr and "missing.jsonl" in done.stderr
    done = chatmdb_cli("import", "--db", str(target), str(tmp_path / "cut.jsonl"))
    assert done.returncode == 1 and "cut.jsonl: line 5: not valid JSON" in done.stderr, done.stderr
    done = chatmdb_cli("import", "--db", str(target), str(tmp_path / "newer.jsonl"))
    assert done.returncode == 1 and f"line 1: the export is of on-disk format {chatmdb.FORMAT_VERSION + 1}" in done.stderr
    assert not target.exists()
    no_leftovers(tmp_path)

    with open_store(target) as store:
        store.init_database()
        store.create_session(session_id="s")  # the export's session: skipped by a merge
        before = snapshot(store)
    done = chatmdb_cli("import", "--db", str(target), str(tmp_path / "good.jsonl"))
    assert done.returncode == 1 and "holds a database with records" in done.stderr and "--merge" in done.stderr
    done = chatmdb_cli("import", "--db", str(target), "--merge", str(tmp_path / "cut.jsonl"))  # checked before writing
    assert done.returncode == 1 and "line 5" in done.stderr
    with open_store(target) as store:
        assert snapshot(store) == before
    done = chatmdb_cli("import", "--db", str(target), "--merge", "-", stdin=good)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["skipped"]["sessions"] == 1 and result["skipped_ids"]["sessions"] == ["s"]
    assert result["imported"] == {"sessions": 0, "messages": 3, "agents": 1, "contexts": 1, "tasks": 1}
    done = chatmdb_cli("export", "--db", str(tmp_path / "nothing"))
    assert done.returncode == 1 and "holds no lmdb database" in done.stderr
    assert not (tmp_path / "nothing").exists()


def test_a_failed_import_into_an_open_store_never_removes_what_others_wrote(tmp_path: Path, backend: str) -> None:
    with open_store(tmp_path / "src", backend=backend) as source:
        fill(source)
        lines = export_text(source).split("\n")
    truncated = [line + "\n" for line in lines[:-2]]  # no end line: refused at the end
    with open_store(tmp_path / "dst", backend=backend) as store:

        def meanwhile() -> Iterator[str]:
            yield from truncated
            store.create_session(session_id="someone-else")  # another writer, before the failure
            store.save_connection("pid", {"rooms": []})

        with pytest.raises(ValidationError, match="truncated") as failed:
            import_(store, meanwhile())
        assert "another writer" in " ".join(getattr(failed.value, "__notes__", []))
        assert store.get_session("someone-else") is not None
        assert store.take_connection("pid") == {"rooms": []}
        assert store.verify()["ok"]
