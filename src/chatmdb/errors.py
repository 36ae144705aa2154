"""The one exception tree of chatmdb.

Every error the library raises on purpose derives from :class:`ChatMDBError`;
driver errors (``lmdb.Error``, ``sqlite3.Error``) are translated at the engine
boundary and never reach callers. ::

    ChatMDBError
    ├── ValidationError (also ValueError)     bad argument; nothing was written
    │   └── TooLarge                          record over the size limit
    ├── NotFound (also LookupError)           a named record does not exist
    │   └── SessionNotFound (also ValueError) the session named does not exist
    ├── Conflict                              the write contradicts stored state
    │   └── InvalidTransition                 task already in a terminal state
    ├── RateLimited                           a client went past a limit of the gateway
    ├── Unauthorized                          the gateway got no valid credential
    ├── Forbidden                             the credential does not grant the operation
    ├── StoreClosed                           the store was closed
    └── StorageError                          the engine failed (disk full, I/O)
        ├── CorruptionError                   the files do not hold what was written
        └── FormatError                       the files are of another on-disk format version

``ValidationError`` and ``SessionNotFound`` are ``ValueError`` subclasses
because the ``db.py`` modules chatmdb replaces raised ``ValueError`` for both,
and applications catch that.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "HTTP_STATUS",
    "ChatMDBError",
    "Conflict",
    "CorruptionError",
    "Forbidden",
    "FormatError",
    "InvalidTransition",
    "NotFound",
    "RateLimited",
    "SessionNotFound",
    "StorageError",
    "StoreClosed",
    "TooLarge",
    "Unauthorized",
    "ValidationError",
    "http_status",
]


class ChatMDBError(Exception):
    """Root of every error chatmdb raises.

    ``code`` is the short machine-readable name the gateway sends to clients;
    ``hint`` says what to do about it, when there is something to do.
    """

    code = "internal"

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ValidationError(ChatMDBError, ValueError):
    """An argument is malformed; nothing was written."""

    code = "invalid"


class TooLarge(ValidationError):
    """A record is over the configured size limit; nothing was written."""

    code = "too_large"


class NotFound(ChatMDBError, LookupError):
    """A record named by id does not exist."""

    code = "not_found"


class SessionNotFound(NotFound, ValueError):
    """The session named does not exist; nothing was written."""


class Conflict(ChatMDBError):
    """The write contradicts what is stored (duplicate id, stale version)."""

    code = "conflict"


class InvalidTransition(Conflict):
    """A task in a terminal state cannot change."""


class RateLimited(ChatMDBError):
    """A client went past one of the gateway's per-connection limits (events
    per second, sessions joined); nothing was done. Slow down, or leave a session."""

    code = "rate_limited"


class Unauthorized(ChatMDBError):
    """The gateway got no valid credential: none, a wrong token, or a JWT that does not verify or expired."""

    code = "unauthorized"


class Forbidden(ChatMDBError):
    """The caller's credential is valid but does not grant the operation; nothing was done."""

    code = "forbidden"


class StoreClosed(ChatMDBError):
    """The store was closed; open a new one."""


class StorageError(ChatMDBError):
    """The storage engine failed: disk full, I/O error, lock trouble."""


class CorruptionError(StorageError):
    """The database files do not hold what was written (checksum or size mismatch)."""


class FormatError(StorageError):
    """The database was written in an on-disk format this version does not read.

    ``found`` is the database's format version, ``supported`` this library's.
    Nothing was written to the database.
    """

    def __init__(self, message: str, *, found: int, supported: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, found=found, supported=supported)
        self.found = found
        self.supported = supported


# The HTTP status of each error code: the one table the HTTP API and the
# OpenAPI schema read. "unauthorized", "forbidden" and "rate_limited" come
# from the gateway itself, not from the store.
HTTP_STATUS: dict[str, int] = {
    "invalid": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "too_large": 413,
    "rate_limited": 429,
    "internal": 500,
    "unavailable": 503,
}


def http_status(exc: ChatMDBError) -> int:
    """The HTTP status that answers *exc*: a closed store (a server shutting down) is 503."""
    if isinstance(exc, StoreClosed):
        return HTTP_STATUS["unavailable"]
    return HTTP_STATUS.get(exc.code, 500)
