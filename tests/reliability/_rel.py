"""Helpers shared by the reliability tests: run child processes, check a store's messages."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from chatmdb import Store

CHILD = str(Path(__file__).with_name("_child.py"))


def child_command(command: str, **args: Any) -> list[str]:
    return [sys.executable, CHILD, command, json.dumps(args)]


def run_child(command: str, timeout: float = 120, **args: Any) -> Any:
    """Run a child command to completion and return the JSON it printed."""
    done = subprocess.run(child_command(command, **args), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command} exited {done.returncode}: {done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def session_messages(store: Store, sid: str) -> list[dict[str, Any]]:
    """Every message of a session, oldest first, paged by cursor."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = store.get_session_messages(sid, limit=1000, cursor=cursor, direction="asc", include_total=True)
        assert isinstance(page, dict)
        items += page["items"]
        cursor = page["pagination"].get("next_cursor")
        if cursor is None:
            return items


def check_messages(store: Store, sids: Iterable[str], acked: Iterable[str]) -> set[str]:
    """Assert the sessions hold every acked uuid exactly once with seq 1..n, and verify() is clean.

    Returns every uuid stored (acked ones plus any committed but not yet acked).
    """
    stored: list[str] = []
    for sid in sids:
        items = session_messages(store, sid)
        assert [m["seq"] for m in items] == list(range(1, len(items) + 1)), f"seq of {sid} is not 1..n"
        session = store.get_session(sid)
        assert session is not None and session["message_count"] == len(items)
        stored += [m["message_uuid"] for m in items]
    repeated = [uuid for uuid, count in Counter(stored).items() if count > 1]
    assert not repeated, f"stored more than once: {repeated[:5]}"
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged messages are missing, e.g. {sorted(missing)[:5]}"
    report = store.verify()
    assert report["ok"], report["errors"]
    return set(stored)
