// The chatmdb console: watch the sessions, agents, tasks and server numbers, and talk in a session.
//
// It uses the official Socket.IO client and the gateway's events only (plus /metrics and
// /healthz over HTTP), as any application would. Everything a record contains is put on the page
// with textContent, never as markup: chat content is data, and the page's Content-Security-Policy
// would not run a script that slipped in anyway.
"use strict";

(() => {
  const PAGE = 50; // messages per history page
  // Messages on the page at once: past it, a live session drops its oldest (they can be paged back
  // in), and a reader scrolled up or paging back stops taking new ones until asked.
  const MAX_SHOWN = 500;
  // How far a reconnection pages forward through the open session before it shows the newest instead.
  const CATCH_UP_PAGES = 5;
  const SESSION_PAGE = 50; // sessions per page, each joined to follow it live
  // Sessions followed live at once (the server allows --max-rooms, 1000 by default, per connection);
  // the open session always is, in place of the least active one if need be.
  const MAX_WATCHED = 200;
  const JOIN_BATCH = 20; // joins in flight at once when rejoining after a reconnection
  const MAX_TASKS = 1000; // tasks kept: past it, the oldest status changes are dropped
  const TASK_PAGE = 100; // the gateway's largest task page
  const POLL_MS = 3000; // server numbers
  const REFRESH_MS = 15000; // the first page of sessions and of tasks: new ones elsewhere
  const TASK_STATES = [
    "submitted", "working", "input-required", "auth-required",
    "completed", "canceled", "failed", "rejected", "unknown",
  ];
  const TOKEN_KEY = "chatmdb.token";

  const $ = (id) => document.getElementById(id);

  /** An element with text (never markup) and attributes. */
  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    return node;
  }

  function setStatus(text, kind) {
    const status = $("status");
    status.textContent = text;
    status.className = "status" + (kind ? " " + kind : "");
  }

  function showProblem(text) {
    const box = $("problem");
    box.textContent = text;
    box.hidden = !text;
  }

  if (typeof window.io !== "function") {
    // The page is static; the one file it cannot do without is the Socket.IO client, which
    // `make setup` copies from the npm package into the Python package.
    showProblem(
      "The Socket.IO browser client (/console/socket.io.min.js) is missing from this installation. " +
      "Run `make setup` in the chatmdb checkout (it runs npm ci in web/ and copies " +
      "socket.io-client's dist/socket.io.min.js into src/chatmdb/gateway/console_static/), " +
      "then reload this page.",
    );
    setStatus("not connected", "bad");
    return;
  }

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || null,
    ready: false, // first load done
    away: false, // disconnected after having been connected
    missed: 0, // room events received while recovering
    sessions: new Map(), // id -> session record
    sessionPages: { cursor: null, done: false }, // where the next page of sessions starts
    watched: new Set(), // sessions joined
    unwatched: new Set(), // sessions listed but not followed live (past MAX_WATCHED or the server's limit)
    fresh: new Set(), // sessions with a message since the page opened
    agents: new Map(),
    tasks: new Map(),
    taskPages: { cursor: null, done: false },
    open: null, // the session shown: {id, items: Map seq -> li, next (cursor), done, loading, detached}
    metrics: null, // the previous sample, for rates
  };

  const socket = window.io({
    // The token is read at each connect, so a token typed later is used by reconnections.
    auth: (give) => give(state.token ? { token: state.token } : {}),
    autoConnect: false,
    // WebSocket first: with several worker processes the server refuses long-polling.
    transports: ["websocket", "polling"],
    tryAllTransports: true,
    // Unacknowledged emits are sent again, unchanged: a message keeps its message_uuid,
    // so a retry stores it once.
    ackTimeout: 10000,
    retries: 3,
  });

  /** Emit an event and return its data; throws an Error with .code on an error ack. */
  async function call(event, payload) {
    const ack = await socket.emitWithAck(event, payload);
    if (!ack || ack.ok !== true) {
      const error = (ack && ack.error) || { code: "internal", message: "no answer" };
      const exc = new Error(`${event}: ${error.message}`);
      exc.code = error.code;
      throw exc;
    }
    return ack.data;
  }

  /**
   * Whether the token is an administrator's, as far as the page can tell: the static token (not a
   * JWT) and no token at all are; a JWT is if it claims admin. The server decides: this only spares
   * asking for what would be refused (/metrics).
   */
  function tokenIsAdmin() {
    const parts = state.token ? state.token.split(".") : [];
    if (parts.length !== 3) return true;
    try {
      const json = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(parts[1].length / 4) * 4, "="));
      const claims = JSON.parse(json);
      return Boolean(claims && claims.admin === true);
    } catch {
      return true;
    }
  }

  function authHeaders() {
    return state.token ? { Authorization: "Bearer " + state.token } : {};
  }

  function newUuid() {
    if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
    // crypto.randomUUID exists in secure contexts only (a plain-http host name is not one).
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
  }

  function timeEl(iso) {
    const node = el("time", when(iso));
    if (iso) node.setAttribute("datetime", String(iso));
    return node;
  }

  // A color as agent cards give one: #hex, a name, or rgb()/hsl() of plain numbers. Nothing else
  // (var(), attr(), url(), env(), anything with a semicolon or a brace) reaches a style.
  const COLOR = /^(#[0-9a-f]{3,8}|[a-z]{3,20}|(rgb|rgba|hsl|hsla)\([0-9.,%\s/+-]{1,60}\))$/i;

  function safeColor(color) {
    return typeof color === "string" && COLOR.test(color.trim()) && CSS.supports("color", color.trim()) ? color.trim() : null;
  }

  function agentColor(node, color) {
    // Through the CSSOM, and only a color: a custom property would take anything (a url() too).
    const safe = safeColor(color);
    if (safe !== null) node.style.setProperty("--agent-color", safe);
  }

  // -- routing ----------------------------------------------------------------------------------

  function route() {
    const parts = location.hash.replace(/^#\/?/, "").split("/");
    const view = ["sessions", "agents", "tasks", "server"].includes(parts[0]) ? parts[0] : "sessions";
    let sessionId = null;
    if (view === "sessions" && parts.length > 1 && parts.slice(1).join("/") !== "") {
      try {
        sessionId = decodeURIComponent(parts.slice(1).join("/"));
      } catch {
        sessionId = parts.slice(1).join("/"); // a malformed escape: looked up as written (and not found)
      }
    }
    return { view, sessionId };
  }

  function sessionHref(id) {
    return "#/sessions/" + encodeURIComponent(id);
  }

  function render() {
    if (!state.ready) return;
    const { view, sessionId } = route();
    for (const name of ["sessions", "agents", "tasks", "server"]) {
      $("view-" + name).hidden = name !== view;
    }
    for (const link of document.querySelectorAll("nav a[data-view]")) {
      if (link.dataset.view === view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    if (view === "sessions") {
      $("view-sessions").classList.toggle("has-open", sessionId !== null);
      if (sessionId !== null && (!state.open || state.open.id !== sessionId)) openSession(sessionId);
      if (sessionId === null) closeSession();
      renderSessions();
    } else if (view === "agents") {
      renderAgents();
    } else if (view === "tasks") {
      renderTasks();
    } else if (view === "server") {
      pollServer();
    }
  }

  window.addEventListener("hashchange", () => {
    render();
    if (!state.ready) return;
    // Focus goes to the heading of what is now shown, so the keyboard carries on from there.
    const { view, sessionId } = route();
    const heading = sessionId !== null ? $("session-title") : $(view + "-title");
    (heading || $("main")).focus({ preventScroll: sessionId === null });
  });

  // -- sessions ---------------------------------------------------------------------------------

  function activity(session) {
    return session.last_message_at || session.updated_at || session.created_at || "";
  }

  function sessionItem(session, current) {
    const li = el("li");
    if (state.fresh.has(session.id)) li.className = "fresh";
    const link = el("a", null, { href: sessionHref(session.id) });
    if (current) link.setAttribute("aria-current", "page");
    link.append(el("span", session.title || session.id, { class: "title" }));
    const count = Number(session.message_count || 0);
    link.append(el("span", `${count} message${count === 1 ? "" : "s"}`, { class: "count" }));
    let whenText = session.last_message_at ? "last message " + when(session.last_message_at)
      : "created " + when(session.created_at);
    if (state.unwatched.has(session.id)) whenText += " · not followed live";
    link.append(el("span", whenText, { class: "when" }));
    li.append(link);
    return li;
  }

  function renderSessions() {
    const list = $("sessions");
    const current = state.open ? state.open.id : null;
    // Newest activity first among the sessions loaded; pages come in the store's order (newest created first).
    const sorted = [...state.sessions.values()].sort((a, b) => (activity(a) < activity(b) ? 1 : activity(a) > activity(b) ? -1 : 0));
    list.replaceChildren(...sorted.map((s) => sessionItem(s, s.id === current)));
    $("sessions-empty").hidden = sorted.length > 0;
    $("sessions-more").hidden = state.sessionPages.done;
  }

  /**
   * Join a session to follow it live; returns whether it is followed. Past MAX_WATCHED, or the
   * server's own limit (rate_limited), a session is listed without being followed, unless it *must*
   * be (the open one): then the least active other session is left to make room.
   */
  async function watch(id, must) {
    if (state.watched.has(id)) return true;
    if (state.watched.size >= MAX_WATCHED && !(must && (await unwatchOne(id)))) {
      state.unwatched.add(id);
      return false;
    }
    for (let attempt = 0; ; attempt += 1) {
      state.watched.add(id);
      try {
        const data = await call("join", { session_id: id });
        state.unwatched.delete(id);
        mergeSession(data.session);
        return true;
      } catch (exc) {
        state.watched.delete(id);
        if (exc.code !== "rate_limited") throw exc;
        if (must && attempt === 0 && (await unwatchOne(id))) continue;
        state.unwatched.add(id);
        return false;
      }
    }
  }

  /** Leave the followed session with the oldest activity (never *keep* nor the open one); false if there is none. */
  async function unwatchOne(keep) {
    let victim = null;
    for (const id of state.watched) {
      if (id === keep || (state.open && state.open.id === id)) continue;
      if (victim === null || activity(state.sessions.get(id) || {}) < activity(state.sessions.get(victim) || {})) victim = id;
    }
    if (victim === null) return false;
    state.watched.delete(victim);
    state.unwatched.add(victim);
    try {
      await call("leave", { session_id: victim });
    } catch {
      // Gone, or no longer readable: either way this connection is not following it.
    }
    scheduleRender("sessions");
    return true;
  }

  function mergeSession(session) {
    const known = state.sessions.get(session.id);
    // A record read earlier must not undo a newer count that arrived with a message.
    if (known && Number(known.message_count || 0) > Number(session.message_count || 0)) return;
    state.sessions.set(session.id, session);
  }

  /**
   * The next page of a listing (sessions or tasks), or its first page again; each item goes to
   * keep(). A first page read again leaves the cursor where the pages read so far ended.
   */
  async function loadPage(event, size, pages, first, keep) {
    const payload = { limit: size };
    if (!first && pages.cursor) payload.cursor = pages.cursor;
    const page = await call(event, payload);
    for (const item of page) keep(item);
    if (!first || pages.cursor === null) {
      pages.cursor = page.length ? page[page.length - 1].id : pages.cursor;
      pages.done = page.length < size;
    }
    return page;
  }

  async function loadSessions(first) {
    const page = await loadPage("list_sessions", SESSION_PAGE, state.sessionPages, first, mergeSession);
    renderSessions();
    await Promise.all(page.map((s) => watch(s.id)));
    if (state.unwatched.size) scheduleRender("sessions");
  }

  $("sessions-more").addEventListener("click", () => loadSessions(false).catch(report));
  $("sessions-refresh").addEventListener("click", () => loadSessions(true).catch(report));

  $("new-session").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("new-session-title");
    const idInput = $("new-session-id");
    const title = input.value.trim();
    const id = idInput.value.trim();
    const payload = {};
    if (title) payload.title = title;
    if (id) payload.session_id = id;
    $("new-session-error").textContent = "";
    try {
      const session = await call("create_session", payload);
      mergeSession(session);
      input.value = "";
      idInput.value = "";
      await watch(session.id, true);
      location.hash = sessionHref(session.id);
    } catch (exc) {
      $("new-session-error").textContent = "Not created: " + exc.message;
    }
  });

  // -- one session ------------------------------------------------------------------------------

  function messageItem(m) {
    const li = el("li", null, { class: "message" });
    li.dataset.seq = String(m.seq);
    const agent = m.agent_id ? state.agents.get(m.agent_id) : null;
    if (agent) agentColor(li, agent.color);
    const article = el("article");
    const header = el("header");
    const who = agent ? `${agent.name || m.agent_id} (${m.role || "agent"})` : m.agent_id ? `${m.agent_id} (${m.role || "agent"})` : String(m.role || "user");
    header.append(el("span", who, { class: "who" }), timeEl(m.created_at), el("span", "#" + m.seq, { class: "seq" }));
    const content = el("p", null, { class: "content" });
    content.textContent = typeof m.content === "string" ? m.content : JSON.stringify(m.content);
    article.append(header, content);
    li.append(article);
    return li;
  }

  function nearBottom(log) {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  }

  function seqOf(node) {
    return Number(node.dataset.seq);
  }

  /** The newest seq shown in the open session, or 0. */
  function newestShown(open) {
    const last = $("messages").lastElementChild;
    return open && last ? seqOf(last) : 0;
  }

  /**
   * Put messages in the open session's log, in seq order, each once (by seq); returns how many were new.
   *
   * At most MAX_SHOWN stay: when the reader is at the newest, the oldest go (paging back brings them
   * again); when the reader is scrolled up or paging back, the newest go and the log is "detached":
   * it takes no newer message until the reader asks for the newest (the jump button).
   */
  function addMessages(messages, live) {
    const open = state.open;
    if (!open) return 0;
    const log = $("log");
    const list = $("messages");
    const stick = nearBottom(log);
    // The first message shown before: it stays where the reader sees it when older ones go in above.
    const anchor = list.firstElementChild;
    const anchorTop = anchor ? anchor.offsetTop : 0;
    let added = 0;
    let held = 0;
    let prepended = false;
    for (const m of messages) {
      const seq = Number(m.seq);
      if (m.session_id !== open.id || !Number.isSafeInteger(seq) || open.items.has(seq)) continue;
      const last = list.lastElementChild;
      // A detached log has a gap above the newest messages: one past it would be shown out of turn.
      if (open.detached && last && seq > seqOf(last)) { held += 1; continue; }
      const li = messageItem(m);
      open.items.set(seq, li);
      added += 1;
      if (!last || seqOf(last) < seq) {
        list.append(li); // the usual case: a live message goes last
        continue;
      }
      let after = list.firstElementChild;
      while (after && seqOf(after) < seq) after = after.nextElementSibling;
      if (after === list.firstElementChild) prepended = true;
      list.insertBefore(li, after);
    }
    let trimmedBottom = false;
    if (open.items.size > MAX_SHOWN) {
      if (!prepended && (stick || !live)) {
        // Following the newest: the oldest go, and can be paged back in.
        while (open.items.size > MAX_SHOWN) dropMessage(open, list.firstElementChild);
        open.next = String(seqOf(list.firstElementChild));
        open.done = false;
        $("older").hidden = false;
        $("log-start").hidden = true;
      } else {
        while (open.items.size > MAX_SHOWN) {
          held += 1;
          dropMessage(open, list.lastElementChild);
        }
        trimmedBottom = true;
      }
    }
    if (held) {
      open.detached = true;
      showJump();
    }
    if (!added) return 0;
    if (prepended && !live) {
      // Older history went in above: keep what the reader was looking at in place.
      if (anchor && anchor.isConnected) log.scrollTop += anchor.offsetTop - anchorTop;
    } else if (live && !stick) {
      showJump();
    } else if (!trimmedBottom) {
      log.scrollTop = log.scrollHeight;
    }
    return added;
  }

  function dropMessage(open, node) {
    open.items.delete(seqOf(node));
    node.remove();
  }

  function showJump() {
    const open = state.open;
    $("jump").textContent = open && open.detached ? "Newer messages not shown: show the newest ↓" : "New messages below ↓";
    $("jump").hidden = false;
  }

  function closeSession() {
    state.open = null;
    $("session").hidden = true;
  }

  async function openSession(id) {
    const open = { id, items: new Map(), next: null, done: false, loading: false, detached: false };
    state.open = open;
    $("messages").replaceChildren();
    $("session").hidden = false;
    $("jump").hidden = true;
    $("older").hidden = true;
    $("log-start").hidden = true;
    $("send-error").textContent = "";
    showSessionHeader(state.sessions.get(id) || { id });
    try {
      const followed = await watch(id, true);
      const session = await call("get_session", { session_id: id });
      mergeSession(session);
      if (state.open !== open) return;
      showSessionHeader(session);
      if (!followed) $("session-meta").textContent += " · not followed live (the server's limit of sessions per connection)";
      await loadOlder();
    } catch (exc) {
      if (state.open === open) $("session-meta").textContent = exc.code === "not_found" ? "No such session." : exc.message;
    }
  }

  function showSessionHeader(session) {
    $("session-title").textContent = session.title || session.id;
    const count = Number(session.message_count || 0);
    const parts = [`id ${session.id}`, `${count} message${count === 1 ? "" : "s"}`];
    if (session.created_at) parts.push("created " + when(session.created_at));
    $("session-meta").textContent = parts.join(" · ");
  }

  /** The next page of history, backwards from the oldest shown (newest first when none is). */
  async function loadOlder() {
    const open = state.open;
    if (!open || open.loading || open.done) return;
    open.loading = true;
    try {
      const cursor = open.next;
      const payload = { session_id: open.id, limit: PAGE, direction: "desc" };
      if (cursor !== null) payload.cursor = cursor;
      const page = await call("get_messages", payload);
      if (state.open !== open) return;
      // The oldest shown went meanwhile (a live session past MAX_SHOWN): this page would leave a gap.
      if (open.next !== cursor) return;
      open.next = page.pagination && page.pagination.next_cursor != null ? page.pagination.next_cursor : null;
      open.done = open.next === null;
      addMessages(page.items.slice().reverse(), false);
      $("older").hidden = open.done;
      $("log-start").hidden = !open.done;
    } finally {
      open.loading = false;
    }
    // A first page that does not fill the log cannot be scrolled: keep loading until it can.
    const log = $("log");
    if (state.open === open && !open.done && log.clientHeight > 0 && log.scrollHeight <= log.clientHeight) await loadOlder();
  }

  $("older").addEventListener("click", () => loadOlder().catch(report));
  // Infinite scroll backwards: reaching the top of the log loads the page before it.
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadOlder().catch(report);
  }, { root: $("log"), rootMargin: "200px 0px 0px 0px" }).observe($("older"));

  $("log").addEventListener("scroll", () => {
    if (nearBottom($("log")) && !(state.open && state.open.detached)) $("jump").hidden = true;
  });
  $("jump").addEventListener("click", () => {
    const log = $("log");
    $("jump").hidden = true;
    if (state.open && state.open.detached) {
      // Start again from the newest page, as when the session was opened.
      openSession(state.open.id).then(() => log.focus()).catch(report);
      return;
    }
    log.scrollTop = log.scrollHeight;
    log.focus();
  });

  $("send-content").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("send").requestSubmit();
    }
  });

  $("send").addEventListener("submit", async (event) => {
    event.preventDefault();
    const open = state.open;
    const box = $("send-content");
    const content = box.value;
    if (!open || !content.trim()) return;
    const payload = { session_id: open.id, content, role: $("send-role").value, message_uuid: newUuid() };
    const agentId = $("send-agent").value;
    if (agentId) payload.agent_id = agentId;
    const button = $("send-button");
    button.disabled = true;
    $("send-error").textContent = "";
    try {
      const stored = await call("send_message", payload);
      box.value = "";
      noteMessage(stored);
      if (state.open === open && open.detached) {
        await openSession(open.id); // the newest page, with this message at its end
      } else if (state.open === open) {
        addMessages([stored], false);
        const log = $("log");
        log.scrollTop = log.scrollHeight;
      }
    } catch (exc) {
      $("send-error").textContent = "Not sent: " + exc.message;
    } finally {
      button.disabled = false;
      box.focus();
    }
  });

  // -- live events ------------------------------------------------------------------------------

  function noteMessage(m) {
    const session = state.sessions.get(m.session_id);
    if (session && Number(m.seq) > Number(session.message_count || 0)) {
      // seq is dense: the newest seq is the message count.
      state.sessions.set(m.session_id, { ...session, message_count: m.seq, last_message_at: m.created_at });
    }
    state.fresh.add(m.session_id);
    if (state.open && state.open.id === m.session_id) showSessionHeader(state.sessions.get(m.session_id) || { id: m.session_id });
    scheduleRender("sessions");
  }

  socket.on("message", (m) => {
    if (state.away) state.missed += 1;
    noteMessage(m);
    if (state.open && state.open.id === m.session_id && addMessages([m], true)) announce(m);
  });

  // New messages are announced to screen readers at once, then at most once every ANNOUNCE_MS:
  // a burst is one "N more new messages".
  const ANNOUNCE_MS = 2000;
  const heard = { count: 0, timer: 0 };
  function announce(m) {
    if (heard.timer) {
      heard.count += 1;
      return;
    }
    const agent = m.agent_id ? state.agents.get(m.agent_id) : null;
    $("announce").textContent = `New message from ${agent ? agent.name || m.agent_id : m.agent_id || m.role || "user"}`;
    const quiet = () => {
      if (heard.count) {
        $("announce").textContent = `${heard.count} more new message${heard.count === 1 ? "" : "s"}`;
        heard.count = 0;
        heard.timer = setTimeout(quiet, ANNOUNCE_MS);
      } else {
        heard.timer = 0;
      }
    };
    heard.timer = setTimeout(quiet, ANNOUNCE_MS);
  }

  socket.on("task_updated", (task) => {
    if (state.away) state.missed += 1;
    keepTask(task);
    scheduleRender("tasks");
  });

  socket.on("context_updated", () => {
    if (state.away) state.missed += 1;
  });

  const pending = new Set();
  function scheduleRender(view) {
    // Many events in a burst make one redraw.
    if (pending.has(view)) return;
    pending.add(view);
    requestAnimationFrame(() => {
      pending.delete(view);
      if (route().view !== view) return;
      if (view === "sessions") renderSessions();
      if (view === "tasks") renderTasks();
    });
  }

  // -- agents -----------------------------------------------------------------------------------

  function iconName(path) {
    if (typeof path !== "string" || !path) return "";
    return path.split("/").pop();
  }

  function renderAgents() {
    const cards = [...state.agents.values()].map((agent) => {
      const li = el("li", null, { class: "card" });
      agentColor(li, agent.color);
      const title = el("h3");
      title.append(el("span", null, { class: "swatch", "aria-hidden": "true" }), document.createTextNode(agent.name || agent.id));
      li.append(title);
      if (agent.description) li.append(el("p", agent.description, { class: "subtle" }));
      const dl = el("dl");
      const row = (name, value) => {
        if (value === undefined || value === null || value === "") return;
        dl.append(el("dt", name), el("dd", value));
      };
      row("id", agent.id);
      row("color", agent.color);
      row("icon", iconName(agent.icon_path));
      if (Array.isArray(agent.capabilities)) row("capabilities", agent.capabilities.join(", "));
      if (Array.isArray(agent.skills)) row("skills", agent.skills.map((s) => (s && (s.name || s.id)) || "").filter(Boolean).join(", "));
      if ("is_active" in agent) row("active", agent.is_active ? "yes" : "no");
      row("version", agent.version);
      li.append(dl);
      return li;
    });
    $("agents").replaceChildren(...cards);
    $("agents-empty").hidden = cards.length > 0;
  }

  function fillAgentChoice() {
    const select = $("send-agent");
    const chosen = select.value;
    const options = [el("option", "(none)", { value: "" })];
    for (const agent of state.agents.values()) options.push(el("option", agent.name || agent.id, { value: agent.id }));
    select.replaceChildren(...options);
    select.value = state.agents.has(chosen) ? chosen : "";
  }

  async function loadAgents() {
    const cards = await call("list_agents", {});
    state.agents = new Map(cards.map((card) => [card.id, card]));
    fillAgentChoice();
  }

  // -- tasks ------------------------------------------------------------------------------------

  function statusText(status) {
    const message = status && status.message;
    if (message === undefined || message === null) return "";
    if (typeof message === "string") return message;
    if (Array.isArray(message.parts)) {
      return message.parts.map((p) => (p && typeof p.text === "string" ? p.text : "")).filter(Boolean).join("\n");
    }
    return JSON.stringify(message);
  }

  function taskTime(task) {
    return String((task.status && task.status.timestamp) || "");
  }

  /** Keep a task (a newer version replaces the older); past MAX_TASKS the oldest status changes go. */
  function keepTask(task) {
    state.tasks.set(task.id, task);
    if (state.tasks.size <= MAX_TASKS) return;
    const oldest = [...state.tasks.values()].sort((a, b) => taskTime(a).localeCompare(taskTime(b)));
    for (const old of oldest.slice(0, state.tasks.size - MAX_TASKS)) state.tasks.delete(old.id);
    state.taskPages.done = false;
  }

  function renderTasks() {
    const groups = new Map(TASK_STATES.map((s) => [s, []]));
    for (const task of state.tasks.values()) {
      const name = (task.status && task.status.state) || "unknown";
      if (!groups.has(name)) groups.set(name, []);
      groups.get(name).push(task);
    }
    const sections = [];
    for (const [name, tasks] of groups) {
      if (!tasks.length) continue;
      tasks.sort((a, b) => String(b.status && b.status.timestamp).localeCompare(String(a.status && a.status.timestamp)));
      const section = el("section", null, { class: "state-group", "data-state": name });
      const headingId = "tasks-state-" + sections.length;
      section.setAttribute("aria-labelledby", headingId);
      section.append(el("h3", `${name} (${tasks.length})`, { id: headingId }));
      const ul = el("ul");
      for (const task of tasks) {
        const li = el("li", null, { class: "task" });
        li.dataset.id = task.id;
        li.append(el("div", task.id, { class: "id" }));
        const meta = el("div", null, { class: "subtle" });
        const session = state.sessions.get(task.context_id);
        meta.append(document.createTextNode("session "));
        meta.append(el("a", session ? session.title || task.context_id : task.context_id, { href: sessionHref(task.context_id) }));
        meta.append(document.createTextNode(" · "), timeEl(task.status && task.status.timestamp));
        li.append(meta);
        const text = statusText(task.status);
        if (text) li.append(el("p", text));
        ul.append(li);
      }
      section.append(ul);
      sections.push(section);
    }
    $("tasks").replaceChildren(...sections);
    $("tasks-empty").hidden = sections.length > 0;
    $("tasks-more").hidden = state.taskPages.done;
  }

  async function loadTasks(first) {
    await loadPage("list_tasks", TASK_PAGE, state.taskPages, first, keepTask);
    scheduleRender("tasks");
  }

  $("tasks-more").addEventListener("click", () => loadTasks(false).catch(report));
  $("tasks-refresh").addEventListener("click", () => loadTasks(true).catch(report));

  // -- server numbers ---------------------------------------------------------------------------

  /** Prometheus text to {name: [{labels, value}]}. */
  function parseMetrics(text) {
    const out = {};
    for (const line of text.split("\n")) {
      const m = /^([A-Za-z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
      (out[m[1]] = out[m[1]] || []).push({ labels, value: Number(m[3]) });
    }
    return out;
  }

  function metric(samples, name, labels) {
    const found = (samples[name] || []).filter((s) => Object.entries(labels || {}).every(([k, v]) => s.labels[k] === v));
    return found.length ? found.reduce((sum, s) => sum + s.value, 0) : null;
  }

  function bytes(n) {
    if (n === null) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
  }

  function count(n) {
    return n === null ? "–" : Math.round(n).toLocaleString();
  }

  let polling = false;
  async function pollServer() {
    if (polling || !state.ready) return;
    polling = true;
    const numbers = [];
    try {
      const health = await fetch("/healthz", { cache: "no-store" }).then((r) => (r.ok ? r.json() : null)).catch(() => null);
      numbers.push(["health", health && health.ok ? "healthy" : "not answering"]);
      if (health && health.backend) numbers.push(["backend", health.backend]);
      const response = tokenIsAdmin() ? await fetch("/metrics", { headers: authHeaders(), cache: "no-store" }) : null;
      if (response === null || response.status === 403) {
        numbers.push(["metrics", "not shown: /metrics needs an admin token, and this token is not one"]);
      } else if (response.ok) {
        const samples = parseMetrics(await response.text());
        const at = performance.now();
        const written = metric(samples, "chatmdb_messages_written_total");
        const commits = metric(samples, "chatmdb_commit_seconds_count");
        const before = state.metrics;
        let writes = null;
        let commitRate = null;
        if (before && at > before.at) {
          const seconds = (at - before.at) / 1000;
          if (written !== null && before.written !== null) writes = Math.max(0, written - before.written) / seconds;
          if (commits !== null && before.commits !== null) commitRate = Math.max(0, commits - before.commits) / seconds;
        }
        state.metrics = { at, written, commits };
        const messages = metric(samples, "chatmdb_store_records", { kind: "messages" });
        const ratio = metric(samples, "chatmdb_store_map_used_ratio");
        numbers.push(
          ["messages", count(messages)],
          ["sessions", count(metric(samples, "chatmdb_store_records", { kind: "sessions" }))],
          ["agents", count(metric(samples, "chatmdb_store_records", { kind: "agents" }))],
          ["tasks", count(metric(samples, "chatmdb_store_records", { kind: "tasks" }))],
          ["messages written/s", writes === null ? "measuring…" : writes.toFixed(1)],
          ["commits/s", commitRate === null ? "measuring…" : commitRate.toFixed(1)],
          ["map used", ratio === null ? "– (no map on this backend)" : `${(ratio * 100).toFixed(2)} %`],
          ["map size", bytes(metric(samples, "chatmdb_store_map_bytes"))],
          ["data in use", bytes(metric(samples, "chatmdb_store_used_bytes"))],
          ["files on disk", bytes(metric(samples, "chatmdb_store_file_bytes"))],
          ["clients connected", count(metric(samples, "chatmdb_connected_clients"))],
          ["limits reached", count(metric(samples, "chatmdb_limits_reached_total") || 0)],
        );
      } else {
        numbers.push(["metrics", `unavailable (HTTP ${response.status})`]);
      }
    } catch (exc) {
      numbers.push(["metrics", "unavailable: " + exc.message]);
    } finally {
      polling = false;
    }
    const dl = $("numbers");
    dl.replaceChildren(...numbers.map(([name, value]) => {
      const div = el("div");
      div.dataset.name = name;
      div.append(el("dt", name), el("dd", value));
      return div;
    }));
  }

  // -- connection, token, recovery --------------------------------------------------------------

  function report(exc) {
    if (exc && exc.code === "unauthorized") return;
    setStatus(String((exc && exc.message) || exc), "bad");
  }

  function showLogin(message) {
    state.ready = false;
    for (const name of ["sessions", "agents", "tasks", "server"]) $("view-" + name).hidden = true;
    $("numbers").replaceChildren();
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").focus();
    setStatus("token needed", "bad");
  }

  function forgetToken() {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    $("forget").hidden = true;
  }

  $("forget").addEventListener("click", () => {
    forgetToken();
    socket.disconnect();
    showLogin("The token is forgotten: this tab no longer holds it.");
  });

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, state.token);
    $("token").value = ""; // kept in session storage only, not in the form
    $("forget").hidden = false;
    $("login-error").textContent = "";
    setStatus("connecting…");
    socket.connect();
  });

  /**
   * After a reconnection without recovery: join every followed session again, and catch the open
   * one up from the newest seq it shows (join {after_seq}); returns how many messages were missed.
   */
  async function catchUp() {
    let missed = 0;
    const open = state.open;
    if (open) missed += await catchUpOpen(open);
    const others = [...state.watched].filter((id) => !open || id !== open.id);
    for (let i = 0; i < others.length; i += JOIN_BATCH) {
      const counts = await Promise.all(others.slice(i, i + JOIN_BATCH).map(async (id) => {
        const before = Number((state.sessions.get(id) || {}).message_count || 0);
        try {
          const data = await call("join", { session_id: id });
          mergeSession(data.session);
          return Math.max(0, Number(data.session.message_count || 0) - before);
        } catch (exc) {
          // Gone, no longer readable, or past a lower limit of the restarted server: not followed.
          state.watched.delete(id);
          if (exc.code === "rate_limited") state.unwatched.add(id);
          else if (exc.code !== "not_found" && exc.code !== "forbidden") throw exc;
          return 0;
        }
      }));
      missed += counts.reduce((a, b) => a + b, 0);
    }
    scheduleRender("sessions");
    return missed;
  }

  async function catchUpOpen(open) {
    const before = Number((state.sessions.get(open.id) || {}).message_count || 0);
    let after = newestShown(open);
    if (!after || open.detached) {
      // Nothing shown yet, or not the newest: the newest page is all there is to catch up with.
      state.watched.delete(open.id);
      await openSession(open.id);
      return Math.max(0, Number((state.sessions.get(open.id) || {}).message_count || 0) - before);
    }
    state.watched.add(open.id);
    let missed = 0;
    for (let pages = 0; ; pages += 1) {
      if (pages === CATCH_UP_PAGES) {
        // Too many to page through: show the newest page instead (older ones are a scroll away).
        state.watched.delete(open.id);
        await openSession(open.id);
        return Math.max(missed, Number((state.sessions.get(open.id) || {}).message_count || 0) - before);
      }
      const data = await call("join", { session_id: open.id, after_seq: after, limit: PAGE * 2 });
      mergeSession(data.session);
      if (state.open !== open) return missed;
      missed += addMessages(data.missed, true);
      data.missed.forEach(noteMessage);
      if (!data.missed.length || !data.has_more) return missed;
      after = Number(data.missed[data.missed.length - 1].seq);
    }
  }

  socket.on("connect", async () => {
    $("login").hidden = true;
    try {
      if (!state.ready) {
        // A load cut short by a lost connection, or a token given again, left joins that this
        // connection does not have: everything is joined anew, the open session too.
        state.watched.clear();
        state.unwatched.clear();
        state.open = null;
        setStatus("connected, loading…");
        await loadAgents();
        state.ready = true;
        await loadSessions(true);
        await loadTasks(true);
        setStatus("connected", "ok");
        render();
      } else if (socket.recovered) {
        // The server replayed what this connection missed before the connect event.
        const n = state.missed;
        state.away = false;
        setStatus(`reconnected, recovered ${n} missed event${n === 1 ? "" : "s"}`, "ok");
      } else {
        state.away = false;
        const n = await catchUp();
        setStatus(`reconnected, caught up with join (${n} missed message${n === 1 ? "" : "s"})`, "ok");
      }
      state.missed = 0;
    } catch (exc) {
      report(exc);
    }
  });

  socket.on("disconnect", (reason) => {
    if (!state.ready) return;
    state.away = true;
    state.missed = 0;
    setStatus("disconnected, reconnecting…", "bad");
    // The server sent a goodbye: the client does not come back by itself then.
    if (reason === "io server disconnect") socket.connect();
  });

  socket.on("connect_error", (err) => {
    if (err && err.message === "unauthorized") {
      const hadToken = Boolean(state.token);
      forgetToken();
      // Stop here instead of offering the same refused token again.
      socket.disconnect();
      const why = err.data && typeof err.data.message === "string" ? err.data.message : "";
      showLogin(hadToken ? `That token was refused${why ? ": " + why : "."}` : "");
      return;
    }
    setStatus(state.ready ? "disconnected, reconnecting…" : "cannot reach the server, retrying…", "bad");
  });

  setInterval(() => {
    if (document.hidden || !socket.connected || !state.ready) return;
    if (route().view === "server") pollServer();
  }, POLL_MS);
  setInterval(() => {
    if (document.hidden || !socket.connected || !state.ready) return;
    loadSessions(true).catch(report);
    loadTasks(true).catch(report);
  }, REFRESH_MS);

  $("forget").hidden = !state.token;
  setStatus("connecting…");
  socket.connect();
})();
