"""Store.list_sessions_named: the sessions a caller's grants name, paged as list_sessions pages."""

from __future__ import annotations

from typing import Any

import pytest

from chatmdb.errors import ValidationError
from chatmdb.store import Store


def _ids(page: list[dict[str, Any]]) -> list[str]:
    return [s["id"] for s in page]


def test_ids_and_prefixes_newest_first_and_paged(store: Store) -> None:
    for name in ["a:1", "b:1", "a:2", "c", "a:3", "b:2", "ab"]:
        store.create_session(title=name, session_id=name)
    # Newest first among the named: a:3, c, a:2, a:1 (b:* and ab are not named).
    assert _ids(store.list_sessions_named(["c", "missing"], ["a:"])) == ["a:3", "c", "a:2", "a:1"]
    first = store.list_sessions_named(["c"], ["a:"], limit=2)
    assert _ids(first) == ["a:3", "c"]
    rest = store.list_sessions_named(["c"], ["a:"], limit=2, cursor=first[-1]["id"])
    assert _ids(rest) == ["a:2", "a:1"]
    assert store.list_sessions_named(["c"], ["a:"], limit=2, cursor="a:1") == []
    # A session named twice (by id and by prefix, or by two prefixes) is listed once.
    assert _ids(store.list_sessions_named(["a:1"], ["a", "a:"])) == ["ab", "a:3", "a:2", "a:1"]
    # The order is the store's, as list_sessions gives it.
    everything = _ids(store.list_sessions(limit=100))
    named = _ids(store.list_sessions_named([], ["a", "b", "c"]))
    assert named == everything


def test_ids_no_session_can_have_name_nothing(store: Store) -> None:
    store.create_session(title="x", session_id="x")
    assert store.list_sessions_named(["x" * 300, "", "x"]) == [store.get_session("x")]


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.list_sessions_named([], [""]),
        lambda s: s.list_sessions_named([1], []),
        lambda s: s.list_sessions_named([], [b"a"]),
        lambda s: s.list_sessions_named(["x"], [], limit=0),
        lambda s: s.list_sessions_named(["x"], [], cursor="nope"),
    ],
)
def test_bad_input_is_refused(store: Store, call: Any) -> None:
    with pytest.raises(ValidationError):
        call(store)


def test_tasks_of_named_sessions_page_as_list_tasks_filtered(store: Store) -> None:
    """list_tasks_named gives what list_tasks gives with the other sessions' tasks left out, page by page."""
    import random

    rng = random.Random(7)
    names = ["a:1", "a:2", "b:1", "c"]
    for name in names:
        store.create_session(title=name, session_id=name)
    ids: list[str] = []
    for i in range(60):
        ids.append(store.create_task({"context_id": rng.choice(names), "id": f"t{i}"})["id"])
        if rng.random() < 0.5:  # a status change moves a task to the front of the listings
            store.update_task(rng.choice(ids), state=rng.choice(["working", "input-required"]))
    wanted = {"a:1", "a:2", "c"}
    for state in (None, "working", "submitted"):
        model = [t["id"] for t in store.list_tasks(state=state, limit=100) if t["context_id"] in wanted]
        got: list[str] = []
        cursor = None
        while True:
            page = store.list_tasks_named(["c"], ["a:"], state=state, limit=7, cursor=cursor)
            got += [t["id"] for t in page]
            if len(page) < 7:
                break
            cursor = page[-1]["id"]
        assert got == model, state
    assert store.list_tasks_named(["missing"], ["zz"]) == []
    with pytest.raises(ValidationError):
        store.list_tasks_named(["c"], cursor="no-such-task")
    with pytest.raises(ValidationError):
        store.list_tasks_named(["c"], state="nonsense")
