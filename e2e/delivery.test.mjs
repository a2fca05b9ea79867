// No event lost: replay on reconnect, dead-letter topic, at-least-once across a crash,
// graceful drain, broker trouble. Real binary, Apache Kafka broker process, official client.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  bridgeEnv, connect, counters, freePort, producer, readTopic, startBridge, startBroker, startProxy, startRedis, token, waitFor,
} from "./harness.mjs";
import { resumable } from "@realtime-bridge/client";

const DLQ = "realtime-bridge.dlq";
const portOf = (url) => Number(new URL(url).port);
const orders = (prefix, buyerId, from, n) =>
  Array.from({ length: n }, (_, i) => ({ orderId: `${prefix}-${from + i}`, buyerId, status: "paid" }));

/** A resumable client that records every event it receives. */
function recordingClient(url, tok, options = {}) {
  const c = resumable(url, tok, { transports: ["websocket"], reconnectionDelay: 100, reconnectionDelayMax: 200, forceNew: true, ...options });
  const events = [];
  c.socket.onAny((name, payload) => events.push({ name, payload }));
  const of = (name) => events.filter((e) => e.name === name);
  return Object.assign(c, { events, of, hellos: () => of("connection:success").map((e) => e.payload) });
}

const orderIds = (client, event = "order:updated") => client.of(event).map((e) => e.payload.data.orderId);

