"""Prometheus metrics of one gateway app, served as text at ``GET /metrics``.

Each app gets its own :class:`prometheus_client.CollectorRegistry`, so two
apps in one process (tests, embedding) never share or double-register series.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .store import Store

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Group commits hold 1..max_batch (1024) operations.
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Reads take microseconds; durable commits about a millisecond, more on slow disks.
_READ_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25)
_COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class _StoreSizeCollector(Collector):
    """Store size and map usage from ``store.stats()``, cached.

    ``stats()`` counts every table, which is not free on a big store, and a
    scraper may poll often; a few seconds of staleness is harmless here.
    """

    def __init__(self, store: Store, max_age: float) -> None:
        self._store = store
        self._max_age = max_age
        self._lock = threading.Lock()
        self._cached: dict[str, Any] | None = None
        self._cached_at = 0.0

    def _stats(self) -> dict[str, Any] | None:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached_at > self._max_age:
                if self._store.closed:
                    return self._cached
                self._cached = self._store.stats()
                self._cached_at = now
            return self._cached

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if stats is None:
            return
        backend = str(stats.get("backend"))
        if stats.get("map_size") and isinstance(stats.get("bytes_used"), int):
            # stats() rounds the ratio to 4 places; a fresh store would read 0.
            stats = {**stats, "map_used_ratio": stats["bytes_used"] / stats["map_size"]}
        for name, key, doc in (
            ("chatmdb_store_file_bytes", "file_size", "Size of the database files on disk."),
            ("chatmdb_store_used_bytes", "bytes_used", "Bytes of the database in use (pages not free)."),
            ("chatmdb_store_map_bytes", "map_size", "Size of the LMDB memory map (absent on SQLite)."),
            ("chatmdb_store_map_used_ratio", "map_used_ratio", "Fraction of the LMDB map in use (absent on SQLite)."),
        ):
            value = stats.get(key)
            if value is None:
                continue
            family = GaugeMetricFamily(name, doc, labels=["backend"])
            family.add_metric([backend], float(value))
            yield family
        records = GaugeMetricFamily("chatmdb_store_records", "Records in the store, by kind.", labels=["kind"])
        for kind in ("sessions", "messages", "agents", "contexts", "tasks", "saved_connections"):
            if isinstance(stats.get(kind), int):
                records.add_metric([kind], float(stats[kind]))
        yield records


class Metrics:
    """The metrics of one app on one store.

    Subscribes to the store's commits on creation; call :meth:`close` to
    unsubscribe. ``connected_clients`` is read when scraped.
    """

    def __init__(self, store: Store, connected_clients: Callable[[], int], stats_max_age: float = 5.0) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._store = store
        self.messages_written = Counter(
            "chatmdb_messages_written",
            "Messages stored (retries of a stored message not counted).",
            ["via"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "chatmdb_write_batch_size",
            "Operations committed together in one group commit.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.commit_seconds = Histogram(
            "chatmdb_commit_seconds",
            "Time to write and commit one group-commit batch.",
            buckets=_COMMIT_BUCKETS,
            registry=self.registry,
        )
        self.read_seconds = Histogram(
            "chatmdb_read_seconds",
            "Time of a store read made for a client, by operation.",
            ["op"],
            buckets=_READ_BUCKETS,
            registry=self.registry,
        )
        self.messages_pruned = Counter(
            "chatmdb_messages_pruned",
            "Messages removed by retention (--retain-days, --retain-messages) while serving.",
            registry=self.registry,
        )
        self.limits_reached = Counter(
            "chatmdb_limits_reached",
            "Times a client reached a limit of the gateway (then refused, answered rate_limited or dropped), by limit.",
            ["limit"],
            registry=self.registry,
        )
        clients = Gauge("chatmdb_connected_clients", "Socket.IO clients connected now.", registry=self.registry)
        clients.set_function(lambda: float(connected_clients()))
        self.registry.register(_StoreSizeCollector(store, stats_max_age))
        store.commit_listeners.append(self._on_commit)

    def _on_commit(self, batch_size: int, seconds: float) -> None:
        # Called in the writer thread; prometheus_client metrics are thread-safe.
        self.batch_size.observe(batch_size)
        self.commit_seconds.observe(seconds)

    def limit_reached(self, limit: str) -> None:
        self.limits_reached.labels(limit).inc()

    def close(self) -> None:
        """Stop listening to the store's commits. Idempotent."""
        if self._on_commit in self._store.commit_listeners:
            self._store.commit_listeners.remove(self._on_commit)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class BackupMetrics:
    """The metrics of scheduled backups (``serve --backup-dir``), in an app's registry.

    Registered only where a schedule runs, so a server without one does not
    report a last backup at time 0.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.last_timestamp = Gauge(
            "chatmdb_last_backup_timestamp_seconds",
            "Unix time the newest scheduled backup was taken (its snapshot), 0 if none.",
            registry=registry,
        )
        self.last_bytes = Gauge("chatmdb_last_backup_bytes", "Size of the newest scheduled backup.", registry=registry)
        self.last_seconds = Gauge(
            "chatmdb_last_backup_duration_seconds",
            "Time the newest scheduled backup took to write and verify.",
            registry=registry,
        )
        self.taken = Counter("chatmdb_backups", "Scheduled backups written and verified.", registry=registry)
        self.failures = Counter(
            "chatmdb_backup_failures",
            "Scheduled backups that failed (not written, or did not verify).",
            registry=registry,
        )

    def found(self, taken_at: float, size: int) -> None:
        """A backup that a previous server left is the newest."""
        self.last_timestamp.set(taken_at)
        self.last_bytes.set(size)

    def succeeded(self, taken_at: float, size: int, seconds: float) -> None:
        self.found(taken_at, size)
        self.last_seconds.set(seconds)
        self.taken.inc()

    def failed(self) -> None:
        self.failures.inc()
