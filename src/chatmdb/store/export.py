"""Export a store as JSON Lines, import an export, and migrate between backends.

An export is UTF-8 text, one JSON object per line::

    {"chatmdb_export": 1, "format_version": 3, "created_at": "..."}   the header
    {"kind": "session", "record": {...}}           every session, oldest first
    {"kind": "message", "record": {...}}           every message, in the order the store committed them
    {"kind": "agent", "record": {...}}             every agent card, by id
    {"kind": "context", "record": {...}}           every shared context, session by session, oldest first
    {"kind": "task", "record": {...}}              every task, oldest status change first
    {"kind": "end", "counts": {"sessions": ...}}   how many records of each kind: a truncated export lacks it

A record is what the store's read methods return. Messages come in commit
order, so each session's come in ``seq`` order and the order of an agent's
messages across sessions (the agent index) survives the trip. A session whose
oldest messages retention removed carries ``"pruned": k`` beside its record:
its messages are seqs ``k+1..message_count``. The export is written from one
read transaction, so it is a consistent snapshot while writers go on, and
record by record, in constant memory.

:func:`import_` loads an export into an empty database, keeping every id,
``seq``, timestamp, context version and task status. The write methods of the
store assign their own seq, versions and timestamps, so the records are
written here, in transactions of at most :data:`BATCH_RECORDS` records
(:data:`STAGED_BATCH_RECORDS` into a new database nothing else sees yet), with
the helpers of :mod:`.schema` and the same index entries, counters and room
events the entity modules write: the database verifies, and it goes on
numbering where the export left off. Every line is checked before it is
written; a bad one stops the import with a :class:`~chatmdb.errors.ValidationError`
that names its line. With ``merge=True`` an export is added to a database
that holds records: records whose ids it holds already are skipped (and
listed in the result), and messages of a session it holds are appended to it.

Imported into a path, a database is built beside it and moved into place
only when complete and verified, so a failed import leaves the path as it
was. Imported into an open :class:`~chatmdb.store.Store` without ``merge``,
a failure removes what the import wrote, leaving the store empty as it was.

Not carried over: saved connection state (it expires in minutes) and the
offsets of room events (an imported database logs its own, so clients of the
old one do not recover into it), nor the store-wide count of pruned messages.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple, TextIO

from ..engines.base import Engine, WriteTxn, make_private_dir
from ..errors import CorruptionError, StorageError, StoreClosed, ValidationError
from . import codec
from . import contexts as contexts_module
from . import messages as messages_module
from . import sessions as sessions_module
from . import tasks as tasks_module
from .backup import USE_LOCK, UseLock, _move_all, _undo, _unique, sync_dir
from .core import Store, open_store
from .rules import (
    MAX_OFFSET,
    check_dict,
    check_id,
    check_int,
    check_optional_id,
    check_state,
    check_text,
    check_timestamp,
    now,
    show,
)
from .schema import (
    COUNTERS,
    FORMAT_VERSION,
    TABLES,
    U64,
    load,
    prefix_end,
)

__all__ = [
    "BATCH_RECORDS",
    "EXPORT_VERSION",
    "Progress",
    "check_export",
    "export",
    "export_lines",
    "import_",
    "migrate",
]

EXPORT_VERSION: Final = 1  # the version of this file format (the "chatmdb_export" of the header)
BATCH_RECORDS: Final = 1000  # records per write transaction of an import into a database in use
BATCH_BYTES: Final = 16 << 20  # ...or fewer, when they are large
# Into the new database an import builds beside its target, which nothing else can
# write: larger transactions rewrite each index page (uuids are random keys) less often.
STAGED_BATCH_RECORDS: Final = 10_000
STAGED_BATCH_BYTES: Final = 64 << 20
PROGRESS_EVERY: Final = 1000  # records between two calls of a progress callback
MAX_REPORTED_IDS: Final = 100  # skipped ids listed per kind in an import's result

KINDS: Final = ("session", "message", "agent", "context", "task")
PLURAL: Final = {kind: kind + "s" for kind in KINDS}

# The engines' files, and the locks beside them: what a directory holding an
# empty database (or none) may contain before an import replaces it.
ENGINE_FILES: Final = {
    "lmdb": ("data.mdb",),
    "sqlite": ("chatmdb.sqlite3",),
}
BESIDE_FILES: Final = {
    "lmdb": {"lock.mdb", "resize.lock", USE_LOCK},
    "sqlite": {"chatmdb.sqlite3-wal", "chatmdb.sqlite3-shm", "chatmdb.sqlite3-journal", USE_LOCK},
}

Progress = Callable[[int, int | None], None]
"""Called as ``progress(done, total)`` every :data:`PROGRESS_EVERY` records and at the end (``total`` None when unknown)."""

_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode

# Line breaks to str.splitlines() that JSON leaves unescaped: escaped, so that every
# way of splitting an export into lines agrees (they can only occur inside strings).
_BREAKS: Final = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _encode(obj: Any) -> str:
    text: str = _JSON(obj)
    for char, escaped in _BREAKS.items():
        if char in text:
            text = text.replace(char, escaped)
    return text



def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:40]} is too large a number to store")
    return value


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite)


# -- export -------------------------------------------------------------------------


def export_lines(
    store: Store, progress: Progress | None = None, counts: dict[str, int] | None = None
) -> Generator[str, None, None]:
    """The lines of an export of *store* (each ending in a newline), read from one
    read transaction that stays open until the iterator is exhausted or closed.

    *counts*, if given, is filled with the number of records of each kind.

    :raises CorruptionError: the indexes of the database do not match its records.
    """
    if store.closed:
        raise StoreClosed("the store is closed")
    counts = {} if counts is None else counts
    counts.update(dict.fromkeys(PLURAL.values(), 0))
    encode = _encode
    with store.engine.read() as txn:
        # messages: the table also holds one header per session
        held = {p: messages_module.count(txn) if p == "messages" else txn.count(p) for p in PLURAL.values()}
        total = sum(held.values())
        done = 0
        header = {"chatmdb_export": EXPORT_VERSION, "format_version": FORMAT_VERSION, "created_at": now()}
        yield encode(header) + "\n"

        def records() -> Iterator[tuple[str, str]]:
            for nkey, sid in txn.range("session_order", b"", None):
                found = load(txn, "sessions", sid)
                if found is None:
                    raise _damaged(f"session number {U64.unpack(nkey)[0]} names no session")
                internal, session = found
                sessions_module.view(txn, internal["n"], session)
                pruned = internal.get("pruned", 0)
                extra = f',"pruned":{int(pruned)}' if pruned else ""
                yield "sessions", f'{{"kind":"session","record":{encode(session)}{extra}}}\n'
            # Messages in commit order: the store-wide event log holds one event per message.
            for _, raw in txn.range("event_order", b"", None):
                _, name, ref, _origin = codec.decode(raw)
                if name == "message":
                    stored = txn.get("messages", ref)
                    if stored is None:
                        raise _damaged("a message event points at no message")
                    yield "messages", f'{{"kind":"message","record":{encode(codec.decode(stored)[1])}}}\n'
            for _, raw in txn.range("agents", b"", None):
                yield "agents", f'{{"kind":"agent","record":{encode(codec.decode(raw)[1])}}}\n'
            for nkey, _ in txn.range("session_order", b"", None):  # each session's contexts, oldest first
                for _, cid in txn.range("session_contexts", nkey, prefix_end(nkey)):
                    stored = txn.get("contexts", cid)
                    if stored is None:
                        raise _damaged(f"a session's context index names no context {cid!r:.60}")
                    yield "contexts", f'{{"kind":"context","record":{encode(codec.decode(stored)[1])}}}\n'
            for _, tid in txn.range("task_index", b"A", b"B"):  # every task, oldest status change first
                stored = txn.get("tasks", tid)
                if stored is None:
                    raise _damaged(f"the task index names no task {tid!r:.60}")
                yield "tasks", f'{{"kind":"task","record":{encode(codec.decode(stored)[1])}}}\n'

        for plural, line in records():
            counts[plural] += 1
            done += 1
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress(done, total)
            yield line
        if counts != held:
            missing = {k: (held[k], counts[k]) for k in held if held[k] != counts[k]}
            raise _damaged(f"the indexes reach fewer records than the tables hold (held, reached): {missing}")
        if progress is not None:
            progress(done, total)
        yield encode({"kind": "end", "counts": counts}) + "\n"


def export(store: Store, out: TextIO, progress: Progress | None = None) -> dict[str, int]:
    """Write an export of *store* to *out*; return how many records of each kind it holds.

    One read transaction, so the export is a consistent snapshot while writers
    go on; one record at a time, so memory stays constant. *progress* is
    called as ``progress(done, total)`` every :data:`PROGRESS_EVERY` records.
    """
    counts: dict[str, int] = {}
    lines = export_lines(store, progress, counts)
    try:
        for line in lines:
            out.write(line)
    finally:
        lines.close()
    return counts


def _damaged(what: str) -> CorruptionError:
    return CorruptionError(f"cannot export: {what}", hint="run verify() (chatmdb verify)")


# -- reading an export -------------------------------------------------------------------


class _Item(NamedTuple):
    """A checked record of an export, ready to be written."""

    line: int
    kind: str
    key: bytes  # the record's key: its id
    record: dict[str, Any]
    packed: bytes  # the record's msgpack, packed once, here, as messages.create packs it
    skey: bytes | None = None  # a message's, context's or task's session
    akey: bytes | None = None  # a message's agent
    pruned: int = 0  # a session's first seqs that retention removed
    last_message_at: Any = None  # a message that is its session's last: the session's last_message_at


class _Declared:
    """What the export declares of a session, to check its messages against."""

    __slots__ = ("count", "last_message_at", "line", "seen")

    def __init__(self, count: int, seen: int, last_message_at: Any, line: int) -> None:
        self.count = count
        self.seen = seen
        self.last_message_at = last_message_at
        self.line = line


_SESSION_FIELDS: Final = ("id", "title", "created_at", "updated_at", "session_metadata", "message_count", "last_message_at")
_MESSAGE_FIELDS: Final = ("session_id", "message_uuid", "seq", "created_at")
_AGENT_FIELDS: Final = ("name", "created_at", "updated_at")
_CONTEXT_FIELDS: Final = ("id", "session_id", "data", "version", "created_at", "updated_at")
_TASK_FIELDS: Final = ("id", "context_id", "status", "artifacts", "history", "metadata")


def _bad(line: int, what: str, hint: str | None = None, **details: Any) -> ValidationError:
    return ValidationError(f"line {line}: {what}", hint=hint, line=line, **details)


def _require(record: dict[str, Any], kind: str, names: tuple[str, ...]) -> None:
    for name in names:
        if name not in record:
            raise ValidationError(f"the {kind} record lacks {name!r}")


def _pack(record: dict[str, Any], kind: str) -> bytes:
    """The msgpack of a record decoded from JSON, which holds only JSON's types and no
    number JSON cannot hold (the decoder refuses them): msgpack refuses what else the
    store refuses (an integer past 64 bits, a lone surrogate), and check_value says
    what it was. (Nesting is checked before, when a line has many brackets.)"""
    try:
        return codec.pack(record)
    except (OverflowError, UnicodeError, ValueError, TypeError) as exc:
        codec.check_value(record, f"the {kind} record")
        raise ValidationError(f"the {kind} record cannot be stored: {exc}") from None


class _Reader:
    """Parses an export line by line and checks each line, and the whole, as it goes.

    Memory grows with the number of sessions (a few numbers each), never with messages.
    """

    def __init__(self) -> None:
        self.line = 0
        self.header: dict[str, Any] | None = None
        self.ended = False
        self.counts = dict.fromkeys(PLURAL.values(), 0)
        self.sessions: dict[str, _Declared] = {}

    def feed(self, text: str) -> _Item | None:
        """The record of the next line, or None for the header, the end and a blank line."""
        self.line += 1
        n = self.line
        if not isinstance(text, str):
            raise _bad(n, f"lines must be text, not {type(text).__name__}: open the export in text mode, as UTF-8")
        if not text.strip():
            return None
        if self.ended:
            raise _bad(n, "data after the end line")
        try:
            obj = _DECODER.decode(text)
        except json.JSONDecodeError as exc:
            raise _bad(n, f"not valid JSON ({exc.msg} at column {exc.colno}): is the export truncated or damaged?") from None
        except (ValueError, RecursionError) as exc:
            raise _bad(n, f"not valid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise _bad(n, f"a line must be a JSON object, not {type(obj).__name__}")
        if self.header is None:
            self.header = self._header(n, obj)
            return None
        kind = obj.get("kind")
        if kind == "end":
            self._end(n, obj)
            return None
        if kind not in KINDS:
            raise _bad(n, f"unknown kind {show(kind)}: expected one of {', '.join(KINDS)} or end")
        record = obj.get("record")
        if not isinstance(record, dict):
            raise _bad(n, f"the {kind} line has no 'record' object")
        try:
            if text.count("{") + text.count("[") > codec.MAX_DEPTH:  # it may be nested too deep
                codec.check_value(record, f"the {kind} record")
            item: _Item = getattr(self, "_" + kind)(n, record, obj)
        except ValidationError as exc:
            raise _bad(n, exc.message, exc.hint) from None
        self.counts[PLURAL[kind]] += 1
        return item

    def finish(self) -> dict[str, int]:
        """Check that the export was whole; return its counts."""
        if self.header is None:
            raise ValidationError("the input is empty: it is not a chatmdb export")
        if not self.ended:
            raise ValidationError(
                f"the export ends at line {self.line} without its end line: it is truncated",
                hint="export the database again",
            )
        return dict(self.counts)

    # -- one method per kind of line -------------------------------------------------

    def _header(self, n: int, obj: dict[str, Any]) -> dict[str, Any]:
        version = obj.get("chatmdb_export")
        if version is None:
            raise _bad(n, "this is not a chatmdb export: its first line is not the header")
        if version != EXPORT_VERSION or isinstance(version, bool):
            raise _bad(n, f"export version {show(version)} is not supported: this chatmdb reads version {EXPORT_VERSION}")
        fmt = obj.get("format_version")
        if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
            raise _bad(n, f"the header's format_version must be a positive integer, not {show(fmt)}")
        if fmt > FORMAT_VERSION:
            raise _bad(
                n,
                f"the export is of on-disk format {fmt}, newer than format {FORMAT_VERSION} that this chatmdb reads",
                hint="import it with a newer chatmdb",
                found=fmt,
                supported=FORMAT_VERSION,
            )
        return obj

    def _end(self, n: int, obj: dict[str, Any]) -> None:
        counts = obj.get("counts")
        if not isinstance(counts, dict):
            raise _bad(n, "the end line needs a 'counts' object")
        for plural, held in self.counts.items():
            if counts.get(plural) != held:
                raise _bad(n, f"the end line counts {show(counts.get(plural))} {plural} but the export holds {held}: lines are missing")
        for sid, declared in self.sessions.items():
            if declared.seen != declared.count:
                raise _bad(
                    declared.line,
                    f"session {show(sid)} has message_count {declared.count} but the export holds its messages "
                    f"only up to seq {declared.seen}",
                )
        self.ended = True

    def _session_of(self, sid: Any, what: str) -> tuple[bytes, _Declared]:
        skey = check_id(sid, what)
        declared = self.sessions.get(sid)
        if declared is None:
            raise ValidationError(f"{what} {show(sid)} names no session of an earlier line")
        return skey, declared

    def _session(self, n: int, record: dict[str, Any], obj: dict[str, Any]) -> _Item:
        _require(record, "session", _SESSION_FIELDS)
        sid = record["id"]
        key = check_id(sid, "id")
        if sid in self.sessions:
            raise ValidationError(f"session {show(sid)} appears twice (first on line {self.sessions[sid].line})")
        check_text(record["title"], "title")
        check_timestamp(record["created_at"], "created_at")
        check_timestamp(record["updated_at"], "updated_at")
        check_dict(record["session_metadata"], "session_metadata")
        count = check_int(record["message_count"], "message_count", 0, MAX_OFFSET)
        pruned = check_int(obj.get("pruned", 0), "pruned", 0, count)
        last = record["last_message_at"]
        if last is not None:
            check_timestamp(last, "last_message_at")
        self.sessions[sid] = _Declared(count, pruned, last, n)
        # Written empty; each message written counts itself in, as create_message does.
        initial = dict(record)
        initial["message_count"] = pruned
        initial["last_message_at"] = last if count == pruned else None
        stored = _pack(sessions_module.stored(initial), "session")
        return _Item(n, "session", key, initial, stored, pruned=pruned, last_message_at=initial["last_message_at"])

    def _message(self, n: int, record: dict[str, Any], obj: dict[str, Any]) -> _Item:
        _require(record, "message", _MESSAGE_FIELDS)
        skey, declared = self._session_of(record["session_id"], "session_id")
        ukey = check_id(record["message_uuid"], "message_uuid")
        seq = check_int(record["seq"], "seq", 1, MAX_OFFSET)
        if seq != declared.seen + 1:
            raise ValidationError(
                f"message {show(record['message_uuid'])} has seq {seq} where session {show(record['session_id'])} "
                f"goes on at seq {declared.seen + 1}: a session's messages must come in seq order, without gaps"
            )
        if seq > declared.count:
            raise ValidationError(
                f"message {show(record['message_uuid'])} has seq {seq}, past the message_count {declared.count} "
                f"of its session (line {declared.line})"
            )
        declared.seen = seq
        created_at = check_timestamp(record["created_at"], "created_at")
        akey = check_optional_id(record.get("agent_id"), "agent_id")
        last = declared.last_message_at if seq == declared.count else created_at
        return _Item(n, "message", ukey, record, _pack(record, "message"), skey=skey, akey=akey, last_message_at=last)

    def _agent(self, n: int, record: dict[str, Any], obj: dict[str, Any]) -> _Item:
        _require(record, "agent", _AGENT_FIELDS)
        agent_id = record.get("id", record.get("agent_id"))
        key = check_id(agent_id, "id")
        if record.get("agent_id", agent_id) != agent_id:
            raise ValidationError(f"card id {show(agent_id)} and agent_id {show(record.get('agent_id'))} differ")
        if not isinstance(record["name"], str) or not record["name"]:
            raise ValidationError("an agent card needs a non-empty string 'name'")
        check_timestamp(record["created_at"], "created_at")
        check_timestamp(record["updated_at"], "updated_at")
        card = {**record, "id": agent_id, "agent_id": agent_id}
        return _Item(n, "agent", key, card, _pack(card, "agent"))

    def _context(self, n: int, record: dict[str, Any], obj: dict[str, Any]) -> _Item:
        _require(record, "context", _CONTEXT_FIELDS)
        key = check_id(record["id"], "id")
        skey, _ = self._session_of(record["session_id"], "session_id")
        check_dict(record["data"], "data")
        check_int(record["version"], "version", 1, MAX_OFFSET)
        check_timestamp(record["created_at"], "created_at")
        check_timestamp(record["updated_at"], "updated_at")
        return _Item(n, "context", key, record, _pack(record, "context"), skey=skey)

    def _task(self, n: int, record: dict[str, Any], obj: dict[str, Any]) -> _Item:
        _require(record, "task", _TASK_FIELDS)
        key = check_id(record["id"], "id")
        skey, _ = self._session_of(record["context_id"], "context_id")
        status = record["status"]
        if not isinstance(status, dict):
            raise ValidationError("status must be an object with a 'state' and a 'timestamp'")
        check_state(status.get("state"))
        check_timestamp(status.get("timestamp"), "status.timestamp")
        for name, kind in (("artifacts", list), ("history", list), ("metadata", dict)):
            if not isinstance(record[name], kind):
                raise ValidationError(f"{name} must be a {'list' if kind is list else 'dict'}")
        return _Item(n, "task", key, record, _pack(record, "task"), skey=skey)


def check_export(lines: Iterable[str]) -> dict[str, int]:
    """Read and check a whole export without writing anything; return its counts.

    :raises ValidationError: a line is malformed (the message names it), or the export is not whole.
    """
    reader = _Reader()
    for text in lines:
        reader.feed(text)
    return reader.finish()


# -- writing records -------------------------------------------------------------------


@dataclass
class _Tally:
    """What an import did, added up over its batches."""

    imported: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PLURAL.values(), 0))
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PLURAL.values(), 0))
    skipped_ids: dict[str, list[str]] = field(default_factory=lambda: {plural: [] for plural in PLURAL.values()})
    renumbered: int = 0

    def add(self, other: _Tally) -> None:
        for plural in PLURAL.values():
            self.imported[plural] += other.imported[plural]
            self.skipped[plural] += other.skipped[plural]
            room = MAX_REPORTED_IDS - len(self.skipped_ids[plural])
            self.skipped_ids[plural].extend(other.skipped_ids[plural][: max(room, 0)])
        self.renumbered += other.renumbered

    @property
    def done(self) -> int:
        return sum(self.imported.values()) + sum(self.skipped.values())


_Touched = dict[bytes, tuple[dict[str, Any], dict[str, Any]]]  # the sessions a batch has read: (internal, session)


class _Batch:
    """Writes a batch of records in one write transaction, as the entity modules write them.

    Everything is derived from the transaction (the engine may run a batch
    twice, after growing its map), and what it did is returned, not kept.
    """

    def __init__(self, items: list[_Item], merge: bool) -> None:
        self.items = items
        self.merge = merge

    def __call__(self, txn: WriteTxn) -> _Tally:
        tally = _Tally()
        sessions: _Touched = {}
        write = {
            "session": self._session,
            "message": self._message,
            "agent": self._agent,
            "context": self._context,
            "task": self._task,
        }
        for item in self.items:
            if write[item.kind](txn, item, sessions, tally):
                tally.imported[PLURAL[item.kind]] += 1
        return tally

    def _exists(self, item: _Item, tally: _Tally) -> bool:
        """Whether to skip a record whose id the database holds (merge), or refuse the import."""
        plural = PLURAL[item.kind]
        what = {"message": "message_uuid"}.get(item.kind, f"{item.kind} id")
        name = item.key.decode()
        if not self.merge:
            raise _bad(item.line, f"{what} {show(name)} appears twice in the export")
        tally.skipped[plural] += 1
        if len(tally.skipped_ids[plural]) < MAX_REPORTED_IDS:
            tally.skipped_ids[plural].append(name)
        return False

    @staticmethod
    def _find(txn: WriteTxn, item: _Item, sessions: _Touched) -> tuple[dict[str, Any], dict[str, Any]]:
        assert item.skey is not None
        found = sessions.get(item.skey) or load(txn, "sessions", item.skey)
        if found is None:  # the reader saw it declared; only a concurrent delete_session removes it
            raise _bad(item.line, f"session {show(item.skey.decode())} was deleted during the import")
        sessions[item.skey] = found
        return found

    def _session(self, txn: WriteTxn, item: _Item, sessions: _Touched, tally: _Tally) -> bool:
        if txn.get("sessions", item.key) is not None:
            return self._exists(item, tally)
        sessions_module.insert(txn, item.key, item.packed, item.pruned, item.last_message_at)
        return True

    def _message(self, txn: WriteTxn, item: _Item, sessions: _Touched, tally: _Tally) -> bool:
        if txn.get("msg_uuid", item.key) is not None:
            return self._exists(item, tally)
        n = self._find(txn, item, sessions)[0]["n"]
        seq = sessions_module.counts(txn, n)[0] + 1
        message, packed = item.record, item.packed
        if seq != message["seq"]:  # merged into a session the database holds, after messages of its own
            message = {**message, "seq": seq}
            packed = codec.pack(message)
            tally.renumbered += 1
        messages_module.insert(txn, n, seq, item.key, item.akey, packed)
        last = item.last_message_at if message is item.record else message["created_at"]
        sessions_module.set_counts(txn, n, seq, last)
        return True

    def _agent(self, txn: WriteTxn, item: _Item, sessions: _Touched, tally: _Tally) -> bool:
        if txn.get("agents", item.key) is not None:
            return self._exists(item, tally)
        txn.put("agents", item.key, codec.seal_record({}, item.packed))
        return True

    def _context(self, txn: WriteTxn, item: _Item, sessions: _Touched, tally: _Tally) -> bool:
        if txn.get("contexts", item.key) is not None:
            return self._exists(item, tally)
        contexts_module.insert(txn, self._find(txn, item, sessions)[0]["n"], item.key, item.packed)
        return True

    def _task(self, txn: WriteTxn, item: _Item, sessions: _Touched, tally: _Tally) -> bool:
        if txn.get("tasks", item.key) is not None:
            return self._exists(item, tally)
        n = self._find(txn, item, sessions)[0]["n"]
        tasks_module.insert(txn, n, item.key, item.record["status"]["state"], item.packed)
        return True


# -- import ---------------------------------------------------------------------------


def import_(
    target: Store | str | os.PathLike[str],
    lines: Iterable[str],
    merge: bool = False,
    *,
    backend: str = "lmdb",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Load an export (its lines, e.g. an open file) into *target*; return what was done.

    *target* is an open :class:`Store`, or the directory of a database of
    *backend*. Without *merge* the database must be empty (it may not exist
    yet): a path gets a new database built beside it and moved into place
    once complete and verified; an open store that fails to import is emptied
    again, unless another writer used it meanwhile (then what was imported
    stays, and the error says so: nothing of others is ever removed). With *merge*, records whose ids the database holds are skipped and
    counted in ``skipped`` (the first ids of each kind in ``skipped_ids``),
    and messages of a session it holds are appended to it, renumbered
    (``renumbered_messages``) if their seq is taken. The database is verified
    at the end.

    :raises ValidationError: a malformed line (the message names its number), an
        export of a newer format, or a database that is not empty without *merge*.
    :raises StorageError: the database cannot be written, or is in use when it is
        to be replaced.
    """
    if not isinstance(merge, bool):
        raise ValidationError(f"merge must be true or false, not {show(merge)}")
    if isinstance(target, Store):
        result = _import_into(target, lines, merge, progress, empty_on_failure=not merge)
    else:
        result = _import_path(_check_path(target), _check_backend(backend), lines, merge, progress)
    return result


