// wsevents.js's client rules against a scripted server, in Node, without a browser or a
// socket: a fake WebSocket records what the client sends and lets each test say what
// the server answers, including what a real server rarely does (holes, repeats, another
// epoch, `unavailable`, a permanent close code). Run by scripts/browser-test:
//
//   node --test scripts/browser/wsevents-unit.mjs
import assert from "node:assert/strict";
import { test } from "node:test";

// The fake: every `new WebSocket` is kept in `sockets`; a test drives it with open(),
// recv(), drop().
const sockets = [];
class FakeWebSocket {
  static OPEN = 1;
  constructor(url, protocol) {
    this.url = url;
    this.protocol = protocol;
    this.readyState = 0;
    this.sent = [];
    sockets.push(this);
  }
  send(text) {
    assert.equal(this.readyState, 1, "send on a socket that is not open");
    this.sent.push(JSON.parse(text));
  }
  close(code = 1000, reason = "") {
    this.readyState = 3;
    this.closedWith = code;
    setTimeout(() => this.onclose && this.onclose({ code, reason, wasClean: true }), 0);
  }
  open() {
    this.readyState = 1;
    this.onopen && this.onopen({});
  }
  recv(msg) {
    this.onmessage && this.onmessage({ data: JSON.stringify(msg) });
  }
  drop(code = 1006) {
    this.readyState = 3;
    this.onclose && this.onclose({ code, reason: "", wasClean: false });
  }
  last() {
    return this.sent[this.sent.length - 1];
  }
}
globalThis.WebSocket = FakeWebSocket;
const { WseventsClient, PROTOCOL } = await import("../../crates/wsevents-cli/assets/wsevents.js");

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const until = async (fn, what) => {
  for (let i = 0; i < 200; i++) {
    if (fn()) return;
    await sleep(5);
  }
  throw new Error(`never: ${what}`);
};
const URLS = ["ws://a.test/pubsub", "ws://b.test/pubsub"];
const OPTIONS = { initialDelay: 20, maxDelay: 80, stableAfter: 1000 };

// A client with every event recorded, and its first socket open.
function start(options = {}) {
  sockets.length = 0;
  const client = new WseventsClient(URLS, { ...OPTIONS, ...options });
  const events = [];
  for (const type of ["open", "close", "subscribed", "publication", "error"]) {
    client.addEventListener(type, (e) => events.push({ type, ...e.detail }));
  }
  const ws = sockets[0];
  ws.open();
  return { client, events, ws, of: (type) => events.filter((e) => e.type === type) };
}
const offsets = (events) => events.filter((e) => e.type === "publication").map((e) => e.offset);
const pub = (offset, extra = {}) => ({ op: "pub", topic: "t", epoch: "e1", offset, data: `m${offset}`, ...extra });

test("offers wsevents.v1 and tries the URLs in turn", () => {
  const { client, ws } = start();
  assert.equal(ws.protocol, PROTOCOL);
  assert.equal(ws.url, URLS[0]);
  client.close();
});

test("handles kept + 1, drops repeats, and turns a hole into a recovery from the kept position", () => {
  const { client, ws, events } = start();
  client.subscribe("t");
  const sub = ws.last();
  assert.deepEqual(sub, { id: sub.id, op: "subscribe", topic: "t" });
  ws.recv({ id: sub.id, op: "subscribed", topic: "t", recovered: false, epoch: "e1", offset: 5 });
  ws.recv(pub(6));
  ws.recv(pub(7));
  ws.recv(pub(7)); // a repeat
  ws.recv(pub(6)); // an older repeat
  ws.recv(pub(9)); // a hole: 8 is missing
  const again = ws.last();
  assert.deepEqual(again.since, { epoch: "e1", offset: 7 });
  ws.recv(pub(10)); // before the answer: dropped
  ws.recv({ id: again.id, op: "subscribed", topic: "t", recovered: true, epoch: "e1", offset: 10 });
  for (const o of [8, 9, 10, 10, 11]) ws.recv(pub(o));
  assert.deepEqual(offsets(events), [6, 7, 8, 9, 10, 11]);
  assert.deepEqual(client.positions(), { t: { epoch: "e1", offset: 11 } });
  assert.equal(client.stats.repeats, 3);
  assert.equal(client.stats.holes, 1);
  client.close();
});

