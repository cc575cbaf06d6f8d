// The demo page of `wsevents serve` in headless Chromium: every seed example must
// behave as the seed says, the chat box must carry a message between two pages, and a
// screenshot is taken. Run by scripts/browser-test, which starts the server.
//
//   node browser-test.mjs BASE_URL USER_DATA_DIR SCREENSHOT.png [OTHER_BASE_URL]
//
// OTHER_BASE_URL: a second server; the chat's second page opens there (the two servers
// share their hub through Redis), else on BASE_URL.
//
// Chromium must also have negotiated permessage-deflate (ws.extensions), so every
// example's messages went through the compressor and decompressor of both sides.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { chromium } from "playwright-core";

const [base, userDataDir, screenshot, otherBase = base] = process.argv.slice(2);
if (!base || !userDataDir || !screenshot) {
  console.error("usage: node browser-test.mjs BASE_URL USER_DATA_DIR SCREENSHOT.png");
  process.exit(2);
}
const wsBase = base.replace(/^http/, "ws");

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
  ],
});

let failed = false;
// Wait until Redis counts `want` subscribers of `channel` (PUBSUB NUMSUB, over RESP).
async function redisSubscribers(channel, want, port) {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const reply = await new Promise((resolve, reject) => {
      const socket = net.connect(port, "127.0.0.1", () => socket.write(`PUBSUB NUMSUB ${channel}\r\n`));
      let data = "";
      socket.on("data", (chunk) => {
        data += chunk;
        const m = data.match(/^\*2\r\n\$\d+\r\n[^\r]*\r\n:(\d+)\r\n/);
        if (m) {
          socket.end();
          resolve(Number(m[1]));
        }
      });
      socket.on("error", reject);
    });
    if (reply >= want) return;
    if (Date.now() > deadline) throw new Error(`Redis counts ${reply} subscribers of ${channel}, not ${want}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function check(name, fn) {
  try {
    fn();
    console.log(`ok    ${name}`);
  } catch (error) {
    failed = true;
    console.log(`FAIL  ${name}\n      ${error.message.split("\n").join("\n      ")}`);
  }
}

// The module the server serves is this tree's (a stale binary would serve another).
const served = await fetch(base + "/wsevents.js");
const module = readFileSync(new URL("../../crates/wsevents-cli/assets/wsevents.js", import.meta.url), "utf8");
check("GET /wsevents.js: text/javascript, this tree's crates/wsevents-cli/assets/wsevents.js", () => {
  assert.equal(served.status, 200);
  assert.equal(served.headers.get("content-type"), "text/javascript; charset=utf-8");
});
const servedText = await served.text();
check("GET /wsevents.js: the body is the file", () => assert.ok(servedText === module, "another wsevents.js"));

try {
  const page = await context.newPage();
  page.on("pageerror", (error) => {
    failed = true;
    console.log(`FAIL  uncaught exception in the page: ${error}`);
  });
  await page.goto(base + "/");
  await page.waitForFunction(() => window.examplesDone === true, null, { timeout: 60_000 });
  const r = await page.evaluate(() => window.results);
  const clean = (code, reason = "") => ({ code, reason, wasClean: true });
  // The server's close reply echoes the code and reason (RFC 6455 §5.5.1 allows it;
  // wsevents does, so the page sees what it sent).
  const normally = clean(1000, "Closing normally");

  check("onopen: open, readyState 0 then 1, ws.url from location", () => {
    assert.deepEqual(r.onopen.events, ["open", "close"]);
    assert.equal(r.onopen.readyStateBefore, 0);
    assert.equal(r.onopen.readyState, 1);
    assert.equal(r.onopen.url, wsBase + "/ws");
    assert.equal(r.onopen.protocol, "");
    assert.deepEqual(r.onopen.close, clean(1005));
  });
  check("onmessage: a text message arrives as a string", () => {
    const x = r["onmessage-text"];
    assert.deepEqual(x.events, ["open", "message", "close"]);
    assert.equal(x.type, "string");
    assert.equal(x.data, "Hello geek-docs.com WebSocket.");
    assert.equal(x.origin, wsBase);
    assert.deepEqual(x.close, normally);
  });
  check('binaryType "blob": a Blob sent comes back as a Blob of 13 bytes', () => {
    const x = r["binarytype-blob"];
    assert.deepEqual(x.events, ["open", "message", "close"]);
    assert.equal(x.instanceOfBlob, true);
    assert.equal(x.size, 13);
    assert.equal(x.text, "blob contents");
    assert.deepEqual(x.close, normally);
  });
  check('binaryType "arraybuffer": Uint8Array [1..8] comes back as an ArrayBuffer', () => {
    const x = r["binarytype-arraybuffer"];
    assert.deepEqual(x.events, ["open", "message", "close"]);
    assert.equal(x.instanceOfArrayBuffer, true);
    assert.equal(x.byteLength, 8);
    assert.deepEqual(x.bytes, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(x.close, normally);
  });
  check("send: InvalidStateError while CONNECTING; text, Blob, ArrayBuffer echoed in order", () => {
    const x = r.send;
    assert.equal(x.earlySend, "InvalidStateError");
    assert.deepEqual(x.events, ["open", "message", "message", "message", "close"]);
    assert.deepEqual(x.received, ["string:Hello geek-docs.com WebSocket.", "Blob:13", "Blob:8"]);
    assert.deepEqual(x.close, normally);
  });
  check("onerror: a refused endpoint gives error, then close 1006 (not clean)", () => {
    const x = r.onerror;
    assert.deepEqual(x.events, ["error", "close"]);
    assert.equal(x.handled, "handleErrors(error)");
    assert.equal(x.readyStateAtError, 3);
    assert.deepEqual(x.close, { code: 1006, reason: "", wasClean: false });
  });
  check("onclose: close() gives CLOSING at once, then close 1005, clean", () => {
    const x = r.onclose;
    assert.deepEqual(x.events, ["open", "close"]);
    assert.equal(x.readyStateAfterClose, 2);
    assert.deepEqual(x.onclose, { code: 1005, wasClean: true });
    assert.deepEqual(x.close, clean(1005));
  });
  check('close(1000, "Closing normally"): close 1000, clean', () => {
    const x = r["close-with-code"];
    assert.deepEqual(x.events, ["open", "close"]);
    assert.equal(x.readyStateAfterClose, 2);
    // The reason comes back in the server's reply; scripts/browser-test also finds it
    // in the server's log.
    assert.deepEqual(x.close, normally);
  });
  check("addEventListener: open and message listeners", () => {
    const x = r.addeventlistener;
    assert.deepEqual(x.events, ["open", "message", "close"]);
    assert.deepEqual(x.messages, ["Hello"]);
    assert.deepEqual(x.close, clean(1000));
  });
  check("every example shows as behaving as the seed says", () => {
    const names = Object.keys(r).filter((name) => name !== "chat");
    assert.equal(names.length, 9);
    for (const name of names) assert.equal(r[name].asExpected, true, `${name} is marked unexpected`);
  });
  console.log(`info  negotiated extensions: ${JSON.stringify(r.onopen.extensions)}`);
  check("Chromium negotiated permessage-deflate", () => {
    assert.match(r.onopen.extensions, /^permessage-deflate/);
  });

  // Messages large enough for the server to compress too (the seed's are below its
  // 64-byte threshold): 1,000 compressible texts and a 1 MiB binary echoed intact
  // through both sides' compressor and decompressor, context kept across messages.
  const big = await page.evaluate(async (url) => {
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    const texts = Array.from({ length: 1000 }, (_, i) => `message ${i}: ` + "wsevents ".repeat(40 + (i % 50)));
    const bytes = new Uint8Array(1 << 20).map((_, i) => (i * 7) % 251);
    const received = [];
    await new Promise((resolve, reject) => {
      ws.onopen = () => {
        for (const t of texts) ws.send(t);
        ws.send(bytes);
      };
      ws.onmessage = (e) => {
        received.push(e.data);
        if (received.length === texts.length + 1) ws.close(1000);
      };
      ws.onclose = resolve;
      ws.onerror = () => reject(new Error("error event"));
    });
    const back = new Uint8Array(received[texts.length]);
    return {
      extensions: ws.extensions,
      textsIntact: received.slice(0, texts.length).every((t, i) => t === texts[i]),
      binaryIntact: back.length === bytes.length && back.every((b, i) => b === bytes[i]),
    };
  }, wsBase + "/ws");
  check("compressed both ways: 1,000 texts and a 1 MiB binary echoed intact", () => {
    assert.match(big.extensions, /^permessage-deflate/);
    assert.equal(big.textsIntact, true);
    assert.equal(big.binaryIntact, true);
  });

  // Subprotocols: the server runs with `--protocol chat`. Of ["chat", "superchat"] it
  // picks "chat"; offered only "superchat", it answers without one, which Chromium
  // refuses (it sent a Sec-WebSocket-Protocol and got none back): error, then 1006.
  const protocols = await page.evaluate(async (url) => {
    const open = (offer) =>
      new Promise((resolve) => {
        const ws = new WebSocket(url, offer);
        const events = [];
        let protocol = null;
        ws.onopen = () => {
          events.push("open");
          protocol = ws.protocol;
          ws.close(1000);
        };
        ws.onerror = () => events.push("error");
        ws.onclose = (e) => {
          events.push("close");
          resolve({ events, protocol, code: e.code });
        };
      });
    return { both: await open(["chat", "superchat"]), other: await open(["superchat"]) };
  }, wsBase + "/ws");
  check('subprotocol: new WebSocket(url, ["chat", "superchat"]) gets ws.protocol "chat"', () => {
    assert.deepEqual(protocols.both, { events: ["open", "close"], protocol: "chat", code: 1000 });
  });
  check('subprotocol: offered only "superchat", Chromium fails the connection (1006)', () => {
    assert.deepEqual(protocols.other, { events: ["error", "close"], protocol: null, code: 1006 });
  });

  // The chat box, with a second page (on the other server when there is one: the two
  // are one hub through Redis): a message typed in one shows in both.
  const other = await context.newPage();
  await other.goto(otherBase + "/");
  for (const p of [page, other]) {
    await p.waitForFunction(() => window.results.chat && window.results.chat.open, null, { timeout: 10_000 });
  }
  // Both servers subscribed to the topic in Redis (each does so on its first local
  // subscriber, a moment after the page's open) before the first message goes out.
  if (process.env.REDIS_PORT) await redisSubscribers("wsevents:chat", 2, Number(process.env.REDIS_PORT));
  await page.fill("#chat-input", "hello from page one");
  await page.click("#chat-send");
  await other.fill("#chat-input", "hi from page two");
  await other.press("#chat-input", "Enter");
  const both = ["hello from page one", "hi from page two"];
  for (const p of [page, other]) {
    await p
      .waitForFunction(
        (want) => want.every((m) => window.results.chat.received.includes(m)),
        both,
        { timeout: 10_000 },
      )
      .catch(() => {});
  }
  const chatOne = await page.evaluate(() => window.results.chat.received);
  const chatTwo = await other.evaluate(() => window.results.chat.received);
  const across = otherBase === base ? "" : ` (the pages on two serve processes, one Redis)`;
  check(`chat: a message typed in one page appears in both${across}`, () => {
    assert.deepEqual([...chatOne].sort(), [...both].sort());
    assert.deepEqual([...chatTwo].sort(), [...both].sort());
  });
  await other.close();

  // The page's "Topics with history" card: wsevents.v1 on /pubsub through /wsevents.js.
  // It subscribes to "demo" on load; a message published from the form comes back with
  // its position; "drop the connection" reconnects and the subscription recovers from
  // the kept position (recovered=true); the next message follows at the next offset.
  const demoTopics = await (async () => {
    const until = (fn, arg) => page.waitForFunction(fn, arg, { timeout: 10_000 });
    await until(() => window.pubsubDemo && window.pubsubDemo.subscribed.length >= 1);
    await page.fill("#topics-input", "hello, history");
    await page.click("#topics-publish");
    await until(() => window.pubsubDemo.received.length >= 1 && window.pubsubDemo.published.length >= 1);
    await page.click("#topics-drop");
    await until(() => window.pubsubDemo.subscribed.length >= 2);
    await page.fill("#topics-input", "after the drop");
    await page.press("#topics-input", "Enter");
    await until(() => window.pubsubDemo.received.length >= 2 && window.pubsubDemo.published.length >= 2);
    return page.evaluate(() => window.pubsubDemo);
  })().catch((error) => ({ error: String(error) }));
  check("topics card: publish, see it with its position, drop the connection, recovered=true, next offset", () => {
    assert.equal(demoTopics.error, undefined);
    const [first, second] = demoTopics.subscribed;
    assert.equal(first.since, null);
    assert.equal(first.recovered, false);
    assert.deepEqual(demoTopics.received.map((r) => r.data), ["hello, history", "after the drop"]);
    const [one, two] = demoTopics.received;
    assert.deepEqual(demoTopics.published, [
      { data: one.data, epoch: one.epoch, offset: one.offset },
      { data: two.data, epoch: two.epoch, offset: two.offset },
    ]);
    assert.equal(two.epoch, one.epoch);
    assert.equal(two.offset, one.offset + 1);
    assert.deepEqual(second.since, { epoch: one.epoch, offset: one.offset });
    assert.equal(second.recovered, true);
    assert.equal(demoTopics.opens, 2);
    assert.deepEqual(demoTopics.errors, []);
  });

  // wsevents.js itself, on this server: a relative URL, binary data both ways (base64
  // on the wire), errors as rejections, the bounded queue while offline, close().
  const api = await page
    .evaluate(async () => {
      const { WseventsClient } = await import("/wsevents.js");
      const out = {};
      const client = new WseventsClient("/pubsub");
      const t = "api-" + Math.random().toString(36).slice(2);
      const got = [];
      client.addEventListener("publication", (e) => got.push(e.detail));
      await client.subscribe(t);
      const one = await client.publish(t, new Uint8Array([0, 1, 2, 127, 128, 255]));
      const two = await client.publish(t, "text");
      for (let i = 0; got.length < 2 && i < 500; i++) await new Promise((r) => setTimeout(r, 10));
      out.url = client.url;
      out.binary = {
        arrayBuffer: got[0].data instanceof ArrayBuffer,
        bytes: Array.from(new Uint8Array(got[0].data)),
        flag: got[0].binary,
      };
      out.text = [got[1].data, got[1].binary];
      out.offsets = [one.offset, two.offset, got[0].offset, got[1].offset];
      out.positions = client.positions()[t];
      out.epoch = one.epoch;
      out.badTopic = await client.publish("x".repeat(300), "no").then(() => "resolved", (e) => e.code);
      client.close();
      // Nothing listens there: publishes wait, the third is past maxQueued.
      const offline = new WseventsClient("ws://127.0.0.1:9/pubsub", { maxQueued: 2, initialDelay: 50 });
      const waiting = [offline.publish(t, "1"), offline.publish(t, "2")];
      out.full = await offline.publish(t, "3").then(() => "resolved", (e) => e.code);
      offline.close();
      out.closed = (await Promise.allSettled(waiting)).map((r) => `${r.status}:${r.reason && r.reason.code}`);
      try {
        new WseventsClient("ftp://127.0.0.1/");
        out.badUrl = "accepted";
      } catch (e) {
        out.badUrl = e.name;
      }
      return out;
    })
    .catch((error) => ({ error: String(error) }));
  check("wsevents.js: a relative URL, binary data as an ArrayBuffer, errors, the bounded offline queue", () => {
    assert.equal(api.error, undefined);
    assert.equal(api.url, wsBase + "/pubsub");
    assert.deepEqual(api.binary, { arrayBuffer: true, bytes: [0, 1, 2, 127, 128, 255], flag: true });
    assert.deepEqual(api.text, ["text", false]);
    const [a, b, c, d] = api.offsets;
    assert.deepEqual([b, c, d], [a + 1, a, a + 1]);
    assert.deepEqual(api.positions, { epoch: api.epoch, offset: b });
    assert.equal(api.badTopic, "bad_topic");
    assert.equal(api.full, "queue_full");
    assert.deepEqual(api.closed, ["rejected:closed", "rejected:closed"]);
    assert.equal(api.badUrl, "TypeError");
  });

  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`info  screenshot: ${screenshot}`);

  if (process.env.FAILOVER_A) await failover();
} finally {
  await context.close();
}

if (failed) {
  console.log("the demo page misbehaved in Chromium");
  process.exit(1);
}
console.log("every seed example behaved as the seed says in Chromium");

// Failover through /wsevents.js: two `serve` processes on one Redis (FAILOVER_A,
// FAILOVER_B; FAILOVER_A_PID). A page loads the module from A and subscribes with the
// URL list [A, B]; a second page publishes N numbered messages through B at a steady
// rate, and a third publishes M through [A, B] on another topic; A is killed (SIGKILL)
// once the subscriber has half of the N. The subscriber must reconnect to B, recover
// (recovered=true), and have every message exactly once, in order, at the position its
// publisher was given; the third page's publishes, cut off by the kill, are re-sent
// with their keys to B and stored once each.
async function failover() {
  const n = Number(process.env.FAILOVER_MESSAGES || 2000);
  const rate = Number(process.env.FAILOVER_RATE || 400); // messages per second
  const m = Math.floor(n / 2);
  const [httpA, httpB] = [process.env.FAILOVER_A, process.env.FAILOVER_B];
  const pidA = Number(process.env.FAILOVER_A_PID);
  const [wsA, wsB] = [httpA, httpB].map((u) => u.replace(/^http/, "ws") + "/pubsub");
  const run = Date.now().toString(36);
  const topic = `failover-${run}`;
  const topic2 = `failover-keys-${run}`;

  const open = async (origin) => {
    const p = await context.newPage();
    p.on("pageerror", (error) => {
      failed = true;
      console.log(`FAIL  uncaught exception in a failover page: ${error}`);
    });
    // The module's own URL: a page on that origin, nothing else running in it.
    await p.goto(origin + "/wsevents.js");
    return p;
  };
  const sub = await open(httpA);
  await sub.evaluate(
    async ([urls, topics]) => {
      const { WseventsClient } = await import("/wsevents.js");
      const s = (window.s = { got: {}, events: [] });
      const client = (window.client = new WseventsClient(urls));
      for (const t of topics) s.got[t] = [];
      client.addEventListener("publication", (e) => {
        const d = e.detail;
        s.got[d.topic].push([d.epoch, d.offset, d.data]);
      });
      for (const type of ["open", "close", "subscribed"]) {
        client.addEventListener(type, (e) => s.events.push({ type, at: Date.now(), ...e.detail }));
      }
      await Promise.all(topics.map((t) => client.subscribe(t)));
    },
    [[wsA, wsB], [topic, topic2]],
  );

  // publisher(urls, topic, count, rate): publishes "0", "1", ... at `rate` per second;
  // window.p: {sent, done, positions[k] = [epoch, offset], errors}.
  const publisher = async (page, urls, t, count, perSecond) =>
    page.evaluate(
      async ([urls, t, count, perSecond]) => {
        const { WseventsClient } = await import("/wsevents.js");
        const client = (window.client = new WseventsClient(urls));
        const p = (window.p = { sent: 0, done: 0, positions: new Array(count), errors: [] });
        const start = Date.now();
        const timer = setInterval(() => {
          const due = Math.min(count, Math.floor(((Date.now() - start) * perSecond) / 1000) + 1);
          while (p.sent < due) {
            const k = p.sent++;
            client.publish(t, String(k)).then(
              (pos) => {
                p.positions[k] = [pos.epoch, pos.offset];
                p.done++;
              },
              (error) => p.errors.push(`${k}: ${error.code} ${error.message}`),
            );
          }
          if (p.sent === count) clearInterval(timer);
        }, 5);
      },
      [urls, t, count, perSecond],
    );
  const pubB = await open(httpB);
  const pubAB = await open(httpA);
  const started = Date.now();
  await publisher(pubB, [wsB], topic, n, rate);
  await publisher(pubAB, [wsA, wsB], topic2, m, rate / 2);

  await sub.waitForFunction((want) => window.s.got[Object.keys(window.s.got)[0]].length >= want, n / 2, {
    timeout: 60_000,
    polling: 5,
  });
  const killedAt = Date.now();
  process.kill(pidA, "SIGKILL");
  const receivedAtKill = await sub.evaluate((t) => window.s.got[t].length, topic);

  const settle = async (p, want, what) =>
    p
      .waitForFunction((want) => window.p.done + window.p.errors.length >= want, want, { timeout: 60_000 })
      .catch(() => console.log(`info  ${what}: not all publishes answered in 60 s`));
  await settle(pubB, n, "publisher on B");
  await settle(pubAB, m, "publisher on [A, B]");
  await sub
    .waitForFunction(
      ([t, n, t2, m]) => window.s.got[t].length >= n && window.s.got[t2].length >= m,
      [topic, n, topic2, m],
      { timeout: 60_000 },
    )
    .catch(() => {});
  await new Promise((r) => setTimeout(r, 500)); // room for a late duplicate to show
  const s = await sub.evaluate(() => ({ ...window.s, stats: window.client.stats }));
  const pB = await pubB.evaluate(() => window.p);
  const pAB = await pubAB.evaluate(() => ({ ...window.p, stats: window.client.stats }));
  const elapsed = Date.now() - started;

  const opens = s.events.filter((e) => e.type === "open");
  const closes = s.events.filter((e) => e.type === "close");
  const subscribed = s.events.filter((e) => e.type === "subscribed" && e.topic === topic);
  const reopen = opens[1];
  const drop = closes[0];
  const resub = subscribed[1];
  const got = s.got[topic];
  const recoveredCount = resub ? got.filter(([, o]) => o > resub.since.offset && o <= resub.offset).length : 0;
  console.log(
    `info  failover: ${n} messages at ${rate}/s through B (and ${m} through [A, B]), A killed (SIGKILL) ` +
      `after ${receivedAtKill} received; ${got.length} received in ${elapsed} ms; ` +
      `close ${drop ? drop.code : "-"} -> open on ${reopen ? reopen.url : "-"} in ` +
      `${reopen && drop ? reopen.at - drop.at : "-"} ms (kill to open ${reopen ? reopen.at - killedAt : "-"} ms, ` +
      `backoff ${drop ? drop.delay : "-"} ms); recovered=${resub ? resub.recovered : "-"} ` +
      `(${recoveredCount} from history, since offset ${resub ? resub.since.offset : "-"} to ${resub ? resub.offset : "-"}); ` +
      `repeats dropped ${s.stats.repeats}, holes ${s.stats.holes}; publishes re-sent with their keys by the [A, B] page ${pAB.stats.resent}`,
  );

  check(`failover: the subscriber reconnected to B after A's SIGKILL and recovered (recovered=true)`, () => {
    assert.equal(opens.length, 2, `opens: ${JSON.stringify(opens)}`);
    assert.equal(opens[0].url, wsA);
    assert.equal(reopen.url, wsB);
    assert.equal(reopen.reconnect, true);
    assert.equal(drop.willReconnect, true);
    assert.equal(subscribed.length, 2, `subscribed: ${JSON.stringify(subscribed)}`);
    assert.equal(subscribed[0].recovered, false);
    assert.equal(subscribed[0].since, null);
    assert.equal(resub.recovered, true);
  });
  check(`failover: ${n} messages published through B, every one received exactly once, in order`, () => {
    assert.deepEqual(pB.errors, []);
    assert.equal(pB.done, n);
    assert.equal(got.length, n, `received ${got.length} of ${n}`);
    const epoch = got[0][0];
    got.forEach(([e, o, data], k) => {
      assert.equal(data, String(k), `message ${k} is ${data}`);
      assert.equal(e, epoch);
      assert.equal(o, got[0][1] + k, `message ${k} at offset ${o}`);
      assert.deepEqual([e, o], pB.positions[k], `message ${k}: received at ${e}:${o}, published at ${pB.positions[k]}`);
    });
  });
  check(`failover: ${m} publishes through [A, B], cut off by the kill, stored once each (keys), in order`, () => {
    assert.deepEqual(pAB.errors, []);
    assert.equal(pAB.done, m);
    const got2 = s.got[topic2];
    assert.deepEqual(
      got2.map(([, , data]) => data),
      Array.from({ length: m }, (_, k) => String(k)),
    );
    got2.forEach(([e, o], k) => assert.deepEqual([e, o], pAB.positions[k], `message ${k}`));
  });
  if (process.env.REDIS_PID && process.env.REDIS_SERVER && got.length) await redisLost(sub, pubB, topic, got[got.length - 1]);
  for (const p of [sub, pubB, pubAB]) await p.close();
}

