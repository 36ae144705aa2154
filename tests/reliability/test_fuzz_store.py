"""Fuzz every public store function with hostile arguments.

Wrong types, huge strings, deep nesting, lone surrogates (text that is not
valid UTF-8), bytes, non-JSON objects and unknown fields, mixed with valid
values so that calls get past the first check. Whatever comes in, only a
:class:`ChatMDBError` may come out, and a call that raises one changes
nothing in the database (compared key by key with ``snapshot``).

The methods are found by introspection, so functions added to the store later
are fuzzed too; arguments are drawn by parameter name.
"""

from __future__ import annotations

import datetime
import decimal
import inspect
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _util import snapshot  # tests/_util.py
from chatmdb import ChatMDBError, Store, open_store

# More examples for a deeper run: CHATMDB_FUZZ_EXAMPLES=1000 pytest tests/reliability/test_fuzz_store.py
EXAMPLES = int(os.environ.get("CHATMDB_FUZZ_EXAMPLES", "40"))

ODD_TEXT = [
    "",
    " ",
    "0",
    "-1",
    "007",
    "99999999999999999999",
    "\x00",
    "\ud800",  # lone surrogates: not encodable as UTF-8
    "a\udfffb",
    "\udc80\udc81",
    "é" * 300,
    "../../outside",
    "2026-13-45T99:00:00",
]
HUGE = "x" * 2_000_000
KNOWN_IDS = ["s1", "s2", "m1", "m2", "chloe", "t1", "c1", "default"]
ODD_OBJECTS = [object(), {1, 2}, 1j, decimal.Decimal("1.5"), datetime.datetime(2026, 1, 1), b"\xc3\x28", bytearray(b"\xff")]

text = st.one_of(
    st.text(max_size=12),
    st.sampled_from(ODD_TEXT + KNOWN_IDS),
    st.just("y" * 300),
    st.just(HUGE),
)
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
    st.binary(max_size=8),
    st.sampled_from(ODD_OBJECTS),
)


def _nest(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


value = st.one_of(
    st.recursive(
        scalar,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.tuples(inner),
            st.dictionaries(st.one_of(text, st.integers(), st.none()), inner, max_size=4),
        ),
        max_leaves=10,
    ),
    st.integers(min_value=60, max_value=3000).map(_nest),
)

FIELDS = [
    "session_id", "message_uuid", "content", "role", "agent_id", "created_at", "seq", "id", "name",
    "context_id", "status", "state", "artifacts", "history", "metadata", "title", "kind", "version",
]
plausible_scalar = st.one_of(
    st.sampled_from(KNOWN_IDS),
    st.sampled_from(["submitted", "working", "completed", "asc", "desc", "2026-01-01T00:00:00+00:00"]),
    st.integers(min_value=-2, max_value=5),
)
record = st.builds(
    lambda known, unknown: {**unknown, **known},
    st.dictionaries(st.sampled_from(FIELDS), st.one_of(plausible_scalar, value, st.just({"state": "working"})), max_size=6),
    st.dictionaries(text, value, max_size=3),
)


def _for(name: str) -> st.SearchStrategy[Any]:
    """Arguments for a parameter, by its name: plausible values and garbage."""
    if name in ("data", "card", "task", "metadata", "state") and name != "state":
        return st.one_of(record, value)
    if name in ("limit", "skip", "after_seq", "after", "expected_version"):
        return st.one_of(st.integers(min_value=-3, max_value=1200), st.sampled_from([2**64, -(2**63), True]), value)
    if name in ("now", "orphan_expiry"):
        return st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(), value)
    if name == "session_ids":
        return st.one_of(st.lists(st.one_of(st.sampled_from(KNOWN_IDS), text), max_size=4), value)
    if name == "direction":
        return st.one_of(st.sampled_from(["asc", "desc", "ASC", ""]), value)
    if name == "include_total":
        return st.one_of(st.booleans(), value)
    return st.one_of(st.sampled_from(KNOWN_IDS), plausible_scalar, value, st.just({"state": "working"}))