def _import_into(
    store: Store,
    lines: Iterable[str],
    merge: bool,
    progress: Progress | None,
    *,
    empty_on_failure: bool,
    staged: bool = False,
) -> dict[str, Any]:
    if store.closed:
        raise StoreClosed("the store is closed")
    engine = store.engine
    with engine.read() as txn:
        if not merge:
            held = _held(txn)
            if held:
                raise ValidationError(
                    f"the database at {store.path} is not empty (it holds {', '.join(held)}): an import needs an empty one",
                    hint="import into a new database, or merge (--merge) to add the export, skipping the ids it holds",
                )
        counters: dict[bytes, bytes | None] = {key: txn.get("meta", key) for key in COUNTERS.values()}
    batch_records, batch_bytes = (STAGED_BATCH_RECORDS, STAGED_BATCH_BYTES) if staged else (BATCH_RECORDS, BATCH_BYTES)
    reader = _Reader()
    tally = _Tally()
    batch: list[_Item] = []
    size = 0

    # The counters as this import left them after its last batch. A batch
    # that finds them otherwise means another writer used the store
    # meanwhile, and then a failed import must not empty it (nor rewind them).
    ours = dict(counters)
    others_wrote = False

    def flush() -> None:
        nonlocal batch, size, others_wrote
        if batch:
            write = _Batch(batch, merge)

            def run(txn: WriteTxn) -> tuple[_Tally, bool, dict[bytes, bytes | None]]:
                # Derived from the transaction alone: the engine may run it twice.
                foreign = any(txn.get("meta", key) != value for key, value in ours.items())
                result = write(txn)
                return result, foreign, {key: txn.get("meta", key) for key in ours}

            done, foreign, after = engine.write(run)
            others_wrote = others_wrote or foreign
            ours.update(after)
            tally.add(done)
            batch, size = [], 0
            if progress is not None:
                progress(tally.done, None)

    try:
        for text in lines:
            item = reader.feed(text)
            if item is not None:
                batch.append(item)
                size += len(text)
                if len(batch) >= batch_records or size >= batch_bytes:
                    flush()
        counts = reader.finish()
        flush()
        report = store.verify()
        if not report["ok"]:
            raise CorruptionError(
                f"the database at {store.path} does not verify after the import: {report['errors'][:3]}",
                hint="report this as a bug of chatmdb's import",
            )
    except BaseException as exc:
        if empty_on_failure:
            with engine.read() as txn:
                others_wrote = (
                    others_wrote
                    or any(txn.get("meta", key) != value for key, value in ours.items())
                    or next(iter(txn.range("recovery", b"", None)), None) is not None  # never written by imports
                )
            if others_wrote:
                # Emptying now would delete what others wrote: leave it, and say so.
                exc.add_note(
                    f"{tally.done} records were imported before the failure and are still there: "
                    "another writer used the store meanwhile, so it was not emptied"
                )
            else:
                try:
                    _empty(engine, counters)
                except Exception as again:  # the engine is failing; say so beside the first error
                    exc.add_note(f"the records imported before the failure could not be removed: {again}")
        raise
    return {
        "path": str(store.path),
        "backend": store.backend,
        "merge": merge,
        "format_version": (reader.header or {}).get("format_version"),
        "in_export": counts,
        "imported": tally.imported,
        "skipped": tally.skipped,
        "skipped_ids": tally.skipped_ids,
        "renumbered_messages": tally.renumbered,
        "verify": {"ok": report["ok"], "error_count": report["error_count"]},
    }


