"""Fuzz every Socket.IO event of a running server with payloads it must refuse.

One server per backend serves the whole module; one python-socketio client
(on its own event loop thread) sends every call. Each event gets payloads
that are wrong in at least one way, drawn with hypothesis: no argument, a
non-object argument, several arguments, an unknown field, a missing required
field, a field of the wrong type (bytes included, which travel as binary
attachments), or a value of the right type that the store refuses (lone
surrogates, which JSON carries as ``\\ud800`` escapes, strings of 2 MB,
nesting past the store's limit, integers beyond 64 bits, NaN, out-of-range
limits and cursors). The other fields look plausible and name records that
exist, so that calls get past the first check.

Every call must be answered with ``ok`` false and a documented error code
other than ``internal``; the connection stays up; and the database (every
table but the saved connection states, key by key) is unchanged. Unknown,
reserved (``connect``, ``disconnect``, ``*``) and non-string event names, and
raw packets whose JSON is broken or nested 100,000 deep, are answered the
same way. The server's log must hold no traceback at the end.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import socketio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect as ws_connect

from chatmdb import Store, open_store
from chatmdb.gateway import Gateway
from chatmdb.store.schema import TABLES
from gateway.conftest import BACKENDS, Server, start_server, stop_and_check  # tests/gateway/conftest.py

# More examples for a deeper run: CHATMDB_FUZZ_EXAMPLES=500 pytest tests/reliability/test_fuzz_events.py
EXAMPLES = int(os.environ.get("CHATMDB_FUZZ_EXAMPLES", "25"))
CALL_TIMEOUT = 10.0
CODES = {"invalid", "not_found", "conflict", "unauthorized", "too_large"}  # "internal" would be a bug
T = TypeVar("T")
# Deterministic examples, no database, and no shrinking: a call that goes unanswered costs a
# CALL_TIMEOUT, so a failure is reported as first found, in bounded time.
FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

S, N, D, L, C, A = "str", "int", "dict", "list", "seq cursor", "any"
# event -> (required fields, optional fields), as the gateway documents them.
EVENTS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "create_session": ({}, {"title": S, "session_id": S, "metadata": D}),
    "join": ({"session_id": S}, {"after_seq": N, "limit": N}),
    "leave": ({"session_id": S}, {}),
    "send_message": ({"session_id": S, "content": S}, {"message_uuid": S, "agent_id": S, "role": S, "metadata": D}),
    "get_messages": ({"session_id": S}, {"cursor": C, "limit": N, "direction": S, "skip": N}),
    "list_sessions": ({}, {"limit": N, "cursor": S}),
    "get_session": ({"session_id": S}, {}),
    "list_agents": ({}, {}),
    "get_agent": ({"agent_id": S}, {}),
    "create_context": ({"session_id": S, "data": D}, {"context_id": S}),
    "update_context": ({"context_id": S, "data": D}, {"expected_version": N}),
    "list_contexts": ({"session_id": S}, {}),
    "create_task": ({"context_id": S}, {"id": S, "status": D, "artifacts": L, "history": L, "metadata": D}),
    "update_task": ({"task_id": S}, {"state": S, "status_message": A, "artifacts": L, "metadata": D}),
    "get_task": ({"task_id": S}, {}),
    "list_tasks": ({}, {"context_id": S, "state": S, "limit": N, "cursor": S}),
    "refresh": ({"token": S}, {}),
}
SESSION, CONTEXT, TASK = "fz-session", "fz-context", "fz-task"
KNOWN_IDS = [SESSION, CONTEXT, TASK, "chloe", "default"]

# -- values ------------------------------------------------------------------------------------

HUGE = "x" * 2_000_000  # ASCII: 2 MB of JSON, under the transport's packet limit


def _nest(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
plausible = {
    S: st.one_of(
        st.sampled_from(KNOWN_IDS),
        st.text(min_size=1, max_size=20),
        st.sampled_from(["asc", "desc", "completed", "working", "user"]),
    ),
    N: st.integers(0, 50),
    D: st.dictionaries(st.text(max_size=8), json_value, max_size=3),
    L: st.lists(st.dictionaries(st.text(max_size=8), json_value, max_size=2), max_size=2),
    C: st.one_of(st.integers(0, 50), st.integers(0, 50).map(str)),
    A: json_value,
}
# Right type, refused by the store. Every string field of every event is an id,
# is checked as Unicode text, or has a fixed set of values.
bad_string = st.one_of(
    st.sampled_from(["\ud800", "a\udfffb", "\udc80\udc81", "x\ud83d"]),  # lone surrogates
    st.just(HUGE),
    st.text(min_size=1, max_size=5).map(lambda s: s + "\ud800" + s),
)
bad_container_value = st.one_of(
    st.just(_nest(70)),
    st.just(_nest(200)),
    st.just(2**64),
    st.just(-(2**63) - 1),
    st.just(10**30),
    st.just(math.nan),
    st.just(math.inf),
    st.just(HUGE),
    bad_string,
)
bad_dict = st.builds(lambda key, value: {"ok": 1, key: value}, st.text(min_size=1, max_size=8), bad_container_value)
bad_int = st.sampled_from([-1, -(2**63), 2**64, 10**30, -(10**30)])
bad_value = {
    S: bad_string,
    N: bad_int,
    D: bad_dict,
    L: bad_dict.map(lambda d: [d]),
    C: st.sampled_from([-1, 2**64, "-1", "1.5", "abc", "9" * 30, "", " 1", "\ud800"]),
}
wrong_type = {
    S: st.one_of(
        st.integers(),
        st.booleans(),
        st.floats(allow_nan=False),
        st.lists(st.text(max_size=3), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        st.binary(max_size=8),
    ),
    N: st.one_of(
        st.booleans(),
        st.floats(allow_nan=False),
        st.text(max_size=5),
        st.lists(st.integers(), max_size=2),
        st.binary(max_size=4),
    ),
    D: st.one_of(
        st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2), st.booleans(), st.binary(max_size=4)
    ),
    L: st.one_of(
        st.integers(),
        st.text(max_size=5),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        st.binary(max_size=4),
    ),
    C: st.one_of(st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=2), st.binary(max_size=4)),
}
unknown_name = st.one_of(
    st.text(min_size=1, max_size=12),
    st.sampled_from(["sesion_id", "seq", "__proto__", "\ud800", "ok"]),
    st.just("k" * 5000),
)


@st.composite
def bad_payload(draw: st.DrawFn, event: str) -> tuple[Any, ...]:
    """The arguments of one call of *event* that the server must refuse."""
    required, optional = EVENTS[event]
    fields = {**required, **optional}
    poisons = ["no argument", "not an object", "several arguments", "unknown field"]
    poisons += ["missing field"] if required else []
    poisons += ["wrong type", "bad value"] if any(kind != A for kind in fields.values()) else []
    poison = draw(st.sampled_from(poisons))
    if poison == "no argument":
        return ()
    if poison == "not an object":
        return (
            draw(st.one_of(json_value.filter(lambda v: not isinstance(v, dict)), st.binary(max_size=8), st.just(HUGE))),
        )

    payload = {name: draw(plausible[kind]) for name, kind in required.items()}
    for name in draw(st.lists(st.sampled_from(sorted(optional)), unique=True)) if optional else []:
        payload[name] = draw(plausible[optional[name]])
    if poison == "several arguments":
        extra = draw(st.lists(st.one_of(json_value, st.binary(max_size=4)), min_size=1, max_size=2))
        return (payload, *extra)
    if poison == "unknown field":
        name = draw(unknown_name.filter(lambda n: n not in fields))
        payload[name] = draw(st.one_of(json_value, st.just(HUGE)))
    elif poison == "missing field":
        del payload[draw(st.sampled_from(sorted(required)))]
    else:
        name = draw(st.sampled_from(sorted(n for n, kind in fields.items() if kind != A)))
        kind = fields[name]
        payload[name] = draw(wrong_type[kind] if poison == "wrong type" else bad_value[kind])
        if event == "join" and name == "limit":
            payload["after_seq"] = 0  # join reads limit only with after_seq
    return (payload,)


# -- the server and a client on a loop of its own -----------------------------------------------------


class Caller:
    """A python-socketio client on a private event loop thread, called from synchronous test code."""

    def __init__(self, server: Server) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sio = socketio.AsyncClient(reconnection=False)
        self.run(self.sio.connect(server.url, transports=["websocket"], wait_timeout=CALL_TIMEOUT))
        self.sid = self.sio.sid

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(CALL_TIMEOUT * 2)

    def call(self, event: str, args: tuple[Any, ...]) -> Any:
        data: Any = args[0] if len(args) == 1 else (args if args else None)
        return self.run(self.sio.call(event, data, timeout=CALL_TIMEOUT))

    def close(self) -> None:
        if self.sio.connected:
            self.run(self.sio.disconnect())
        self.run(self.sio.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(CALL_TIMEOUT)
        self.loop.close()


def _snapshot(store: Store) -> dict[str, list[tuple[bytes, bytes]]]:
    # Saved connection states change as clients come and go: not data.
    with store.engine.read() as txn:
        return {table: list(txn.range(table, b"", None)) for table in TABLES if table != "recovery"}


@pytest.fixture(scope="module", params=BACKENDS)
def fuzzed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Caller, Store]]:
    server = start_server(tmp_path_factory.mktemp(f"fuzz-events-{request.param}"), str(request.param))
    caller = Caller(server)
    try:
        for event, payload in [
            ("create_session", {"session_id": SESSION, "title": "fuzzed"}),
            ("send_message", {"session_id": SESSION, "content": "one", "agent_id": "chloe"}),
            ("send_message", {"session_id": SESSION, "content": "two", "message_uuid": str(uuid.uuid4())}),
            ("create_context", {"session_id": SESSION, "data": {"k": 1}, "context_id": CONTEXT}),
            ("create_task", {"context_id": SESSION, "id": TASK}),  # a task's context_id names a session
            ("join", {"session_id": SESSION}),
        ]:
            ack = caller.call(event, (payload,))
            assert ack["ok"], (event, ack)
        with open_store(server.db, backend=server.backend) as store:
            yield server, caller, store
    finally:
        caller.close()
        stop_and_check(server)


def test_every_event_is_fuzzed(tmp_path: Path) -> None:
    with open_store(tmp_path / "db", backend="sqlite") as store:
        handlers = Gateway(store).sio.handlers["/"]
    assert set(EVENTS) == set(handlers) - {"connect", "disconnect", "*"}


def _check_refused(ack: Any, what: str) -> None:
    assert isinstance(ack, dict) and ack.get("ok") is False, f"{what}: accepted: {ack!r:.500}"
    error = ack.get("error")
    assert isinstance(error, dict) and error.get("code") in CODES and isinstance(error.get("message"), str), (
        f"{what}: {ack!r:.500}"
    )


def _fuzz(fuzzed: tuple[Server, Caller, Store], event: str, strategy: st.SearchStrategy[Any]) -> dict[str, int]:
    _, caller, store = fuzzed
    codes: dict[str, int] = {}

    @settings(FUZZ, max_examples=EXAMPLES)
    @given(args=strategy)
    def refused(args: tuple[Any, ...]) -> None:
        before = _snapshot(store)
        ack = caller.call(event, args)
        _check_refused(ack, f"{event} {args!r:.300}")
        codes[ack["error"]["code"]] = codes.get(ack["error"]["code"], 0) + 1
        assert caller.sio.connected and caller.sio.sid == caller.sid, f"{event} {args!r:.300} dropped the connection"
        assert _snapshot(store) == before, f"{event} {args!r:.300} was refused but changed the database"

    refused()
    # Still served: a valid call on the same connection.
    assert caller.call("get_session", ({"session_id": SESSION},))["ok"]
    return codes


@pytest.mark.parametrize("event", sorted(EVENTS))
def test_bad_payloads_are_refused_and_change_nothing(fuzzed: tuple[Server, Caller, Store], event: str) -> None:
    codes = _fuzz(fuzzed, event, bad_payload(event))
    print(f"{fuzzed[0].backend} {event}: {EXAMPLES} examples, error codes {codes}")


event_name = st.one_of(
    st.text(max_size=30).filter(lambda n: n not in EVENTS),
    st.sampled_from(["connect", "disconnect", "*", "connect_error", "message", "\x00malformed", "\ud800"]),
)


def test_unknown_and_reserved_events_are_refused(fuzzed: tuple[Server, Caller, Store]) -> None:
    _, caller, store = fuzzed

    @settings(FUZZ, max_examples=EXAMPLES * 2)
    @given(name=event_name, args=st.lists(st.one_of(json_value, st.binary(max_size=4)), max_size=3))
    def refused(name: str, args: list[Any]) -> None:
        before = _snapshot(store)
        _check_refused(caller.call(name, tuple(args)), f"event {name!r} {args!r:.200}")
        assert caller.sio.connected and caller.sio.sid == caller.sid
        assert _snapshot(store) == before

    refused()
    assert caller.call("get_session", ({"session_id": SESSION},))["ok"]


# -- raw packets: what no Socket.IO client library would send -----------------------------------------------

RAW_BODIES = [
    "[",
    '["join",{"session_id":"fz-session"}',
    '["join",{"session_id":}]',
    '["join",{"session_id":"\\ud800"}]',  # a lone surrogate as a JSON escape
    '["join",{"session_id":"\\x41"}]',  # not a JSON escape
    '["join",{"limit":1' + "0" * 5000 + "}]",  # an integer past Python's digit limit
    "[" * 100_000,
    '["send_message",' + '{"a":' * 100_000 + "1" + "}" * 100_000 + "]",
    "[]",
    "{}",
    '"join"',
    "[1]",
    "[null]",
    '[{"a":1}]',
    '[["join"]]',
    '["connect",{}]',
    '["disconnect"]',
    '["*",{}]',
    "",
    "[NaN]",
    '["join",{"session_id":NaN}]',
    "tru",
]
raw_body = st.one_of(
    st.sampled_from(RAW_BODIES),
    # Garbage that cannot be read as an attachment count, a namespace or part of the ack id.
    st.text(st.characters(codec="utf-8"), max_size=40).filter(lambda t: not t[:1].isdigit() and t[:1] not in "-/"),
    st.sampled_from(RAW_BODIES[:3]).map(lambda body: body + "\x00\x01\ufeff"),
)


def test_raw_packets_are_refused(fuzzed: tuple[Server, Caller, Store]) -> None:
    server, _, store = fuzzed
    url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket"
    with ws_connect(url, max_size=None, open_timeout=CALL_TIMEOUT) as ws:
        assert str(ws.recv(CALL_TIMEOUT)).startswith("0")  # engine.io open
        ws.send("40")
        assert str(ws.recv(CALL_TIMEOUT)).startswith("40")  # socket.io connect
        ack_ids = iter(range(1, 1_000_000))

        @settings(FUZZ, max_examples=EXAMPLES * 2)
        @given(body=raw_body)
        def refused(body: str) -> None:
            before = _snapshot(store)
            ack_id = next(ack_ids)
            ws.send(f"42{ack_id}{body}")
            while True:  # skip engine.io pings (answered) and anything else but our ack
                reply = str(ws.recv(CALL_TIMEOUT))
                if reply == "2":
                    ws.send("3")
                    continue
                if reply.startswith(f"43{ack_id}["):
                    break
            ack = json.loads(reply[len(f"43{ack_id}") :])
            assert len(ack) == 1, reply
            _check_refused(ack[0], f"raw {body!r:.200}")
            assert _snapshot(store) == before

        refused()
        ws.send('42999999["get_session",{"session_id":"fz-session"}]')
        reply = str(ws.recv(CALL_TIMEOUT))
        assert reply.startswith('43999999[{"ok":true'), reply


CONNECT_BODIES = ["{bad", '{"token":', "[1,2]", '"x"', "{" * 100_000, '{"pid":1}', '{"pid":"p","offset":{}}']


def _raw_connect(port: int, body: str) -> str:
    url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket"
    with ws_connect(url, max_size=None, open_timeout=CALL_TIMEOUT) as ws:
        assert str(ws.recv(CALL_TIMEOUT)).startswith("0")
        ws.send("40" + body)
        return str(ws.recv(CALL_TIMEOUT))


def test_raw_connect_packets(fuzzed: tuple[Server, Caller, Store], tmp_path: Path) -> None:
    """A CONNECT whose auth is not valid JSON is a connection without auth (and without recovery)."""
    for body in CONNECT_BODIES:
        assert _raw_connect(fuzzed[0].port, body).startswith('40{"sid":'), body
    secured = start_server(tmp_path, "lmdb", args=("--token", "t0ken"), token="t0ken")
    try:
        for body in CONNECT_BODIES:
            reply = _raw_connect(secured.port, body)
            assert reply.startswith("44") and '"unauthorized"' in reply, (body, reply)
    finally:
        stop_and_check(secured)
