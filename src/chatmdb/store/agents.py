"""Agent cards, keyed by ``id`` as the ``db.py`` that chatmdb replaces keyed them.

A card is stored as the application gave it, plus ``id`` (the key), ``agent_id``
(the same value: an alias A2A-minded callers and older chatmdb clients read)
and ``created_at``/``updated_at``. Either ``id`` or ``agent_id`` names the card
on input. The default cards carry the old module's fields and values, which
applications render (``color``, ``icon_path``, ``capabilities`` as a list,
``is_active``); A2A card fields sit beside them.
"""

from __future__ import annotations

from typing import Any, Final

from ..engines.base import ReadTxn, WriteTxn
from ..errors import ValidationError
from . import codec
from .ops import Op, WriteOutcome, done
from .rules import check_dict, check_id, now
from .schema import load, public, put

DEFAULT_AGENTS: Final[tuple[dict[str, Any], ...]] = (
    {
        "id": "chloe",
        "name": "Chloe",
        "description": "Git operations and general help",
        "color": "rgb(34, 197, 94)",
        "icon_path": "agents/chloe/src/assets/chloe.svg",
        "capabilities": ["git", "search", "explain"],
        "is_active": True,
        "version": "1.0.0",
        "skills": [{"id": "git", "name": "Git operations"}, {"id": "help", "name": "General help"}],
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
    },
    {
        "id": "phil_connors",
        "name": "Phil Connors",
        "description": "Task management and coordination",
        "color": "rgb(249, 115, 22)",
        "icon_path": "agents/phil_connors/src/assets/phil-connors.svg",
        "capabilities": ["task", "coordinate", "plan"],
        "is_active": True,
        "version": "1.0.0",
        "skills": [{"id": "tasks", "name": "Task management"}, {"id": "coordination", "name": "Coordination"}],
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
    },
)


def card_id(card: dict[str, Any]) -> Any:
    """The id a card names itself by: ``id``, or its alias ``agent_id``."""
    given_id, alias = card.get("id"), card.get("agent_id")
    if given_id is not None and alias is not None and given_id != alias:
        raise ValidationError(f"card id {given_id!r:.60} and agent_id {alias!r:.60} differ")
    return given_id if given_id is not None else alias


def upsert(size_limit: int, card: Any) -> Op[dict[str, Any]]:
    card = check_dict(card, "card")
    agent_id = card_id(card)
    if agent_id is None:
        raise ValidationError("card needs an 'id' (or 'agent_id')")
    akey = check_id(agent_id, "id")
    if not isinstance(card.get("name"), str) or not card["name"]:
        raise ValidationError("card needs a non-empty string 'name'")
    stored = {**card, "id": agent_id, "agent_id": agent_id}
    codec.encode(stored, size_limit, "agent card")

    def op(txn: WriteTxn) -> WriteOutcome[dict[str, Any]]:
        previous = load(txn, "agents", akey)
        at = now()
        record = {**stored, "created_at": previous[1]["created_at"] if previous else at, "updated_at": at}
        put(txn, "agents", akey, {}, record)
        return done(record)

    return op


def delete(agent_id: Any) -> Op[bool]:
    akey = check_id(agent_id, "agent_id")
    return lambda txn: done(txn.delete("agents", akey))


def create_defaults(txn: WriteTxn, at: str) -> None:
    """The default cards of ``init_database``: written once, never overwritten."""
    for card in DEFAULT_AGENTS:
        key = card["id"].encode()
        if txn.get("agents", key) is None:
            put(txn, "agents", key, {}, {**card, "agent_id": card["id"], "created_at": at, "updated_at": at})


def get(txn: ReadTxn, akey: bytes) -> dict[str, Any] | None:
    raw = txn.get("agents", akey)
    return None if raw is None else public(raw)


def list_all(txn: ReadTxn) -> list[dict[str, Any]]:
    """Every card, ordered by id."""
    return [public(raw) for _, raw in txn.range("agents", b"", None)]
