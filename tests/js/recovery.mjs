// Connection state recovery with the official client.
// Usage: node recovery.mjs URL SESSION_ID [TOKEN]   (CHATMDB_TRANSPORT=polling for long-polling)
// Prints {"phase":"away"} when its transport is closed and the missed messages are sent,
// waits for a line on stdin (the test may restart the server meanwhile), reconnects,
// and prints one JSON object with what it saw.
import { createInterface } from "node:readline";
import { connect, deadline, run, waitUntil } from "./_common.mjs";

const [url, sid, token] = process.argv.slice(2);
const transports = [process.env.CHATMDB_TRANSPORT || "websocket"];

function nextLine() {
  const rl = createInterface({ input: process.stdin });
  return new Promise((resolve) => rl.once("line", (line) => { rl.close(); resolve(line); }));
}

run(async () => {
  const results = {};
  deadline(60000, results);
  // No automatic reconnection: the scenario decides when to come back.
  const subject = await connect(url, token, { reconnection: false, transports });
  const sender = await connect(url, token, { transports: ["websocket"] });
  const seen = [];
  subject.on("message", (message, offset) => seen.push({ seq: message.seq, content: message.content, offset: offset ?? null }));
  results.first_connect_recovered = Boolean(subject.recovered);
  results.first_id = subject.id;
  await subject.emitWithAck("join", { session_id: sid });
  await sender.emitWithAck("join", { session_id: sid });

  await sender.emitWithAck("send_message", { session_id: sid, content: "before" });
  await waitUntil(() => seen.length === 1);

  subject.io.engine.close(); // a lost transport, as on a flaky network
  await waitUntil(() => !subject.connected);
  for (const content of ["away 1", "away 2", "away 3"]) {
    const ack = await sender.emitWithAck("send_message", { session_id: sid, content });
    if (!ack.ok) throw new Error(`send failed: ${JSON.stringify(ack)}`);
  }
  sender.close();
  console.log(JSON.stringify({ phase: "away" }));
  await nextLine();

  subject.connect();
  await waitUntil(() => subject.connected, 20000);
  results.recovered = Boolean(subject.recovered);
  results.same_id = subject.id === results.first_id;
  results.seen_at_connect = seen.slice();
  if (!subject.recovered) {
    const join = await subject.emitWithAck("join", { session_id: sid, after_seq: 1 });
    results.catch_up = join;
  }

  // Still (or again) in the room: a new message arrives live.
  const other = await connect(url, token, { transports: ["websocket"] });
  await other.emitWithAck("send_message", { session_id: sid, content: "after" });
  await waitUntil(() => seen.some((m) => m.content === "after"));
  results.seen = seen;
  other.close();
  subject.close();
  return results;
});
