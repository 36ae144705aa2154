"""Recovery and connect edge cases, over raw WebSockets against a real server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from .conftest import Server

WAIT = 10.0


async def _open(http: aiohttp.ClientSession, server: Server, auth: dict[str, Any] | None = None) -> Any:
    ws = await http.ws_connect(server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket")
    assert (await asyncio.wait_for(ws.receive_str(), WAIT)).startswith("0{")
    await ws.send_str("40" + (json.dumps(auth) if auth else ""))
    return ws


async def _until(ws: Any, prefix: str, seen: list[str] | None = None) -> str:
    while True:
        text = await asyncio.wait_for(ws.receive_str(), WAIT)
        if text == "2":
            await ws.send_str("3")
        elif text.startswith(prefix):
            return str(text)
        elif seen is not None:
            seen.append(text)


async def test_recovery_without_an_offset_replays_what_the_client_never_received(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        a = await _open(http, server)
        pid = json.loads((await _until(a, "40"))[2:])["pid"]
        session = f"edge-{pid[:8]}"
        await a.send_str("421" + json.dumps(["create_session", {"session_id": session}]))
        await _until(a, "431")
        await a.send_str("422" + json.dumps(["join", {"session_id": session}]))
        await _until(a, "432")
        b = await _open(http, server)
        await _until(b, "40")
        await b.send_str("421" + json.dumps(["send_message", {"session_id": session, "content": "M1"}]))
        await _until(b, "431")
        # A loses its transport without having read M1, so it has no offset to send:
        # the JS client then reconnects with its pid alone.
        await a.close()
        await asyncio.sleep(0.3)
        back = await _open(http, server, {"pid": pid})
        seen: list[str] = []
        reply = json.loads((await _until(back, "40", seen))[2:])
        assert reply["pid"] == pid  # recovered...
        assert [json.loads(p[2:])[1]["content"] for p in seen] == ["M1"]  # ...with what it missed
        await back.close()
        await b.close()


async def test_a_token_that_is_not_valid_unicode_is_refused_not_a_crash(tmp_path: Any) -> None:
    from .conftest import start_server, stop_and_check

    server = start_server(tmp_path, "lmdb", args=("--token-file", str(_token_file(tmp_path))), token="tok")
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket")
            await asyncio.wait_for(ws.receive_str(), WAIT)
            await ws.send_str('40{"token":"\\ud800"}')  # a lone surrogate, as JSON allows
            reply = await _until(ws, "44")
            assert "unauthorized" in reply
            await ws.close()
    finally:
        stop_and_check(server)  # and no traceback in its log


def _token_file(tmp_path: Any) -> Any:
    path = tmp_path / "token"
    path.write_text("tok\n")
    return path
