"""Recovery and connect edge cases, over raw WebSockets against a real server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from .conftest import Server, raw_open, raw_until

WAIT = 10.0


async def test_recovery_without_an_offset_replays_what_the_client_never_received(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        a = await raw_open(http, server)
        pid = json.loads((await raw_until(a, "40"))[2:])["pid"]
        session = f"edge-{pid[:8]}"
        await a.send_str("421" + json.dumps(["create_session", {"session_id": session}]))
        await raw_until(a, "431")
        await a.send_str("422" + json.dumps(["join", {"session_id": session}]))
        await raw_until(a, "432")
        b = await raw_open(http, server)
        await raw_until(b, "40")
        await b.send_str("421" + json.dumps(["send_message", {"session_id": session, "content": "M1"}]))
        await raw_until(b, "431")
        # A loses its transport without having read M1, so it has no offset to send:
        # the JS client then reconnects with its pid alone.
        await a.close()
        await asyncio.sleep(0.3)
        back = await raw_open(http, server, {"pid": pid})
        seen: list[str] = []
        reply = json.loads((await raw_until(back, "40", seen))[2:])
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
            reply = await raw_until(ws, "44")
            assert "unauthorized" in reply
            await ws.close()
    finally:
        stop_and_check(server)  # and no traceback in its log


def _token_file(tmp_path: Any) -> Any:
    path = tmp_path / "token"
    path.write_text("tok\n")
    return path


async def test_live_events_during_a_replay_arrive_once_and_in_order(server: Server) -> None:
    from chatmdb import open_store

    async with aiohttp.ClientSession() as http:
        subject = await raw_open(http, server)
        hello = json.loads((await raw_until(subject, "40"))[2:])
        pid = hello["pid"]
        session = f"live-{pid[:8]}"
        await subject.send_str("421" + json.dumps(["create_session", {"session_id": session}]))
        await raw_until(subject, "431")
        await subject.send_str("422" + json.dumps(["join", {"session_id": session}]))
        await raw_until(subject, "432")
        await subject.close()  # lost transport, no event seen: recovery from the connection's start
        await asyncio.sleep(0.2)
        with open_store(server.db, backend=server.backend) as store:  # a long backlog to replay
            for i in range(2000):
                store.create_message({"session_id": session, "content": f"backlog {i}"})
        sender = await raw_open(http, server)
        await raw_until(sender, "40")
        stop = asyncio.Event()

        async def keep_sending() -> int:
            sent = 0
            while not stop.is_set() and sent < 300:
                await sender.send_str(f"42{sent + 1}" + json.dumps(["send_message", {"session_id": session, "content": "live"}]))
                await raw_until(sender, f"43{sent + 1}")
                sent += 1
            return sent

        sending = asyncio.create_task(keep_sending())
        await asyncio.sleep(0.05)  # the sender is under way when the recovery starts
        back = await raw_open(http, server, {"pid": pid})
        seen: list[str] = []
        reply = json.loads((await raw_until(back, "40", seen))[2:])
        assert reply["pid"] == pid
        await asyncio.sleep(0.3)
        stop.set()
        sent = await sending
        total = 2000 + sent
        seqs = [json.loads(p[2:])[1]["seq"] for p in seen if p.startswith("42")]
        deadline = asyncio.get_running_loop().time() + WAIT  # bounded: the live ones after the CONNECT reply
        while len(seqs) < total and asyncio.get_running_loop().time() < deadline:
            try:
                text = await asyncio.wait_for(back.receive_str(), 0.05)
            except TimeoutError:
                continue
            if text == "2":
                await back.send_str("3")
            elif text.startswith("42"):
                seqs.append(json.loads(text[2:])[1]["seq"])
        assert seqs == list(range(1, total + 1)), (len(seqs), total, seqs[:3], seqs[-3:])
        await back.close()
        await sender.close()


async def test_a_revoked_token_cannot_recover_and_touches_nothing(tmp_path: Any) -> None:
    from .conftest import start_server, stop_and_check

    token_file = tmp_path / "token"
    token_file.write_text("old-token\n")
    first = start_server(tmp_path, "lmdb", args=("--token-file", str(token_file)), token="old-token")
    servers = [first]
    try:
        async with aiohttp.ClientSession() as http:
            client = await raw_open(http, first, {"token": "old-token"})
            hello = json.loads((await raw_until(client, "40"))[2:])
            await client.send_str("421" + json.dumps(["create_session", {"session_id": "revoked"}]))
            await raw_until(client, "431")
            await client.send_str("422" + json.dumps(["join", {"session_id": "revoked"}]))
            await raw_until(client, "432")
            await client.close()
            await asyncio.sleep(0.2)
            stop_and_check(first)
            token_file.write_text("new-token\n")  # the old token is revoked
            second = start_server(tmp_path, "lmdb", args=("--token-file", str(token_file)), token="new-token",
                                  port=first.port)
            servers.append(second)
            refused = await raw_open(http, second, {"token": "old-token", "pid": hello["pid"], "offset": "0"})
            assert "unauthorized" in await raw_until(refused, "44")
            await refused.close()
            # The refused attempt consumed nothing: the right token still recovers the same connection.
            back = await raw_open(http, second, {"token": "new-token", "pid": hello["pid"], "offset": "0"})
            reply = json.loads((await raw_until(back, "40"))[2:])
            assert (reply["sid"], reply["pid"]) == (hello["sid"], hello["pid"])
            await back.close()
    finally:
        for server in servers:
            if not server.stopped:
                stop_and_check(server)
