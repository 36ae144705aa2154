"""Group commit: one thread writes every waiting operation in one transaction.

A durable commit costs an fsync (two on LMDB), whatever it holds, so callers
that arrive while a commit is in flight are queued and committed together,
then all acknowledged. Each caller gets its own result or its own error: each
operation runs in a savepoint of the batch's transaction, so one that raises
a :class:`ChatMDBError` (unknown session, conflict) leaves nothing of itself,
wherever it raised, and the rest of its batch commits. Anything else (a bug,
or an engine failure, which LMDB may only report when the batch's writes are
applied at commit) aborts the batch, which is then retried one operation per
transaction so that only the culprit fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..engines.base import Engine, WriteTxn
from ..errors import ChatMDBError, StoreClosed

Op = Callable[[WriteTxn], Any]

_STOP = object()

# Seconds a batch may wait for more callers, in pauses of COMMIT_PAUSE.
COMMIT_DELAY = 0.001
COMMIT_PAUSE = 0.00005


class _Waiter:
    """A one-shot result for a thread that blocks on it: the part of a Future
    that a synchronous caller needs, at a third of the cost (one lock, no
    condition variable), which counts when it is paid once per message.
    """

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        self._value: Any = None
        self._error: BaseException | None = None

    def set_running_or_notify_cancel(self) -> bool:
        return True  # a blocked thread cannot cancel

    def set_result(self, value: Any) -> None:
        self._value = value
        self._done.release()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._done.release()

    def result(self) -> Any:
        self._done.acquire()
        if self._error is not None:
            raise self._error
        return self._value


class _LoopWaiter:
    """A result for a coroutine: an asyncio future of *loop*, settled on that loop.

    The writer settles every such waiter of a batch with one
    ``call_soon_threadsafe`` per loop, rather than one thread-safe hand-off
    (a concurrent Future chained to an asyncio one) per caller.
    """

    __slots__ = ("error", "future", "loop", "value")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        self.loop = loop
        self.future = future
        self.value: Any = None
        self.error: BaseException | None = None

    def set_running_or_notify_cancel(self) -> bool:
        return not self.future.cancelled()  # a caller that gave up before its write began: skip it

    def set_result(self, value: Any) -> None:
        self.value = value

    def set_exception(self, error: BaseException) -> None:
        self.error = error

    def settle(self) -> None:
        if self.future.cancelled():
            return  # committed all the same; nobody is waiting for the answer
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.value)


def _settle_all(waiters: list[_LoopWaiter]) -> None:
    for waiter in waiters:
        waiter.settle()


Waiter = Future[Any] | _Waiter | _LoopWaiter


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
        """Queue *op*; the returned future resolves after its batch commits."""
        future: Future[Any] = Future()
        self._enqueue(op, future)
        return future

    def submit_async(self, op: Op) -> asyncio.Future[Any]:
        """Queue *op* from a coroutine; the returned future of the running loop resolves after its batch commits."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._enqueue(op, _LoopWaiter(loop, future))
        return future

    def run(self, op: Op) -> Any:
        """Queue *op* and wait for its result (or its error) in this thread."""
        waiter = _Waiter()
        self._enqueue(op, waiter)
        return waiter.result()

    def _enqueue(self, op: Op, future: Waiter) -> None:
        with self._lock:
            if self._closed:
                raise StoreClosed("the store is closed")
            self._queue.put((op, future))

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
        previous = 0
        while not stopping:
            batch, stopping = self._gather(self._queue.get(), previous)
            if batch:
                started = time.perf_counter()
                self._commit(batch)
                previous = len(batch)
                if self._on_commit is not None:
                    self._on_commit(len(batch), time.perf_counter() - started)

    def _gather(self, item: Any, previous: int) -> tuple[list[tuple[Op, Waiter]], bool]:
        """Collect a batch starting with *item*; return it and whether to stop after it."""
        batch: list[tuple[Op, Waiter]] = []
        deadline = None
        while True:
            if item is _STOP:
                return batch, True
            op, future = item
            # A caller that gave up before the write began gets nothing
            # written; one that gives up later still gets it committed.
            if future.set_running_or_notify_cancel():
                batch.append((op, future))
            if len(batch) >= self._max_batch:
                return batch, False
            try:
                item = self._queue.get_nowait()
                continue
            except queue.Empty:
                pass
            # Commit delay: after a batch of several callers, those it released
            # are preparing their next writes while the others wait in the queue,
            # so batches would alternate between two halves of the callers. A
            # short pause lets the second half join, and one commit (two fsyncs
            # on LMDB) serves them all. It ends at the first pause that brings
            # nothing; a lone caller never waits.
            if previous <= 1:
                return batch, False
            now = time.perf_counter()
            deadline = deadline or now + COMMIT_DELAY
            if now >= deadline:
                return batch, False
            time.sleep(COMMIT_PAUSE)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _commit(self, batch: list[tuple[Op, Waiter]]) -> None:
        def run_all(txn: WriteTxn) -> list[tuple[bool, Any]]:
            outcomes: list[tuple[bool, Any]] = []
            for op, _ in batch:
                try:
                    with txn.savepoint():
                        outcomes.append((True, op(txn)))
                except ChatMDBError as exc:
                    outcomes.append((False, exc))
            return outcomes

        try:
            outcomes = self._engine.write(run_all)
        except BaseException as exc:
            if len(batch) == 1:
                outcomes = [(False, exc)]
            else:
                # Nothing of the batch was committed. An engine error can come
                # from any one operation's writes (LMDB applies them at commit
                # time), so each is tried alone: only the culprit fails, and a
                # real engine failure (a full disk) still fails each in turn.
                outcomes = [self._run_one(op) for op, _ in batch]
        on_loops: dict[asyncio.AbstractEventLoop, list[_LoopWaiter]] = {}
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
            if isinstance(future, _LoopWaiter):
                on_loops.setdefault(future.loop, []).append(future)
        for loop, waiters in on_loops.items():
            with contextlib.suppress(RuntimeError):  # a loop closed meanwhile: nobody is waiting
                loop.call_soon_threadsafe(_settle_all, waiters)

    def _run_one(self, op: Op) -> tuple[bool, Any]:
        try:
            return True, self._engine.write(op)
        except BaseException as exc:  # handed to the caller, who re-raises it
            return False, exc
