// wsevents.js: a wsevents.v1 client for the browser (docs/protocol.md), on the standard
// WebSocket, with no dependencies. `wsevents serve` serves it at /wsevents.js.
//
//   import { WseventsClient } from "/wsevents.js";
//
//   // ws(s): URLs, or relative to the page ("/pubsub"); a bad one throws a TypeError.
//   const client = new WseventsClient(["ws://a.example/pubsub", "ws://b.example/pubsub"], {
//     initialDelay: 500,  // ms: the first reconnect waits at most this long
//     maxDelay: 20000,    // ms: no reconnect waits longer
//     stableAfter: 5000,  // ms open: the connection counts as stable, backoff starts over
//     openTimeout: 10000, // ms: a connection not open by then is given up and retried
//     maxQueued: 1000,    // publishes unanswered at once (sent or waiting); past it, rejected
//     binaryType: "arraybuffer", // or "uint8array": what binary publications arrive as
//     getToken: async () => (await fetch("/my-app/ws-token")).text(), // optional: a JWT
//   });
//   client.addEventListener("publication", (e) => {
//     const { topic, epoch, offset, data, binary } = e.detail; // data: a string, or bytes
//   });
//   client.addEventListener("subscribed", (e) => e.detail); // {topic, recovered, epoch, offset, since}
//   client.addEventListener("open", (e) => e.detail);       // {url, reconnect}
//   client.addEventListener("close", (e) => e.detail);      // {url, code, reason, wasClean, opened,
//                                                           //  willReconnect, delay}
//   client.addEventListener("error", (e) => e.detail);      // {code, message, temporary, topic}:
//                            // a subscribe's error, or a publish retried (+ key, delay),
//                            // a token refused ("unauthorized"), getToken failing ("token")
//   client.addEventListener("unsubscribed", (e) => e.detail); // {topic}: taken away by the server
//
//   await client.subscribe("news");                         // from now on
//   client.subscribe("news", { since: { epoch, offset } }); // and everything after a position
//   const { epoch, offset } = await client.publish("news", "hello"); // or bytes: binary
//   client.positions();   // {news: {epoch, offset}}: where each topic is; keep it to come back
//   client.unsubscribe("news");
//   client.close();
//
// What it does for you (the client's rules of docs/protocol.md):
//
// - Positions. It keeps, per topic, the position of the last publication it handed you.
//   A publication at kept + 1 is dispatched; one at or below it is a repeat and dropped;
//   anything else (a hole, another epoch) makes it subscribe again from the kept
//   position, dropping the topic's publications until the answer. So, within an epoch,
//   every "publication" event comes once and in offset order.
// - Reconnects. When the connection drops it reconnects, trying the URLs in turn, after
//   a delay drawn uniformly from [0, min(maxDelay, initialDelay * 2^attempt)) ("full
//   jitter"); the attempt count starts over once a connection has stayed open for
//   `stableAfter`. On every open it subscribes again to each topic from its kept
//   position: the "subscribed" event says `recovered: true` (nothing was missed; the
//   missed publications follow as "publication" events) or `recovered: false` (the
//   publications between `since` and `offset` are lost; you are told, never given a
//   part). Coming back online (the window's "online" event) cuts a wait short. A
//   subscription refused with a temporary error (`too_many_requests`: the server keeps
//   at least 256 subscriptions of a connection waiting, as many as its topics per
//   connection if more; `unavailable`) is asked again after a backoff delay, never given
//   up; only a non-temporary error (bad_topic, too_many_topics, ...) rejects it.
// - Permanent closes. Close codes 1002, 1003, 1007, 1009 and 1010 mean this client is at
//   fault: it stops for good ("close" with willReconnect false, pending publishes
//   rejected), as after close(). A browser cannot see a refused handshake's HTTP status
//   (a 4xx and an unreachable server both close with 1006): those are retried.
// - Publishes. Each publish gets an idempotency key (random per client, then a counter)
//   and is sent again with that key after a reconnect, or after a temporary error
//   (`unavailable`, `too_many_requests`, `rate_limited`: after a backoff delay, at
//   least the error's `retry_after_ms`), until the server
//   answers; the server stores it once (within its history window) and the promise
//   resolves to its position. While offline, publishes wait in a queue; at most
//   `maxQueued` may be unanswered at once (waiting or sent) and a publish past that
//   rejects at once: memory stays bounded.
//   Publishes are sent in call order, but one retried after an error may be stored
//   after later ones. A non-temporary error (bad_topic, too_large, ...) rejects it.
//
// - Tokens. With `getToken`, every connection first sends {"op":"connect","token"} with
//   what it resolves to, and nothing else until the answer; before the token's `exp`
//   (when a quarter of what is left remains, at most 60 s ahead) it asks again and
//   sends {"op":"refresh"}. getToken failing is an "error" event {code: "token"}: at
//   connect the connection is dropped and made again after the backoff; at refresh it
//   is asked again after 1 s (an expired connection is closed by the server with 4003,
//   and the client reconnects with a new token, recovering its topics). A refused token
//   closes with 4001: the client stops for good, as after 4009 (disconnected by the
//   server). "forbidden" rejects only the subscribe or publish it answers.
//
// Errors a promise rejects with are WseventsError {code, message, temporary}; the
// codes are the protocol's (forbidden among them), plus "closed" (the client was
// closed), "closed_for_good" (4001, 4009, ...) and "queue_full".
//
// Not done: no heartbeat of its own (the browser answers the server's pings); no
// persistence across page loads (store positions() yourself and pass `since`).

