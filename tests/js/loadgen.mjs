// Load generator for the gateway benchmark: the official socket.io-client in one node process,
// so the clients do not take the server's CPU the way Python clients on the same cores would.
//
// Usage: node loadgen.mjs URL CLIENTS SESSIONS WARMUP_S SECONDS RATE OUT_JSON [TOKEN]
//   RATE 0: closed loop (each client sends its next message when the last is acked);
//   RATE > 0: open loop, RATE messages per second offered in all, spread evenly over the clients.
// Every client joins one of SESSIONS sessions (created here) and sends into it over WebSocket;
// every other member of the session must receive each acked message exactly once.
// Prints "window-start" and "window-end" lines when the measured window opens and closes (the
// caller samples the server's CPU then), then one JSON line of results; writes the acked messages
// (session, uuid, seq) to OUT_JSON for the caller to check against the database.
import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { io } from "socket.io-client";

const [url, clientsArg, sessionsArg, warmupArg, secondsArg, rateArg, outPath, token] = process.argv.slice(2);
const CLIENTS = Number(clientsArg), SESSIONS = Number(sessionsArg);
const WARMUP = Number(warmupArg) * 1000, SECONDS = Number(secondsArg) * 1000, RATE = Number(rateArg);
const PAD = "x".repeat(180);
const MAX_OUTSTANDING = 1000; // per client, open loop: a server that falls behind is measured, not buried

const hard = setTimeout(() => { console.log(JSON.stringify({ error: "load generator timed out" })); process.exit(1); },
  WARMUP + SECONDS + 120000);
hard.unref();

function connect() {
  const socket = io(url, { transports: ["websocket"], forceNew: true, reconnection: false, auth: token ? { token } : {} });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

async function call(socket, event, payload) {
  const ack = await socket.timeout(60000).emitWithAck(event, payload);
  if (!ack || !ack.ok) throw new Error(`${event} failed: ${JSON.stringify(ack).slice(0, 300)}`);
  return ack.data;
}

function quantiles(values) {
  if (!values.length) return null;
  const v = Float64Array.from(values).sort();
  const q = (p) => v[Math.min(v.length - 1, Math.floor(p * v.length))];
  return { n: v.length, p50: q(0.5), p90: q(0.9), p99: q(0.99), max: v[v.length - 1] };
}

async function main() {
  const sockets = [];
  for (let i = 0; i < CLIENTS; i++) sockets.push(await connect());
  const sessionIds = [];
  for (let s = 0; s < SESSIONS; s++) sessionIds.push((await call(sockets[0], "create_session", { title: `load ${s}` })).id);
  const received = sockets.map(() => new Map()); // client -> "session|uuid" -> count
  const deliveryMs = []; // send to arrival at another member, in the measured window
  let windowStart = Infinity, windowEnd = Infinity;
  sockets.forEach((socket, i) => {
    socket.on("message", (m) => {
      const now = performance.now();
      const key = `${m.session_id}|${m.message_uuid}`;
      received[i].set(key, (received[i].get(key) || 0) + 1);
      const sentAt = Number(String(m.content).split("|", 1)[0]);
      if (sentAt >= windowStart && now <= windowEnd) deliveryMs.push(now - sentAt);
    });
  });
  for (let i = 0; i < CLIENTS; i++) await call(sockets[i], "join", { session_id: sessionIds[i % SESSIONS] });

  const t0 = performance.now();
  windowStart = t0 + WARMUP;
  windowEnd = windowStart + SECONDS;
  const acked = []; // [session, uuid, seq, sender]
  const latencies = [];
  let inWindow = 0, failures = 0, startPrinted = false, endPrinted = false;
  const mark = () => {
    const now = performance.now();
    if (!startPrinted && now >= windowStart) { startPrinted = true; console.log("window-start"); }
    if (!endPrinted && now >= windowEnd) { endPrinted = true; console.log("window-end"); }
  };
  const ticker = setInterval(mark, 5);

  async function sendOne(i) {
    const sid = sessionIds[i % SESSIONS], uuid = randomUUID();
    const start = performance.now();
    const content = `${start}|${PAD}`; // the send time, for the members' delivery latency
    const ack = await sockets[i].timeout(60000).emitWithAck("send_message", { session_id: sid, content, message_uuid: uuid });
    const end = performance.now();
    if (!ack || !ack.ok || ack.data.message_uuid !== uuid) { failures++; return; }
    acked.push([sid, uuid, ack.data.seq, i]);
    if (start >= windowStart && end <= windowEnd) { latencies.push(end - start); inWindow++; }
  }

  if (RATE <= 0) {
    await Promise.all(sockets.map(async (_, i) => { while (performance.now() < windowEnd) await sendOne(i); }));
  } else {
    const interval = (1000 * CLIENTS) / RATE; // ms between two sends of one client
    await Promise.all(sockets.map((_, i) => new Promise((resolve) => {
      let outstanding = 0, next = performance.now() + (interval * i) / CLIENTS;
      const pending = [];
      const tick = () => {
        const now = performance.now();
        while (next <= now && now < windowEnd) {
          next += interval;
          if (outstanding >= MAX_OUTSTANDING) { failures++; continue; }
          outstanding++;
          pending.push(sendOne(i).finally(() => { outstanding--; }));
        }
        if (now >= windowEnd) { Promise.all(pending).then(resolve); return; }
        setTimeout(tick, Math.max(0, Math.min(next - now, 50)));
      };
      tick();
    })));
  }
  clearInterval(ticker);
  mark();

  // Every other member of a session receives each acked message exactly once.
  const members = sessionIds.map((_, s) => sockets.map((_, i) => i).filter((i) => i % SESSIONS === s));
  const deadline = performance.now() + 30000;
  const expectedFor = (i) => acked.filter(([sid, , , sender]) => sid === sessionIds[i % SESSIONS] && sender !== i);
  let missing = 0, duplicates = 0, foreign = 0;
  for (;;) {
    missing = 0;
    for (let i = 0; i < CLIENTS; i++) for (const [sid, uuid] of expectedFor(i)) if (!received[i].has(`${sid}|${uuid}`)) missing++;
    if (missing === 0 || performance.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  await new Promise((r) => setTimeout(r, 200)); // a duplicate would arrive right behind the last message
  let deliveries = 0;
  for (let i = 0; i < CLIENTS; i++) {
    const want = new Set(expectedFor(i).map(([sid, uuid]) => `${sid}|${uuid}`));
    deliveries += want.size;
    for (const [key, count] of received[i]) {
      if (!want.has(key)) foreign++;
      else if (count > 1) duplicates += count - 1;
    }
  }
  writeFileSync(outPath, JSON.stringify(acked.map(([sid, uuid, seq]) => [sid, uuid, seq])));
  for (const socket of sockets) socket.close();
  return {
    clients: CLIENTS, sessions: SESSIONS, rate: RATE, seconds: SECONDS / 1000,
    acked: acked.length, acked_in_window: inWindow, acked_per_s: inWindow / (SECONDS / 1000),
    ack_ms: quantiles(latencies), delivery_ms: quantiles(deliveryMs), failures, deliveries, missing, duplicates, foreign,
  };
}

main().then(
  (r) => { console.log(JSON.stringify(r)); process.exit(0); },
  (err) => { console.log(JSON.stringify({ error: String(err && err.stack || err) })); process.exit(1); },
);
