"""Retention while serving: ``chatmdb serve --retain-days D --retain-messages N``.

A background task prunes every session's oldest messages now and then
(:meth:`chatmdb.store.AsyncStore.prune`: a prefix in seq order, a few hundred
messages per transaction, each queued to the writer like any other write, so
clients' writes are never held up for long). Counted in ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Final

from ..metrics import Metrics
from ..store import Store

__all__ = ["Retention"]

logger = logging.getLogger("chatmdb.gateway")

INTERVAL_SECONDS: Final = 60.0
BATCH: Final = 200  # messages per transaction


class Retention:
    """Prunes a store every *interval* seconds while the gateway runs."""

    def __init__(
        self, store: Store, metrics: Metrics, *, days: float | None, messages: int | None, interval: float = INTERVAL_SECONDS
    ) -> None:
        if days is not None and not days > 0:
            raise ValueError("retain-days must be > 0")
        if messages is not None and messages < 0:
            raise ValueError("retain-messages must be >= 0")
        self._store = store
        self._metrics = metrics
        self.days = days
        self.messages = messages
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start pruning (first run at once). This method is a coroutine."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop pruning; a batch in flight still commits. This method is a coroutine."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> int:
        """Prune every session once; return how many messages went. This method is a coroutine."""
        older_than = None if self.days is None else datetime.now(UTC) - timedelta(days=self.days)
        result = await self._store.aio.prune(older_than=older_than, keep_last=self.messages, batch=BATCH)
        if result["pruned"]:
            self._metrics.messages_pruned.inc(result["pruned"])
            logger.info("retention removed %d messages from %d sessions", result["pruned"], result["sessions"])
        return result["pruned"]

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # the loop must outlive any one failure
                logger.exception("retention failed; retrying at the next interval")
            await asyncio.sleep(self.interval)
