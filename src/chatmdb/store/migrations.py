"""On-disk format versions: stamped at creation, checked at every open.

A database records the format it was written in under ``meta``
(:data:`chatmdb.store.schema.FORMAT_KEY`). Opening a database of a newer
format raises :class:`~chatmdb.errors.FormatError` before anything is
written; an older one is migrated in one write transaction, and the
migration is logged. Format 1 predates the stamp: a database that holds data
but no version is format 1.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from ..engines.base import Engine, ReadTxn, WriteTxn
from ..errors import FormatError
from . import agents, codec, sessions
from .rules import now
from .schema import FORMAT_KEY, FORMAT_VERSION, TABLES, U64, U64x2, put

__all__ = ["FORMAT_VERSION", "open_format", "read_format"]

logger = logging.getLogger("chatmdb.store")


def read_format(txn: ReadTxn) -> int | None:
    raw = txn.get("meta", FORMAT_KEY)
    return None if raw is None else int(U64.unpack(raw)[0])


def _holds_data(txn: ReadTxn) -> bool:
    for table in TABLES:
        for key, _ in txn.range(table, b"", None):
            if table != "meta" or key != FORMAT_KEY:
                return True
            break
    return False


def _too_new(found: int, where: str) -> FormatError:
    return FormatError(
        f"{where} is in on-disk format {found}, newer than format {FORMAT_VERSION} that this chatmdb reads",
        found=found,
        supported=FORMAT_VERSION,
        hint="upgrade chatmdb to open it",
    )


def _v1_to_v2(txn: WriteTxn) -> None:
    # Agent cards gain ``id`` (the key, as the db.py that chatmdb replaces had
    # it); the default cards that nobody changed become the old module's
    # cards, with their color, icon_path, capabilities list and is_active.
    defaults = {card["id"]: card for card in agents.DEFAULT_AGENTS}
    for key, raw in list(txn.range("agents", b"", None)):
        internal, card = codec.decode(raw)
        agent_id = key.decode()
        untouched_default = (
            agent_id in defaults and "color" not in card and card.get("capabilities") == {"streaming": False}
        )
        if untouched_default:
            card = {**defaults[agent_id], "created_at": card.get("created_at", now()), "updated_at": now()}
        put(txn, "agents", key, internal, {**card, "id": agent_id, "agent_id": agent_id})


def _v2_to_v3(txn: WriteTxn) -> None:
    # The store-wide event log, in offset order, from the per-session one.
    for key, raw in list(txn.range("events", b"", None)):
        n, e = U64x2.unpack(key)
        name, ref = codec.decode(raw)
        txn.put("event_order", U64.pack(e), codec.encode([n, name, ref, None]))


def _v3_to_v4(txn: WriteTxn) -> None:
    # A session's count and newest time move from its record to its header;
    # message events leave the per-session log (the messages table is one).
    for key, raw in list(txn.range("sessions", b"", None)):
        internal, session = codec.decode(raw)
        n = internal["n"]
        sessions.set_counts(txn, n, session.get("message_count", 0), session.get("last_message_at"))
        sessions.store(txn, key, internal, session)
    for key, raw in list(txn.range("events", b"", None)):
        if codec.decode(raw)[0] == "message":
            txn.delete("events", key)


# MIGRATIONS[v] turns format v into format v + 1.
MIGRATIONS: Final[dict[int, Callable[[WriteTxn], None]]] = {1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4}


def open_format(engine: Engine) -> int:
    """Check (and stamp, or migrate) the database's format; return the format it was in.

    :raises FormatError: the database is of a newer format; nothing was written.
    """
    where = str(engine.path)
    with engine.read() as txn:
        found = read_format(txn)
    if found == FORMAT_VERSION:
        return found
    if found is not None and found > FORMAT_VERSION:
        raise _too_new(found, where)

    def stamp(txn: WriteTxn) -> int:
        # Again inside the write: another process may have stamped it meanwhile.
        version = read_format(txn)
        if version is None:
            version = 1 if _holds_data(txn) else FORMAT_VERSION
        if version > FORMAT_VERSION:
            raise _too_new(version, where)
        for step in range(version, FORMAT_VERSION):
            MIGRATIONS[step](txn)
        txn.put("meta", FORMAT_KEY, U64.pack(FORMAT_VERSION))
        return version

    was = engine.write(stamp)
    if was < FORMAT_VERSION:
        logger.warning("migrated %s from on-disk format %d to %d", where, was, FORMAT_VERSION)
    return was


def describe(engine: Engine) -> dict[str, Any]:
    with engine.read() as txn:
        return {"format_version": read_format(txn)}
