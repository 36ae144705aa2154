"""Drive a Socket.IO server with the node load generator and measure its CPU per acked message.

The load generator (``tests/js/loadgen.mjs``) is the official ``socket.io-client``
in one node process, so the clients do not compete with a Python server for
the interpreter, and it prints when its measured window opens and closes;
the server's CPU time (utime + stime of the server and every process under it,
from ``/proc``) is sampled at those two moments.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ._stats import BenchFailure

REPO = Path(__file__).resolve().parents[3]
LOADGEN = REPO / "tests" / "js" / "loadgen.mjs"
_TICKS = os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The pids of the live processes whose parent is *pid*."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by *pid* and every live process under it."""
    total, stack, seen = 0.0, [pid], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            with open(f"/proc/{current}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICKS
        stack.extend(child_pids(current))
    return total


def node_available() -> bool:
    return shutil.which("node") is not None and (LOADGEN.parent / "node_modules" / "socket.io-client").is_dir()


def run_load(
    url: str,
    server_pid: int,
    *,
    clients: int,
    sessions: int,
    warmup: float,
    seconds: float,
    rate: float = 0.0,
    token: str | None = None,
) -> dict[str, Any]:
    """Run one load; return the generator's results, the acked messages and the server's CPU per message."""
    if not node_available():
        raise BenchFailure("node and tests/js/node_modules are needed: run `make setup`")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "acked.json"
        args = ["node", str(LOADGEN), url, str(clients), str(sessions), str(warmup), str(seconds), str(rate), str(out)]
        if token:
            args.append(token)
        cpu: dict[str, float] = {}
        result: dict[str, Any] | None = None
        with subprocess.Popen(
            args, cwd=LOADGEN.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            for line in proc.stdout:
                line = line.strip()
                if line in ("window-start", "window-end"):
                    cpu[line] = cpu_seconds(server_pid)
                elif line.startswith("{"):
                    result = json.loads(line)
            stderr = proc.stderr.read()
            proc.wait(timeout=60)
        if result is None or "error" in result or proc.returncode != 0:
            raise BenchFailure(f"the load generator failed: {result or stderr[-2000:]}")
        acked = json.loads(out.read_text())
    if "window-start" not in cpu or "window-end" not in cpu:
        raise BenchFailure("the load generator did not report its window")
    used = cpu["window-end"] - cpu["window-start"]
    done = max(1, int(result["acked_in_window"]))
    result["server_cpu_s"] = used
    result["cpu_ms_per_msg"] = 1000.0 * used / done
    if result["failures"] or result["missing"] or result["duplicates"] or result["foreign"]:
        raise BenchFailure(
            f"delivery check failed: {result['failures']} failed sends, {result['missing']} missing, "
            f"{result['duplicates']} duplicate and {result['foreign']} foreign deliveries"
        )
    result["acked_messages"] = acked
    return result
