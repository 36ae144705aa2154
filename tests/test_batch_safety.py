"""A failing caller in a group commit leaves nothing of itself; its batch-mates commit.

Each test holds the writer inside a first transaction while it queues an
honest write, a write that fails after it has written, and another honest
write, so the three share the next batch and its transaction.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest

from _util import snapshot
from chatmdb import Conflict, StorageError, Store, ValidationError
from chatmdb.engines.base import WriteTxn
from chatmdb.store import WriteOutcome, messages
from chatmdb.store.writer import GroupCommitWriter


def _writer(store: Store) -> GroupCommitWriter:
    writer = store._writer_here()
    assert writer is not None, "these tests need group commit"
    return writer


def _in_one_batch(store: Store, ops: list[Any]) -> list[Future[Any]]:
    """Submit *ops* so that they run in one transaction; return their futures."""
    writer = _writer(store)
    entered, release = threading.Event(), threading.Event()
    batches: list[int] = []
    store.commit_listeners.append(lambda size, _: batches.append(size))

    def hold(txn: WriteTxn) -> WriteOutcome[None]:
        entered.set()
        assert release.wait(10)
        return WriteOutcome(None, True, None)

    first = writer.submit(hold)
    assert entered.wait(10)
    futures = [writer.submit(op) for op in ops]
    release.set()
    first.result(10)
    for future in futures:
        future.exception(10)
    assert batches[-1] == len(ops), f"the operations did not share one batch: {batches}"
    return futures


def _fails_after_writing(store: Store, data: dict[str, Any], *, read_back: bool) -> Any:
    create = messages.create(store.max_message_size, data)

    def op(txn: WriteTxn) -> WriteOutcome[None]:
        stored = create(txn)  # writes the message, its indexes, its event and the counters
        assert stored.created
        if read_back:
            # A range read through LMDB's write overlay flushes it into the
            # transaction: the undo must reach what was flushed too.
            assert list(txn.range("messages", b"", None))
        raise Conflict("injected failure after the first write")

    return op


@pytest.mark.parametrize("read_back", [False, True], ids=["overlay", "flushed"])
def test_failed_operation_leaves_nothing_and_the_batch_commits(store: Store, read_back: bool) -> None:
    session = store.create_session(session_id="s")
    store.create_message({"session_id": "s", "message_uuid": "before", "content": "0"})
    before = snapshot(store)
    honest = [messages.create(store.max_message_size, {"session_id": "s", "message_uuid": f"ok{i}"}) for i in (1, 2)]
    bad = _fails_after_writing(store, {"session_id": "s", "message_uuid": "bad", "agent_id": "a"}, read_back=read_back)
    f1, f_bad, f2 = _in_one_batch(store, [honest[0], bad, honest[1]])

    assert isinstance(f_bad.exception(), Conflict)
    assert [f1.result().record["seq"], f2.result().record["seq"]] == [2, 3]
    assert store.get_message("bad") is None
    assert store.get_agent_messages("a") == []
    page = store.get_session_messages(session["id"], direction="asc")
    assert [m["message_uuid"] for m in page] == ["before", "ok1", "ok2"]  # type: ignore[index]
    assert store.get_session("s")["message_count"] == 3  # type: ignore[index]
    # Offsets stay contiguous: the failed write's event number was given back.
    assert [f1.result().offset, f2.result().offset] == [2, 3]
    assert store.verify()["ok"], store.verify()["errors"]
    after = snapshot(store)
    assert len(after["messages"]) == len(before["messages"]) + 2


def test_failed_operation_alone_in_its_batch_writes_nothing(store: Store) -> None:
    store.create_session(session_id="s")
    before = snapshot(store)
    bad = _fails_after_writing(store, {"session_id": "s", "message_uuid": "bad"}, read_back=True)
    (f_bad,) = _in_one_batch(store, [bad])
    assert isinstance(f_bad.exception(), Conflict)
    assert snapshot(store) == before


def test_an_engine_error_at_commit_fails_only_its_culprit(store: Store, backend: str) -> None:
    if backend != "lmdb":
        pytest.skip("SQLite takes keys of any length; LMDB refuses keys over 511 bytes when the batch is applied")
    store.create_session(session_id="s")
    honest = [messages.create(store.max_message_size, {"session_id": "s", "message_uuid": f"ok{i}"}) for i in (1, 2)]

    def oversized_key(txn: WriteTxn) -> WriteOutcome[None]:
        txn.put("meta", b"k" * 600, b"v")  # MDB_BAD_VALSIZE, raised only when the overlay is flushed
        return WriteOutcome(None, True, None)

    f1, f_bad, f2 = _in_one_batch(store, [honest[0], oversized_key, honest[1]])
    assert isinstance(f_bad.exception(), StorageError)
    assert [f1.result().record["seq"], f2.result().record["seq"]] == [1, 2]
    assert store.verify()["ok"]


def test_ids_are_limited_in_bytes_on_every_backend(store: Store) -> None:
    store.create_session(session_id="s")
    before = snapshot(store)
    wide = "\U0001f600" * 200  # 200 characters, 800 bytes
    for call in (
        lambda: store.create_session(session_id=wide),
        lambda: store.create_message({"session_id": "s", "message_uuid": wide}),
        lambda: store.create_message({"session_id": "s", "agent_id": wide}),
        lambda: store.upsert_agent_card({"id": wide, "name": "x"}),
        lambda: store.create_shared_context("s", {}, context_id=wide),
        lambda: store.create_task({"context_id": "s", "id": wide}),
    ):
        with pytest.raises(ValidationError, match="bytes"):
            call()  # type: ignore[no-untyped-call]
    assert snapshot(store) == before
    assert store.create_session(session_id="\U0001f600" * 64)["id"] == "\U0001f600" * 64  # 256 bytes: the limit
