// Helpers for the scenarios run by tests/gateway/test_js_client.py with the official client.
import { io } from "socket.io-client";

export const WAIT_MS = 10000;

// Fail the whole scenario (exit 1, JSON on stdout) if it has not finished in time.
export function deadline(ms, results) {
  const timer = setTimeout(() => {
    console.log(JSON.stringify({ error: `scenario did not finish within ${ms} ms`, results }));
    process.exit(1);
  }, ms);
  timer.unref();
}

export function connect(url, token, extra = {}) {
  const socket = io(url, {
    forceNew: true,
    reconnection: false,
    auth: token ? { token } : {},
    // At-least-once delivery from client to server: resend until acked.
    ackTimeout: WAIT_MS,
    retries: 3,
    ...extra,
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("connect timed out")), WAIT_MS);
    socket.once("connect", () => { clearTimeout(timer); resolve(socket); });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      socket.close();
      reject(err);
    });
  });
}

// Poll a condition, bounded.
export async function waitUntil(condition, ms = WAIT_MS) {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

export function run(main) {
  main().then(
    (results) => { console.log(JSON.stringify(results)); process.exit(0); },
    (err) => { console.log(JSON.stringify({ error: String(err && err.stack || err) })); process.exit(1); },
  );
}
