"""The store: chat sessions, messages, agent cards, shared contexts and A2A tasks.

==============  ===================================================================
module          responsibility
==============  ===================================================================
core            ``Store`` and ``open_store``: settings, open/close, one short method per operation
aio             ``AsyncStore``: the coroutine twin of every write
schema          the on-disk layout: tables, keys, counters, format version (described once)
rules           argument checks shared by every method
ops             what a write operation is; ``WriteOutcome``
writer          group commit: one thread, one transaction per batch, a savepoint per caller
codec           msgpack + CRC-32 records
sessions        sessions
messages        messages, paging, the uuid and agent indexes
agents          agent cards
contexts        shared contexts
tasks           A2A tasks and their index
events          room events and saved connection state (connection state recovery)
migrations      the format version check and the migrations between versions
verify          ``verify()``
backup          hot backup and restore
export          export, import and migrate (JSON lines)
compact         compaction
==============  ===================================================================
"""

from .aio import AsyncStore
from .core import DEFAULT_SETTINGS, Store, open_store
from .ops import WriteOutcome
from .schema import FORMAT_VERSION, TASK_STATES, TERMINAL_STATES

__all__ = [
    "DEFAULT_SETTINGS",
    "FORMAT_VERSION",
    "TASK_STATES",
    "TERMINAL_STATES",
    "AsyncStore",
    "Store",
    "WriteOutcome",
    "open_store",
]
