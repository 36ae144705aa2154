"""The group-commit writer wakes a batch's blocked callers one after another, and strands none.

The writer sets every result of a batch, then wakes only its first synchronous
caller; each wakes the next. These tests break that chain on purpose (a caller
that never collects its result, one interrupted by a signal, one failing) and
check that everybody else still gets an answer. The joins' long timeouts only
detect a hang: nothing here depends on how fast anything runs.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from chatmdb import Conflict, Store, open_store
from chatmdb.engines.base import WriteTxn
from chatmdb.store import writer as writer_module
from chatmdb.store.writer import GroupCommitWriter, _Waiter

HANG = 10.0  # seconds: far beyond any honest wait, only there to turn a hang into a failure


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "db", backend="lmdb") as opened:
        yield opened


def _writer(store: Store) -> GroupCommitWriter:
    writer = store._writer_here()
    assert writer is not None, "these tests need group commit"
    return writer


def _put(key: str, value: str = "v") -> Callable[[WriteTxn], str]:
    def op(txn: WriteTxn) -> str:
        txn.put("meta", f"wake-test:{key}".encode(), value.encode())
        return key

    return op


def _fail(txn: WriteTxn) -> None:
    txn.put("meta", b"wake-test:failed", b"x")
    raise Conflict("injected")


def _stored(store: Store, key: str) -> bytes | None:
    with store.engine.read() as txn:
        return txn.get("meta", f"wake-test:{key}".encode())


class _Held:
    """Holds the writer inside a transaction, so that what is queued meanwhile forms the next batch."""

    def __init__(self, store: Store) -> None:
        self.writer = _writer(store)
        self.batches: list[int] = []
        self.committed = threading.Event()
        store.commit_listeners.append(self._on_commit)
        self._entered, self._release = threading.Event(), threading.Event()
        self._first = self.writer.submit(self._hold)
        assert self._entered.wait(HANG)

    def _on_commit(self, size: int, _: float) -> None:
        self.batches.append(size)
        if len(self.batches) == 2:
            self.committed.set()

    def _hold(self, txn: WriteTxn) -> None:
        self._entered.set()
        assert self._release.wait(HANG)

    def enqueue(self, op: Callable[[WriteTxn], Any]) -> _Waiter:
        """Queue *op* for a synchronous caller, as ``run`` does, without blocking on it."""
        waiter = _Waiter()
        self.writer._enqueue(op, waiter)
        return waiter

    def release(self, size: int) -> None:
        """Let the held transaction commit, then wait for the next batch, which must hold *size* callers."""
        self._release.set()
        self._first.result(HANG)
        assert self.committed.wait(HANG)
        assert self.batches[1] == size, f"the operations did not share one batch: {self.batches}"


def _collect(waiter: _Waiter, into: dict[_Waiter, Any]) -> threading.Thread:
    """A thread that blocks on *waiter* as ``run`` does and records its result or its error."""

    def wait() -> None:
        try:
            into[waiter] = waiter.result()
        except BaseException as exc:
            into[waiter] = exc

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def _join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(HANG)
    assert not [t for t in threads if t.is_alive()], "a caller was never woken"


@pytest.fixture
def no_idle_rescue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take away the writer's idle safety net, so that a test sees what the chain does alone."""
    monkeypatch.setattr(writer_module, "CHAIN_TIMEOUT", 3600.0)


def test_many_producers_each_get_their_own_result_once(store: Store) -> None:
    threads_n, writes = 32, 50
    store.create_session(session_id="s")
    batches: list[int] = []
    store.commit_listeners.append(lambda size, _: batches.append(size))
    got: dict[int, list[dict[str, Any]]] = {}
    errors: list[BaseException] = []

    def produce(t: int) -> None:
        try:
            got[t] = [store.create_message({"session_id": "s", "message_uuid": f"{t}-{i}"}) for i in range(writes)]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(t,), daemon=True) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    _join_all(threads)
    assert errors == []
    for t in range(threads_n):
        assert [m["message_uuid"] for m in got[t]] == [f"{t}-{i}" for i in range(writes)]
    seqs = sorted(m["seq"] for messages in got.values() for m in messages)
    assert seqs == list(range(1, threads_n * writes + 1))  # each committed once
    assert store.get_session("s")["message_count"] == threads_n * writes  # type: ignore[index]
    assert max(batches) > 1, "no batch had two callers: the chain was not exercised"