// Redis dies (SIGKILL) and comes back empty, under the failover's subscriber and its
// publisher (both on B now). A publish during the outage is answered `unavailable` and
// re-sent with its key until Redis is back; the topic has a new epoch, so the subscriber
// is told recovered=false (from its position in the old epoch) and then receives every
// later publication once, in order.
async function redisLost(sub, pub, topic, [oldEpoch, oldOffset]) {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const port = Number(process.env.REDIS_PORT);
  process.kill(Number(process.env.REDIS_PID), "SIGKILL");
  const killedAt = Date.now();
  await pub.evaluate((t) => {
    const d = (window.during = { errors: [], pos: null, failed: null });
    window.client.addEventListener("error", (e) => d.errors.push(e.detail));
    window.client.publish(t, "during the outage").then(
      (p) => (d.pos = p),
      (e) => (d.failed = `${e.code}: ${e.message}`),
    );
  }, topic);
  await pub.waitForFunction(() => window.during.errors.length > 0, null, { timeout: 10_000 }).catch(() => {});
  await sleep(1000);
  const redis = spawn(
    process.env.REDIS_SERVER,
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    { stdio: "ignore", detached: true },
  );
  redis.unref();
  writeFileSync(process.env.REDIS_RESTARTED_PID_FILE, String(redis.pid));
  const restartedAt = Date.now();
  await pub
    .waitForFunction(() => window.during.pos || window.during.failed, null, { timeout: 30_000 })
    .catch(() => {});
  const during = await pub.evaluate(() => window.during);
  const storedAt = Date.now();

  // The subscriber learns of the new epoch from a publication in it: probes, one at a
  // time, until it has resubscribed in the new epoch.
  const resubscribed = () =>
    sub.evaluate(
      ([t, e]) => window.s.events.find((x) => x.type === "subscribed" && x.topic === t && x.epoch !== e) || null,
      [topic, oldEpoch],
    );
  let told = await resubscribed();
  let probes = 0;
  for (; !told && probes < 50; probes++) {
    await pub.evaluate((t) => window.client.publish(t, "probe"), topic).catch(() => {});
    await sleep(100);
    told = await resubscribed();
  }
  const count = 20;
  const after = await pub
    .evaluate(
      async ([t, count]) => {
        const positions = [];
        for (let k = 0; k < count; k++) {
          const p = await window.client.publish(t, `after ${k}`);
          positions.push([p.epoch, p.offset]);
        }
        return positions;
      },
      [topic, count],
    )
    .catch((error) => ({ error: String(error) }));
  await sub
    .waitForFunction(
      ([t, count]) => window.s.got[t].filter(([, , d]) => d.startsWith("after ")).length >= count,
      [topic, count],
      { timeout: 10_000 },
    )
    .catch(() => {});
  await sleep(300);
  const received = await sub.evaluate((t) => window.s.got[t].filter(([, , d]) => d !== "probe" && !/^\d+$/.test(d)), topic);
  const unavailable = during.errors.filter((e) => e.code === "unavailable").length;
  console.log(
    `info  Redis lost: killed, started again empty after ${restartedAt - killedAt} ms; the publish during the outage ` +
      `answered unavailable ${unavailable} time(s), stored ${storedAt - restartedAt} ms after the restart at ` +
      `${during.pos ? `${during.pos.epoch}:${during.pos.offset}` : during.failed}; the subscriber, at ${oldEpoch}:${oldOffset}, ` +
      `told ${told ? `recovered=${told.recovered} at ${told.epoch}:${told.offset}` : "nothing"} after ${probes} probe(s); ` +
      `then ${received.filter(([, , d]) => d.startsWith("after ")).length} of ${count} later messages`,
  );
  check("Redis lost and back empty: a publish meanwhile is retried on unavailable (same key) and stored in a new epoch", () => {
    assert.equal(during.failed, null);
    assert.ok(unavailable >= 1, `errors: ${JSON.stringify(during.errors)}`);
    assert.ok(during.pos, "never stored");
    assert.notEqual(during.pos.epoch, oldEpoch);
  });
  check("Redis lost and back empty: the subscriber is told recovered=false, then gets every later message once, in order", () => {
    assert.ok(told, "no subscribed answer in a new epoch");
    assert.equal(told.recovered, false);
    assert.deepEqual(told.since, { epoch: oldEpoch, offset: oldOffset });
    assert.equal(after.error, undefined);
    const later = received.filter(([, , d]) => d.startsWith("after "));
    assert.deepEqual(
      later.map(([e, o, d]) => [e, o, d]),
      after.map(([e, o], k) => [e, o, `after ${k}`]),
    );
  });
}
