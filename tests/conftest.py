"""Fixtures: real stores in temporary directories, on every backend."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from chatmdb import Store, open_store

BACKENDS = ["lmdb", "sqlite"]

# Under CI every run draws the same examples (derandomize: each test's seed is derived from the
# test itself, so a failure there fails again on the same commit, and hypothesis then keeps no
# example database), and a failure prints the @reproduce_failure blob that replays it. Locally
# runs stay random, keep their failing examples in .hypothesis/ to replay first, and print the
# blob too.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_report_header() -> str:
    profile = "ci" if os.environ.get("CI") else "dev"
    return f"hypothesis profile: {profile} (derandomize={settings().derandomize})"


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