describe("no event lost", () => {
  let broker, bridge, kafka;
  const cleanups = [];

  before(async () => {
    broker = await startBroker();
    await broker.createTopics(["order.updated", "inventory.updated", "order.poison", "order.trim", "order.late", "order.crash", "order.drain", DLQ], 1);
    kafka = await producer(broker.brokers);
    bridge = await startBridge(bridgeEnv(broker.brokers, { KAFKA_TOPICS: "order.updated,inventory.updated,order.poison" }));
    await bridge.ready();
  });

  after(async () => {
    for (const f of cleanups.reverse()) await f();
    await kafka?.disconnect();
    assert.equal(await bridge?.stop(), 0);
    await broker?.stop();
  });

  test("a client whose transport drops gets exactly the 200 + 20 missed events on reconnect, in order, recovered", async (t) => {
    const proxy = await startProxy(portOf(bridge.url));
    const c = recordingClient(proxy.url, token("rita"));
    cleanups.push(async () => { c.socket.close(); await proxy.close(); });
    await waitFor(() => c.hellos().length === 1, { what: "first connection" });
    assert.equal((await c.request("subscribe:inventory")).ok, true);
    assert.deepEqual(Object.keys(c.positions).sort(), ["inventory:updates", "user:rita"]);

    await kafka.send("order.updated", orders("R", "rita", 0, 5));
    await waitFor(() => orderIds(c).length === 5, { what: "5 live events" });
    const before = await counters(bridge);

    const dropped = new Promise((r) => c.socket.once("disconnect", r));
    await proxy.cut();
    assert.equal(await dropped, "transport close");
    await kafka.send("order.updated", orders("R", "rita", 5, 200));
    await kafka.send("inventory.updated", Array.from({ length: 20 }, (_, i) => ({ productId: "P-R", stock: 100 + i })));
    await waitFor(async () => (await counters(bridge)).recordsConsumed >= before.recordsConsumed + 220, { what: "the bridge to consume the 220 records" });
    assert.equal(orderIds(c).length, 5, "nothing reached the client while it was away");

    // Live events keep coming while the client reconnects and replays: the gate must
    // neither lose one between replay and join nor let one overtake the replay.
    await proxy.restore();
    const restoredAt = performance.now();
    c.socket.once("connection:success", () => t.diagnostic(`network back → replayed and live again: ${(performance.now() - restoredAt).toFixed(0)} ms (includes the client's reconnect delay, 100–200 ms)`));
    for (let i = 0; i < 10; i++) await kafka.send("order.updated", orders("R", "rita", 205 + i * 10, 10));
    await waitFor(() => c.hellos().length >= 2, { what: "the reconnection" }).catch((e) => {
      const state = { connected: c.socket.connected, hellos: c.hellos().length, events: c.events.length, last: c.events.slice(-3).map((x) => x.name) };
      const warnings = bridge.logs.filter((l) => l.level !== "INFO").slice(-10);
      throw new Error(`${e.message}: ${JSON.stringify(state)} bridge: ${JSON.stringify(warnings)}`);
    });
    assert.equal(c.hellos().length, 2, "one reconnection");
    const hello = c.hellos()[1];
    assert.deepEqual(hello.recovery["inventory:updates"], { recovered: true, replayed: 20 });
    assert.equal(hello.recovery["user:rita"].recovered, true);
    assert.ok(hello.recovery["user:rita"].replayed >= 200, `replayed ${hello.recovery["user:rita"].replayed}`);
    assert.ok(hello.rooms.includes("inventory:updates"), "the inventory room is rejoined from the handshake positions");
    const helloAt = c.events.findIndex((e) => e.payload === hello);
    const beforeHello = c.events.slice(0, helloAt).filter((e) => e.name === "order:updated").length;
    assert.equal(beforeHello - 5, hello.recovery["user:rita"].replayed, "the replayed envelopes all come before the report");
    await waitFor(() => orderIds(c).length >= 305, { what: "the replay and the live events" });
    assert.deepEqual(orderIds(c), orders("R", "rita", 0, 305).map((o) => o.orderId), "every event once, in order");
    assert.deepEqual(c.of("inventory:updated").map((e) => e.payload.data.stock), Array.from({ length: 20 }, (_, i) => 100 + i));
    const seqs = c.of("order:updated").map((e) => e.payload.position.seq);
    assert.deepEqual(seqs, seqs.map((_, i) => seqs[0] + i), "positions are consecutive in the room");
    assert.equal(c.positions["user:rita"].seq, seqs[0] + 304, "the helper keeps the latest position");
  });

  test("a gap beyond the history bound is reported recovered: false with no partial replay; other users' rooms are refused", async () => {
    const small = await startBridge(bridgeEnv(broker.brokers, { KAFKA_TOPICS: "order.trim", HISTORY_MAX_EVENTS: "50" }));
    cleanups.push(() => small.stop());
    await small.ready();
    const c = recordingClient(small.url, token("tina"), { reconnection: false });
    cleanups.push(() => c.socket.close());
    await waitFor(() => c.hellos().length === 1, { what: "connection" });
    await kafka.send("order.trim", orders("T", "tina", 0, 3));
    await waitFor(() => c.of("order:trim").length === 3, { what: "3 live events" });
    const saw = c.positions["user:tina"];

    c.socket.disconnect();
    const before = await counters(small);
    await kafka.send("order.trim", orders("T", "tina", 3, 120));
    await waitFor(async () => (await counters(small)).recordsConsumed >= before.recordsConsumed + 120, { what: "120 records consumed" });
    c.socket.connect();
    await waitFor(() => c.hellos().length === 2, { what: "the reconnection" });
    const hello = c.hellos()[1];
    assert.deepEqual(hello.recovery["user:tina"], { recovered: false, replayed: 0, reason: "history-trimmed" });
    assert.equal(c.of("order:trim").length, 3, "no partial replay");
    assert.equal(hello.positions["user:tina"].seq, saw.seq + 120, "the client is handed the head to continue from");

    // Positions naming another user's room, or an epoch the history never had.
    const mallory = await connect(small.url, {
      auth: { token: token("mallory"), positions: { "user:tina": saw, "user:mallory": { epoch: "0123456789abcdef", seq: 4 } } },
    });
    cleanups.push(() => mallory.socket.close());
    assert.deepEqual(mallory.hello.recovery, {
      "user:tina": { recovered: false, replayed: 0, reason: "forbidden" },
      "user:mallory": { recovered: false, replayed: 0, reason: "epoch-changed" },
    });
    assert.deepEqual(mallory.hello.rooms, ["user:mallory"]);
    await assert.rejects(
      connect(small.url, { auth: { token: token("x"), positions: { "user:x": "7" } } }),
      (e) => /invalid auth.positions/.test(e.message),
    );

    await kafka.send("order.trim", orders("T", "tina", 123, 1));
    await waitFor(() => c.of("order:trim").length === 4, { what: "the live event after reconnecting" });
    assert.equal(c.of("order:trim")[3].payload.position.seq, saw.seq + 121);
    assert.deepEqual(mallory.events.map((e) => e.name), ["connection:success"], "mallory never sees tina's events");
  });

  test("poison records go to the dead-letter topic with their coordinates; the good ones around them arrive in order", async () => {
    const c = recordingClient(bridge.url, token("pat"));
    cleanups.push(() => c.socket.close());
    await waitFor(() => c.hellos().length === 1, { what: "connection" });
    const huge = JSON.stringify({ orderId: "P-big", buyerId: "pat", status: "paid", note: "x".repeat(300 * 1024) });
    await kafka.sendRaw("order.poison", [
      { value: JSON.stringify({ orderId: "P-1", buyerId: "pat", status: "paid" }) },
      { key: "k-json", value: "{ not json" },
      { key: "k-field", value: JSON.stringify({ orderId: "P-x", buyerId: "pat" }), invalid: true },
      { value: huge },
      { value: JSON.stringify({ orderId: "P-2", buyerId: "pat", status: "shipped" }) },
    ]);
    await waitFor(() => c.of("order:poison").length === 2, { what: "the two good events" });
    assert.deepEqual(c.of("order:poison").map((e) => e.payload.data.orderId), ["P-1", "P-2"]);
    const first = Number(c.of("order:poison")[0].payload.id.split(":").pop());

    const letters = await readTopic(broker.brokers, DLQ, 3);
    assert.deepEqual(letters.map((l) => l.headers["dlq.source.offset"]), [first + 1, first + 2, first + 3].map(String));
    for (const l of letters) {
      assert.equal(l.headers["dlq.source.topic"], "order.poison");
      assert.equal(l.headers["dlq.source.partition"], "0");
    }
    assert.match(letters[0].headers["dlq.error"], /invalid payload/);
    assert.match(letters[1].headers["dlq.error"], /field "status" must not be empty/);
    assert.match(letters[2].headers["dlq.error"], /over the 262144-byte limit/);
    assert.deepEqual([letters[0].key, letters[0].value], ["k-json", "{ not json"], "key and value are copied as is");
    assert.equal(letters[2].value, huge);
    assert.equal((await counters(bridge)).recordsDeadLettered, 3);
  });

  test("a hostile producer: odd metadata and values between good ones — the good arrive in order, the bad are dead-lettered, the bridge stays ready", async () => {
    await broker.createTopics(["order.hostile", "e2e.dlq.hostile"], 1);
    const hb = await startBridge(bridgeEnv(broker.brokers, { KAFKA_TOPICS: "order.hostile", KAFKA_DLQ_TOPIC: "e2e.dlq.hostile" }));
    cleanups.push(() => hb.stop());
    await hb.ready();
    const c = recordingClient(hb.url, token("hana"));
    cleanups.push(() => c.socket.close());
    await waitFor(() => c.hellos().length === 1, { what: "connection" });
    const good = (n) => JSON.stringify({ orderId: `H-${n}`, buyerId: "hana", status: "paid" });
    const binary = Buffer.from([0, 0xff, 0xfe, 0x80, 0x0a]);
    const manyHeaders = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`h${i}`, i % 2 ? binary : `v${i}`]));
    await kafka.sendRaw("order.hostile", [
      { value: good(1) },
      // A producer writing microseconds (Date.now() * 1000): a time past year 9999.
      { value: good(2), timestamp: String(Date.now() * 1000) },
      { value: Buffer.from([0, 0xff, 0x7b]), key: binary, headers: manyHeaders },
      { value: good(3), timestamp: "0" },
      { value: good(4), key: "k".repeat(100 * 1024), headers: manyHeaders },
      { value: null },
      { value: good(5), timestamp: String(8.64e15) },
      { value: "[1,2,3]" },
      { value: good(6) },
    ]);
    await waitFor(() => orderIds(c, "order:hostile").length === 6, { what: "the six good events" });
    assert.deepEqual(orderIds(c, "order:hostile"), ["H-1", "H-2", "H-3", "H-4", "H-5", "H-6"]);
    const at = (id) => c.of("order:hostile").find((e) => e.payload.data.orderId === id).payload.occurredAt;
    assert.equal(at("H-3"), "1970-01-01T00:00:00.000Z", "a writable record time is kept");
    for (const id of ["H-2", "H-5"]) assert.ok(Math.abs(Date.parse(at(id)) - Date.now()) < 120000, `${id}: the bridge's own time, ${at(id)}`);

    const letters = (await readTopic(broker.brokers, "e2e.dlq.hostile", 3)).sort((a, b) => a.offset - b.offset);
    assert.match(letters[0].headers["dlq.error"], /invalid payload|expected a JSON object/);
    assert.equal(letters[0].headers.h0, "v0", "the source headers are copied");
    assert.equal(Object.keys(letters[0].headers).filter((h) => /^h\d+$/.test(h)).length, 100);
    assert.match(letters[1].headers["dlq.error"], /no payload/);
    assert.match(letters[2].headers["dlq.error"], /expected a JSON object/);
    const health = await hb.health();
    assert.equal(health.status, 200, JSON.stringify(health.body));
    assert.equal(health.body.kafka.consumerRestarts, 0);
    await kafka.sendRaw("order.hostile", [{ value: good(7) }]);
    await waitFor(() => orderIds(c, "order:hostile").length === 7, { what: "still consuming" });
  });

  test("when the dead-letter topic cannot take a poison record, its partition waits instead of skipping it", async () => {
    const late = await startBridge(bridgeEnv(broker.brokers, { KAFKA_TOPICS: "order.late", KAFKA_DLQ_TOPIC: "e2e.dlq.late" }));
    cleanups.push(() => late.stop());
    await late.ready();
    const c = recordingClient(late.url, token("lena"));
    cleanups.push(() => c.socket.close());
    await waitFor(() => c.hellos().length === 1, { what: "connection" });
    await kafka.send("order.late", ["not an event", ...orders("L", "lena", 0, 1)]);
    await waitFor(async () => (await counters(late)).deadLetterFailures >= 1, { timeoutMs: 60000, what: "a failed dead-letter attempt" });
    assert.equal(c.of("order:late").length, 0, "the record after the poison one waits");
    // Held up for long: loudly not ready, not silently stuck.
    await waitFor(async () => {
      const { status, body } = await late.health();
      return status === 503 && body.kafka.deadLetter === "failing";
    }, { timeoutMs: 60000, what: "not ready while dead-lettering fails" });

    await broker.createTopics(["e2e.dlq.late"], 1);
    await waitFor(() => c.of("order:late").length === 1, { timeoutMs: 60000, what: "the partition to move on" });
    await waitFor(async () => (await late.health()).status === 200, { what: "ready again" });
    const [letter] = await readTopic(broker.brokers, "e2e.dlq.late", 1);
    assert.equal(letter.value, "not an event");
    assert.equal((await counters(late)).recordsDeadLettered, 1);
  });

  test("after a crash (SIGKILL) a new member re-delivers from the last commit: every event arrives, duplicates keep their id", async (t) => {
    const env = bridgeEnv(broker.brokers, { KAFKA_TOPICS: "order.crash" });
    const a = await startBridge(env);
    await a.ready();
    const onA = recordingClient(a.url, token("cora"), { reconnection: false });
    cleanups.push(() => onA.socket.close());
    await waitFor(() => onA.hellos().length === 1, { what: "connection to A" });
    await kafka.send("order.crash", orders("C", "cora", 0, 60));
    await waitFor(() => orderIds(onA, "order:crash").length >= 30, { what: "A to deliver part of the stream" });
    await a.stop("SIGKILL");
    await kafka.send("order.crash", orders("C", "cora", 60, 40));

    const b = await startBridge(env); // same group: resumes from A's last commit
    cleanups.push(() => b.stop());
    const onB = recordingClient(b.url, token("cora"), { reconnection: false });
    cleanups.push(() => onB.socket.close());
    await waitFor(() => onB.hellos().length === 1, { what: "connection to B" });
    const all = () => new Set([...orderIds(onA, "order:crash"), ...orderIds(onB, "order:crash")]);
    await waitFor(() => all().size === 100, { timeoutMs: 60000, what: "all 100 events across both nodes" });

    const idOf = new Map();
    for (const e of [...onA.of("order:crash"), ...onB.of("order:crash")]) {
      const seen = idOf.get(e.payload.data.orderId);
      if (seen) assert.equal(e.payload.id, seen, "a re-delivered record has the same envelope id");
      idOf.set(e.payload.data.orderId, e.payload.id);
    }
    const dups = orderIds(onB, "order:crash").filter((id) => orderIds(onA, "order:crash").includes(id)).length;
    assert.ok(orderIds(onB, "order:crash").length >= 40, "B delivers at least what A never saw");
    assert.deepEqual(orderIds(onB, "order:crash"), orders("C", "cora", 100 - orderIds(onB, "order:crash").length, orderIds(onB, "order:crash").length).map((o) => o.orderId), "B delivers in order");
    t.diagnostic(`A delivered ${orderIds(onA, "order:crash").length} before SIGKILL; B delivered ${orderIds(onB, "order:crash").length}, of which ${dups} duplicates`);
  });

  test("SIGTERM drains: not ready, consumer stopped and committed, transports closed so clients reconnect elsewhere", async (t) => {
    const env = bridgeEnv(broker.brokers, { KAFKA_TOPICS: "order.drain" });
    const a = await startBridge(env);
    await a.ready();
    const lb = await startProxy(portOf(a.url));
    const c = recordingClient(lb.url, token("dora"));
    cleanups.push(async () => { c.socket.close(); await lb.close(); });
    await waitFor(() => c.hellos().length === 1, { what: "connection through the load balancer" });
    await kafka.send("order.drain", orders("D", "dora", 0, 20));
    await waitFor(() => c.of("order:drain").length === 20, { what: "20 events from A" });

    const dropped = new Promise((r) => c.socket.once("disconnect", r));
    const t0 = performance.now();
    assert.equal(await a.stop("SIGTERM"), 0);
    const drainMs = performance.now() - t0;
    assert.equal(await dropped, "transport close", "a reason socket.io-client reconnects on");
    const steps = [
      "shutdown: readiness is now false",
      "shutdown: stopping the consumer after the record in flight",
      "offsets committed",
      "shutdown: closing socket transports so clients reconnect elsewhere",
      "shutdown: closing the HTTP server",
      "shutdown: done",
    ];
    const at = steps.map((s) => a.logs.findIndex((l) => l.message === s));
    assert.ok(at.every((i) => i >= 0), `every step is logged: ${JSON.stringify(at)}`);
    assert.deepEqual([...at].sort((x, y) => x - y), at, "in this order");

    const b = await startBridge(env);
    cleanups.push(() => b.stop());
    lb.retarget(portOf(b.url));
    await waitFor(() => c.hellos().length === 2, { what: "the client to reconnect to B" });
    await b.ready();
    await kafka.send("order.drain", orders("D", "dora", 20, 20));
    await waitFor(() => c.of("order:drain").length >= 40, { what: "20 more events from B" });
    assert.deepEqual(
      c.of("order:drain").map((e) => e.payload.data.orderId),
      orders("D", "dora", 0, 40).map((o) => o.orderId),
      "B resumed exactly after A's committed offsets: no duplicate, no gap",
    );
    t.diagnostic(`SIGTERM → exit took ${drainMs.toFixed(0)} ms`);
  });
});

