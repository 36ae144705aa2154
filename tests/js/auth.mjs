// Connecting with no token, a wrong token and the right one.
// Usage: node auth.mjs URL TOKEN; prints one JSON object.
import { connect, deadline, run } from "./_common.mjs";

const [url, token] = process.argv.slice(2);

async function attempt(auth) {
  try {
    const socket = await connect(url, undefined, { auth, transports: ["websocket"] });
    const ack = await socket.emitWithAck("list_agents", {});
    socket.close();
    return { connected: true, ok: ack.ok };
  } catch (err) {
    return { connected: false, message: err.message, data: err.data ?? null };
  }
}

run(async () => {
  const results = {};
  deadline(30000, results);
  results.none = await attempt({});
  results.wrong = await attempt({ token: `${token}-wrong` });
  results.not_a_string = await attempt({ token: 12345 });
  results.right = await attempt({ token });
  return results;
});
