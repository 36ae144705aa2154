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

Threads blocked in :meth:`GroupCommitWriter.run` are woken one after another
(each wakes the next of its batch), not all at once: woken together, dozens of
threads would each wake only to queue for the GIL, and the writer with them.
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
COMMIT_PAUSE = 0.0002
# Seconds the writer, idle, leaves a broken wake chain before waking the rest itself.
CHAIN_TIMEOUT = 0.02


class _Waiter:
    """A one-shot result for a thread that blocks on it: the part of a Future
    that a synchronous caller needs, at a third of the cost (one lock, no
    condition variable), which counts when it is paid once per message.

    The writer sets the results of a whole batch, then wakes only its first
    waiter; each waiter wakes the next (:attr:`next`) as soon as it is woken.
    """

    __slots__ = ("_abandoned", "_done", "_error", "_value", "_woken", "next")

    def __init__(self) -> None:
        self._done = threading.Lock()
        self._done.acquire()
        # Taken by whoever wakes this waiter: several may try (the previous
        # waiter, the writer's safety net), and a second release of _done
        # would raise, or let a later acquire through.
        self._woken = threading.Lock()
        self._abandoned = False
        self._value: Any = None
        self._error: BaseException | None = None
        self.next: _Waiter | None = None

    def set_running_or_notify_cancel(self) -> bool:
        return True  # a blocked thread cannot cancel

    def set_result(self, value: Any) -> None:
        self._value = value

    def set_exception(self, error: BaseException) -> None:
        self._error = error

    @property
    def woken(self) -> bool:
        return self._woken.locked()

    def wake(self) -> None:
        """Release the waiting thread (only the first call does), and the next past an abandoned one."""
        waiter: _Waiter | None = self
        while waiter is not None and waiter._woken.acquire(blocking=False):
            waiter._done.release()
            # Read after the release, as the caller sets it before it looks at
            # _woken: one of the two sees the other and passes the wake on.
            if not waiter._abandoned:
                return
            waiter = waiter.next

    def result(self) -> Any:
        try:
            self._done.acquire()
        except BaseException:
            # Interrupted (a signal handler raised in this thread): nobody will
            # take this wake, so the next waiters must not depend on it. If it
            # came already, pass it on now; if not, whoever brings it will.
            self._abandoned = True
            if self._woken.locked() and self.next is not None:
                self.next.wake()
            raise
        if self.next is not None:
            self.next.wake()
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
        # Under _lock: callers queued since the last gather ended, and how many
        # make a batch as large as the last one (_enough is set when they have).
        self._arrived = 0
        self._expected = 0
        self._enough = threading.Event()
        # The synchronous waiters of the last batch, in the order they wake.
        self._chain: list[_Waiter] = []
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
            self._arrived += 1
            if self._arrived == self._expected:
                self._enough.set()

    def close(self) -> None:
        """Commit everything already submitted, then stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
            self._enough.set()  # nobody else is coming: a waiting gather can end
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        stopping = False
        previous = 0
        while not stopping:
            batch, stopping = self._gather(self._next(), previous)
            if batch:
                started = time.perf_counter()
                self._commit(batch)
                previous = len(batch)
                if self._on_commit is not None:
                    self._on_commit(len(batch), time.perf_counter() - started)
        # No later commit will mend a broken chain: wake whoever is left.
        self._wake_chain()

    def _next(self) -> Any:
        """The first item of the next batch, once there is one."""
        chain = self._chain
        if chain and not chain[-1].woken:
            # A chain can break where no handler runs (an asynchronous exception
            # between a waiter's wake and its passing it on): the rest would
            # sleep until the next commit, which may never come.
            try:
                return self._queue.get(timeout=CHAIN_TIMEOUT)
            except queue.Empty:
                self._wake_chain()
        return self._queue.get()

    def _wake_chain(self) -> None:
        # A failing non-blocking acquire for each waiter already woken.
        for waiter in self._chain:
            waiter.wake()
        self._chain = []

    def _gather(self, item: Any, previous: int) -> tuple[list[tuple[Op, Waiter]], bool]:
        """Collect a batch starting with *item*; return it and whether to stop after it."""
        # Commit delay: after a batch of several callers, those it released
        # are preparing their next writes while the others wait in the queue,
        # so batches would alternate between two halves of the callers. A
        # short wait lets the second half join, and one commit (two fsyncs on
        # LMDB) serves them all. It ends once as many callers are queued as the
        # last batch held, or at the first pause that brings nobody; a lone
        # caller never waits. Waiting on an event set by the callers,
        # rather than polling, spares the writer a wake per pause.
        if previous > 1 and item is not _STOP:
            deadline = time.perf_counter() + COMMIT_DELAY
            while True:
                seen = self._arrived
                left = deadline - time.perf_counter()
                if left <= 0 or self._enough.wait(min(COMMIT_PAUSE, left)) or self._arrived == seen:
                    break
        batch: list[tuple[Op, Waiter]] = []
        stopping = False
        while True:
            if item is _STOP:
                stopping = True
                break
            op, future = item
            # A caller that gave up before the write began gets nothing
            # written; one that gives up later still gets it committed.
            if future.set_running_or_notify_cancel():
                batch.append((op, future))
            if len(batch) >= self._max_batch:
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        with self._lock:
            # Those left queued (past max_batch) count towards the next batch.
            self._arrived = self._queue.qsize()
            self._expected = len(batch)
            if self._arrived >= self._expected or self._closed:
                self._enough.set()
            else:
                self._enough.clear()
        return batch, stopping

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
        # The last batch's chain has had this whole commit to run its course;
        # whoever of it is still asleep was left behind by a broken link.
        self._wake_chain()
        chain: list[_Waiter] = []
        on_loops: dict[asyncio.AbstractEventLoop, list[_LoopWaiter]] = {}
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
            if isinstance(future, _Waiter):
                if chain:
                    chain[-1].next = future
                chain.append(future)
            elif isinstance(future, _LoopWaiter):
                on_loops.setdefault(future.loop, []).append(future)
        for loop, waiters in on_loops.items():
            with contextlib.suppress(RuntimeError):  # a loop closed meanwhile: nobody is waiting
                loop.call_soon_threadsafe(_settle_all, waiters)
        # The first wake only once every result is set and every link made:
        # a waiter's result, and its successor, are never read before them.
        self._chain = chain
        if chain:
            chain[0].wake()

    def _run_one(self, op: Op) -> tuple[bool, Any]:
        try:
            return True, self._engine.write(op)
        except BaseException as exc:  # handed to the caller, who re-raises it
            return False, exc
