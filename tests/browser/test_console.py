"""The console in a real browser: headless Chromium on a real ``chatmdb serve``.

Each view is photographed into ``artifacts/screenshots``. Every wait is
bounded (Playwright's ``expect`` with a timeout); a page that logs an error to
its console fails the test that opened it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import socketio
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from chatmdb import open_store
from chatmdb.gateway import create_app
from chatmdb.gateway.console import CLIENT, Console, static_files
from gateway.conftest import Server, free_port, start_server, stop_and_check

REPO = Path(__file__).resolve().parents[2]
WAIT = 10_000  # ms: the longest any step may take (a restart, a reconnection)
LIVE = 1_000  # ms: how soon a message sent elsewhere must show
XSS = "<img src=x onerror=alert(1)>"
MAX_SHOWN = 500  # console.js: the messages of the open session on the page at once


class ConsolePage:
    """A page on the console, with what its browser console and dialogs reported."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("dialog", self._on_dialog)

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, url: str, hash_: str = "#/sessions") -> None:
        self.page.goto(f"{url}/{hash_}")

    def connected(self) -> None:
        expect(self.page.locator("#status")).to_have_text("connected", timeout=WAIT)

    def messages(self) -> list[str]:
        return [str(s) for s in self.page.locator("#messages li").evaluate_all("els => els.map(e => e.dataset.seq)")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("console"), "lmdb")
    yield srv
    stop_and_check(srv)


@pytest.fixture
def console(browser: Browser) -> Iterator[ConsolePage]:
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    page = ConsolePage(context.new_page())
    yield page
    context.close()


def new_session(server: Server, title: str) -> str:
    with server.http() as http:
        response = http.post("/api/sessions", json={"title": title})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


def post(server: Server, session_id: str, content: str, **fields: Any) -> dict[str, Any]:
    with server.http() as http:
        response = http.post(f"/api/sessions/{session_id}/messages", json={"content": content, **fields})
        assert response.status_code == 201, response.text
        message: dict[str, Any] = response.json()
        return message


def scroll_to_the_start(page: Page) -> None:
    """Scroll the log to its top until the start of the session shows (each scroll may load a page)."""
    page.wait_for_function(
        """() => {
            document.getElementById("log").scrollTop = 0;
            return !document.getElementById("log-start").hidden;
        }""",
        timeout=WAIT,
        polling=100,
    )


def stored(server: Server, session_id: str) -> list[dict[str, Any]]:
    with server.http() as http:
        response = http.get(f"/api/sessions/{session_id}/messages", params={"limit": 1000, "direction": "asc"})
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items


# -- the files -------------------------------------------------------------------------------------


