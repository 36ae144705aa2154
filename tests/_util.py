"""Helpers shared by the store tests."""

from __future__ import annotations

from chatmdb import Store
from chatmdb.store.schema import TABLES


def snapshot(store: Store) -> dict[str, list[tuple[bytes, bytes]]]:
    """Every key and value of every table: equal snapshots mean nothing was written."""
    with store.engine.read() as txn:
        return {table: list(txn.range(table, b"", None)) for table in TABLES}