def _held(txn: Any) -> list[str]:
    """What the database holds, by kind of record (or table, for an index without its records);
    empty for an empty database (``meta`` holds counters and settings, not records)."""
    held = []
    for table in TABLES:
        if table == "messages":
            if messages_module.count(txn) > 0:  # a session's header is not a message
                held.append(table)
        elif table != "meta":
            for _ in txn.range(table, b"", None):
                held.append(table)
                break
    return [table for table in held if table in PLURAL.values()] or held


def _empty(engine: Engine, counters: dict[bytes, bytes | None]) -> None:
    """Remove every record, in small transactions, and put the counters back as they were."""
    for table in TABLES:
        if table == "meta":
            continue

        def step(txn: WriteTxn, table: str = table) -> int:
            keys = [key for key, _ in itertools.islice(txn.range(table, b"", None), 10_000)]
            for key in keys:
                txn.delete(table, key)
            return len(keys)

        while engine.write(step):
            pass

    def reset(txn: WriteTxn) -> None:
        for key, value in counters.items():
            if value is None:
                txn.delete("meta", key)
            else:
                txn.put("meta", key, value)

    engine.write(reset)


# -- import into a path: built beside it, moved into place --------------------------------


def _check_backend(backend: Any) -> str:
    if backend not in ENGINE_FILES:
        raise ValidationError(f"backend must be 'lmdb' or 'sqlite', not {show(backend)}")
    return str(backend)