test("another epoch: resubscribes; recovered=false goes on from the answer and says what was kept", () => {
  const { client, ws, of } = start();
  client.subscribe("t", { since: { epoch: "e1", offset: 3 } });
  const sub = ws.last();
  assert.deepEqual(sub.since, { epoch: "e1", offset: 3 });
  ws.recv({ id: sub.id, op: "subscribed", topic: "t", recovered: true, epoch: "e1", offset: 4 });
  ws.recv(pub(4));
  ws.recv(pub(1, { epoch: "e2" }));
  const again = ws.last();
  assert.deepEqual(again.since, { epoch: "e1", offset: 4 });
  ws.recv({ id: again.id, op: "subscribed", topic: "t", recovered: false, epoch: "e2", offset: 1 });
  ws.recv(pub(2, { epoch: "e2" }));
  assert.deepEqual(
    of("publication").map((e) => `${e.epoch}:${e.offset}`),
    ["e1:4", "e2:2"],
  );
  const last = of("subscribed").pop();
  assert.deepEqual(
    { recovered: last.recovered, since: last.since, epoch: last.epoch, offset: last.offset },
    { recovered: false, since: { epoch: "e1", offset: 4 }, epoch: "e2", offset: 1 },
  );
  client.close();
});

test("a superseded subscribed answer is ignored", () => {
  const { client, ws, of } = start();
  client.subscribe("t");
  const first = ws.last();
  client.subscribe("t", { since: { epoch: "e1", offset: 2 } });
  const second = ws.last();
  ws.recv({ id: first.id, op: "subscribed", topic: "t", recovered: false, epoch: "e1", offset: 9 });
  ws.recv(pub(10)); // still waiting for the second answer: dropped
  ws.recv({ id: second.id, op: "subscribed", topic: "t", recovered: true, epoch: "e1", offset: 3 });
  ws.recv(pub(3));
  assert.equal(of("subscribed").length, 1);
  assert.deepEqual(offsets(of("publication")), [3]);
  client.close();
});

test("a dropped connection: backoff, the next URL, subscriptions from the kept position, publishes re-sent with their keys", async () => {
  const { client, ws, of } = start();
  client.subscribe("t");
  ws.recv({ id: ws.last().id, op: "subscribed", topic: "t", recovered: false, epoch: "e1", offset: 0 });
  ws.recv(pub(1));
  const answered = client.publish("t", "hello");
  const sent = ws.last();
  assert.equal(sent.op, "publish");
  assert.equal(typeof sent.key, "string");
  ws.drop(1006);
  const close = of("close")[0];
  assert.equal(close.willReconnect, true);
  assert.ok(close.delay >= 0 && close.delay < OPTIONS.initialDelay, `delay ${close.delay}`);
  await until(() => sockets.length === 2, "a second socket");
  const ws2 = sockets[1];
  assert.equal(ws2.url, URLS[1]);
  ws2.open();
  assert.deepEqual(of("open").map((e) => e.reconnect), [false, true]);
  const [resub, republish] = ws2.sent;
  assert.deepEqual(resub.since, { epoch: "e1", offset: 1 });
  assert.equal(republish.key, sent.key);
  assert.equal(republish.data, "hello");
  ws2.recv({ id: republish.id, op: "published", topic: "t", epoch: "e1", offset: 2 });
  assert.deepEqual(await answered, { topic: "t", epoch: "e1", offset: 2 });
  assert.equal(client.stats.resent, 1);
  client.close();
});

test("reconnect(): closes with 4000 and opens the next URL at once, subscriptions recovered", () => {
  const { client, ws, of } = start();
  client.subscribe("t");
  ws.recv({ id: ws.last().id, op: "subscribed", topic: "t", recovered: false, epoch: "e1", offset: 4 });
  client.reconnect();
  assert.equal(ws.closedWith, 4000);
  const close = of("close")[0];
  assert.deepEqual([close.code, close.opened, close.willReconnect, close.delay], [4000, true, true, 0]);
  assert.equal(sockets.length, 2);
  assert.equal(sockets[1].url, URLS[1]);
  sockets[1].open();
  assert.deepEqual(sockets[1].last().since, { epoch: "e1", offset: 4 });
  client.close();
});

