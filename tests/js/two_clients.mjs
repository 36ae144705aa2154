// Two clients in a session, retries, catching up with join, bad payloads and an oversized message.
// Usage: node two_clients.mjs URL [TOKEN]; prints one JSON object.
import { randomUUID } from "node:crypto";
import { connect, deadline, run, waitUntil } from "./_common.mjs";

const [url, token] = process.argv.slice(2);

run(async () => {
  const results = {};
  deadline(40000, results);
  const alice = await connect(url, token);
  const bob = await connect(url, token, { transports: ["websocket"] });
  const received = [];
  const aliceReceived = [];
  bob.on("message", (m) => received.push(m));
  alice.on("message", (m) => aliceReceived.push(m));

  const created = await alice.emitWithAck("create_session", { title: "js" });
  const sid = created.data.id;
  results.session = created.data;
  results.joins = [
    await alice.emitWithAck("join", { session_id: sid }),
    await bob.emitWithAck("join", { session_id: sid }),
  ];

  const uuid = randomUUID();
  results.first = await alice.emitWithAck("send_message", { session_id: sid, content: "hello", message_uuid: uuid });
  results.retry = await alice.emitWithAck("send_message", { session_id: sid, content: "hello", message_uuid: uuid });
  results.second = await alice.emitWithAck("send_message", { session_id: sid, content: "second" });
  await waitUntil(() => received.some((m) => m.message_uuid === results.second.data.message_uuid));
  results.received = received.slice();

  const late = await connect(url, token);
  results.catch_up = await late.emitWithAck("join", { session_id: sid, after_seq: 1 });
  results.history = await late.emitWithAck("get_messages", { session_id: sid, limit: 1, direction: "asc" });
  late.close();

  results.bad = {
    no_args: await alice.emitWithAck("send_message"),
    string: await alice.emitWithAck("send_message", "hello"),
    two_args: await alice.emitWithAck("send_message", { session_id: sid, content: "x" }, 2),
    wrong_type: await alice.emitWithAck("send_message", { session_id: sid, content: 42 }),
    unknown_session: await alice.emitWithAck("send_message", { session_id: randomUUID(), content: "x" }),
    join_missing: await alice.emitWithAck("join", { session_id: randomUUID() }),
    join_bad_seq: await alice.emitWithAck("join", { session_id: sid, after_seq: "1" }),
    get_messages_bad_limit: await alice.emitWithAck("get_messages", { session_id: sid, limit: 0 }),
    unknown_event: await alice.emitWithAck("no_such_event", {}),
  };

  const big = "x".repeat(1024 * 1024 + 1024);
  results.too_large = {};
  for (const transport of ["polling", "websocket"]) {
    const socket = await connect(url, token, { transports: [transport] });
    const ack = await socket.emitWithAck("send_message", { session_id: sid, content: big });
    const after = await socket.emitWithAck("send_message", { session_id: sid, content: `after ${transport}` });
    results.too_large[transport] = { ack, after, connected: socket.connected };
    socket.close();
  }
  await waitUntil(() => received.length >= 4 && aliceReceived.length >= 2);
  // The sender is never sent its own messages: it only got the two sent by the other sockets.
  results.alice_received = aliceReceived.map((m) => m.content);
  results.final_count = (await bob.emitWithAck("get_session", { session_id: sid })).data.message_count;
  alice.close();
  bob.close();
  return results;
});