def test_a_batch_is_woken_one_caller_after_another(store: Store, no_idle_rescue: None) -> None:
    held = _Held(store)
    waiters = [held.enqueue(_put(str(i))) for i in range(4)]
    held.release(4)
    # Every result is set, only the first caller is woken; each wakes the next.
    assert [w.woken for w in waiters] == [True, False, False, False]
    assert waiters[0].result() == "0"
    assert [w.woken for w in waiters] == [True, True, False, False]
    assert waiters[1].result() == "1"
    assert waiters[2].result() == "2"
    assert waiters[3].result() == "3"
    assert all(w.woken for w in waiters)


@pytest.mark.parametrize("abandoned", [0, 1, 3], ids=["first", "middle", "last"])
def test_a_caller_that_never_collects_does_not_strand_the_others(store: Store, abandoned: int) -> None:
    held = _Held(store)
    waiters = [held.enqueue(_put(str(i))) for i in range(4)]
    results: dict[_Waiter, Any] = {}
    threads = [_collect(w, results) for i, w in enumerate(waiters) if i != abandoned]
    held.release(4)
    _join_all(threads)  # rescued by the idle writer after CHAIN_TIMEOUT
    assert sorted(results.values()) == sorted(str(i) for i in range(4) if i != abandoned)
    assert [_stored(store, str(i)) for i in range(4)] == [b"v"] * 4  # the abandoned write committed too


def test_the_next_commit_wakes_those_a_broken_chain_left(store: Store, no_idle_rescue: None) -> None:
    held = _Held(store)
    waiters = [held.enqueue(_put(str(i))) for i in range(4)]
    results: dict[_Waiter, Any] = {}
    threads = [_collect(w, results) for w in waiters[2:]]
    held.release(4)
    waiters[0].result()  # wakes the second, which nobody collects: the chain stops there
    assert not waiters[2].woken
    assert _writer(store).run(_put("later")) == "later"
    _join_all(threads)
    assert sorted(results.values()) == ["2", "3"]


def test_an_interrupted_caller_passes_the_wake_on(store: Store, no_idle_rescue: None) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread")
    held = _Held(store)
    waiters = [held.enqueue(_put(str(i))) for i in range(4)]
    results: dict[_Waiter, Any] = {}
    threads = [_collect(w, results) for i, w in enumerate(waiters) if i != 1]

    class Interrupted(Exception):
        pass

    code = _Waiter.result.__code__
    # The line of the acquire, inside its try: an interruption there is the one
    # the waiter must survive (KeyboardInterrupt, a test-timeout alarm).
    lines, first_line = inspect.getsourcelines(_Waiter.result)
    acquire_line = first_line + next(n for n, line in enumerate(lines) if "self._done.acquire()" in line)
    interrupted = threading.Event()
    main = threading.main_thread().ident
    assert main is not None

    def handler(signum: int, frame: Any) -> None:
        if frame is not None and frame.f_code is code and frame.f_lineno == acquire_line:
            interrupted.set()
            raise Interrupted

    def interrupt() -> None:
        # Signal until the main thread is caught blocked in the acquire.
        while not interrupted.is_set():
            frame = sys._current_frames().get(main)
            if frame is not None and frame.f_code is code and frame.f_lineno == acquire_line:
                signal.pthread_kill(main, signal.SIGUSR1)
            interrupted.wait(0.2)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        helper = threading.Thread(target=interrupt, daemon=True)
        helper.start()
        with pytest.raises(Interrupted):
            waiters[1].result()  # still held: interrupted before its wake came
        helper.join(HANG)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    held.release(4)
    _join_all(threads)  # the writer's idle rescue is off: only the chain can wake the last two
    assert sorted(results.values()) == ["0", "2", "3"]