/** The subprotocol. */
export const PROTOCOL = "wsevents.v1";

/** Close codes after which the client does not reconnect: it is at fault (1002–1010),
 * its token was refused (4001), or the server's operator disconnected it (4009). 4003
 * (token expired) reconnects, with a new token. */
export const PERMANENT_CLOSE_CODES = Object.freeze([1002, 1003, 1007, 1009, 1010, 4001, 4009]);

/** The longest a token is refreshed ahead of its `exp`, in ms. */
const MAX_REFRESH_AHEAD = 60000;
/** The wait before getToken is asked again after failing at a refresh, in ms. */
const TOKEN_RETRY = 1000;

/** Why a publish or subscribe failed. */
export class WseventsError extends Error {
  constructor(code, message, temporary = false) {
    super(message || code);
    this.name = "WseventsError";
    this.code = code;
    this.temporary = temporary;
  }
}

const DEFAULTS = {
  initialDelay: 500,
  maxDelay: 20000,
  stableAfter: 5000,
  openTimeout: 10000,
  maxQueued: 1000,
  binaryType: "arraybuffer",
  getToken: null,
};

export class WseventsClient extends EventTarget {
  // Configuration.
  #urls;
  #options;
  #keyPrefix;
  // The connection: the socket (null between connections), which URL is next, the
  // reconnect attempt count and timers.
  #ws = null;
  #next = 0;
  #attempt = 0;
  #opens = 0;
  #reconnectTimer = null;
  #openTimer = null;
  #stableTimer = null;
  #ended = false;
  // The open connection may carry requests: at once without getToken, once its
  // "connect" is answered with it.
  #ready = false;
  #refreshTimer = null;
  #onOnline = () => this.#reconnectNow();
  // Requests: ids, the in-flight ones of this connection (id -> what it was).
  #nextId = 1;
  #inflight = new Map();
  // Topics: name -> {position: {epoch, offset} | null, state, id, retry, attempt,
  // waiters}. state: "pending" (a subscribe is out: drop publications), "active",
  // "waiting" (no connection, or a retry after a temporary error).
  #topics = new Map();
  // Unanswered publishes, in call order: key -> entry.
  #publishes = new Map();
  #keys = 0;
  // Counters, for tests and dashboards.
  #stats = { opens: 0, repeats: 0, holes: 0, resent: 0, recovered: 0, notRecovered: 0 };

