"""What clients send, declared once for the Socket.IO events and the HTTP API.

Each event's payload is a pydantic model here; the HTTP API takes the same
models as request bodies (:class:`CreateSession`, :class:`MessageIn`) and the
same constrained types as path and query parameters (:data:`Id`,
:data:`Limit`, :data:`SeqText`...), so a limit or a rule cannot differ
between the two, and the OpenAPI schema declares what the server enforces.

Models refuse unknown fields (a misspelt ``sesion_id`` is an error rather
than a silently ignored value) and are strict: ``"3"`` is not an integer,
``true`` is not ``1``. An optional field sent as ``null`` counts as absent.
The bounds are the store's; it checks every value again (ids also in UTF-8
bytes, text as Unicode, sizes), so these checks keep wrong types from
reaching it and give the schema its bounds.

:func:`validate` turns pydantic's errors into one :class:`ValidationError`
whose message names the field: ``unknown field(s): 'sesion_id'``,
``session_id is required``, ``session_id must be a string, not int``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, Literal, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from ..errors import ValidationError

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_LIMIT",
    "MAX_TASK_PAGE",
    "AgentRef",
    "Count",
    "CreateContext",
    "CreateSession",
    "CreateTask",
    "Direction",
    "GetMessages",
    "Id",
    "Join",
    "Limit",
    "ListSessions",
    "ListTasks",
    "MessageIn",
    "NoFields",
    "Payload",
    "Refresh",
    "SendMessage",
    "SeqText",
    "SessionRef",
    "TaskLimit",
    "TaskRef",
    "UpdateContext",
    "UpdateTask",
    "describe",
    "validate",
]

# The store's limits.
MAX_ID_LENGTH: Final = 256  # characters of an id (and, checked by the store, UTF-8 bytes)
MAX_LIMIT: Final = 1000  # items in one page of messages or sessions
MAX_TASK_PAGE: Final = 100  # tasks in one page
MAX_TITLE: Final = 10_000  # characters of a session title
MAX_INT63: Final = 2**63 - 1  # seqs, offsets and versions are 63-bit

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description="items per page")]
TaskLimit = Annotated[int, Field(ge=1, le=MAX_TASK_PAGE, description="tasks per page")]
Count = Annotated[int, Field(ge=0, le=MAX_INT63)]
# A message seq as text: what next_cursor gives, and all a query string can carry.
SeqText = Annotated[str, Field(pattern=r"^[0-9]{1,19}$")]
Direction = Literal["asc", "desc"]

M = TypeVar("M", bound="Payload")


class Payload(BaseModel):
    """Base of every payload: unknown fields refused, types strict."""

    model_config = ConfigDict(extra="forbid", strict=True)


class NoFields(Payload):
    """A payload without fields (``list_agents``): ``{}``."""


class SessionRef(Payload):
    session_id: Id


class AgentRef(Payload):
    agent_id: Id


class TaskRef(Payload):
    task_id: Id


class CreateSession(Payload):
    """A session to create; every field is optional."""

    title: Annotated[str, Field(max_length=MAX_TITLE)] | None = None
    session_id: Id | None = Field(default=None, description="defaults to a new uuid4")
    metadata: dict[str, Any] | None = None


class MessageIn(Payload):
    """A message to store (over HTTP, in the session of the path)."""

    content: str
    # Not empty: the store takes "" for "make one up", which would turn every
    # retry of such a client into a new message.
    message_uuid: Id | None = Field(
        default=None, description="makes the write idempotent; leave it out to have a uuid (version 7) generated"
    )
    agent_id: Id | None = Field(
        default=None, description="with a token that has an agent_id claim, that agent_id (the default); without one, none"
    )
    role: str | None = Field(default=None, description="defaults to 'user'")
    metadata: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_sender(cls, data: Any) -> Any:
        # The server stamps sender with the token's sub: a client-chosen one
        # would let anyone write as anyone.
        if isinstance(data, dict) and "sender" in data:
            raise PydanticCustomError("sender_reserved", "sender is set by the server from the token's sub: leave it out")
        return data

    def record(self, session_id: str) -> dict[str, Any]:
        """The message as the store takes it: the fields given, ``role`` defaulting to ``user``."""
        record = {"session_id": session_id, **self.model_dump(exclude_none=True)}
        record.setdefault("role", "user")
        return record


class SendMessage(MessageIn):
    session_id: Id


class Join(Payload):
    session_id: Id
    after_seq: Count | None = None
    limit: Limit = 100  # read only with after_seq


class GetMessages(Payload):
    session_id: Id
    cursor: SeqText | Count | None = None
    limit: Limit = 100
    direction: Direction = "desc"
    skip: Count = 0


class ListSessions(Payload):
    limit: Limit = 100
    cursor: Id | None = Field(default=None, description="id of the last session of the previous page")


class CreateContext(Payload):
    session_id: Id
    data: dict[str, Any]
    context_id: Id | None = None


class UpdateContext(Payload):
    context_id: Id
    data: dict[str, Any]
    expected_version: Count | None = None


class CreateTask(Payload):
    context_id: Id  # names a session
    id: Id | None = None
    status: dict[str, Any] | None = None
    artifacts: list[Any] | None = None
    history: list[Any] | None = None
    metadata: dict[str, Any] | None = None


class UpdateTask(Payload):
    task_id: Id
    state: str | None = None
    status_message: Any = None
    artifacts: list[Any] | None = None
    metadata: dict[str, Any] | None = None


class Refresh(Payload):
    """A fresh token for a connection, before its current one expires."""

    token: Annotated[str, Field(min_length=1, max_length=16_384)]


class ListTasks(Payload):
    context_id: Id | None = None
    state: str | None = None
    limit: TaskLimit = 50
    cursor: Id | None = None


def validate(model: type[M], data: object) -> M:
    """*data* as a *model*; raises :class:`ValidationError` naming the field at fault."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ValidationError(describe(exc.errors(include_url=False))) from None


