"""schemathesis against the OpenAPI schema of a running server, on both backends.

``schemathesis run`` (its CLI, with a fixed seed) calls every operation of
``/openapi.json`` with requests generated from the schema, valid and invalid
ones (coverage and fuzzing phases), then in stateful sequences that follow the
links between operations (a created session's id into its messages, and so
on). It must find nothing: no 500, every status code, content type, header
and body as the schema declares them, what the schema forbids refused, and the
right ``Allow`` on a 405. One check is left out, ``positive_data_acceptance``
(a request the schema allows must be accepted): the store has rules JSON
Schema does not state (integers in ``metadata`` must fit 64 bits, a
``/api/sessions`` cursor must name an existing session), and such requests
get a 400 ``invalid``, as they should.

Then, in this process, requests generated from the same schema (valid and
invalid) check what the CLI cannot: a refused request (4xx) changes no data.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from chatmdb import open_store
from gateway.conftest import BACKENDS, Server, start_server, stop_and_check  # tests/gateway/conftest.py

# More examples for a deeper run: CHATMDB_SCHEMATHESIS_EXAMPLES=500 pytest tests/reliability/test_schemathesis.py
EXAMPLES = int(os.environ.get("CHATMDB_SCHEMATHESIS_EXAMPLES", "40"))
SEED = 20_261_126
RUN_TIMEOUT = 300


@pytest.fixture(scope="module", params=BACKENDS)
def api_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp(f"schemathesis-{request.param}"), str(request.param))
    yield srv
    stop_and_check(srv)
    with open_store(srv.db, backend=srv.backend) as store:
        report = store.verify()
    assert report["ok"], report["errors"]


def test_schemathesis_finds_nothing(api_server: Server, tmp_path: Path) -> None:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{api_server.url}/openapi.json",
        "--checks=all",
        "--exclude-checks=positive_data_acceptance",
        "--phases=coverage,fuzzing,stateful",
        f"--max-examples={EXAMPLES}",
        f"--seed={SEED}",
        "--workers=1",
        "--request-timeout=30",
        "--generation-database=none",
        "--no-color",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-8000:]
    assert "No issues found" in out, out[-8000:]
    summary = [line.strip() for line in out.splitlines() if "generated" in line or "Scenarios" in line]
    print(f"{api_server.backend}: {'; '.join(summary)}")


def _state(http: httpx.Client) -> list[tuple[Any, ...]]:
    """What a refused request must not change: every session, with its message count."""
    sessions = http.get("/api/sessions", params={"limit": 1000}).json()
    return sorted((s["id"], s["title"], s["message_count"], s["last_message_at"]) for s in sessions)


def test_refused_requests_change_nothing(api_server: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{api_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    writes = [op for op in operations if op.method.upper() == "POST"]
    assert len(writes) == 2, [op.label for op in operations]
    cases = st.one_of([op.as_strategy(generation_mode=mode) for op in writes for mode in GenerationMode])
    outcomes: dict[int, int] = {}

    with api_server.http() as http:
        # Some refusals only happen to things that exist (a session id already taken).
        http.post("/api/sessions", json={"session_id": "0", "title": "zero"})

        @settings(
            max_examples=EXAMPLES * 2,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        @given(case=cases)
        def refused_changes_nothing(case: Any) -> None:
            before = _state(http)
            response = case.call()
            outcomes[response.status_code] = outcomes.get(response.status_code, 0) + 1
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:500]}"
            if response.status_code >= 400:
                assert response.json()["ok"] is False
                assert _state(http) == before, f"{case.method} {case.formatted_path} was refused but changed data"

        refused_changes_nothing()
    assert any(400 <= status < 500 for status in outcomes), outcomes
    print(f"{api_server.backend}: POST outcomes by status {dict(sorted(outcomes.items()))}")