describe("replay history in Redis", () => {
  test("survives a restart: a client that reconnects to the next process recovers what it missed", async () => {
    const broker = await startBroker();
    await broker.createTopics(["order.redis", DLQ], 1);
    const kafka = await producer(broker.brokers);
    const env = bridgeEnv(broker.brokers, {
      KAFKA_TOPICS: "order.redis",
      REDIS_URL: process.env.REDIS_URL ?? "redis://127.0.0.1:6379",
      REDIS_PREFIX: `e2e-${Date.now()}-${Math.random().toString(16).slice(2)}:`,
    });
    const a = await startBridge(env);
    const lb = await startProxy(portOf(a.url));
    const c = recordingClient(lb.url, token("rhea"));
    let b;
    try {
      await a.ready();
      await waitFor(() => c.hellos().length === 1, { what: "connection to A" });
      await kafka.send("order.redis", orders("H", "rhea", 0, 5));
      await waitFor(() => orderIds(c, "order:redis").length === 5, { what: "5 events from A" });
      assert.equal(await a.stop("SIGTERM"), 0);
      await kafka.send("order.redis", orders("H", "rhea", 5, 20));
      b = await startBridge(env);
      lb.retarget(portOf(b.url));
      await waitFor(() => c.hellos().length === 2, { what: "the reconnection to B" });
      assert.deepEqual(c.hellos()[1].recovery["user:rhea"]?.recovered, true, JSON.stringify(c.hellos()[1].recovery));
      await waitFor(() => orderIds(c, "order:redis").length >= 25, { what: "all 25 events" });
      assert.deepEqual(orderIds(c, "order:redis"), orders("H", "rhea", 0, 25).map((o) => o.orderId), "once each, in order, across the restart");
      const seqs = c.of("order:redis").map((e) => e.payload.position.seq);
      assert.deepEqual(seqs, seqs.map((_, i) => i + 1), "one numbering across both processes");
    } finally {
      c.socket.close();
      await lb.close();
      await kafka.disconnect();
      if (b) assert.equal(await b.stop(), 0);
      await broker.stop();
    }
  });
});