# pydantic's error types that mean "not of the field's type", and the type they wanted.
_WANTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",  # a query parameter's text
    "dict_type": "an object",
    "list_type": "an array",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def describe(errors: Sequence[Mapping[str, Any]], whole: str = "the payload") -> str:
    """One short message for pydantic's *errors*, naming the field at fault.

    *errors* are as pydantic lists them, with locations relative to the
    payload; an error located at the payload itself is about *whole*.
    """
    unknown = [str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden" and e["loc"]]
    if unknown:
        return f"unknown field(s): {', '.join(repr(name)[:60] for name in unknown[:5])}"
    if not errors:
        return f"{whole} is malformed"
    first = errors[0]
    name = str(first["loc"][0]) if first["loc"] else whole
    if first["type"] == "missing" or (first["type"] in _WANTED and first.get("input") is None):
        return f"{name} is required"
    # A union (a message cursor) has an error per member, all at the same field.
    same = [e for e in errors if (str(e["loc"][0]) if e["loc"] else whole) == name]
    if all(e["type"] in _WANTED for e in same):
        wanted = " or ".join(dict.fromkeys(_WANTED[e["type"]] for e in same))
        return f"{name} must be {wanted}, not {type(first.get('input')).__name__}"
    detail = next(e for e in same if e["type"] not in _WANTED)
    ctx = detail.get("ctx") or {}
    rule = _RULES.get(detail["type"])
    if detail["type"] == "string_too_short" and ctx.get("min_length") == 1:
        rule = "must not be empty"
    if rule is not None:
        with contextlib.suppress(KeyError):  # a context without the bound: pydantic's own words below
            return f"{name} {rule.format_map(ctx)}"
    message = str(detail["msg"])
    return f"{name}: {message[:1].lower()}{message[1:]}"[:300]


# pydantic's error types of a value of the right type that breaks a rule, as said of the field.
_RULES = {
    "string_too_short": "must be at least {min_length} character(s) long",
    "string_too_long": "must be at most {max_length} characters long",
    "string_unicode": "is not valid Unicode text",
    "string_pattern_mismatch": "must match the pattern {pattern}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "literal_error": "must be {expected}",
}
