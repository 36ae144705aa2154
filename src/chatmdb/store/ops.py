"""What a write operation is, and what it returns.

A write method validates its arguments in the caller's thread and builds an
operation: a function of one write transaction that reads what it needs and
writes. The group-commit writer runs many operations in one transaction, each
inside a savepoint, so an operation that raises leaves nothing of itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

from ..engines.base import WriteTxn

T = TypeVar("T")


class WriteOutcome(NamedTuple, Generic[T]):
    """What a write did, for callers that broadcast it (the gateway)."""

    record: T
    created: bool  # False when an idempotent retry returned the stored record
    offset: int | None  # the store-wide offset of the room event it logged, if any


Op = Callable[[WriteTxn], WriteOutcome[T]]


def done(record: T, offset: int | None = None) -> WriteOutcome[T]:
    """The outcome of a write that did what it was asked."""
    return WriteOutcome(record, True, offset)
