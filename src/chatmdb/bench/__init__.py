"""``chatmdb bench``: LMDB and SQLite side by side, through the Store and through Socket.IO.

Reproduce the committed numbers with ``chatmdb bench`` (about 12 minutes: the write cells run in three side-by-side rounds) or
``chatmdb bench --quick`` (under 2). Both print Markdown tables (median, p90,
p99, max) and write ``results.json``, ``report.md`` and ``bench.png`` into
``--out`` (default ``./bench-results``). Every run checks that each
acknowledged message is stored exactly once in seq order, and raises
:class:`BenchFailure` if not.

Workloads (modules): write throughput, reads at scale and mixed load
(:mod:`.store_load`); the raw engine ceiling (:mod:`.engine_ceiling`);
through the gateway (:mod:`.gateway_load`); the report and plot (:mod:`.report`).
"""

from ._stats import BenchFailure
from .runner import WORKLOADS, Config, run

__all__ = ["WORKLOADS", "BenchFailure", "Config", "run"]
