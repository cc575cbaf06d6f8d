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

  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`info  screenshot: ${screenshot}`);
} finally {
  await context.close();
}

if (failed) {
  console.log("the demo page misbehaved in Chromium");
  process.exit(1);
}
console.log("every seed example behaved as the seed says in Chromium");