def test_the_socket_io_client_is_the_pinned_npm_build() -> None:
    # make setup copies it; a missing file fails here rather than leaving a page that cannot connect.
    installed = static_files() / CLIENT
    assert installed.is_file(), f"{CLIENT} is missing: run `make setup`"
    pinned = json.loads((REPO / "web" / "package.json").read_text())["dependencies"]["socket.io-client"]
    lock = json.loads((REPO / "web" / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/socket.io-client"]["version"] == pinned
    assert f"Socket.IO v{pinned}" in installed.read_text()[:200]


def off_the_main_thread(check: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run an async check in a thread of its own.

    These in-process checks sit beside browser tests, and while Playwright's sync API runs, its
    asyncio loop holds the main thread: an async test (or asyncio.run) there would fail.
    """
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(check())).result()


def client_of(app: Any) -> httpx.AsyncClient:
    """An HTTP client of *app* in process; no lifespan runs: only the routing is under test."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


def test_the_page_and_its_files_need_no_token_but_the_api_does(tmp_path: Path) -> None:
    async def check() -> None:
        with open_store(tmp_path / "db") as store:
            app = create_app(store, token="secret")
            async with client_of(app) as client:
                for path in ("/", "/console", "/console/"):
                    page = await client.get(path)
                    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
                    assert '<script src="/console/console.js"' in page.text
                    policy = page.headers["content-security-policy"]
                    assert "script-src 'self'" in policy and "unsafe" not in policy and "default-src 'none'" in policy
                    assert page.headers["x-frame-options"] == "DENY"
                for name in ("console.js", "console.css", "favicon.svg", CLIENT, f"{CLIENT}.map"):
                    answer = await client.get(f"/console/{name}")
                    assert answer.status_code == 200, name
                    assert answer.headers["x-content-type-options"] == "nosniff"
                # Revalidation: the same file answers 304 to its own ETag.
                etag = (await client.get("/console/console.js")).headers["etag"]
                assert (await client.get("/console/console.js", headers={"If-None-Match": etag})).status_code == 304
                # Only the console's own files, only GET and HEAD; everything else still needs the token.
                assert (await client.get("/console/app.py")).status_code == 404
                assert (await client.post("/console")).status_code == 405
                assert (await client.head("/")).status_code == 200
                for path in ("/api/sessions", "/metrics", "/docs", "/console.js"):
                    assert (await client.get(path)).status_code == 401, path
            app.gateway.metrics.close()

    off_the_main_thread(check)


def test_without_the_client_the_server_serves_and_says_how_to_get_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bare = tmp_path / "static"
    bare.mkdir()
    source = static_files()
    for name in ("index.html", "console.js", "console.css"):
        (bare / name).write_bytes((source / name).read_bytes())

    async def api(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = Console(api, directory=bare)
    assert "make setup" in caplog.text  # the operator hears of it at start

    async def check() -> None:
        async with client_of(app) as client:
            assert (await client.get("/")).status_code == 200
            missing = await client.get(f"/console/{CLIENT}")
            assert missing.status_code == 404 and "make setup" in missing.json()["error"]["message"]
            assert (await client.get("/api/sessions")).status_code == 204  # passed on
            # Put in place while serving (make setup run later): served from then on.
            (bare / CLIENT).write_bytes((source / CLIENT).read_bytes())
            assert (await client.get(f"/console/{CLIENT}")).status_code == 200

    off_the_main_thread(check)


def test_the_page_says_so_when_the_client_is_missing(console: ConsolePage, server: Server, screenshots: Path) -> None:
    console.page.route(f"**/console/{CLIENT}", lambda route: route.fulfill(status=404, body="missing"))
    console.open(server.url)
    problem = console.page.locator("#problem")
    expect(problem).to_be_visible(timeout=WAIT)
    expect(problem).to_contain_text("make setup")
    expect(problem).to_contain_text("socket.io-client")
    console.page.screenshot(path=screenshots / "console-client-missing.png")


# -- the views -------------------------------------------------------------------------------------


def test_the_page_loads_without_errors_and_lists_the_sessions_newest_activity_first(
    console: ConsolePage, server: Server, screenshots: Path
) -> None:
    quiet = new_session(server, "quiet session")
    busy = new_session(server, "busy session")
    for n in range(3):
        post(server, busy, f"busy {n}")
    post(server, quiet, "the newest activity")  # created first, spoke last: listed first
    console.open(server.url)
    console.connected()
    titles = console.page.locator("#sessions .title")
    expect(titles.first).to_have_text("quiet session", timeout=WAIT)
    expect(titles.nth(1)).to_have_text("busy session")
    expect(console.page.locator("#sessions li").nth(1).locator(".count")).to_have_text("3 messages")
    console.page.screenshot(path=screenshots / "console-sessions.png")
    assert console.errors == []


def test_a_message_posted_over_http_appears_in_the_open_session_within_a_second(
    console: ConsolePage, server: Server, screenshots: Path
) -> None:
    session = new_session(server, "live")
    post(server, session, "before the page opened", agent_id="chloe", role="assistant")
    console.open(server.url, f"#/sessions/{session}")
    console.connected()
    log = console.page.locator("#messages")
    expect(log).to_contain_text("before the page opened", timeout=WAIT)
    sent = post(server, session, "posted over HTTP", agent_id="phil_connors", role="assistant")
    item = console.page.locator(f'#messages li[data-seq="{sent["seq"]}"]')
    expect(item).to_contain_text("posted over HTTP", timeout=LIVE)
    expect(item).to_contain_text("Phil Connors")
    # The session list follows too: its count is the newest seq.
    expect(console.page.locator("#sessions a[aria-current=page] .count")).to_have_text("2 messages", timeout=WAIT)
    console.page.screenshot(path=screenshots / "console-session.png")
    assert console.errors == []


def test_a_message_typed_in_the_page_is_stored_once(console: ConsolePage, server: Server) -> None:
    session = new_session(server, "typed")
    console.open(server.url, f"#/sessions/{session}")
    console.connected()
    expect(console.page.locator("#log-start")).to_be_visible(timeout=WAIT)
    console.page.select_option("#send-role", "assistant")
    console.page.select_option("#send-agent", "chloe")
    text = f"typed in the browser {uuid.uuid4().hex[:6]}"
    console.page.locator("#send-content").fill(text)
    console.page.keyboard.press("Enter")  # Enter sends
    expect(console.page.locator("#messages li")).to_have_count(1, timeout=WAIT)
    expect(console.page.locator("#messages li")).to_contain_text(text)
    expect(console.page.locator("#send-content")).to_have_value("")
    messages = stored(server, session)
    assert [(m["content"], m["role"], m.get("agent_id")) for m in messages] == [(text, "assistant", "chloe")]
    # A second one, by the button: one more, still each once.
    console.page.locator("#send-content").fill("and another")
    console.page.get_by_role("button", name="Send").click()
    expect(console.page.locator("#messages li")).to_have_count(2, timeout=WAIT)
    assert [m["content"] for m in stored(server, session)] == [text, "and another"]
    assert console.messages() == ["1", "2"]
    assert console.errors == []


def test_markup_in_a_message_shows_as_text(console: ConsolePage, server: Server) -> None:
    session = new_session(server, XSS)
    post(server, session, XSS, agent_id=XSS)
    console.open(server.url, f"#/sessions/{session}")
    console.connected()
    content = console.page.locator("#messages .content")
    expect(content).to_have_text(XSS, timeout=WAIT)
    live = post(server, session, f"<b>bold</b>{XSS}")
    expect(console.page.locator(f'#messages li[data-seq="{live["seq"]}"] .content')).to_have_text(
        f"<b>bold</b>{XSS}", timeout=WAIT
    )
    expect(console.page.locator("#session-title")).to_have_text(XSS)
    assert console.page.locator("main img, main b").count() == 0
    # The policy turns every string-to-markup sink off: a slip would throw, not render.
    sink = "() => { try { document.body.insertAdjacentHTML('beforeend', '<b>x</b>'); return 'rendered' } catch (e) { return e.name } }"
    assert console.page.evaluate(sink) == "TypeError"
    console.errors.clear()  # the refusal is reported on the console, as it should be
    assert console.dialogs == []
    assert console.errors == []


def test_history_scrolls_backwards_page_by_page(console: ConsolePage, server: Server) -> None:
    session = new_session(server, "long")
    with server.http() as http:
        for n in range(1, 131):
            assert http.post(f"/api/sessions/{session}/messages", json={"content": f"line {n}"}).status_code == 201
    console.open(server.url, f"#/sessions/{session}")
    console.connected()
    expect(console.page.locator("#messages li").last).to_have_attribute("data-seq", "130", timeout=WAIT)
    assert console.messages() == [str(n) for n in range(81, 131)]  # the newest page
    scroll_to_the_start(console.page)
    assert console.messages() == [str(n) for n in range(1, 131)]
    assert console.errors == []


def test_agent_cards_show_their_colors_and_icons(console: ConsolePage, server: Server, screenshots: Path) -> None:
    console.open(server.url, "#/agents")
    console.connected()
    chloe = console.page.locator(".card", has_text="Chloe")
    expect(chloe).to_contain_text("chloe.svg", timeout=WAIT)
    expect(chloe).to_have_css("border-top-color", "rgb(34, 197, 94)")
    expect(console.page.locator(".card", has_text="Phil Connors")).to_contain_text("phil-connors.svg")
    console.page.screenshot(path=screenshots / "console-agents.png")
    assert console.errors == []


def test_tasks_by_state_live(console: ConsolePage, server: Server, screenshots: Path) -> None:
    session = new_session(server, "with tasks")
    console.open(server.url, "#/tasks")
    console.connected()
    expect(console.page.locator("#sessions li", has_text="with tasks")).to_have_count(1, timeout=WAIT)
    task_id, other_id = (f"task-{uuid.uuid4().hex[:8]}" for _ in range(2))
    with socketio.SimpleClient() as client:
        client.connect(server.url, wait_timeout=10)
        for new_id in (other_id, task_id):
            created = client.call("create_task", {"context_id": session, "id": new_id}, timeout=10)
            assert created["ok"], created
        submitted = console.page.locator('[data-state="submitted"] .task', has_text=task_id)
        expect(submitted).to_have_count(1, timeout=WAIT)
        updated = client.call(
            "update_task", {"task_id": task_id, "state": "working", "status_message": "on it"}, timeout=10
        )
        assert updated["ok"], updated
        working = console.page.locator('[data-state="working"] .task', has_text=task_id)
        expect(working).to_contain_text("on it", timeout=WAIT)
        expect(submitted).to_have_count(0)
        expect(console.page.locator('[data-state="submitted"] .task', has_text=other_id)).to_have_count(1)
    console.page.screenshot(path=screenshots / "console-tasks.png")
    assert console.errors == []


def test_server_numbers(console: ConsolePage, server: Server, screenshots: Path) -> None:
    console.open(server.url, "#/server")
    console.connected()
    numbers = console.page.locator("#numbers")
    expect(numbers.locator('[data-name="health"] dd')).to_have_text("healthy", timeout=WAIT)
    expect(numbers.locator('[data-name="map used"] dd')).to_contain_text("%")
    # Rates need two samples: the second one replaces "measuring…".
    expect(numbers.locator('[data-name="messages written/s"] dd')).to_have_text(re.compile(r"^\d+\.\d$"), timeout=WAIT)
    with server.http() as http:
        total = sum(session["message_count"] for session in http.get("/api/sessions", params={"limit": 1000}).json())
    # The store's counts are cached for a few seconds by /metrics.
    expect(numbers.locator('[data-name="messages"] dd')).to_have_text(f"{total:,}", timeout=WAIT)
    console.page.screenshot(path=screenshots / "console-server.png")
    assert console.errors == []


def test_at_360_px_wide_nothing_overflows(browser: Browser, server: Server, screenshots: Path) -> None:
    session = new_session(server, "a narrow screen with a long title " * 3)
    post(server, session, "a-long-word-without-spaces-" * 8, agent_id="chloe", role="assistant")
    context = browser.new_context(viewport={"width": 360, "height": 740})
    try:
        page = ConsolePage(context.new_page())
        page.open(server.url)
        page.connected()
        expect(page.page.locator("#sessions li").first).to_be_visible(timeout=WAIT)
        page.page.screenshot(path=screenshots / "console-narrow-sessions.png")
        width = "document.documentElement.scrollWidth"
        assert page.page.evaluate(width) <= 360
        # Keyboard only: the first session is reachable and opens with Enter.
        page.page.locator("#sessions a").first.focus()
        page.page.keyboard.press("Enter")
        expect(page.page.locator("#messages .content")).to_be_visible(timeout=WAIT)
        expect(page.page.locator(".session-list")).to_be_hidden()
        # The keyboard carries on from the session's heading, not from the top of the page.
        expect(page.page.locator("#session-title")).to_be_focused()
        assert page.page.evaluate(width) <= 360
        page.page.screenshot(path=screenshots / "console-narrow-session.png")
        assert page.errors == []
    finally:
        context.close()


# -- restarts and tokens ---------------------------------------------------------------------------


def _restart_and_check(browser: Browser, tmp_path: Path, args: tuple[str, ...], status: str, shot: Path) -> None:
    """Open a session, SIGTERM the server, write while it is down, restart it; the page must catch up."""
    server = start_server(tmp_path, "lmdb", args=args)
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    try:
        page = ConsolePage(context.new_page())
        session = new_session(server, "restarted")
        page.open(server.url, f"#/sessions/{session}")
        page.connected()
        first = post(server, session, "before the restart")
        # Seen live, so the page holds a recovery offset.
        expect(page.page.locator(f'#messages li[data-seq="{first["seq"]}"]')).to_be_visible(timeout=WAIT)
        stop_and_check(server)
        expect(page.page.locator("#status")).to_contain_text("reconnecting", timeout=WAIT)
        # Written while no server runs: only recovery (or join) can bring these to the page.
        with open_store(server.db) as store:
            for n in (1, 2):
                store.create_message({"session_id": session, "role": "user", "content": f"while down {n}"})
        restarted = start_server(tmp_path, "lmdb", args=args, port=server.port)
        try:
            post(restarted, session, "after the restart")
            expect(page.page.locator("#status")).to_contain_text(status, timeout=WAIT)
            for text in ("while down 1", "while down 2", "after the restart"):
                expect(page.page.locator("#messages")).to_contain_text(text, timeout=WAIT)
            assert page.messages() == ["1", "2", "3", "4"]
            page.page.screenshot(path=shot)
        finally:
            stop_and_check(restarted)
    finally:
        context.close()
        if not server.stopped:
            stop_and_check(server)


def test_after_a_restart_the_page_recovers_what_it_missed(browser: Browser, tmp_path: Path, screenshots: Path) -> None:
    _restart_and_check(browser, tmp_path, (), "reconnected, recovered", screenshots / "console-recovered.png")


def test_without_recovery_the_page_catches_up_with_join(browser: Browser, tmp_path: Path, screenshots: Path) -> None:
    args = ("--recovery-window", "0")
    _restart_and_check(
        browser, tmp_path, args, "reconnected, caught up with join", screenshots / "console-rejoined.png"
    )


def test_with_a_token_the_page_is_refused_until_it_is_given(
    browser: Browser, tmp_path: Path, screenshots: Path
) -> None:
    token = uuid.uuid4().hex
    server = start_server(tmp_path, "lmdb", env={"CHATMDB_TOKEN": token}, token=token)
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    try:
        page = ConsolePage(context.new_page())
        page.open(server.url)
        login = page.page.locator("#login")
        expect(login).to_be_visible(timeout=WAIT)
        expect(page.page.locator("#view-sessions")).to_be_hidden()
        assert page.page.locator("#sessions li").count() == 0
        page.page.screenshot(path=screenshots / "console-token.png")
        page.page.locator("#token").fill("wrong")
        page.page.keyboard.press("Enter")
        expect(page.page.locator("#login-error")).to_have_text(re.compile("refused"), timeout=WAIT)
        expect(page.page.locator("#view-sessions")).to_be_hidden()
        page.page.locator("#token").fill(token)
        page.page.get_by_role("button", name="Connect").click()
        page.connected()
        expect(login).to_be_hidden()
        expect(page.page.locator("#sessions .title", has_text="Default Session")).to_be_visible(timeout=WAIT)
        # The token stays with the tab: a reload connects without asking, and /metrics answers it.
        page.page.reload()
        page.connected()
        expect(login).to_be_hidden()
        page.page.goto(f"{server.url}/#/server")
        expect(page.page.locator('#numbers [data-name="messages"] dd')).to_have_text(re.compile(r"^\d"), timeout=WAIT)
        # Held in the tab's session storage only: not in the address, not left in the form.
        assert token not in page.page.url
        expect(page.page.locator("#token")).to_have_value("")
        assert page.page.evaluate("() => localStorage.length") == 0
        page.page.get_by_role("button", name="Forget the token").click()
        expect(login).to_be_visible(timeout=WAIT)
        assert page.page.evaluate("() => sessionStorage.getItem('chatmdb.token')") is None
        expect(page.page.locator("#numbers div")).to_have_count(0)
        assert page.errors == []
    finally:
        context.close()
        stop_and_check(server)


def test_a_busy_session_keeps_a_bounded_number_of_messages_on_the_page(console: ConsolePage, server: Server) -> None:
    assert f"const MAX_SHOWN = {MAX_SHOWN};" in (static_files() / "console.js").read_text()
    session = new_session(server, "busy for long")
    console.open(server.url, f"#/sessions/{session}")
    console.connected()
    expect(console.page.locator("#log-start")).to_be_visible(timeout=WAIT)
    total = MAX_SHOWN + 60
    with server.http() as http:
        for n in range(1, total + 1):
            assert http.post(f"/api/sessions/{session}/messages", json={"content": f"m {n}"}).status_code == 201
    items = console.page.locator("#messages li")
    expect(items.last).to_have_attribute("data-seq", str(total), timeout=WAIT)
    # Following the newest, the oldest went: still each once, in order, and a page back is offered.
    assert console.messages() == [str(n) for n in range(total - MAX_SHOWN + 1, total + 1)]
    expect(console.page.locator("#older")).to_be_attached()
    expect(console.page.locator("#log-start")).to_be_hidden()
    # Paging back brings them in again; the newest go instead, and the page says newer ones are held.
    console.page.locator("#older").click()
    expect(console.page.locator(f'#messages li[data-seq="{total - MAX_SHOWN}"]')).to_be_attached(timeout=WAIT)
    expect(items).to_have_count(MAX_SHOWN)
    jump = console.page.locator("#jump")
    expect(jump).to_contain_text("show the newest")
    seqs = [int(n) for n in console.messages()]
    assert seqs == list(range(seqs[0], seqs[0] + MAX_SHOWN))
    newest = post(server, session, "the newest")
    expect(console.page.locator("#session-meta")).to_contain_text(f"{newest['seq']:,} messages", timeout=WAIT)
    expect(console.page.locator(f'#messages li[data-seq="{newest["seq"]}"]')).to_have_count(0)
    jump.click()
    expect(items.last).to_have_attribute("data-seq", str(newest["seq"]), timeout=WAIT)
    expect(items.last).to_contain_text("the newest")
    assert len(console.messages()) <= MAX_SHOWN
    expect(jump).to_be_hidden()
    assert console.errors == []


def test_a_malformed_address_does_not_break_the_page(console: ConsolePage, server: Server) -> None:
    console.open(server.url, "#/sessions/%E0%A4%A")
    console.connected()
    expect(console.page.locator("#session-meta")).to_have_text("No such session.", timeout=WAIT)
    console.page.locator("#sessions a").first.click()
    expect(console.page.locator("#session-title")).to_be_focused(timeout=WAIT)
    assert console.errors == []


def test_the_open_session_is_followed_past_the_servers_limit_of_sessions(browser: Browser, tmp_path: Path) -> None:
    server = start_server(tmp_path, "lmdb", args=("--max-rooms", "2"))
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    try:
        sessions = [new_session(server, f"room {n}") for n in range(4)]
        page = ConsolePage(context.new_page())
        page.open(server.url)
        page.connected()
        # Five sessions, two rooms: the others are listed, and say they are not followed live.
        expect(page.page.locator("#sessions li")).to_have_count(5, timeout=WAIT)
        expect(page.page.locator("#sessions .when", has_text="not followed live")).to_have_count(3, timeout=WAIT)
        for session in sessions:
            page.page.goto(f"{server.url}/#/sessions/{session}")
            expect(page.page.locator("#log-start")).to_be_visible(timeout=WAIT)
            sent = post(server, session, f"live in {session}")
            expect(page.page.locator(f'#messages li[data-seq="{sent["seq"]}"]')).to_be_visible(timeout=WAIT)
        assert page.errors == []
    finally:
        context.close()
        stop_and_check(server)


def test_agent_colors_are_colors_only(browser: Browser, tmp_path: Path) -> None:
    with open_store(tmp_path / "db") as store:
        store.init_database()
        store.upsert_agent_card({"id": "evil", "name": "Agent Evil", "color": "red; background-image: url(/x)"})
        store.upsert_agent_card({"id": "sneaky", "name": "Agent Sneaky", "color": "var(--error)"})
        store.upsert_agent_card({"id": "plain", "name": "Agent Plain", "color": "#123456"})
    server = start_server(tmp_path, "lmdb")
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    try:
        page = ConsolePage(context.new_page())
        page.open(server.url, "#/agents")
        page.connected()
        expect(page.page.locator(".card", has_text="Agent Plain")).to_have_css(
            "border-top-color", "rgb(18, 52, 86)", timeout=WAIT
        )
        for name in ("Agent Evil", "Agent Sneaky"):
            card = page.page.locator(".card", has_text=name)
            expect(card).to_be_visible()
            assert card.get_attribute("style") is None, name  # the default line color, nothing set
        assert page.errors == []
    finally:
        context.close()
        stop_and_check(server)


def _jwt(secret: str, **claims: Any) -> str:
    return jwt.encode({"exp": int(time.time()) + 3600, **claims}, secret, algorithm="HS256")


def test_a_token_that_is_not_an_admin_gets_clear_answers(browser: Browser, tmp_path: Path, screenshots: Path) -> None:
    secret = uuid.uuid4().hex * 2
    admin = _jwt(secret, sub="admin", admin=True)
    server = start_server(tmp_path, "lmdb", env={"CHATMDB_JWT_SECRET": secret}, token=admin)
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    try:
        with server.http() as http:
            for session_id in ("team-a", "other"):
                assert (
                    http.post("/api/sessions", json={"title": session_id, "session_id": session_id}).status_code == 201
                )
        page = ConsolePage(context.new_page())
        page.open(server.url)
        expect(page.page.locator("#login")).to_be_visible(timeout=WAIT)
        page.page.locator("#token").fill(_jwt(secret, sub="reader", sessions=["team-*"]))
        page.page.keyboard.press("Enter")
        page.connected()
        # Only what it may read is listed.
        expect(page.page.locator("#sessions .title", has_text="team-a")).to_be_visible(timeout=WAIT)
        expect(page.page.locator("#sessions li")).to_have_count(1)
        # A session outside its grants, or with no id to check, is refused next to the form.
        page.page.locator("#new-session-title").fill("mine")
        page.page.get_by_role("button", name="Create").click()
        expect(page.page.locator("#new-session-error")).to_contain_text("session_id", timeout=WAIT)
        page.page.locator("#new-session-id").fill("team-b")
        page.page.get_by_role("button", name="Create").click()
        expect(page.page.locator("#session-title")).to_have_text("mine", timeout=WAIT)
        expect(page.page.locator("#new-session-error")).to_be_hidden()
        # Writing as an agent the token does not bind is refused with the reason; as itself, stored.
        page.page.select_option("#send-agent", "chloe")
        page.page.locator("#send-content").fill("as chloe")
        page.page.keyboard.press("Enter")
        expect(page.page.locator("#send-error")).to_contain_text("agent_id", timeout=WAIT)
        page.page.select_option("#send-agent", "")
        page.page.locator("#send-content").fill("as myself")
        page.page.keyboard.press("Enter")
        expect(page.page.locator("#messages li")).to_have_count(1, timeout=WAIT)
        assert [m["content"] for m in stored(server, "team-b")] == ["as myself"]
        # The server's numbers need an admin: the page says so instead of failing.
        page.page.goto(f"{server.url}/#/server")
        expect(page.page.locator('#numbers [data-name="metrics"] dd')).to_contain_text("admin token", timeout=WAIT)
        expect(page.page.locator('#numbers [data-name="health"] dd')).to_have_text("healthy")
        page.page.screenshot(path=screenshots / "console-not-admin.png")
        assert page.errors == []
        # A token that expires: the server ends the connection at exp, and the page asks again, saying why.
        soon = ConsolePage(context.new_page())
        soon.open(server.url)
        expect(soon.page.locator("#login")).to_be_visible(timeout=WAIT)
        soon.page.locator("#token").fill(_jwt(secret, sub="reader", sessions=["team-*"], exp=int(time.time()) + 3))
        soon.page.keyboard.press("Enter")
        soon.connected()
        expect(soon.page.locator("#login-error")).to_contain_text("expired", timeout=WAIT)
        expect(soon.page.locator("#view-sessions")).to_be_hidden()
        assert soon.errors == []
    finally:
        context.close()
        stop_and_check(server)


def test_serve_prints_the_address_to_open(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATMDB_")}
    command = [sys.executable, "-m", "chatmdb", "serve", "--db", str(tmp_path / "db"), "--host", "0.0.0.0"]
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*command, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + WAIT / 1000
        while f"open http://127.0.0.1:{port}/" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        assert f"The console: open http://127.0.0.1:{port}/" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(WAIT / 1000) == 0, log.read_text()
