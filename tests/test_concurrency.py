"""Concurrent writers in threads and in processes: every message once, seq contiguous."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest

from chatmdb import Store, open_store

SESSIONS = 3


def check_sessions(store: Store, session_ids: list[str], expected_uuids: set[str]) -> None:
    found: list[str] = []
    for sid in session_ids:
        page = store.get_session_messages(sid, limit=1000, direction="asc", include_total=True)
        assert isinstance(page, dict)
        items = page["items"]
        assert [m["seq"] for m in items] == list(range(1, len(items) + 1))
        assert page["pagination"]["total"] == len(items)
        assert store.get_session(sid)["message_count"] == len(items)  # type: ignore[index]
        found += [m["message_uuid"] for m in items]
    assert len(found) == len(set(found)), "a message was stored twice"
    assert set(found) == expected_uuids
    assert store.verify()["ok"]


@pytest.mark.parametrize("group_commit", [True, False])
def test_eight_threads(store_factory: Any, group_commit: bool) -> None:
    store = store_factory(group_commit=group_commit)
    sids = [store.create_session(title=f"s{i}")["id"] for i in range(SESSIONS)]
    acked: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def producer(worker: int) -> None:
        try:
            for i in range(100):
                uuid = f"w{worker}-{i}"
                msg = store.create_message({"session_id": sids[i % SESSIONS], "message_uuid": uuid, "content": i})
                # Retries of the same uuid from another thread must not duplicate.
                if i % 10 == 0:
                    again = store.create_message({"session_id": sids[i % SESSIONS], "message_uuid": uuid})
                    assert again == msg
                with lock:
                    acked.append(msg["message_uuid"])
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(acked) == 800
    check_sessions(store, sids, set(acked))


def _process_writer(path: str, backend: str, sids: list[str], worker: int, count: int, queue: Any) -> None:
    with open_store(path, backend=backend) as store:
        for i in range(count):
            msg = store.create_message({"session_id": sids[i % len(sids)], "message_uuid": f"p{worker}-{i}", "content": i})
            queue.put(msg["message_uuid"])
            if i % 25 == 0:  # page while others write
                page = store.get_session_messages(sids[0], limit=50)
                assert isinstance(page, list)
    queue.put(None)


def test_four_processes(tmp_path: Path, backend: str) -> None:
    path = str(tmp_path / "db")
    with open_store(path, backend=backend) as store:
        sids = [store.create_session(title=f"s{i}")["id"] for i in range(SESSIONS)]
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_process_writer, args=(path, backend, sids, w, 150, queue)) for w in range(4)]
    for p in procs:
        p.start()
    acked: set[str] = set()
    done = 0
    while done < 4:
        item = queue.get(timeout=120)
        if item is None:
            done += 1
        else:
            acked.add(item)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(acked) == 600
    with open_store(path, backend=backend) as store:
        check_sessions(store, sids, acked)


@pytest.fixture
def store_factory(tmp_path: Path, backend: str) -> Any:
    opened: list[Store] = []

    def make(**options: Any) -> Store:
        store = open_store(tmp_path / "db", backend=backend, **options)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def _forked_child(store: Store, sid: str, queue: Any) -> None:
    # The child inherits an open store: it must reopen what cannot cross fork().
    msg = store.create_message({"session_id": sid, "message_uuid": "from-child"})
    queue.put(msg["seq"])
    store.close()


def test_store_is_usable_after_fork(store_factory: Any) -> None:
    store = store_factory()
    sid = store.create_session()["id"]
    store.create_message({"session_id": sid, "message_uuid": "before"})
    with store.engine.read():
        pass
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with pytest.warns(DeprecationWarning) if _fork_warns() else _nothing():
        proc = ctx.Process(target=_forked_child, args=(store, sid, queue))
        proc.start()
    assert queue.get(timeout=60) == 2
    proc.join(timeout=60)
    assert proc.exitcode == 0
    # The parent's store still works and sees the child's message.
    assert store.create_message({"session_id": sid, "message_uuid": "after"})["seq"] == 3
    assert [m["message_uuid"] for m in store.get_session_messages(sid, direction="asc")] == ["before", "from-child", "after"]  # type: ignore[index]
    assert store.verify()["ok"]


def _fork_warns() -> bool:
    # Python 3.12+ warns when forking a process that has threads (the writer thread).
    import sys

    return sys.version_info >= (3, 12)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