describe("Redis trouble", () => {
  test("Redis absent at start, then killed and restarted: not ready meanwhile, then ready; an event produced during the outage is delivered", async () => {
    const broker = await startBroker();
    await broker.createTopics(["order.rtrouble", DLQ], 1);
    const kafka = await producer(broker.brokers);
    // Redis is not there yet when the bridge starts: it serves, is not ready, and waits.
    const redisPort = await freePort();
    const bridge = await startBridge(bridgeEnv(broker.brokers, { KAFKA_TOPICS: "order.rtrouble", REDIS_URL: `redis://127.0.0.1:${redisPort}` }));
    let redis;
    let c;
    try {
      assert.equal((await bridge.health("/health/live")).status, 200);
      await waitFor(async () => (await bridge.health("/health")).body.redis.status === "down", { what: "Redis reported down" });
      assert.equal((await bridge.health()).status, 503);
      redis = await startRedis(redisPort);
      await bridge.ready(60000);
      c = recordingClient(bridge.url, token("rudy"));
      assert.equal((await bridge.health()).body.redis.status, "up");
      await waitFor(() => c.hellos().length === 1, { what: "connection" });
      await kafka.send("order.rtrouble", orders("X", "rudy", 0, 3));
      await waitFor(() => orderIds(c, "order:rtrouble").length === 3, { what: "3 events" });

      await redis.kill();
      await waitFor(async () => (await bridge.health()).status === 503, { what: "readiness to turn false" });
      assert.equal((await bridge.health()).body.redis.status, "down");
      assert.ok(bridge.logs.some((l) => l.message === "Redis is unreachable; not ready until it answers again"));
      await kafka.send("order.rtrouble", orders("X", "rudy", 3, 1));

      redis = await startRedis(redis.port);
      await bridge.ready(60000);
      assert.ok(bridge.logs.some((l) => l.message === "Redis is reachable again; ready"));
      await kafka.send("order.rtrouble", orders("X", "rudy", 4, 1));
      await waitFor(() => new Set(orderIds(c, "order:rtrouble")).size === 5, { timeoutMs: 60000, what: "the outage's event and the next one" });
      const unique = orderIds(c, "order:rtrouble").filter((id, i, all) => all.indexOf(id) === i);
      assert.deepEqual(unique, orders("X", "rudy", 0, 5).map((o) => o.orderId), "nothing skipped, order kept");
    } finally {
      c?.socket.close();
      await kafka.disconnect();
      assert.equal(await bridge.stop(), 0);
      await redis?.kill();
      await broker.stop();
    }
  });
});

