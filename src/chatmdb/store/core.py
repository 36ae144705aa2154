"""The Store: one object over one engine, with a short method per operation.

Each method checks its arguments here, in the caller's thread, and hands the
work to the module of its kind of record (sessions, messages, agents,
contexts, tasks, events). A write becomes an operation (:mod:`.ops`) that the
group-commit writer runs in a savepoint of a shared transaction; a read runs
in a read transaction of its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from ..engines.base import Engine, ReadTxn, WriteTxn, make_private_dir
from ..errors import StorageError, StoreClosed, ValidationError
from . import agents, backup, contexts, events, messages, migrations, rules, sessions, tasks
from .events import Event
from .messages import Page
from .ops import Op, T, WriteOutcome
from .rules import check_id, check_int, check_timestamp, show
from .schema import TABLES, read_counter
from .verify import verify
from .writer import GroupCommitWriter

__all__ = ["DEFAULT_SETTINGS", "Store", "open_store"]

DEFAULT_SETTINGS: Final[dict[str, Any]] = {
    "max_message_size": 1 << 20,  # bytes of a serialized message, context or task
    "group_commit": True,  # batch concurrent writes into one transaction
    "max_batch": 1024,  # most operations in one group commit
    "lmdb_map_size": 1 << 30,  # initial LMDB map; it grows by itself
}

PRUNE_BATCH: Final = 500  # messages removed per transaction by prune()

Backend = Literal["lmdb", "sqlite"]
Durability = Literal["full", "process"]


class Store:
    """A chat message store on one engine. Safe to share between threads.

    Use :func:`open_store` to make one. Every method returns plain dicts and
    lists that serialize to JSON. Writes are committed, at the durability the
    store was opened with, before a method returns. ``store.aio`` has the
    coroutine twin of every write.
    """

    def __init__(self, engine: Engine, *, durability: str, **settings: Any) -> None:
        unknown = set(settings) - set(DEFAULT_SETTINGS)
        if unknown:
            raise ValidationError(f"unknown store settings: {', '.join(sorted(unknown))}")
        self.settings = {**DEFAULT_SETTINGS, **settings}
        self.engine = engine
        self.backend = engine.name
        self.path = engine.path
        self.durability = durability
        self.max_message_size = check_int(self.settings["max_message_size"], "max_message_size", 1)
        check_int(self.settings["max_batch"], "max_batch", 1)
        # Before anything else touches the files: a newer format is refused
        # unwritten, an older one migrated.
        self.format_version_found = migrations.open_format(engine)
        self.commit_listeners: list[Callable[[int, float], None]] = []
        self._pid = os.getpid()
        self._writer: GroupCommitWriter | None = None
        if self.settings["group_commit"]:
            self._writer = self._new_writer()
        self._closed = False
        self._in_use: backup.UseLock | None = None
        from .aio import AsyncStore

        self.aio = AsyncStore(self)

    # -- plumbing -----------------------------------------------------------

    def _new_writer(self) -> GroupCommitWriter:
        return GroupCommitWriter(self.engine, max_batch=self.settings["max_batch"], on_commit=self._committed)

    def _committed(self, size: int, seconds: float) -> None:
        for listener in self.commit_listeners:
            listener(size, seconds)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {self.backend} {str(self.path)!r} durability={self.durability}>"

    def close(self) -> None:
        """Commit what was submitted, then release the database. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None and self._pid == os.getpid():
            self._writer.close()
        self.engine.close()
        if self._in_use is not None:
            self._in_use.release()

    @property
    def closed(self) -> bool:
        return self._closed

    def _writer_here(self) -> GroupCommitWriter | None:
        """This process's group-commit writer (None without group commit)."""
        if self._closed:
            raise StoreClosed("the store is closed")
        if self._writer is not None and self._pid != os.getpid():
            # Threads do not survive fork(): the child gets its own writer.
            self._pid = os.getpid()
            self._writer = self._new_writer()
        return self._writer

    def _run(self, op: Op[T]) -> WriteOutcome[T]:
        """Run a write operation and wait for its commit (the synchronous path)."""
        writer = self._writer_here()
        if writer is None:
            started = time.perf_counter()
            outcome = self.engine.write(op)
            self._committed(1, time.perf_counter() - started)
            return outcome
        done: WriteOutcome[T] = writer.run(op)
        return done

    def _read(self) -> AbstractContextManager[ReadTxn]:
        if self._closed:
            raise StoreClosed("the store is closed")
        return self.engine.read()

    @property
    def _size(self) -> int:
        return self.max_message_size

    # -- sessions -------------------------------------------------------------

    def create_session(
        self, title: str | None = None, session_id: str | None = None, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Create a session and return it.

        ``session_id`` defaults to a new uuid4. Raises :class:`Conflict` if a
        session with that id exists, :class:`ValidationError` on bad arguments.
        """
        return self._run(sessions.create(self._size, title, session_id, metadata)).record

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """Return the session, or None if there is none with that id."""
        key = check_id(session_id, "session_id")
        with self._read() as txn:
            return sessions.get(txn, key)

    def list_sessions(self, limit: int = 100, cursor: str | None = None) -> list[dict[str, Any]]:
        """Sessions, newest first.

        ``cursor`` is the id of the last session of the previous page; the
        page holds the sessions created before it.
        """
        cursor_key = sessions.check_list(limit, cursor)
        with self._read() as txn:
            return sessions.list_page(txn, limit, cursor_key)

    def list_sessions_named(
        self, ids: Iterable[str] = (), prefixes: Iterable[str] = (), limit: int = 100, cursor: str | None = None
    ) -> list[dict[str, Any]]:
        """The sessions among *ids* and those whose id starts with one of *prefixes*, newest
        first, paged as :meth:`list_sessions` pages.

        It reads those sessions only, so a caller confined to a few sessions
        lists them at the same cost in a store of a million. Ids that are not
        valid session ids name no session.
        """
        cursor_key = sessions.check_list(limit, cursor)
        id_keys, prefix_keys = _named_keys(ids, prefixes)
        with self._read() as txn:
            return sessions.list_named(txn, id_keys, prefix_keys, limit, cursor_key)

    def update_session(
        self, session_id: str, title: str | None = None, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Change a session's title and/or replace its metadata; return it.

        Raises :class:`SessionNotFound` if there is no such session.
        """
        return self._run(sessions.update(self._size, session_id, title, metadata)).record

    def delete_session(self, session_id: str) -> bool:
        """Delete a session with its messages, contexts and tasks. False if there was none."""
        return self._run(sessions.delete(session_id, SESSION_PARTS)).record

    # -- messages -------------------------------------------------------------

    def create_message(self, data: dict[str, Any]) -> dict[str, Any]:
        """Store a message in its session and return the committed record.

        ``data`` needs ``session_id``; ``message_uuid`` (a uuid version 7:
        time-ordered, so the uuid index grows at its end) and
        ``created_at`` (ISO 8601 UTC) are generated when missing, and ``seq``
        is assigned: 1, 2, 3... per session in commit order. Every other field
        is stored as given.

        Creating a message whose ``message_uuid`` exists in the same session
        returns the stored message and writes nothing (safe retries).

        Raises :class:`SessionNotFound` for an unknown session,
        :class:`Conflict` if the uuid exists in another session,
        :class:`TooLarge` over ``max_message_size``, :class:`ValidationError`
        for anything else malformed.
        """
        return self._run(messages.create(self._size, data)).record

    def get_message(self, message_uuid: str) -> dict[str, Any] | None:
        """Return the message with this uuid (one index lookup), or None."""
        ukey = check_id(message_uuid, "message_uuid")
        with self._read() as txn:
            return messages.get(txn, ukey)

    def get_session_messages(
        self,
        session_id: str,
        skip: int = 0,
        limit: int = 100,
        cursor: str | int | None = None,
        direction: str = "desc",
        include_total: bool = False,
    ) -> Page:
        """A page of a session's messages, ordered by ``seq``.

        ``direction`` is ``"desc"`` (newest first) or ``"asc"``, in any case.
        ``cursor`` is a message's ``seq`` as a string (what ``next_cursor``
        gives): the page holds the messages strictly after it in the chosen
        direction, then ``skip`` more are passed over. Returns a list; with
        ``include_total=True``, ``{"items": [...], "pagination": {"total",
        "limit", "direction", "next_cursor"?, "skip"?}}`` where
        ``next_cursor`` is present exactly when more messages lie past the
        page. An unknown session has no messages (an empty page), as the SQL
        it replaces returned.
        """
        query = messages.PageQuery(session_id, skip, limit, cursor, direction, include_total)
        with self._read() as txn:
            return messages.page(txn, query)

    def get_messages_after(
        self, session_id: str, after_seq: int, limit: int = 100
    ) -> tuple[list[dict[str, Any]], bool]:
        """Messages with ``seq > after_seq`` ascending, at most *limit*; and whether more exist."""
        check_int(after_seq, "after_seq", 0, 2**63 - 1)
        page = self.get_session_messages(session_id, limit=limit, cursor=str(after_seq), direction="asc", include_total=True)
        assert isinstance(page, dict)
        return page["items"], "next_cursor" in page["pagination"]

    def get_agent_messages(
        self, agent_id: str, limit: int = 100, cursor: str | None = None, direction: str = "desc"
    ) -> list[dict[str, Any]]:
        """Messages with this ``agent_id`` across sessions, in store order.

        ``cursor`` is the ``message_uuid`` of the last message of the previous page.
        """
        query = messages.AgentQuery(agent_id, limit, cursor, direction)
        with self._read() as txn:
            return messages.agent_page(txn, query)

    # -- agent cards -------------------------------------------------------------

    def upsert_agent_card(self, card: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an agent card and return it.

        The card needs ``id`` (or its alias ``agent_id``) and ``name``; every
        other field is stored as given. The returned card has ``id``,
        ``agent_id`` (the same), ``created_at`` and ``updated_at``.
        """
        return self._run(agents.upsert(self._size, card)).record

    def get_agent_card(self, agent_id: str) -> dict[str, Any] | None:
        """Return the agent card, or None."""
        akey = check_id(agent_id, "agent_id")
        with self._read() as txn:
            return agents.get(txn, akey)

    def list_agent_cards(self) -> list[dict[str, Any]]:
        """Every agent card, ordered by ``id``."""
        with self._read() as txn:
            return agents.list_all(txn)

    def delete_agent_card(self, agent_id: str) -> bool:
        """Delete an agent card; False if there was none. Its messages stay."""
        return self._run(agents.delete(agent_id)).record

    # -- shared contexts -----------------------------------------------------------

    def create_shared_context(
        self, session_id: str, data: dict[str, Any], context_id: str | None = None
    ) -> dict[str, Any]:
        """Create a shared context (version 1) in a session and return it.

        Raises :class:`SessionNotFound`, or :class:`Conflict` if the id exists.
        """
        return self._run(contexts.create(self._size, session_id, data, context_id)).record

    def get_shared_context(self, context_id: str) -> dict[str, Any] | None:
        """Return the shared context, or None."""
        ckey = check_id(context_id, "context_id")
        with self._read() as txn:
            return contexts.get(txn, ckey)

    def list_session_contexts(self, session_id: str) -> list[dict[str, Any]]:
        """A session's shared contexts in creation order (empty for an unknown session)."""
        skey = check_id(session_id, "session_id")
        with self._read() as txn:
            return contexts.list_in_session(txn, skey)

    def update_shared_context(
        self, context_id: str, data: dict[str, Any], expected_version: int | None = None
    ) -> dict[str, Any]:
        """Replace a context's data, bump its version and return it.

        With ``expected_version``, raises :class:`Conflict` (writing nothing)
        unless the stored version equals it. Raises :class:`NotFound` if absent.
        """
        return self._run(contexts.update(self._size, context_id, data, expected_version)).record

    def delete_shared_context(self, context_id: str) -> bool:
        """Delete a shared context; False if there was none."""
        return self._run(contexts.delete(context_id)).record

    # -- A2A tasks ---------------------------------------------------------------------

    def create_task(self, task: dict[str, Any]) -> dict[str, Any]:
        """Create an A2A task in the session named by ``context_id``; return it.

        ``id`` defaults to a uuid4; ``status.state`` to ``submitted``.
        Raises :class:`SessionNotFound`, :class:`Conflict` for an existing id.
        """
        return self._run(tasks.create(self._size, task)).record

    def get_task(self, task_id: str) -> dict[str, Any] | None:
        """Return the task, or None."""
        tkey = check_id(task_id, "task_id")
        with self._read() as txn:
            return tasks.get(txn, tkey)

    def update_task(
        self,
        task_id: str,
        state: str | None = None,
        status_message: Any = None,
        artifacts: list[Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Change a task's state and/or status message, add artifacts, merge metadata.

        ``artifacts`` are appended; ``metadata`` keys are merged; a status
        message is also appended to ``history``. Raises :class:`NotFound`,
        and :class:`InvalidTransition` if the task is already in a terminal
        state (completed, canceled, failed, rejected).
        """
        return self._run(tasks.update(self._size, task_id, state, status_message, artifacts, metadata)).record

    def list_tasks(
        self, context_id: str | None = None, state: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> list[dict[str, Any]]:
        """Tasks, newest status change first, optionally of one session and/or state.

        ``limit`` is 1..100; ``cursor`` is the id of the last task of the previous page.
        """
        query = tasks.ListQuery(context_id, state, limit, cursor)
        with self._read() as txn:
            return tasks.list_page(txn, query)

    def list_tasks_named(
        self,
        ids: Iterable[str] = (),
        prefixes: Iterable[str] = (),
        state: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> list[dict[str, Any]]:
        """The tasks of the sessions among *ids* and those whose id starts with one of
        *prefixes*, paged as :meth:`list_tasks` pages; it reads those sessions' tasks only."""
        query = tasks.ListQuery(None, state, limit, cursor)
        id_keys, prefix_keys = _named_keys(ids, prefixes)
        with self._read() as txn:
            numbers = [n for n, _ in sessions.named(txn, id_keys, prefix_keys)]
            return tasks.list_in_sessions(txn, query, numbers)

    # -- room events and connection state recovery ----------------------------------------

    def last_event_offset(self) -> int:
        """The offset of the newest room event of the store (0 before the first)."""
        with self._read() as txn:
            return events.last_offset(txn)

    def events_since(self, session_ids: list[str], after: int, limit: int = 1000) -> tuple[list[Event], bool]:
        """Room events of these sessions with offset > *after*, oldest first.

        Returns ``([(offset, session_id, event, record), ...], more)``. A
        message event carries the message; a context or task event carries the
        context or task as it is now, once, at the offset of its newest change.
        To page, call again with the last offset returned. Events of records
        deleted since, and changes superseded by later ones, count against the
        read as it goes, so a page can be empty with ``more`` true (the events
        read were of records deleted since): there is then no offset to go on
        from; call again with a larger *limit*.
        """
        rooms = events.check_since(session_ids, after, limit)
        with self._read() as txn:
            return events.since(txn, rooms, after, limit)

    def events_after(
        self, after: int, limit: int = 1000, wanted: Callable[[str], bool] | None = None
    ) -> tuple[list[events.TailEvent], int]:
        """Room events of every session with offset > *after*, oldest first: the log gateway workers tail.

        Returns ``([(offset, session_id, event, record, origin), ...], next_after)``;
        pass *next_after* back to read on. Of several changes of one context or
        task in a page, only the newest is returned, as it is now. With *wanted*,
        only the events of the sessions it accepts are read and returned.
        """
        check_int(after, "after", 0, 2**63 - 1)
        check_int(limit, "limit", 1, events.MAX_EVENTS_PAGE)
        if wanted is not None and not callable(wanted):
            raise ValidationError(f"wanted must be a function of a session id, or None, not {type(wanted).__name__}")
        with self._read() as txn:
            return events.tail(txn, after, limit, wanted)

    def save_connection(self, pid: str, state: dict[str, Any]) -> None:
        """Store the recoverable state of a client connection under its private id."""
        self._run(events.save_connection(pid, state))

    def take_connection(self, pid: str) -> dict[str, Any] | None:
        """Remove and return the state saved under *pid* (None if there is none)."""
        return self._run(events.take_connection(pid)).record

    def expire_connections(self, now: float, orphan_expiry: float | None = None) -> int:
        """Delete saved connections whose ``expires_at`` is before *now*; return how many.

        With *orphan_expiry*, connections saved while connected (``expires_at``
        None: their server stopped without seeing them go) expire then.
        """
        return self._run(events.expire_connections(now, orphan_expiry)).record

    # -- retention ---------------------------------------------------------------------------

    def prune(
        self,
        older_than: str | datetime | None = None,
        keep_last: int | None = None,
        session_id: str | None = None,
        *,
        batch: int = PRUNE_BATCH,
    ) -> dict[str, int]:
        """Remove each session's oldest messages: those created before *older_than*, and
        those not among its newest *keep_last*; of one session, or of every session.

        What goes is always a prefix of a session in ``seq`` order (pruning stops at the
        first message to keep), with its index entries and room events, so paging, ``skip``,
        totals and connection state recovery stay exact, and seq numbers are never reused.
        Works in transactions of at most *batch* messages, so other writers are never held
        up for long. Returns ``{"pruned": messages removed, "sessions": sessions touched}``.
        """
        cutoff, keys = self._prune_args(older_than, keep_last, session_id, batch)
        plan = messages.prune_plan(keys, cutoff, keep_last, batch)
        try:
            op = next(plan)
            while True:
                op = plan.send(self._run(op).record)
        except StopIteration as finished:
            result: dict[str, int] = finished.value
            return result

    def _prune_args(
        self, older_than: Any, keep_last: Any, session_id: Any, batch: Any
    ) -> tuple[float | None, list[bytes]]:
        cutoff = _cutoff(older_than)
        if keep_last is not None:
            check_int(keep_last, "keep_last", 0)
        if cutoff is None and keep_last is None:
            raise ValidationError("prune needs older_than and/or keep_last")
        check_int(batch, "batch", 1, 100_000)
        keys = None if session_id is None else [check_id(session_id, "session_id")]
        with self._read() as txn:
            if keys is None:
                keys = [key for key, _ in txn.range("sessions", b"", None)]
            # Only the sessions with something to remove get a write transaction.
            return cutoff, [key for key in keys if messages.needs_pruning(txn, key, cutoff, keep_last)]

    # -- setup and operations ---------------------------------------------------------------

    def init_database(self) -> None:
        """Create the default agent cards and the default session, once."""
        self._run(init_op())

    def stats(self) -> dict[str, Any]:
        """Counts of every kind of record, the format version and the sizes of the database."""
        with self._read() as txn:
            counts = {
                "sessions": txn.count("sessions"),
                "messages": messages.count(txn),
                "agents": txn.count("agents"),
                "contexts": txn.count("contexts"),
                "tasks": txn.count("tasks"),
                "saved_connections": txn.count("recovery"),
            }
            format_version = migrations.read_format(txn)
            counts["pruned_messages"] = read_counter(txn, "pruned")
        info = self.engine.info()
        used_ratio = None
        if info.get("map_size"):
            used_ratio = round(info["bytes_used"] / info["map_size"], 4)
        return {
            "backend": self.backend,
            "path": str(self.path),
            "durability": self.durability,
            "format_version": format_version,
            **counts,
            **info,
            "map_used_ratio": used_ratio,
        }

    def backup(self, dest_dir: str | os.PathLike[str], compact: bool = False) -> dict[str, Any]:
        """Write a consistent copy of the database into *dest_dir*, while writers run.

        *dest_dir* must not hold a database already. Returns where and how big.
        With *compact*, the copy leaves out the free space deleted records left:
        SQLite writes it with ``VACUUM INTO`` (slower than its page copy); LMDB's
        copy is always compacted, so there the flag changes nothing.
        """
        if not isinstance(compact, bool):
            raise ValidationError(f"compact must be true or false, not {show(compact)}")
        dest = backup.check_dest(dest_dir)
        if self._closed:
            raise StoreClosed("the store is closed")
        if compact:
            from .compact import compacted_backup

            return compacted_backup(self.engine, dest)
        return backup.backup(self.engine, dest)

    def verify(self) -> dict[str, Any]:
        """Check that every index entry points at a record, every record is indexed
        and every counter matches; returns ``{"ok": bool, "errors": [...], ...}``.
        """
        if self._closed:
            raise StoreClosed("the store is closed")
        return verify(self.engine)


def _named_keys(ids: Iterable[str], prefixes: Iterable[str]) -> tuple[list[bytes], list[bytes]]:
    """The keys of session *ids* (those no session can have are left out) and of id *prefixes*."""
    named: list[list[str]] = []
    for what, given in (("ids", ids), ("prefixes", prefixes)):
        # A string is iterable too, but as its characters: refuse it rather than list its letters.
        if isinstance(given, str | bytes) or not isinstance(given, Iterable):
            raise ValidationError(f"{what} must be a list of strings, not {type(given).__name__}")
        items = list(given)
        if not all(isinstance(x, str) for x in items):
            raise ValidationError(f"{what} must be a list of strings")
        named.append(items)
    ids, prefixes = named
    if "" in prefixes:
        raise ValidationError("an empty prefix names every session: list them all instead")
    id_keys = []
    for value in ids:
        try:
            id_keys.append(check_id(value, "session_id"))
        except ValidationError:
            continue  # no session has that id
    return id_keys, [p.encode("utf-8", "surrogatepass") for p in prefixes]


def _cutoff(older_than: Any) -> float | None:
    if older_than is None:
        return None
    if isinstance(older_than, datetime):
        moment = older_than if older_than.tzinfo else older_than.replace(tzinfo=UTC)
        return moment.timestamp()
    return messages.instant(check_timestamp(older_than, "older_than"))


# What delete_session removes besides the session, one kind of record each.
SESSION_PARTS: Final = (
    messages.delete_in_session,
    contexts.delete_in_session,
    tasks.delete_in_session,
    events.delete_in_session,
)


def init_op() -> Op[None]:
    at = rules.now()

    def op(txn: WriteTxn) -> WriteOutcome[None]:
        agents.create_defaults(txn, at)
        sessions.create_default(txn, at)
        return WriteOutcome(None, True, None)

    return op


def open_store(
    path: str | os.PathLike[str],
    backend: Backend | str = "lmdb",
    durability: Durability | str = "full",
    **options: Any,
) -> Store:
    """Open (creating if needed) the store in directory *path* and return it.

    ``backend`` is ``"lmdb"`` (default) or ``"sqlite"``. ``durability`` is
    ``"full"`` (default: every commit is fsynced and survives power loss) or
    ``"process"`` (survives a crash of the process, not of the OS). Options:
    ``map_size`` (LMDB's initial map, bytes), and the keys of
    :data:`DEFAULT_SETTINGS`: ``max_message_size``, ``group_commit``, ``max_batch``.

    :raises ValidationError: a bad argument.
    :raises FormatError: the database is of a newer on-disk format (nothing written).
    :raises StorageError: the files cannot be opened.
    """
    if durability not in ("full", "process"):
        raise ValidationError(f"durability must be 'full' or 'process', not {show(durability)}")
    if not isinstance(path, (str, os.PathLike)) or not str(path) or "\x00" in str(path):
        raise ValidationError("path must name a directory")
    try:
        str(path).encode("utf-8")  # py-lmdb takes the path as UTF-8
    except UnicodeError as exc:
        raise ValidationError("path is not valid Unicode text") from exc
    if backend not in ("lmdb", "sqlite"):
        raise ValidationError(f"backend must be 'lmdb' or 'sqlite', not {show(backend)}")
    map_size = options.pop("map_size", None)
    if map_size is not None:
        check_int(map_size, "map_size", 1 << 16)
    directory = Path(path)
    try:
        make_private_dir(directory)
    except OSError as exc:
        raise StorageError(f"cannot create the database directory {directory}: {exc}") from exc
    in_use = backup.UseLock(directory, exclusive=False)  # a restore waits for it to be released
    try:
        engine = _open_engine(directory, backend, durability, map_size or options.get("lmdb_map_size"))
        try:
            store = Store(engine, durability=durability, **options)
        except BaseException:
            engine.close()
            raise
    except BaseException:
        in_use.release()
        raise
    store._in_use = in_use
    return store


def verify_unlocked(directory: Path, backend: str) -> dict[str, Any]:
    """Open the database in *directory* without taking its use lock, and verify it.

    For restore and compaction, which hold that lock exclusively while they
    check the database they are about to put in place.
    """
    engine = _open_engine(directory, backend, "full", None)
    try:
        store = Store(engine, durability="full", group_commit=False)
    except BaseException:
        engine.close()
        raise
    with store:
        return store.verify()


def _open_engine(path: Path, backend: str, durability: str, map_size: int | None) -> Engine:
    tables = tuple(TABLES)
    if backend == "lmdb":
        from ..engines.lmdb_engine import LmdbEngine

        return LmdbEngine(path, tables=tables, durability=durability, map_size=map_size)
    from ..engines.sqlite_engine import SqliteEngine

    return SqliteEngine(path, tables=tables, durability=durability)

