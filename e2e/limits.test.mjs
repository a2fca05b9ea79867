// Hostile and unlucky clients: each limit holds, and a well-behaved client connected at the
// same time still receives every event. Real binary, Apache Kafka broker, official client.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { resumable } from "@realtime-bridge/client";
import {
  JWT_SECRET, bridgeEnv, bulkAdminBroadcasts, connect, counters, producer, request, startBridge, startBroker, token, waitFor, within,
} from "./harness.mjs";

const b64url = (x) => Buffer.from(typeof x === "string" ? x : JSON.stringify(x)).toString("base64url");
const signed = (header, body, secret = JWT_SECRET) => {
  const h = b64url(header);
  const b = b64url(body);
  return `${h}.${b}.${createHmac("sha256", secret).update(`${h}.${b}`).digest("base64url")}`;
};
const now = () => Math.floor(Date.now() / 1000);
const orders = (prefix, buyerId, n) => Array.from({ length: n }, (_, i) => ({ orderId: `${prefix}-${i}`, buyerId, status: "paid" }));

describe("limits and security", () => {
  let broker, kafka;
  const bridges = [];
  const clients = [];
  const start = async (env) => {
    // One bridge at a time: idle ones still poll the broker and would compete for the CPU.
    for (const c of clients.splice(0)) c.socket.close();
    for (const old of bridges.splice(0)) assert.equal(await old.stop(), 0);
    const b = await startBridge(bridgeEnv(broker.brokers, { KAFKA_TOPICS: "order.updated,inventory.updated", ...env }));
    bridges.push(b);
    await b.ready();
    return b;
  };
  const open = async (url, opts) => {
    const c = await connect(url, opts);
    clients.push(c);
    return c;
  };
  /** Produces `n` orders for `user` and checks `client` gets each once, in order. */
  const everyEventReaches = async (client, user, n) => {
    const before = client.of("order:updated").length;
    await kafka.send("order.updated", orders(`W-${user}-${before}`, user, n));
    await waitFor(() => client.of("order:updated").length === before + n, { what: `${n} events for the well-behaved ${user}` });
    assert.deepEqual(
      client.of("order:updated").slice(before).map((e) => e.payload.data.orderId),
      orders(`W-${user}-${before}`, user, n).map((o) => o.orderId),
    );
  };

  before(async () => {
    broker = await startBroker();
    await broker.createTopics(["order.updated", "inventory.updated", "realtime-bridge.dlq"], 1);
    kafka = await producer(broker.brokers);
  });

  after(async () => {
    for (const c of clients) c.socket.close();
    await kafka?.disconnect();
    for (const b of bridges) assert.equal(await b.stop(), 0);
    await broker?.stop();
  });

  test("connections per user and in all: the newest is refused with a reason; a freed slot is reusable", async () => {
    const bridge = await start({ MAX_CONNECTIONS_PER_USER: "2", MAX_CONNECTIONS: "4" });
    const good = await open(bridge.url, { auth: { token: token("wendy") } });
    const [u1] = await Promise.all([open(bridge.url, { auth: { token: token("ursula") } }), open(bridge.url, { auth: { token: token("ursula") } })]);
    await assert.rejects(connect(bridge.url, { auth: { token: token("ursula") } }), (e) => e.message === "too many connections for this user (at most 2); close another tab or device");
    await open(bridge.url, { auth: { token: token("victor") } });
    await assert.rejects(connect(bridge.url, { auth: { token: token("xena") } }), (e) => e.message === "server at capacity; retry later");
    await everyEventReaches(good, "wendy", 20);

    u1.socket.close();
    // The server frees the slot when it sees the disconnect; retry until it has.
    const again = await waitFor(async () => connect(bridge.url, { auth: { token: token("ursula") } }).catch(() => null), { what: "the freed slot" });
    clients.push(again);
    assert.equal(again.hello.userId, "ursula");
    const metrics = await (await fetch(`${bridge.url}/metrics`)).text();
    assert.match(metrics, /realtime_limit_refusals_total\{limit="connections_per_user"\} [1-9]/);
  });

  test("handshakes per IP: past the budget an address is refused until it refills", async () => {
    const bridge = await start({ HANDSHAKES_PER_MINUTE_PER_IP: "3" });
    const good = await open(bridge.url, { auth: { token: token("h1") } });
    await assert.rejects(connect(bridge.url, { auth: { token: "bad" } }), /malformed/, "a failed handshake spends budget too");
    await open(bridge.url, { auth: { token: token("h2") } });
    await assert.rejects(connect(bridge.url, { auth: { token: token("h3") } }), (e) => e.message === "too many connection attempts from this address; retry later");
    await everyEventReaches(good, "h1", 10);
  });

  test("a client event flood is rate limited, then disconnected with a reason; others are not slowed", async () => {
    const bridge = await start({ CLIENT_EVENTS_PER_SECOND: "5" });
    const good = await open(bridge.url, { auth: { token: token("gina") } });
    const flooder = await open(bridge.url, { auth: { token: token("fred") } });
    const closing = new Promise((r) => flooder.socket.once("session:closing", r));
    const dropped = new Promise((r) => flooder.socket.once("disconnect", r));
    const acks = [];
    for (let i = 0; i < 200; i++) flooder.socket.emit("subscribe:inventory", (a) => acks.push(a));
    for (let i = 0; i < 100; i++) flooder.socket.emit("no-such-event", { i });
    await everyEventReaches(good, "gina", 50);
    assert.deepEqual(await within(closing, 10000, "session:closing"), { reason: "too many client events" });
    assert.equal(await within(dropped, 10000, "the disconnect"), "io server disconnect");
    assert.ok(acks.some((a) => a.error === "rate limited: too many client events"), "refusals are acknowledged as such");
    assert.ok(acks.filter((a) => a.ok).length <= 6, `at most the burst was accepted: ${acks.filter((a) => a.ok).length}`);
    assert.equal((await request(good, "subscribe:inventory")).ok, true, "the well-behaved socket's own budget is untouched");
    const metrics = await (await fetch(`${bridge.url}/metrics`)).text();
    assert.match(metrics, /realtime_limit_refusals_total\{limit="client_events"\} [1-9]/, "refusals are counted");
  });

  test("an oversized packet closes only the sender's connection", async () => {
    const bridge = await start({ MAX_PAYLOAD_BYTES: "2048" });
    const good = await open(bridge.url, { auth: { token: token("olga") } });
    const big = await open(bridge.url, { auth: { token: token("bert") } });
    const dropped = new Promise((r) => big.socket.once("disconnect", r));
    big.socket.emit("subscribe:orders", "x".repeat(64 * 1024));
    assert.match(await within(dropped, 10000, "the disconnect"), /transport (close|error)/);
    await everyEventReaches(good, "olga", 10);
  });

  test("a socket too slow for its events is evicted, reconnects and replays; the consumer and others never wait", async (t) => {
    const key = "limits-api-key-limits-api-key-limits-0001";
    // No Kafka backlog here: the earlier tests' order events would reach the admins too.
    // 400 × 40 KB is 16 MB of admin events: the room's history must hold them all to replay them.
    const bridge = await start({ SOCKET_BUFFER: "64", API_KEYS: key, KAFKA_TOPICS: "inventory.updated", HISTORY_MAX_ROOM_BYTES: String(32 << 20) });
    const good = await open(bridge.url, { auth: { token: token("boss-a", { roles: ["admin"] }) } });
    assert.equal((await request(good, "subscribe:admin")).ok, true);
    const slow = resumable(bridge.url, token("boss-b", { roles: ["admin"] }), { transports: ["websocket"], forceNew: true });
    clients.push(slow);
    const got = [];
    const notices = [];
    slow.socket.on("admin:bulk", (env) => got.push(env.data.i));
    slow.socket.on("session:closing", (m) => notices.push(m));
    const hellos = [];
    slow.socket.on("connection:success", (h) => hellos.push(h));
    await waitFor(() => hellos.length === 1, { what: "the slow client's connection" });
    assert.equal((await slow.request("subscribe:admin")).ok, true);

    // Stop reading: the kernel buffers fill, then the bridge's 64-packet buffer.
    slow.socket.io.engine.transport.ws._socket.pause();
    const N = 400;
    const sentAt = performance.now();
    await bulkAdminBroadcasts(bridge.url, key, N);
    const sendMs = performance.now() - sentAt;
    await waitFor(() => good.of("admin:bulk").length === N, { what: "every event at the well-behaved socket" }).catch((e) => {
      const evicted = bridge.logs.filter((l) => /evicting|slow socket/.test(l.message ?? ""));
      const missed = bridge.logs.filter((l) => l.message === "some sockets could not take an emit").length;
      throw new Error(`${e.message}: good ${good.socket.id} got ${good.of("admin:bulk").length}, connected ${good.socket.connected}, events ${JSON.stringify(good.events.map((x) => x.name).slice(0, 5))}; slow ${slow.socket.id}; missed emits ${missed}; evicted ${JSON.stringify(evicted.map((l) => l.sid))}`);
    });
    assert.deepEqual(good.of("admin:bulk").map((e) => e.payload.data.i), [...Array(N).keys()]);
    const metrics = await (await fetch(`${bridge.url}/metrics`)).text();
    assert.match(metrics, /realtime_slow_disconnects_total [1-9]/, "the slow socket was found");

    slow.socket.io.engine.transport.ws._socket.resume();
    await waitFor(() => hellos.length >= 2, { timeoutMs: 60000, what: "the slow client to reconnect" });
    assert.deepEqual(notices[0], { reason: "slow-consumer", reconnect: true });
    assert.equal(hellos[1].recovery["admin:dashboard"]?.recovered, true, JSON.stringify(hellos[1].recovery));
    await waitFor(() => new Set(got).size === N, { timeoutMs: 60000, what: "every event at the slow client, after replay" });
    const firstSeen = got.filter((i, k) => got.indexOf(i) === k);
    assert.deepEqual(firstSeen, [...Array(N).keys()], "in order, none missing");
    t.diagnostic(`${N} × 40 KB sent in ${sendMs.toFixed(0)} ms; slow client received ${got.length} (duplicates ${got.length - N}) after replay`);
  });

  test("a socket is disconnected when its token expires, unless it refreshed it (same user only)", async () => {
    const bridge = await start({});
    const exp = now() + 3;
    const expiring = await open(bridge.url, { auth: { token: token("eve", { expiresIn: 3 }) } });
    const refreshing = await open(bridge.url, { auth: { token: token("ray", { expiresIn: 3 }) } });
    const expired = new Promise((r) => expiring.socket.once("auth:expired", r));
    const dropped = new Promise((r) => expiring.socket.once("disconnect", r));

    const wrongUser = await refreshing.socket.timeout(5000).emitWithAck("auth:refresh", { token: token("mallory", { expiresIn: 3600 }) });
    assert.deepEqual(wrongUser, { ok: false, error: "the token is for another user" });
    const badToken = await refreshing.socket.timeout(5000).emitWithAck("auth:refresh", { token: token("ray", { secret: "x".repeat(40) }) });
    assert.deepEqual(badToken, { ok: false, error: "invalid token: bad signature" });
    const fresh = await refreshing.socket.timeout(5000).emitWithAck("auth:refresh", { token: token("ray", { expiresIn: 3600 }) });
    assert.equal(fresh.ok, true);
    assert.ok(fresh.expiresAt > exp + 3000);

    assert.match((await within(expired, 10000, "auth:expired")).reason, /token expired/);
    assert.equal(await within(dropped, 10000, "the disconnect"), "io server disconnect", "socket.io-client does not retry with the stale token");
    assert.ok(now() >= exp, "not before exp");
    // The refreshed socket outlived its first token and still gets its events.
    assert.equal(refreshing.socket.connected, true);
    await everyEventReaches(refreshing, "ray", 5);
  });

  test("expiry holds for a socket that stops reading: at exp it leaves its rooms, whatever its buffer", async () => {
    const key = "limits-api-key-limits-api-key-limits-0002";
    const bridge = await start({ SOCKET_BUFFER: "64", API_KEYS: key, KAFKA_TOPICS: "inventory.updated" });
    const exp = now() + 8;
    const stuck = await open(bridge.url, { auth: { token: token("boss-x", { roles: ["admin"], expiresIn: 8 }) } });
    assert.equal((await request(stuck, "subscribe:admin")).ok, true);
    const adminSockets = async () => {
      const stats = await (await fetch(`${bridge.url}/realtime/stats?top=50`, { headers: { "x-api-key": key } })).json();
      return stats.rooms.find((r) => r.room === "admin:dashboard")?.sockets ?? 0;
    };
    // Stop reading and fill its buffer, so neither the notice nor the disconnect fits.
    stuck.socket.io.engine.transport.ws._socket.pause();
    const pad = "x".repeat(40 * 1024);
    for (let i = 0; (await counters(bridge)).emitFailures === 0; i++) {
      assert.ok(i < 2000, "the buffer never filled");
      const res = await fetch(`${bridge.url}/realtime/broadcast/admin`, {
        method: "POST", headers: { "content-type": "application/json", "x-api-key": key }, body: JSON.stringify({ event: "fill", data: { i, pad } }),
      });
      assert.equal(res.status, 200);
    }
    assert.ok(now() < exp, "the buffer was full before exp");
    assert.equal(await adminSockets(), 1);
    await waitFor(async () => (await adminSockets()) === 0, { timeoutMs: 15000, what: "the expired socket out of admin:dashboard (not left to the 45 s heartbeat)" });
    assert.ok(now() >= exp, "not before exp");
  });

  test("an admin demoted by auth:refresh while subscribing never stays in admin:dashboard", async () => {
    const prefix = `e2e-demote-${Date.now()}:`;
    const bridge = await start({ REDIS_URL: process.env.REDIS_URL ?? "redis://127.0.0.1:6379", REDIS_PREFIX: prefix });
    for (let round = 0; round < 20; round++) {
      const user = `demoted-${round}`;
      const c = await open(bridge.url, { auth: { token: token(user, { roles: ["admin"] }) } });
      // Both in flight at once: the subscribe joins (a Redis round trip) while the refresh runs.
      const [sub, refreshed] = await Promise.all([
        request(c, "subscribe:admin"),
        c.socket.timeout(5000).emitWithAck("auth:refresh", { token: token(user, { roles: ["buyer"] }) }),
      ]);
      assert.equal(refreshed.ok, true, JSON.stringify(refreshed));
      const after = await request(c, "subscribe:orders");
      assert.ok(!after.rooms.includes("admin:dashboard"), `round ${round}: ${JSON.stringify({ sub, after })}`);
      c.socket.close();
    }
  });

  test("replays are budgeted per address: asking again and again for a whole history is refused with a reason", async () => {
    const bridge = await start({ REPLAY_PER_MINUTE_PER_IP: "30" });
    const user = "replayer";
    const first = await open(bridge.url, { auth: { token: token(user) } });
    const origin = first.hello.positions[`user:${user}`];
    await everyEventReaches(first, user, 20);
    const resume = () => open(bridge.url, { auth: { token: token(user), positions: { [`user:${user}`]: origin } } });
    const replayed = await resume();
    assert.deepEqual(replayed.hello.recovery[`user:${user}`], { recovered: true, replayed: 20 });
    const again = await resume();
    assert.deepEqual(again.hello.recovery[`user:${user}`], { recovered: false, replayed: 0, reason: "replay-limited" });
    assert.equal(again.of("order:updated").length, 0, "nothing of it replayed");
  });

  test("hostile tokens are refused with a reason and never logged", async () => {
    const bridge = await start({});
    const body = { sub: "h", roles: ["admin"], exp: now() + 600 };
    const none = `${b64url({ alg: "none", typ: "JWT" })}.${b64url(body)}.`;
    const cases = [
      [none, /invalid token/],
      [signed({ alg: "HS512", typ: "JWT" }, body), /algorithm not allowed/],
      [signed({ alg: "HS256", typ: "JWT" }, { ...body, nbf: now() + 600 }), /not valid yet/],
      [signed({ alg: "HS256", typ: "JWT" }, { roles: ["admin"], exp: now() + 600 }), /sub/],
      [signed({ alg: "HS256", typ: "JWT" }, { sub: "h", exp: now() - 600 }), /expired/],
      [signed({ alg: "HS256", typ: "JWT" }, body, "another-secret-another-secret-another"), /bad signature/],
      [`${signed({ alg: "HS256", typ: "JWT" }, { ...body, pad: "p".repeat(9000) })}`, /longer than/],
    ];
    for (const [tok, reason] of cases) {
      await assert.rejects(connect(bridge.url, { auth: { token: tok } }), (e) => reason.test(e.message), `${reason}`);
    }
    const logged = bridge.lines.join("\n");
    for (const [tok] of cases) assert.ok(!logged.includes(tok.split(".")[1]), "no token (or its claims) in the logs");
  });

  test("CORS: only the configured origins are allowed", async () => {
    const bridge = await start({ CORS_ORIGINS: "https://shop.example.com" });
    const ask = (origin) => fetch(`${bridge.url}/socket.io/?EIO=4&transport=polling`, { method: "OPTIONS", headers: { origin, "access-control-request-method": "GET" } });
    assert.equal((await ask("https://shop.example.com")).headers.get("access-control-allow-origin"), "https://shop.example.com");
    assert.equal((await ask("https://evil.example.com")).headers.get("access-control-allow-origin"), null);
    // A page calling the REST API with either credential passes the preflight.
    const preflight = await fetch(`${bridge.url}/realtime/stats`, {
      method: "OPTIONS",
      headers: { origin: "https://shop.example.com", "access-control-request-method": "GET", "access-control-request-headers": "x-api-key,authorization" },
    });
    const allowed = (preflight.headers.get("access-control-allow-headers") ?? "").toLowerCase();
    assert.ok(allowed.includes("x-api-key") && allowed.includes("authorization"), allowed);
  });
});
