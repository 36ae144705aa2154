"""schemathesis against the OpenAPI schema of a running server, on both backends.

Every operation of ``/openapi.json`` is called with requests generated from
the schema, valid and invalid ones (schemathesis' examples, coverage and
fuzzing phases), then in stateful sequences that follow the links between
operations (a created session's id into its messages, and so on). Every
response must be no 500, have a status code, content type, headers and body
the schema declares, reject what the schema forbids, and list the right
``Allow`` on a 405. A request that is refused (4xx) must leave the data as it
was: the session list, with every session's message count, is compared
before and after it.

One check is left out: ``positive_data_acceptance`` (a request the schema
allows must be accepted). The store has rules JSON Schema does not state:
integers in ``metadata`` must fit 64 bits, and a ``/api/sessions`` cursor must
name an existing session; such requests get a 400 ``invalid``, as they should.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from gateway.conftest import BACKENDS, Server, start_server, stop_and_check  # tests/gateway/conftest.py
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import CHECKS
from schemathesis.specs.openapi.checks import positive_data_acceptance

# More examples for a deeper run: CHATMDB_SCHEMATHESIS_EXAMPLES=500 pytest tests/reliability/test_schemathesis.py
EXAMPLES = int(os.environ.get("CHATMDB_SCHEMATHESIS_EXAMPLES", "30"))
STATEFUL_STEPS = 10


@pytest.fixture(scope="module", params=BACKENDS)
def api_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp(f"schemathesis-{request.param}"), str(request.param))
    yield srv
    stop_and_check(srv)


@pytest.fixture(scope="module")
def api_schema(api_server: Server) -> Any:
    return schemathesis.openapi.from_url(f"{api_server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


def _state(server: Server) -> list[tuple[str, int, Any]]:
    """What a refused request must not change: every session, with its message count."""
    with httpx.Client(base_url=server.url, timeout=10) as http:
        sessions = http.get("/api/sessions", params={"limit": 1000}).json()
    return sorted((s["id"], s["message_count"], s["last_message_at"]) for s in sessions)


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms(case: Any, api_server: Server) -> None:
    before = _state(api_server)
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    if 400 <= response.status_code < 500:
        assert _state(api_server) == before, f"{case.method} {case.path} was refused but changed the data"


def test_stateful_sequences_conform(api_schema: Any, api_server: Server) -> None:
    machine = api_schema.as_state_machine()
    checks = [check for check in CHECKS.get_all() if check is not positive_data_acceptance]

    class Sequences(machine):  # type: ignore[misc,valid-type]
        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=checks)

    Sequences.TestCase.settings = settings(
        max_examples=EXAMPLES, stateful_step_count=STATEFUL_STEPS, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)
    )
    Sequences.TestCase().runTest()


def test_the_schema_declares_the_store_rules(api_schema: Any, tmp_path: Path) -> None:
    raw = api_schema.raw_schema
    messages = raw["paths"]["/api/sessions/{session_id}/messages"]["get"]["parameters"]
    by_name = {p["name"]: p["schema"] for p in messages}
    assert by_name["limit"]["minimum"] == 1 and by_name["limit"]["maximum"] == 1000
    assert by_name["skip"]["minimum"] == 0
    assert by_name["direction"]["enum"] == ["asc", "desc"]
    assert by_name["session_id"]["maxLength"] == 256