describe("broker trouble", () => {
  test("unreachable at start: live, not ready, retrying; then ready and delivering; a cut mid-stream skips nothing", async () => {
    const brokerPort = await freePort();
    const net = await startProxy(brokerPort);
    await net.cut();
    const bridge = await startBridge(bridgeEnv(`127.0.0.1:${net.port}`, { KAFKA_TOPICS: "order.updated" }));
    let broker, kafka, c;
    try {
      assert.equal((await bridge.health("/health/live")).status, 200);
      await waitFor(() => bridge.logs.some((l) => l.message === "kafka client error"), { what: "a failed connection attempt" });
      const early = await bridge.health();
      assert.equal(early.status, 503);
      assert.equal(early.body.kafka.status, "connecting");

      broker = await startBroker({ port: brokerPort, advertisedPort: net.port });
      await broker.createTopics(["order.updated"], 1);
      await net.restore();
      await bridge.ready(60000);
      kafka = await producer(`127.0.0.1:${net.port}`);
      c = recordingClient(bridge.url, token("brook"), { reconnection: false });
      await waitFor(() => c.hellos().length === 1, { what: "connection" });
      await kafka.send("order.updated", orders("B", "brook", 0, 30));
      await waitFor(() => orderIds(c).length === 30, { what: "30 events before the cut" });

      const errorsBefore = bridge.logs.filter((l) => l.message === "kafka client error").length;
      await net.cut();
      await waitFor(() => bridge.logs.filter((l) => l.message === "kafka client error").length > errorsBefore, { what: "the bridge to notice the cut" });
      await net.restore();
      await kafka.send("order.updated", orders("B", "brook", 30, 30));
      await waitFor(() => new Set(orderIds(c)).size === 60, { timeoutMs: 60000, what: "all 60 events" });
      const unique = orderIds(c).filter((id, i, all) => all.indexOf(id) === i);
      assert.deepEqual(unique, orders("B", "brook", 0, 60).map((o) => o.orderId), "nothing skipped, order kept");
    } finally {
      c?.socket.close();
      await kafka?.disconnect();
      assert.equal(await bridge.stop(), 0);
      await broker?.stop();
      await net.close();
    }
  });
});

