"""The status-quo gateway that chatmdb replaces, for the benchmark to measure beside it.

A plain python-socketio ``AsyncServer`` under uvicorn's defaults, persisting
the way an application's old ``db.py`` did: each message inserted into SQLite
(Python's ``sqlite3`` with its default journal and ``synchronous``) in a
transaction of its own, then read back by its uuid, on the event loop; then
acked and broadcast to the session's room. It speaks the events the load
generator uses (``create_session``, ``join``, ``send_message``) with
chatmdb's payloads and acks.

Run: ``python -m chatmdb.bench.statusquo --db DIR --port PORT``
"""

from __future__ import annotations

import argparse
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import socketio
import uvicorn

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, title TEXT, created_at TEXT);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, message_uuid TEXT UNIQUE, session_id TEXT, role TEXT,
    content TEXT, created_at TEXT
);
CREATE INDEX IF NOT EXISTS messages_session ON messages (session_id, id);
"""


def build(db: Path) -> socketio.ASGIApp:
    db.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db / "app.sqlite3", isolation_level=None)
    conn.executescript(SCHEMA)
    sio = socketio.AsyncServer(async_mode="asgi")

    def ok(data: Any) -> dict[str, Any]:
        return {"ok": True, "data": data}

    @sio.on("create_session")  # type: ignore[untyped-decorator]
    async def create_session(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        session = {"id": str(uuid.uuid4()), "title": data.get("title"), "created_at": datetime.now(UTC).isoformat()}
        conn.execute("INSERT INTO sessions VALUES (?, ?, ?)", (session["id"], session["title"], session["created_at"]))
        return ok(session)

    @sio.on("join")  # type: ignore[untyped-decorator]
    async def join(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        await sio.enter_room(sid, data["session_id"])
        return ok({"session_id": data["session_id"]})

    @sio.on("send_message")  # type: ignore[untyped-decorator]
    async def send_message(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        message_uuid = data.get("message_uuid") or str(uuid.uuid4())
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO messages (message_uuid, session_id, role, content, created_at) VALUES (?, ?, ?, ?, ?)",
            (message_uuid, data["session_id"], data.get("role", "user"), data["content"], datetime.now(UTC).isoformat()),
        )
        conn.execute("COMMIT")
        row = conn.execute(
            "SELECT id, message_uuid, session_id, role, content, created_at FROM messages WHERE message_uuid = ?",
            (message_uuid,),
        ).fetchone()
        message = dict(zip(("seq", "message_uuid", "session_id", "role", "content", "created_at"), row, strict=True))
        await sio.emit("message", message, room=data["session_id"], skip_sid=sid)
        return ok(message)

    return socketio.ASGIApp(sio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(build(args.db), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
