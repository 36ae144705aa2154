"""Group commit: one thread writes every waiting operation in one transaction.

A durable commit costs an fsync (two on LMDB), whatever it holds, so callers
that arrive while a commit is in flight are queued and committed together,
then all acknowledged. Each caller gets its own result or its own error: an
operation that raises a :class:`ChatMDBError` (unknown session, conflict)
writes nothing and does not disturb the rest of its batch, because operations
check everything before their first write. Anything else (a bug, an engine
failure inside an operation) aborts the batch, which is then retried one
operation per transaction so that only the culprit fails.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ._engine import Engine, WriteTxn
from .errors import ChatMDBError, StorageError, StoreClosed

Op = Callable[[WriteTxn], Any]

_STOP = object()


class GroupCommitWriter:
    """Owns the write transactions of one store in one process."""

    def __init__(self, engine: Engine, max_batch: int = 1024, on_commit: Callable[[int, float], None] | None = None):
        self._engine = engine
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._on_commit = on_commit
        self._thread = threading.Thread(target=self._run, name="chatmdb-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Op) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise StoreClosed("the store is closed")
            self._queue.put((op, future))
        return future

    def close(self) -> None:
        """Commit everything already submitted, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            batch: list[tuple[Op, Future[Any]]] = []
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    op, future = item
                    # A caller that gave up before the write began gets nothing
                    # written; one that gives up later still gets it committed.
                    if future.set_running_or_notify_cancel():
                        batch.append((op, future))
                if stopping or len(batch) >= self._max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                started = time.perf_counter()
                self._commit(batch)
                if self._on_commit is not None:
                    self._on_commit(len(batch), time.perf_counter() - started)

    def _commit(self, batch: list[tuple[Op, Future[Any]]]) -> None:
        def run_all(txn: WriteTxn) -> list[tuple[bool, Any]]:
            outcomes: list[tuple[bool, Any]] = []
            for op, _ in batch:
                try:
                    outcomes.append((True, op(txn)))
                except ChatMDBError as exc:
                    outcomes.append((False, exc))
            return outcomes

        try:
            outcomes = self._engine.write(run_all)
        except StorageError as exc:
            for _, future in batch:
                future.set_exception(exc)
            return
        except BaseException:
            outcomes = [self._run_one(op) for op, _ in batch]
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _run_one(self, op: Op) -> tuple[bool, Any]:
        try:
            return True, self._engine.write(op)
        except BaseException as exc:  # handed to the caller, who re-raises it
            return False, exc
