"""create_app in process: its arguments are checked, and the HTTP side answers through ASGI."""

from __future__ import annotations

import httpx
import pytest

from chatmdb import Store, ValidationError
from chatmdb.gateway import create_app


@pytest.mark.parametrize(
    "kwargs",
    [{"token": ""}, {"recovery_window": -1}, {"max_http_buffer_size": 1024}],
    ids=["empty-token", "negative-window", "buffer-below-message-limit"],
)
def test_bad_arguments_are_refused(store: Store, kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        create_app(store, **kwargs)  # type: ignore[arg-type]


async def test_the_app_serves_http_and_keeps_the_transport_limit_above_the_message_limit(store: Store) -> None:
    app = create_app(store, token="secret")
    assert app.gateway.max_http_buffer_size > store.max_message_size
    assert app.gateway.sio.eio.max_http_buffer_size == app.gateway.max_http_buffer_size
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/api/agents")).status_code == 401
        authorized = await client.get("/api/agents", headers={"Authorization": "Bearer secret"})
        assert authorized.status_code == 200 and authorized.json() == []
    app.gateway.metrics.close()
    assert store.commit_listeners == []
