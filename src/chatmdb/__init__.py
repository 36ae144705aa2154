"""chatmdb: durable, fast message persistence for Socket.IO chat, on LMDB.

Open a store with :func:`open_store`; use :mod:`chatmdb.db` for drop-in
module-level functions; run the gateway with ``chatmdb serve``.
"""

from .errors import (
    ChatMDBError,
    Conflict,
    CorruptionError,
    FormatError,
    InvalidTransition,
    NotFound,
    SessionNotFound,
    StorageError,
    StoreClosed,
    TooLarge,
    ValidationError,
)
from .store import (
    DEFAULT_SETTINGS,
    FORMAT_VERSION,
    TASK_STATES,
    TERMINAL_STATES,
    AsyncStore,
    Store,
    WriteOutcome,
    open_store,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_SETTINGS",
    "FORMAT_VERSION",
    "TASK_STATES",
    "TERMINAL_STATES",
    "AsyncStore",
    "ChatMDBError",
    "Conflict",
    "CorruptionError",
    "FormatError",
    "InvalidTransition",
    "NotFound",
    "SessionNotFound",
    "StorageError",
    "Store",
    "StoreClosed",
    "TooLarge",
    "ValidationError",
    "WriteOutcome",
    "__version__",
    "open_store",
]