def _check_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path) or "\x00" in str(path):
        raise ValidationError(f"the target must be a Store or a directory, not {show(path)}")
    return Path(os.path.abspath(path))


def _holds_database(path: Path, backend: str) -> bool:
    """Whether *path* (a directory that may not exist) holds a database of *backend*, or
    nothing that is not one: refuse anything an import must not replace."""
    if path.is_symlink():
        raise ValidationError(f"{path} is a symlink; name the directory it points to")
    if not path.exists():
        return False
    if not path.is_dir():
        raise ValidationError(f"{path} is not a directory")
    names = {p.name for p in path.iterdir()}
    foreign = names - set(ENGINE_FILES[backend]) - BESIDE_FILES[backend]
    if foreign:
        raise ValidationError(
            f"{path} holds files that are not a {backend} database: {', '.join(sorted(foreign)[:5])}",
            hint="name a new directory, or the --backend of the database there",
        )
    return any(name in names for name in ENGINE_FILES[backend])


def _records_in(path: Path, backend: str) -> list[str]:
    """The tables of the database at *path* that hold records, read through the engine
    alone (no store: it works while this process holds the directory's lock)."""
    engine: Engine
    if backend == "lmdb":
        from ..engines.lmdb_engine import LmdbEngine

        engine = LmdbEngine(path, tables=tuple(TABLES), durability="process")
    else:
        from ..engines.sqlite_engine import SqliteEngine

        engine = SqliteEngine(path, tables=tuple(TABLES), durability="process")
    try:
        with engine.read() as txn:
            return _held(txn)
    finally:
        engine.close()


