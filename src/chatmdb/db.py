"""Drop-in module-level functions with the signatures of a chat app's ``db.py``.

Swap ``import db`` for ``from chatmdb import db`` and nothing else changes::

    from chatmdb import db
    db.init_database()
    session = db.create_session("Standup")
    db.create_message({"session_id": session["id"], "content": "hi", "role": "user"})

The functions share one store, opened on first use from ``CHATMDB_PATH``
(default ``./chatmdb-data``), ``CHATMDB_BACKEND`` (``lmdb`` or ``sqlite``) and
``CHATMDB_DURABILITY`` (``full`` or ``process``). :func:`configure` opens it
somewhere else; :func:`close` closes it, and the next call opens it again
where :func:`configure` last put it. A forked child reopens it itself.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any

from .store import Store, open_store

DEFAULT_PATH = "./chatmdb-data"

_store: Store | None = None
_settings: dict[str, Any] = {}  # what configure() was last given
_lock = threading.Lock()


def configure(path: str | None = None, backend: str | None = None, durability: str | None = None, **options: Any) -> Store:
    """Open the shared store with these settings (closing any open one) and return it.

    Unset arguments come from the environment (``CHATMDB_PATH``,
    ``CHATMDB_BACKEND``, ``CHATMDB_DURABILITY``) or the defaults.
    """
    global _store, _settings
    with _lock:
        _settings = {"path": path, "backend": backend, "durability": durability, **options}
        if _store is not None:
            _store.close()
            _store = None
        _store = open_store(
            path or os.environ.get("CHATMDB_PATH", DEFAULT_PATH),
            backend=backend or os.environ.get("CHATMDB_BACKEND", "lmdb"),
            durability=durability or os.environ.get("CHATMDB_DURABILITY", "full"),
            **options,
        )
        return _store


def get_store() -> Store:
    """The shared store, opened on first use (where :func:`configure` last put it, or from the environment)."""
    store = _store
    if store is not None and not store.closed:
        return store
    with _lock:
        if _store is not None and not _store.closed:
            return _store
        settings = dict(_settings)
    return configure(**settings)


def close() -> None:
    """Close the shared store; the next call opens it again."""
    global _store
    with _lock:
        if _store is not None:
            _store.close()
            _store = None


def reset() -> None:
    """Close the shared store and forget :func:`configure`'s settings: the next
    call opens the store from the environment again."""
    global _settings
    close()
    with _lock:
        _settings = {}


atexit.register(close)


def init_database() -> None:
    """Create the default agent cards and the default session (idempotent)."""
    get_store().init_database()


def create_session(title: str | None = None, session_id: str | None = None) -> dict[str, Any]:
    return get_store().create_session(title=title, session_id=session_id)


def get_session(session_id: str) -> dict[str, Any] | None:
    return get_store().get_session(session_id)


def list_sessions(limit: int = 100, cursor: str | None = None) -> list[dict[str, Any]]:
    return get_store().list_sessions(limit=limit, cursor=cursor)


def update_session(session_id: str, title: str | None = None, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return get_store().update_session(session_id, title=title, metadata=metadata)


def delete_session(session_id: str) -> bool:
    return get_store().delete_session(session_id)


def create_message(data: dict[str, Any]) -> dict[str, Any]:
    return get_store().create_message(data)


def get_message(message_uuid: str) -> dict[str, Any] | None:
    return get_store().get_message(message_uuid)


def get_session_messages(
    session_id: str,
    skip: int = 0,
    limit: int = 100,
    cursor: str | None = None,
    direction: str = "desc",
    include_total: bool = False,
) -> list[dict[str, Any]] | dict[str, Any]:
    return get_store().get_session_messages(
        session_id, skip=skip, limit=limit, cursor=cursor, direction=direction, include_total=include_total
    )


def get_agent_messages(agent_id: str, limit: int = 100, cursor: str | None = None, direction: str = "desc") -> list[dict[str, Any]]:
    return get_store().get_agent_messages(agent_id, limit=limit, cursor=cursor, direction=direction)


def upsert_agent_card(card: dict[str, Any]) -> dict[str, Any]:
    return get_store().upsert_agent_card(card)


def get_agent_card(agent_id: str) -> dict[str, Any] | None:
    return get_store().get_agent_card(agent_id)


def list_agent_cards() -> list[dict[str, Any]]:
    return get_store().list_agent_cards()


def delete_agent_card(agent_id: str) -> bool:
    return get_store().delete_agent_card(agent_id)


def create_shared_context(session_id: str, data: dict[str, Any], context_id: str | None = None) -> dict[str, Any]:
    return get_store().create_shared_context(session_id, data, context_id=context_id)


def get_shared_context(context_id: str) -> dict[str, Any] | None:
    return get_store().get_shared_context(context_id)


def list_session_contexts(session_id: str) -> list[dict[str, Any]]:
    return get_store().list_session_contexts(session_id)


def update_shared_context(context_id: str, data: dict[str, Any], expected_version: int | None = None) -> dict[str, Any]:
    return get_store().update_shared_context(context_id, data, expected_version=expected_version)


def delete_shared_context(context_id: str) -> bool:
    return get_store().delete_shared_context(context_id)


def create_task(task: dict[str, Any]) -> dict[str, Any]:
    return get_store().create_task(task)


def get_task(task_id: str) -> dict[str, Any] | None:
    return get_store().get_task(task_id)


def update_task(
    task_id: str,
    state: str | None = None,
    status_message: Any = None,
    artifacts: list[Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return get_store().update_task(task_id, state=state, status_message=status_message, artifacts=artifacts, metadata=metadata)


def list_tasks(context_id: str | None = None, state: str | None = None, limit: int = 50, cursor: str | None = None) -> list[dict[str, Any]]:
    return get_store().list_tasks(context_id=context_id, state=state, limit=limit, cursor=cursor)


def stats() -> dict[str, Any]:
    return get_store().stats()


def verify() -> dict[str, Any]:
    return get_store().verify()


def backup(dest_dir: str) -> dict[str, Any]:
    return get_store().backup(dest_dir)