test("unavailable: the publish is retried with the same key after a delay; a non-temporary error rejects", async () => {
  const { client, ws, of } = start();
  const answered = client.publish("t", "x");
  const first = ws.last();
  ws.recv({ id: first.id, op: "error", code: "unavailable", message: "Redis is unreachable", temporary: true });
  const told = of("error")[0];
  assert.deepEqual([told.code, told.temporary, told.key], ["unavailable", true, first.key]);
  await until(() => ws.sent.length === 2, "a retry");
  const retry = ws.last();
  assert.equal(retry.key, first.key);
  assert.notEqual(retry.id, first.id);
  ws.recv({ id: retry.id, op: "published", topic: "t", epoch: "e1", offset: 1 });
  assert.equal((await answered).offset, 1);

  const refused = client.publish("t", "y");
  ws.recv({ id: ws.last().id, op: "error", code: "too_large", message: "too large", temporary: false });
  await assert.rejects(refused, (e) => e.code === "too_large" && e.temporary === false);
  client.close();
});

test("a permanent close code (1002) ends the client: no reconnect, pending publishes rejected", async () => {
  const { client, ws, of } = start();
  const pending = client.publish("t", "x");
  ws.drop(1002);
  await assert.rejects(pending, (e) => e.code === "closed_for_good");
  assert.equal(of("close")[0].willReconnect, false);
  await sleep(3 * OPTIONS.maxDelay);
  assert.equal(sockets.length, 1);
  await assert.rejects(client.publish("t", "y"), (e) => e.code === "closed");
});

test("close() ends it; the close event says willReconnect false", async () => {
  const { client, ws, of } = start();
  const pending = client.publish("t", "x");
  client.close();
  assert.equal(ws.closedWith, 1000);
  await assert.rejects(pending, (e) => e.code === "closed");
  await until(() => of("close").length === 1, "the close event");
  assert.equal(of("close")[0].willReconnect, false);
  await sleep(3 * OPTIONS.maxDelay);
  assert.equal(sockets.length, 1);
});

test("binary: base64 both ways; an ArrayBuffer by default, a Uint8Array on request", async () => {
  for (const binaryType of ["arraybuffer", "uint8array"]) {
    const { client, ws, of } = start({ binaryType });
    client.subscribe("t");
    ws.recv({ id: ws.last().id, op: "subscribed", topic: "t", recovered: false, epoch: "e1", offset: 0 });
    client.publish("t", new Uint8Array([0, 1, 2, 255])).catch(() => {}); // rejected by close()
    assert.deepEqual([ws.last().data, ws.last().binary], ["AAEC/w==", true]);
    ws.recv(pub(1, { data: "AAECAw==", binary: true }));
    const { data, binary } = of("publication")[0];
    assert.equal(binary, true);
    assert.ok(binaryType === "arraybuffer" ? data instanceof ArrayBuffer : data instanceof Uint8Array);
    assert.deepEqual(Array.from(new Uint8Array(binaryType === "arraybuffer" ? data : data.buffer)), [0, 1, 2, 3]);
    client.close();
  }
});

test("backoff: full jitter under a cap that doubles to maxDelay; the queue is bounded while offline", async () => {
  sockets.length = 0;
  const client = new WseventsClient(URLS, { initialDelay: 4, maxDelay: 16, maxQueued: 2 });
  const delays = [];
  client.addEventListener("close", (e) => delays.push(e.detail.delay));
  const waiting = [client.publish("t", "1"), client.publish("t", "2")];
  await assert.rejects(client.publish("t", "3"), (e) => e.code === "queue_full");
  for (let i = 0; i < 12; i++) {
    await until(() => sockets.length === i + 1, `socket ${i + 1}`);
    sockets[i].drop(1006); // never opened
  }
  const caps = delays.map((_, i) => Math.min(16, 4 * 2 ** i));
  delays.forEach((d, i) => assert.ok(d >= 0 && d < caps[i], `delay ${i}: ${d} not below ${caps[i]}`));
  assert.deepEqual(
    sockets.slice(0, 4).map((s) => s.url),
    [URLS[0], URLS[1], URLS[0], URLS[1]],
  );
  client.close();
  for (const p of waiting) await assert.rejects(p, (e) => e.code === "closed");
});

test("bad URLs are a TypeError at once", () => {
  assert.throws(() => new WseventsClient("ftp://a.test/"), TypeError);
  assert.throws(() => new WseventsClient("not a url"), TypeError);
  assert.throws(() => new WseventsClient([]), TypeError);
});