def _methods() -> list[str]:
    # close ends the store; backup is fuzzed on its own below.
    return [
        name
        for name, _ in inspect.getmembers(Store, inspect.isfunction)
        if not name.startswith("_") and name not in ("close", "backup")
    ]


def _call_strategy(name: str) -> st.SearchStrategy[dict[str, Any]]:
    method = getattr(Store, name)
    params = list(inspect.signature(getattr(method, "_prepare", method)).parameters.values())[1:]
    required = {p.name: _for(p.name) for p in params if p.default is inspect.Parameter.empty}
    optional = {p.name: _for(p.name) for p in params if p.default is not inspect.Parameter.empty}
    return st.fixed_dictionaries(required, optional=optional)


@pytest.fixture
def fuzz_store(tmp_path: Path, backend: str) -> Iterator[Store]:
    store = open_store(tmp_path / "db", backend=backend, durability="process")
    store.init_database()
    for sid in ("s1", "s2"):
        store.create_session(session_id=sid, title=sid)
    store.create_message({"session_id": "s1", "message_uuid": "m1", "agent_id": "chloe", "content": "hi"})
    store.create_message({"session_id": "s2", "message_uuid": "m2", "content": "there"})
    store.create_shared_context("s1", {"k": 1}, context_id="c1")
    store.create_task({"id": "t1", "context_id": "s1"})
    yield store
    store.close()


def _attempt(store: Store, call: Callable[[], Any]) -> None:
    before = snapshot(store)
    try:
        call()
    except ChatMDBError:
        assert snapshot(store) == before, "a rejected call changed the database"


@pytest.mark.parametrize("method", _methods())
def test_fuzz_store_method(fuzz_store: Store, method: str) -> None:
    bound = getattr(fuzz_store, method)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(kwargs=_call_strategy(method))
    def run(kwargs: dict[str, Any]) -> None:
        _attempt(fuzz_store, lambda: bound(**kwargs))

    run()
    assert fuzz_store.verify()["ok"]


def test_fuzz_backup(fuzz_store: Store, tmp_path: Path) -> None:
    targets = tmp_path / "backups"
    (targets / "full").mkdir(parents=True)
    (targets / "full" / "file").write_text("x")
    (targets / "a-file").write_text("x")
    names = st.sampled_from(["new1", "new2", "full", "full/file", "a-file", "a-file/below"])

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(dest=st.one_of(names.map(lambda n: targets / n), names.map(lambda n: str(targets / n)), value.filter(
        lambda v: not isinstance(v, str))))
    def run(dest: Any) -> None:
        _attempt(fuzz_store, lambda: fuzz_store.backup(dest))

    run()


def test_fuzz_open_store(tmp_path: Path) -> None:
    @settings(max_examples=EXAMPLES * 2, deadline=None, database=None)
    @given(
        where=st.one_of(
            st.sampled_from(["a", "b", "c", "bad\x00name", "\ud800", "\udcff"]),
            value.filter(lambda v: not isinstance(v, str)),
        ),
        backend=st.one_of(st.sampled_from(["lmdb", "sqlite"]), value),
        durability=st.one_of(st.sampled_from(["full", "process"]), value),
        options=st.dictionaries(
            st.sampled_from(["map_size", "max_message_size", "group_commit", "max_batch", "lmdb_map_size", "bogus"]),
            st.one_of(st.integers(min_value=-5, max_value=1 << 24), value),
            max_size=3,
        ),
    )
    def run(where: Any, backend: Any, durability: Any, options: dict[str, Any]) -> None:
        path = tmp_path / where if isinstance(where, str) else where
        try:
            store = open_store(path, backend=backend, durability=durability, **options)
        except ChatMDBError:
            return
        store.close()

    run()
