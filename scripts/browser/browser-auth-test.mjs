// The demo page's topics card on a `wsevents serve` with tokens, in headless Chromium,
// and a backend pushing to it: a page opened without a token is refused the topic
// (forbidden) and gets nothing; a page opened as /?token=JWT (HS256, signed here with the
// server's secret) subscribes, and a publication from the backend script
// (docs/examples/backend_publish.py, POST /api/publish with the API key) reaches it at
// the position the API answered. Run by scripts/browser-test, which starts the server.
//
//   node browser-auth-test.mjs BASE_URL USER_DATA_DIR SECRET_FILE API_KEY_FILE

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [base, userDataDir, secretFile, keyFile] = process.argv.slice(2);
if (!keyFile) {
  console.error("usage: node browser-auth-test.mjs BASE_URL USER_DATA_DIR SECRET_FILE API_KEY_FILE");
  process.exit(2);
}

const b64url = (data) => Buffer.from(data).toString("base64url");
function jwt(claims) {
  const secret = readFileSync(secretFile, "utf8").trim();
  const signed = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" })) + "." + b64url(JSON.stringify(claims));
  return signed + "." + createHmac("sha256", secret).update(signed).digest("base64url");
}

let failed = false;
function check(name, fn) {
  try {
    fn();
    console.log(`ok    ${name}`);
  } catch (error) {
    failed = true;
    console.log(`FAIL  ${name}\n      ${error.message.split("\n").join("\n      ")}`);
  }
}

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"],
});
try {
  const until = (page, fn, arg) => page.waitForFunction(fn, arg, { timeout: 10_000 });
  const state = (page) => page.evaluate(() => window.pubsubDemo);

  const anonymous = await context.newPage();
  await anonymous.goto(base + "/");
  const refused = await until(anonymous, () => window.pubsubDemo && window.pubsubDemo.errors.length >= 1)
    .then(() => state(anonymous))
    .catch((error) => ({ error: String(error) }));
  check("a page without a token is refused the topic (forbidden), nothing subscribed", () => {
    assert.equal(refused.error, undefined);
    // The client's "error" event and the refused subscribe's promise: forbidden, both.
    assert.ok(refused.errors.some((e) => e.topic === "demo"), JSON.stringify(refused.errors));
    assert.ok(refused.errors.every((e) => e.code === "forbidden"), JSON.stringify(refused.errors));
    assert.deepEqual(refused.subscribed, []);
  });

  const exp = Math.floor(Date.now() / 1000) + 600;
  const token = jwt({ sub: "alice", exp, subscribe: ["demo"], publish: ["demo"] });
  const page = await context.newPage();
  await page.goto(base + "/?token=" + token);
  const subscribed = await until(page, () => window.pubsubDemo && window.pubsubDemo.subscribed.length >= 1)
    .then(() => state(page))
    .catch((error) => ({ error: String(error) }));
  check("a page with a token subscribes to the topic its token names", () => {
    assert.equal(subscribed.error, undefined);
    assert.equal(subscribed.subscribed[0].topic, "demo");
    assert.deepEqual(subscribed.errors, []);
  });

  // The backend: a Python script with the API key, no WebSocket.
  const script = new URL("../../docs/examples/backend_publish.py", import.meta.url).pathname;
  const answer = JSON.parse(execFileSync("python3", [script, base, keyFile, "demo", "from the backend"], { encoding: "utf8" }));
  const pushed = await until(page, () => window.pubsubDemo.received.length >= 1)
    .then(() => state(page))
    .catch((error) => ({ error: String(error) }));
  check("a publication through POST /api/publish (backend_publish.py) reaches the page at the position the API gave", () => {
    assert.equal(pushed.error, undefined);
    assert.deepEqual(pushed.received, [{ topic: "demo", epoch: answer.epoch, offset: answer.offset, data: "from the backend" }]);
  });

  // Its own publish, as its token allows; the refused page heard none of it.
  await page.fill("#topics-input", "from alice");
  await page.click("#topics-publish");
  const own = await until(page, () => window.pubsubDemo.received.length >= 2 && window.pubsubDemo.published.length >= 1)
    .then(() => state(page))
    .catch((error) => ({ error: String(error) }));
  const other = await state(anonymous);
  check("the page publishes where its token allows; the page without a token received nothing", () => {
    assert.equal(own.error, undefined);
    assert.equal(own.received[1].data, "from alice");
    assert.equal(own.received[1].offset, answer.offset + 1);
    assert.deepEqual(other.received, []);
  });
} finally {
  await context.close();
}
if (failed) {
  console.log("the demo page with tokens misbehaved in Chromium");
  process.exit(1);
}
console.log("the demo page with tokens behaved in Chromium");
