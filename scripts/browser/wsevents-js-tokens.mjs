// wsevents.js with tokens (issue 25), in Node (its WebSocket, undici's, is the
// standard one: `node --experimental-websocket` on Node 20, built in from 22) against a
// real `wsevents serve --jwt-secret-file`: getToken on connect, `forbidden` rejecting
// one request only, the refresh before `exp`, 4001 ending the client, 4003 bringing it
// back with a new token and its positions. HS256 tokens are signed here (node:crypto).
//
//   node --experimental-websocket scripts/browser/wsevents-js-tokens.mjs target/debug/wsevents
//
// Exits 0 when every check passed, 1 otherwise; the server is stopped by PID.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

const bin = process.argv[2];
if (!bin || typeof WebSocket === "undefined") {
  console.error("usage: node --experimental-websocket wsevents-js-tokens.mjs PATH/TO/wsevents");
  process.exit(2);
}
const { WseventsClient } = await import(new URL("../../crates/wsevents-cli/assets/wsevents.js", import.meta.url));

const SECRET = "wsevents js tests: a shared secret of 32+ bytes";
const b64 = (x) => Buffer.from(typeof x === "string" ? x : JSON.stringify(x)).toString("base64url");
const now = () => Math.floor(Date.now() / 1000);
function token(sub, subscribe, publish, lifetime = 3600) {
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: now() + lifetime, subscribe, publish })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

// The server: a free port, from its banner.
const dir = mkdtempSync(join(tmpdir(), "wsevents-js-"));
writeFileSync(join(dir, "secret"), SECRET + "\n");
const server = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--jwt-secret-file", join(dir, "secret"), "--jwt-expiry-grace", "0"], {
  stdio: ["ignore", "pipe", "inherit"],
});
const addr = await new Promise((resolve, reject) => {
  const lines = createInterface({ input: server.stdout });
  lines.once("line", (line) => {
    const m = /listening on (\S+)/.exec(line);
    m ? resolve(m[1]) : reject(new Error(line));
  });
  server.once("exit", (code) => reject(new Error(`serve exited ${code}`)));
});
const url = `ws://${addr}/pubsub`;

// Events of a client, awaited one by one (20 s at most each).
function recorder(client) {
  const seen = [];
  const waiting = [];
  for (const type of ["open", "close", "subscribed", "publication", "error", "unsubscribed"]) {
    client.addEventListener(type, (e) => {
      seen.push({ type, ...e.detail });
      for (const w of waiting.splice(0)) w();
    });
  }
  return {
    seen,
    async until(f, what) {
      const deadline = Date.now() + 20000;
      for (;;) {
        const found = seen.find(f);
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`not seen: ${what}: ${JSON.stringify(seen)}`);
        await new Promise((r) => {
          waiting.push(r);
          setTimeout(r, 200);
        });
      }
    },
  };
}

let failed = 0;
async function check(name, f) {
  try {
    await f();
    console.log(`ok  ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e.stack || e}`);
  }
}

await check("getToken on connect; forbidden rejects that request only", async () => {
  let asked = 0;
  const client = new WseventsClient(url, { getToken: async () => (asked++, token("alice", ["news"], ["news"])) });
  await client.subscribe("news");
  await assert.rejects(client.subscribe("admin"), (e) => e.code === "forbidden");
  await assert.rejects(client.publish("admin", "x"), (e) => e.code === "forbidden");
  const { offset } = await client.publish("news", "hello");
  assert.equal(offset, 1);
  assert.equal(asked, 1);
  client.close();
});

await check("the token is refreshed before exp; the connection stays", async () => {
  let asked = 0;
  const client = new WseventsClient(url, { getToken: async () => (asked++, token("alice", ["r"], ["r"], 3)) });
  const events = recorder(client);
  await client.subscribe("r");
  // A witness with the same lifetime that never refreshes: its close marks the exp.
  const witness = new WebSocket(url, "wsevents.v1");
  const code = await new Promise((resolve) => {
    witness.onopen = () => witness.send(JSON.stringify({ id: 1, op: "connect", token: token("bob", [], [], 3) }));
    witness.onclose = (e) => resolve(e.code);
  });
  assert.equal(code, 4003);
  await client.publish("r", "still here");
  await events.until((e) => e.type === "publication" && e.data === "still here", "the publication");
  assert.ok(asked >= 2, `getToken asked ${asked} times`);
  assert.equal(events.seen.filter((e) => e.type === "close").length, 0);
  client.close();
});

await check("an expired token: 4003, then back with a new token and the missed publications", async () => {
  let asked = 0;
  const client = new WseventsClient(url, {
    initialDelay: 20,
    getToken: async () => {
      const n = asked++;
      if (n === 1) throw new Error("the token service is down");
      return token("alice", ["x"], ["x"], n === 0 ? 2 : 3600);
    },
  });
  const events = recorder(client);
  await client.subscribe("x");
  await events.until((e) => e.type === "error" && e.code === "token", "getToken's failure");
  const close = await events.until((e) => e.type === "close", "the close");
  assert.equal(close.code, 4003);
  assert.equal(close.willReconnect, true);
  const other = new WseventsClient(url, { getToken: async () => token("ops", [], ["x"]) });
  await other.publish("x", "while away");
  other.close();
  await events.until((e) => e.type === "publication" && e.data === "while away", "the missed publication");
  assert.ok(events.seen.some((e) => e.type === "subscribed" && e.since), "resubscribed from its position");
  client.close();
});

await check("a refused token: 4001, for good", async () => {
  const client = new WseventsClient(url, { getToken: async () => "not.a.token" });
  const events = recorder(client);
  const publishing = client.publish("news", "never");
  const close = await events.until((e) => e.type === "close", "the close");
  assert.equal(close.code, 4001);
  assert.equal(close.willReconnect, false);
  await assert.rejects(publishing, (e) => e.code === "closed_for_good");
  assert.ok(events.seen.some((e) => e.type === "error" && e.code === "unauthorized"));
});

server.kill("SIGTERM");
rmSync(dir, { recursive: true, force: true });
console.log(failed ? `${failed} failed` : "all passed");
process.exit(failed ? 1 : 0);