describe("broker restart", () => {
  test("the broker SIGKILLed mid-stream and restarted from its log directory: every produced event reaches the client", async (t) => {
    const broker = await startBroker();
    const cleanup = [];
    try {
      await broker.createTopics(["order.restart", DLQ], 1);
      const bridge = await startBridge(bridgeEnv(broker.brokers, { KAFKA_TOPICS: "order.restart" }));
      cleanup.push(() => bridge.stop());
      await bridge.ready();
      const c = recordingClient(bridge.url, token("rhea"));
      cleanup.push(() => c.socket.close());
      await waitFor(() => c.hellos().length === 1, { what: "connection" });
      let kafka = await producer(broker.brokers);
      await kafka.send("order.restart", orders("K", "rhea", 0, 40));
      await waitFor(() => orderIds(c, "order:restart").length >= 10, { what: "part of the stream" });

      await broker.kill();
      await kafka.disconnect().catch(() => {});
      const killedAt = performance.now();
      await broker.restart();
      const restartMs = performance.now() - killedAt;
      kafka = await producer(broker.brokers);
      cleanup.push(() => kafka.disconnect());
      await kafka.send("order.restart", orders("K", "rhea", 40, 40));

      const expected = orders("K", "rhea", 0, 80).map((o) => o.orderId);
      await waitFor(() => expected.every((id) => orderIds(c, "order:restart").includes(id)), { timeoutMs: 90000, what: "all 80 events" });
      const received = orderIds(c, "order:restart");
      const lost = c.hellos().flatMap((h) => Object.values(h.recovery ?? {})).filter((r) => !r.recovered).length;
      t.diagnostic(`broker restarted in ${restartMs.toFixed(0)} ms; ${received.length} deliveries for 80 events (duplicates ${received.length - new Set(received).size}), recovered:false ${lost}`);
      const firstSeen = received.filter((id, i) => received.indexOf(id) === i);
      assert.deepEqual(firstSeen, expected, "in order, none missing");
    } finally {
      for (const f of cleanup.reverse()) await f();
      await broker.stop();
    }
  });
});
