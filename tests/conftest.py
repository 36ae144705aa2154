"""Fixtures: real stores in temporary directories, on every backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatmdb import Store, open_store

BACKENDS = ["lmdb", "sqlite"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(tmp_path: Path, backend: str) -> Iterator[Callable[..., Store]]:
    """Open stores on the current backend under tmp_path; all closed at teardown."""
    opened: list[Store] = []

    def make(name: str = "db", **options: Any) -> Store:
        store = open_store(tmp_path / name, backend=backend, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[..., Store]) -> Store:
    return make_store()


@pytest.fixture
def session(store: Store) -> dict[str, Any]:
    return store.create_session(title="test")