def test_a_caller_interrupted_after_its_wake_passes_it_on() -> None:
    first, second = _Waiter(), _Waiter()
    first.next = second

    class Late(Exception):
        pass

    class InterruptedLock:
        """The lock, taken, and then an asynchronous exception before the waiter could go on."""

        def __init__(self, lock: Any) -> None:
            self.lock = lock

        def acquire(self) -> bool:
            self.lock.acquire()
            raise Late

        def release(self) -> None:
            self.lock.release()

    first._done = InterruptedLock(first._done)  # type: ignore[assignment]
    first.wake()
    with pytest.raises(Late):
        first.result()
    assert second.woken
    second.result()


def test_waking_twice_releases_once() -> None:
    waiter = _Waiter()
    waiter.set_result("done")
    waiter.wake()
    waiter.wake()  # a second release would raise: the lock is not held
    assert waiter.result() == "done"
    waiter.wake()  # nor, once the caller has taken the lock back, release it again
    assert waiter._done.locked()


def test_waking_passes_over_abandoned_waiters_once() -> None:
    waiters = [_Waiter() for _ in range(3)]
    waiters[0].next, waiters[1].next = waiters[1], waiters[2]
    waiters[1]._abandoned = True  # as an interrupted caller leaves it
    waiters[0].wake()
    waiters[0].result()  # wakes the second, and through it the third
    assert waiters[2].woken
    waiters[1].wake()
    waiters[2].wake()
    waiters[2].result()
    assert waiters[2]._done.locked()


def test_errors_reach_their_own_callers_in_a_mixed_batch(store: Store, no_idle_rescue: None) -> None:
    held = _Held(store)
    ok_before = held.enqueue(_put("sync-ok-1"))
    failing = held.enqueue(_fail)
    ok_after = held.enqueue(_put("sync-ok-2"))
    future_ok: Future[Any] = held.writer.submit(_put("future-ok"))
    future_bad: Future[Any] = held.writer.submit(_fail)
    enqueued = threading.Event()
    from_loop: dict[str, Any] = {}

    async def on_loop() -> None:
        good = held.writer.submit_async(_put("loop-ok"))
        bad = held.writer.submit_async(_fail)
        enqueued.set()
        from_loop["ok"] = await good
        try:
            await bad
        except Conflict as exc:
            from_loop["bad"] = exc

    loop_thread = threading.Thread(target=asyncio.run, args=(on_loop(),), daemon=True)
    loop_thread.start()
    assert enqueued.wait(HANG)
    last = held.enqueue(_put("sync-ok-3"))
    results: dict[_Waiter, Any] = {}
    threads = [_collect(w, results) for w in (ok_before, failing, ok_after, last)]
    held.release(8)
    _join_all([*threads, loop_thread])
    assert results[ok_before] == "sync-ok-1"
    assert isinstance(results[failing], Conflict)
    assert results[ok_after] == "sync-ok-2"
    assert results[last] == "sync-ok-3"
    assert future_ok.result(HANG) == "future-ok"
    assert isinstance(future_bad.exception(HANG), Conflict)
    assert from_loop["ok"] == "loop-ok"
    assert isinstance(from_loop["bad"], Conflict)
    assert _stored(store, "failed") is None
    assert [_stored(store, k) for k in ("sync-ok-1", "sync-ok-2", "sync-ok-3", "future-ok", "loop-ok")] == [b"v"] * 5


def test_callers_past_max_batch_go_in_the_next_batches(tmp_path: Path) -> None:
    with open_store(tmp_path / "small", backend="lmdb", max_batch=2) as small:
        held = _Held(small)
        waiters = [held.enqueue(_put(str(i))) for i in range(5)]
        results: dict[_Waiter, Any] = {}
        threads = [_collect(w, results) for w in waiters]
        held.release(2)
        _join_all(threads)
        assert [results[w] for w in waiters] == [str(i) for i in range(5)]
        small.close()  # the last batch's callers may return before its commit is reported
        assert held.batches == [1, 2, 2, 1]
