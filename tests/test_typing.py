"""The store's methods have their real signatures: mypy --strict catches a misspelt or mistyped argument.

Runs mypy on a small file of wrong calls and checks that each line is
flagged, and that the right calls next to them are not.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

CALLS = '''
from chatmdb import Store, open_store
from chatmdb.store import WriteOutcome


async def main() -> None:
    store: Store = open_store("x")
    store.create_session(titel="x")  # BAD: unexpected keyword
    store.create_message(42)  # BAD: not a dict
    store.get_session_messages("s", direction=1)  # BAD: not a str
    store.update_task("t", stat="working")  # BAD: unexpected keyword
    await store.aio.create_message(42)  # BAD: not a dict
    await store.aio.create_session(titel="x")  # BAD: unexpected keyword
    outcome: WriteOutcome[dict[str, object]] = await store.aio.create_message_outcome({"session_id": "s"})
    n: int = outcome.record  # BAD: a dict is not an int
    store.aio.get_session("s")  # BAD: reads are not on store.aio
    store.create_session(title="fine", session_id="s", metadata={"a": 1})
    await store.aio.update_task("t", state="working")
    page = store.get_session_messages("s", skip=0, limit=10, cursor="5", direction="ASC", include_total=True)
    print(page, n)
'''


def test_mypy_strict_flags_every_wrong_call(tmp_path: Path) -> None:
    sample = tmp_path / "calls.py"
    sample.write_text(CALLS)
    env = {**os.environ, "MYPYPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(sample)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    flagged = {int(m.group(1)) for m in re.finditer(r"calls\.py:(\d+): error", done.stdout)}
    lines = CALLS.splitlines()
    bad = {i for i, line in enumerate(lines, start=1) if "# BAD" in line}
    assert bad <= flagged, f"mypy missed lines {sorted(bad - flagged)}:\n{done.stdout}"
    assert flagged <= bad, f"mypy flagged right calls {sorted(flagged - bad)}:\n{done.stdout}"