def _import_path(
    target: Path, backend: str, lines: Iterable[str], merge: bool, progress: Progress | None
) -> dict[str, Any]:
    if _holds_database(target, backend):
        with open_store(target, backend=backend) as store:
            if merge:  # into the database as it is; every batch leaves it consistent
                return _import_into(store, lines, True, progress, empty_on_failure=False)
            held = _held_in(store)
        if held:
            raise ValidationError(
                f"{target} holds a database with records ({', '.join(held)}): an import needs an empty one",
                hint="name a new directory, or pass --merge to add the export, skipping the ids it holds",
            )
    make_private_dir(target.parent)
    staging = target.parent / f".{target.name}.importing-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        # Nothing reads the new database until it is moved into place, and closing it
        # syncs it (LMDB) or checkpoints it with a sync (SQLite): commits need no fsync.
        with open_store(staging, backend=backend, durability="process", group_commit=False) as store:
            result = _import_into(store, lines, merge, progress, empty_on_failure=False, staged=True)
        _move_into_place(staging, target, backend)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result["path"] = str(target)
    return result


def _held_in(store: Store) -> list[str]:
    with store.engine.read() as txn:
        return _held(txn)


def _move_into_place(staging: Path, target: Path, backend: str) -> None:
    (staging / USE_LOCK).unlink(missing_ok=True)
    try:
        if not target.exists():
            staging.rename(target)
        else:
            # No store may have it open (a store holds a shared lock on it), nor open it
            # until the new database is in place; and it must still be empty.
            lock = UseLock(target, exclusive=True)
            # The files move, not the directory: its lock file stays where it
            # is, held, so no store can open the target until the new files are in.
            aside = _unique(target.parent / f".{target.name}.replaced-{os.getpid()}")
            moved_out: list[tuple[Path, Path]] = []
            moved_in: list[tuple[Path, Path]] = []
            try:
                if _holds_database(target, backend):
                    held = _records_in(target, backend)
                    if held:
                        raise ValidationError(
                            f"{target} was written to during the import (it holds {', '.join(held)}); it was left as it is"
                        )
                make_private_dir(aside)
                try:
                    _move_all([p.name for p in target.iterdir() if p.name != USE_LOCK], target, aside, moved_out)
                    _move_all([p.name for p in staging.iterdir() if p.name != USE_LOCK], staging, target, moved_in)
                except OSError:
                    _undo(moved_in)
                    _undo(moved_out)
                    raise
            finally:
                lock.release()
                shutil.rmtree(aside, ignore_errors=True)
        sync_dir(target.parent)
    except OSError as exc:
        raise StorageError(f"cannot move the imported database into {target}: {exc}") from exc


# -- migrate ---------------------------------------------------------------------------


def migrate(
    source: Store,
    target: Store | str | os.PathLike[str],
    *,
    backend: str = "lmdb",
    merge: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Copy the database of *source* into *target* (a store, or a directory of *backend*):
    its export piped into :func:`import_`, record by record, without a file between.

    *progress* follows the export: ``progress(done, total)``.
    """
    if source.closed:
        raise StoreClosed("the store is closed")
    where = target.path if isinstance(target, Store) else _check_path(target)
    if Path(where).absolute().resolve() == Path(source.path).absolute().resolve():
        raise ValidationError(f"cannot migrate {source.path} into itself")
    counts: dict[str, int] = {}
    lines = export_lines(source, progress, counts)
    try:
        result = import_(target, lines, merge, backend=backend)
    finally:
        lines.close()
    result["source"] = {"path": str(source.path), "backend": source.backend, "exported": counts}
    return result
