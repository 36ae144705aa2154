"""AsyncStore: the coroutine twin of every write of a Store, for event loops.

Writes are queued to the store's group-commit writer and awaited, so the loop
never blocks on a commit. Reads are microseconds and stay on the Store: call
them directly. The ``*_outcome`` twins return a :class:`WriteOutcome`, which
says whether the call created anything and the offset of the room event it
logged, for callers that broadcast what was written (the gateway); their
``origin`` (the client whose request it is) is kept with the event, so that
whoever tails the event log (gateway workers) does not send it back to it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import agents, contexts, events, messages, sessions, tasks
from .core import PRUNE_BATCH, SESSION_PARTS, init_op
from .ops import Op, T, WriteOutcome

if TYPE_CHECKING:
    from .core import Store

__all__ = ["AsyncStore"]


class AsyncStore:
    """``store.aio``: each method is a coroutine and takes the arguments of the Store method of its name."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def run(self, op: Op[T]) -> WriteOutcome[T]:
        """Queue a write operation and wait for its commit. This method is a coroutine."""
        store = self._store
        writer = store._writer_here()
        if writer is None:
            return await asyncio.to_thread(store._run, op)
        outcome: WriteOutcome[T] = await writer.submit_async(op)
        return outcome

    # -- writes that log a room event: the record, or the whole outcome ------------

    async def create_message_outcome(
        self, data: dict[str, Any], origin: str | None = None
    ) -> WriteOutcome[dict[str, Any]]:
        return await self.run(messages.create(self._store.max_message_size, data, origin))

    async def create_message(self, data: dict[str, Any]) -> dict[str, Any]:
        return (await self.create_message_outcome(data)).record

    async def create_shared_context_outcome(
        self, session_id: str, data: dict[str, Any], context_id: str | None = None, origin: str | None = None
    ) -> WriteOutcome[dict[str, Any]]:
        return await self.run(contexts.create(self._store.max_message_size, session_id, data, context_id, origin))

    async def create_shared_context(
        self, session_id: str, data: dict[str, Any], context_id: str | None = None
    ) -> dict[str, Any]:
        return (await self.create_shared_context_outcome(session_id, data, context_id)).record

    async def update_shared_context_outcome(
        self, context_id: str, data: dict[str, Any], expected_version: int | None = None, origin: str | None = None
    ) -> WriteOutcome[dict[str, Any]]:
        size = self._store.max_message_size
        return await self.run(contexts.update(size, context_id, data, expected_version, origin))

    async def update_shared_context(
        self, context_id: str, data: dict[str, Any], expected_version: int | None = None
    ) -> dict[str, Any]:
        return (await self.update_shared_context_outcome(context_id, data, expected_version)).record

    async def create_task_outcome(self, task: dict[str, Any], origin: str | None = None) -> WriteOutcome[dict[str, Any]]:
        return await self.run(tasks.create(self._store.max_message_size, task, origin))

    async def create_task(self, task: dict[str, Any]) -> dict[str, Any]:
        return (await self.create_task_outcome(task)).record

    async def update_task_outcome(
        self,
        task_id: str,
        state: str | None = None,
        status_message: Any = None,
        artifacts: list[Any] | None = None,
        metadata: dict[str, Any] | None = None,
        origin: str | None = None,
    ) -> WriteOutcome[dict[str, Any]]:
        op = tasks.update(self._store.max_message_size, task_id, state, status_message, artifacts, metadata, origin)
        return await self.run(op)

    async def update_task(
        self,
        task_id: str,
        state: str | None = None,
        status_message: Any = None,
        artifacts: list[Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return (await self.update_task_outcome(task_id, state, status_message, artifacts, metadata)).record

    # -- other writes -------------------------------------------------------------------

    async def create_session(
        self, title: str | None = None, session_id: str | None = None, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return (await self.run(sessions.create(self._store.max_message_size, title, session_id, metadata))).record

    async def update_session(
        self, session_id: str, title: str | None = None, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return (await self.run(sessions.update(self._store.max_message_size, session_id, title, metadata))).record

    async def delete_session(self, session_id: str) -> bool:

        return (await self.run(sessions.delete(session_id, SESSION_PARTS))).record

    async def upsert_agent_card(self, card: dict[str, Any]) -> dict[str, Any]:
        return (await self.run(agents.upsert(self._store.max_message_size, card))).record

    async def delete_agent_card(self, agent_id: str) -> bool:
        return (await self.run(agents.delete(agent_id))).record

    async def delete_shared_context(self, context_id: str) -> bool:
        return (await self.run(contexts.delete(context_id))).record

    async def save_connection(self, pid: str, state: dict[str, Any]) -> None:
        await self.run(events.save_connection(pid, state))

    async def take_connection(self, pid: str) -> dict[str, Any] | None:
        return (await self.run(events.take_connection(pid))).record

    async def expire_connections(self, now: float, orphan_expiry: float | None = None) -> int:
        return (await self.run(events.expire_connections(now, orphan_expiry))).record

    async def prune(
        self,
        older_than: str | datetime | None = None,
        keep_last: int | None = None,
        session_id: str | None = None,
        *,
        batch: int = PRUNE_BATCH,
    ) -> dict[str, int]:
        """``Store.prune``, one small transaction at a time on the writer, yielding between them."""
        # In a thread: listing and checking every session is a read of the whole table.
        cutoff, keys = await asyncio.to_thread(self._store._prune_args, older_than, keep_last, session_id, batch)
        plan = messages.prune_plan(keys, cutoff, keep_last, batch)
        try:
            op = next(plan)
            while True:
                op = plan.send((await self.run(op)).record)
        except StopIteration as finished:
            result: dict[str, int] = finished.value
            return result

    async def init_database(self) -> None:
        await self.run(init_op())