  /**
   * @param {string | string[]} urls WebSocket URLs of /pubsub endpoints (one hub), tried in turn
   * @param {object} [options] see the top of this file
   */
  constructor(urls, options = {}) {
    super();
    this.#urls = (Array.isArray(urls) ? urls : [urls]).map(socketUrl);
    if (this.#urls.length === 0) throw new TypeError("WseventsClient: no URL");
    this.#options = { ...DEFAULTS, ...options };
    this.#keyPrefix = randomHex(8);
    if (typeof window !== "undefined") window.addEventListener("online", this.#onOnline);
    this.#connect();
  }

  /** The URL of the open connection, or null. */
  get url() {
    return this.#ws && this.#ws.readyState === WebSocket.OPEN ? this.#ws.url : null;
  }

  /** True while a connection is open. */
  get connected() {
    return this.url !== null;
  }

  /** Counters: opens, repeats (dropped), holes (resubscribed), resent (publishes),
   * recovered / notRecovered (subscribed answers after a since). A copy. */
  get stats() {
    return { ...this.#stats };
  }

  /**
   * Receive `topic`'s publications from now on or, with `since` ({epoch, offset}),
   * also every one after that position. Subscribing again to a topic replaces the
   * subscription (with `since` as given, or from the kept position). Resolves with the
   * first "subscribed" answer's detail; rejects on a non-temporary error (also an
   * "error" event).
   */
  subscribe(topic, { since } = {}) {
    if (this.#ended) return Promise.reject(new WseventsError("closed", "the client is closed"));
    const old = this.#topics.get(topic);
    if (old) clearTimeout(old.retry);
    const t = {
      position: since ? { epoch: String(since.epoch), offset: Number(since.offset) } : old ? old.position : null,
      state: "waiting",
      id: 0,
      retry: null,
      attempt: 0,
      waiters: old ? old.waiters : [],
    };
    this.#topics.set(topic, t);
    const answered = new Promise((resolve, reject) => t.waiters.push({ resolve, reject }));
    // Failures are also "error" events: a caller who ignores the promise is not told twice.
    answered.catch(() => {});
    if (this.#ready) this.#sendSubscribe(topic, t);
    return answered;
  }

  /** Stop receiving `topic`'s publications (and forget its position). */
  unsubscribe(topic) {
    const t = this.#topics.get(topic);
    if (!t) return;
    clearTimeout(t.retry);
    this.#topics.delete(topic);
    for (const w of t.waiters) w.reject(new WseventsError("unsubscribed", "unsubscribed"));
    if (this.#ready) this.#send({ id: this.#nextId++, op: "unsubscribe", topic });
  }

  /**
   * Publish `data` (a string, or an ArrayBuffer / typed array / DataView: binary) to
   * `topic`. Resolves with its position {topic, epoch, offset} once stored, however many
   * reconnects that takes; rejects with a WseventsError (non-temporary error, the queue
   * full, the client closed).
   */
  publish(topic, data) {
    if (this.#ended) return Promise.reject(new WseventsError("closed", "the client is closed"));
    if (this.#publishes.size >= this.#options.maxQueued) {
      return Promise.reject(
        new WseventsError("queue_full", `${this.#publishes.size} publishes unanswered (maxQueued)`, true),
      );
    }
    let wire;
    if (typeof data === "string") wire = { data };
    else if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) wire = { data: toBase64(data), binary: true };
    else return Promise.reject(new TypeError("publish: data must be a string, an ArrayBuffer or a view of one"));
    const key = `${this.#keyPrefix}-${++this.#keys}`;
    return new Promise((resolve, reject) => {
      const entry = { topic, key, wire, resolve, reject, id: 0, retry: null, attempt: 0 };
      this.#publishes.set(key, entry);
      if (this.#ready) this.#sendPublish(entry);
    });
  }

  /** Where each topic is: {topic: {epoch, offset}} (topics with a known position). */
  positions() {
    const out = {};
    for (const [topic, t] of this.#topics) if (t.position) out[topic] = { ...t.position };
    return out;
  }

  /**
   * Drop the connection and open another at once, to the next URL (a client-side
   * failover; the demo page's "drop the connection" button). Subscriptions recover.
   */
  reconnect() {
    if (this.#ended) return;
    if (this.#ws) {
      const ws = this.#ws;
      const opened = ws.readyState === WebSocket.OPEN;
      this.#detach(ws);
      ws.close(4000, "reconnect");
      this.#dispatch("close", {
        url: ws.url, code: 4000, reason: "reconnect", wasClean: opened, opened, willReconnect: true, delay: 0,
      });
    }
    this.#reconnectNow();
  }

  /** Stop for good: close the connection, reject what is pending. */
  close(code = 1000, reason = "") {
    if (this.#ended) return;
    this.#ended = true;
    if (typeof window !== "undefined") window.removeEventListener("online", this.#onOnline);
    clearTimeout(this.#reconnectTimer);
    const ws = this.#ws;
    if (ws) {
      // The "close" event comes from the socket's own close event.
      ws.close(code, reason);
    } else {
      this.#fail("closed", "the client is closed");
      this.#dispatch("close", {
        url: null, code, reason, wasClean: true, opened: false, willReconnect: false, delay: null,
      });
    }
  }

  // ---- the connection ----

  #connect() {
    this.#reconnectTimer = null;
    if (this.#ended) return;
    const url = this.#urls[this.#next % this.#urls.length];
    this.#next++;
    // The URLs were checked by the constructor.
    const ws = new WebSocket(url, PROTOCOL);
    this.#ws = ws;
    let opened = false;
    this.#openTimer = setTimeout(() => ws.close(), this.#options.openTimeout);
    ws.onopen = () => {
      clearTimeout(this.#openTimer);
      opened = true;
      this.#stats.opens++;
      const reconnect = this.#opens++ > 0;
      this.#stableTimer = setTimeout(() => (this.#attempt = 0), this.#options.stableAfter);
      this.#dispatch("open", { url, reconnect });
      if (this.#options.getToken) this.#askToken(ws, "connect");
      else this.#start();
    };
    ws.onmessage = (e) => {
      if (typeof e.data !== "string") return; // wsevents.v1 is text frames only
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      if (msg && typeof msg === "object") this.#handle(msg);
    };
    ws.onclose = (e) => {
      this.#detach(ws);
      const permanent = PERMANENT_CLOSE_CODES.includes(e.code);
      const willReconnect = !this.#ended && !permanent;
      let delay = null;
      if (willReconnect) {
        delay = this.#backoff(this.#attempt++);
        this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
      } else {
        const closedByCaller = this.#ended;
        this.#ended = true;
        if (typeof window !== "undefined") window.removeEventListener("online", this.#onOnline);
        this.#fail(
          closedByCaller ? "closed" : "closed_for_good",
          closedByCaller ? "the client is closed" : `the server closed with ${e.code}`,
        );
      }
      this.#dispatch("close", { url, code: e.code, reason: e.reason, wasClean: e.wasClean, opened, willReconnect, delay });
    };
  }

  // The connection may carry requests: subscriptions first, then the publishes that
  // wait, in call order.
  #start() {
    this.#ready = true;
    for (const [topic, t] of this.#topics) if (!t.retry) this.#sendSubscribe(topic, t);
    for (const entry of this.#publishes.values()) {
      if (entry.retry) continue;
      if (entry.attempt > 0 || entry.sent) this.#stats.resent++;
      this.#sendPublish(entry);
    }
  }

  // Ask getToken for `ws` (the open connection), and send it as `op` if `ws` is still
  // the one.
  #askToken(ws, op) {
    let asked;
    try {
      asked = Promise.resolve(this.#options.getToken());
    } catch (error) {
      asked = Promise.reject(error);
    }
    asked.then(
      (token) => {
        if (this.#ws !== ws || ws.readyState !== WebSocket.OPEN) return;
        const id = this.#nextId++;
        this.#inflight.set(id, { kind: op });
        this.#send({ id, op, token: String(token) });
      },
      (error) => {
        if (this.#ws !== ws) return;
        this.#dispatch("error", { code: "token", message: String((error && error.message) || error), temporary: true });
        if (op === "connect") ws.close(4000, "no token");
        else this.#refreshTimer = setTimeout(() => this.#askToken(ws, "refresh"), TOKEN_RETRY);
      },
    );
  }

  // Refresh ahead of `expires` (seconds since 1970; none: never).
  #refreshBefore(expires) {
    clearTimeout(this.#refreshTimer);
    if (typeof expires !== "number") return;
    const left = Math.max(0, expires * 1000 - Date.now());
    const ws = this.#ws;
    this.#refreshTimer = setTimeout(() => this.#askToken(ws, "refresh"), left - Math.min(left / 4, MAX_REFRESH_AHEAD));
  }

  // Forget `ws`: its events no longer reach us; what was in flight on it is not.
  #detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = null;
    clearTimeout(this.#openTimer);
    clearTimeout(this.#stableTimer);
    clearTimeout(this.#refreshTimer);
    this.#ready = false;
    if (this.#ws === ws) this.#ws = null;
    this.#inflight.clear();
    for (const t of this.#topics.values()) if (t.state === "pending") t.state = "waiting";
    for (const entry of this.#publishes.values()) entry.id = 0;
  }

  #reconnectNow() {
    if (this.#ended || this.#ws) return;
    clearTimeout(this.#reconnectTimer);
    this.#connect();
  }

  #backoff(attempt) {
    const cap = Math.min(this.#options.maxDelay, this.#options.initialDelay * 2 ** Math.min(attempt, 30));
    return Math.floor(Math.random() * cap);
  }

  #send(msg) {
    this.#ws.send(JSON.stringify(msg));
  }

  #sendSubscribe(topic, t) {
    t.state = "pending";
    t.id = this.#nextId++;
    t.since = t.position ? { ...t.position } : null;
    this.#inflight.set(t.id, { kind: "subscribe", topic });
    const msg = { id: t.id, op: "subscribe", topic };
    if (t.since) msg.since = t.since;
    this.#send(msg);
  }

  #sendPublish(entry) {
    entry.id = this.#nextId++;
    entry.sent = true;
    this.#inflight.set(entry.id, { kind: "publish", key: entry.key });
    this.#send({ id: entry.id, op: "publish", topic: entry.topic, key: entry.key, ...entry.wire });
  }

  // ---- what the server says ----

  #handle(msg) {
    if (msg.op === "pub") return this.#publication(msg);
    const req = typeof msg.id === "number" ? this.#inflight.get(msg.id) : undefined;
    if (req) this.#inflight.delete(msg.id);
    switch (msg.op) {
      case "subscribed":
        if (req && req.kind === "subscribe") this.#subscribed(msg);
        break;
      case "published":
        if (req && req.kind === "publish") {
          const entry = this.#publishes.get(req.key);
          if (entry) {
            this.#publishes.delete(req.key);
            entry.resolve({ topic: entry.topic, epoch: String(msg.epoch), offset: msg.offset });
          }
        }
        break;
      case "error":
        this.#error(msg, req);
        break;
      case "connected":
        if (req && req.kind === "connect") {
          this.#refreshBefore(msg.expires);
          this.#start();
        }
        break;
      case "refreshed":
        if (req && req.kind === "refresh") this.#refreshBefore(msg.expires);
        break;
      case "unsubscribed":
        // Without an id: the server took the topic away. Forgotten, not asked again.
        if (msg.id === undefined || msg.id === null) this.#takenAway(String(msg.topic));
        break;
      default:
        break; // ops to come
    }
  }

  #takenAway(topic) {
    const t = this.#topics.get(topic);
    if (!t) return;
    clearTimeout(t.retry);
    this.#topics.delete(topic);
    for (const w of t.waiters.splice(0)) w.reject(new WseventsError("unsubscribed", "unsubscribed by the server"));
    this.#dispatch("unsubscribed", { topic });
  }

  #subscribed(msg) {
    const t = this.#topics.get(msg.topic);
    if (!t || t.state !== "pending" || t.id !== msg.id) return; // superseded
    t.state = "active";
    t.attempt = 0;
    const since = t.since;
    const position = { epoch: String(msg.epoch), offset: msg.offset };
    // recovered: the missed publications follow, from `since`; otherwise go on from the
    // answer's position.
    if (msg.recovered === true && since) t.position = since;
    else t.position = position;
    if (since) this.#stats[msg.recovered === true ? "recovered" : "notRecovered"]++;
    const detail = { topic: msg.topic, recovered: msg.recovered === true, ...position, since };
    for (const w of t.waiters.splice(0)) w.resolve(detail);
    this.#dispatch("subscribed", detail);
  }

  #publication(msg) {
    const t = this.#topics.get(msg.topic);
    if (!t || t.state !== "active" || !t.position) return;
    const epoch = String(msg.epoch);
    const kept = t.position;
    if (epoch === kept.epoch && msg.offset === kept.offset + 1) {
      t.position = { epoch, offset: msg.offset };
      let data = msg.data;
      if (msg.binary === true) {
        const bytes = fromBase64(String(data));
        data = this.#options.binaryType === "uint8array" ? bytes : bytes.buffer;
      }
      this.#dispatch("publication", { topic: msg.topic, epoch, offset: msg.offset, data, binary: msg.binary === true });
    } else if (epoch === kept.epoch && msg.offset <= kept.offset) {
      this.#stats.repeats++;
    } else {
      // A hole or another epoch: recover from the kept position.
      this.#stats.holes++;
      if (this.#ready) this.#sendSubscribe(msg.topic, t);
    }
  }

  #error(msg, req) {
    const temporary = msg.temporary === true;
    const code = String(msg.code || "error");
    const message = String(msg.message || code);
    if (req && req.kind === "publish") {
      const entry = this.#publishes.get(req.key);
      if (!entry) return;
      entry.id = 0;
      if (temporary) {
        // Same key, after a delay (at least the server's retry_after_ms, as with
        // rate_limited); on the connection open then. Told as an "error" event (the
        // promise stays pending).
        const told = Number.isFinite(msg.retry_after_ms) ? msg.retry_after_ms : 0;
        const delay = Math.max(this.#backoff(entry.attempt++), told);
        entry.retry = setTimeout(() => {
          entry.retry = null;
          if (this.#ready && this.#publishes.has(entry.key)) {
            this.#stats.resent++;
            this.#sendPublish(entry);
          }
        }, delay);
        this.#dispatch("error", { code, message, temporary, topic: entry.topic, key: entry.key, delay });
      } else {
        this.#publishes.delete(req.key);
        entry.reject(new WseventsError(code, message, false));
      }
      return;
    }
    const topic = req && req.kind === "subscribe" ? req.topic : undefined;
    this.#dispatch("error", { code, message, temporary, topic });
    if (topic === undefined) return;
    const t = this.#topics.get(topic);
    if (!t) return;
    if (temporary) {
      t.state = "waiting";
      t.retry = setTimeout(() => {
        t.retry = null;
        if (this.#ready && this.#topics.get(topic) === t) this.#sendSubscribe(topic, t);
      }, this.#backoff(t.attempt++));
    } else {
      this.#topics.delete(topic);
      for (const w of t.waiters.splice(0)) w.reject(new WseventsError(code, message, false));
    }
  }

  // Reject every pending publish and subscribe: the client has ended.
  #fail(code, message) {
    for (const entry of this.#publishes.values()) {
      clearTimeout(entry.retry);
      entry.reject(new WseventsError(code, message, false));
    }
    this.#publishes.clear();
    for (const t of this.#topics.values()) {
      clearTimeout(t.retry);
      for (const w of t.waiters.splice(0)) w.reject(new WseventsError(code, message, false));
    }
  }

  #dispatch(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

// A WebSocket URL from `url`: absolute, or relative to the page ("/pubsub"); http(s)
// becomes ws(s). Anything else is the caller's mistake: a TypeError, at once.
function socketUrl(url) {
  const base = typeof location !== "undefined" ? location.href : undefined;
  let u;
  try {
    u = new URL(String(url), base);
  } catch {
    throw new TypeError(`WseventsClient: not a URL: ${url}`);
  }
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (u.protocol !== "ws:" && u.protocol !== "wss:") throw new TypeError(`WseventsClient: not a WebSocket URL: ${url}`);
  if (u.hash) throw new TypeError(`WseventsClient: a WebSocket URL has no fragment: ${url}`);
  return u.href;
}

// ---- base64 (RFC 4648, with padding), over bytes ----

function toBase64(data) {
  const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function fromBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function randomHex(n) {
  const bytes = crypto.getRandomValues(new Uint8Array(n));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
