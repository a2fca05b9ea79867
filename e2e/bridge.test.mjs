// The bridge end to end: Apache Kafka broker process → realtime-bridge binary → socket.io-client.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  BRIDGE_BIN, bridgeEnv, connect, counters, producer, request, startBridge, startBroker, token, waitFor, checkRecord, checkedRecords,
} from "./harness.mjs";

const TOPICS = ["order.created", "order.updated", "order.cancelled", "inventory.updated", "product.created", "product.updated", "realtime-bridge.dlq"];

describe("bridge against a Kafka broker process", () => {
  let broker, bridge, kafka;
  const clients = [];
  const open = async (...args) => {
    const c = await connect(...args);
    clients.push(c);
    return c;
  };

  before(async () => {
    broker = await startBroker();
    await broker.createTopics(TOPICS);
    bridge = await startBridge(bridgeEnv(broker.brokers));
    kafka = await producer(broker.brokers);
    await bridge.ready();
  });

  after(async () => {
    for (const c of clients) c.socket.close();
    await kafka?.disconnect();
    const code = await bridge?.stop();
    await broker?.stop();
    assert.equal(code, 0, "the bridge exits cleanly on SIGTERM");
  });

  test("the handshake refuses missing and bad tokens with a reason", async () => {
    await assert.rejects(connect(bridge.url), (e) => /authentication required/.test(e.message));
    await assert.rejects(connect(bridge.url, { auth: { token: "not-a-jwt" } }), (e) => /invalid token: malformed/.test(e.message));
    await assert.rejects(
      connect(bridge.url, { auth: { token: token("u1", { secret: "some-other-secret-some-other-secret" }) } }),
      (e) => /bad signature/.test(e.message),
    );
    await assert.rejects(connect(bridge.url, { auth: { token: token("u1", { expiresIn: -3600 }) } }), (e) => /expired/.test(e.message));
    // Older clients pass the token in the query string.
    const legacy = await open(bridge.url, { query: { token: token("legacy-user") } });
    assert.equal(legacy.hello.userId, "legacy-user");
  });

  test("connection:success names the socket, the user and its rooms", async () => {
    const c = await open(bridge.url, { auth: { token: token("hello-user") } });
    assert.equal(c.hello.userId, "hello-user");
    assert.equal(c.hello.socketId, c.socket.id);
    assert.equal(c.hello.isAdmin, false);
    assert.ok(c.hello.rooms.includes("user:hello-user"));
    assert.deepEqual(await request(c, "subscribe:orders"), { ok: true, rooms: c.hello.rooms });
    const denied = await request(c, "subscribe:admin");
    assert.equal(denied.ok, false);
    assert.match(denied.error, /admin role required/);
    assert.ok(!denied.rooms.includes("admin:dashboard"));
  });

  test("an order update reaches the buyer's two sockets and the admin, never another buyer", async (t) => {
    const [a1, a2, b, admin] = await Promise.all([
      open(bridge.url, { auth: { token: token("alice") } }),
      open(bridge.url, { auth: { token: token("alice") } }),
      open(bridge.url, { auth: { token: token("bob") } }),
      open(bridge.url, { auth: { token: token("root", { roles: ["admin"] }) } }),
    ]);
    const joined = await request(admin, "subscribe:admin");
    assert.deepEqual([joined.ok, joined.rooms], [true, ["admin:dashboard", "user:root"]]);
    assert.deepEqual(Object.keys(joined.positions), ["admin:dashboard"], "the ack hands back the room's position");

    const sentAt = performance.now();
    await kafka.send("order.updated", [{ orderId: "A-1", buyerId: "alice", status: "shipped", previousStatus: "paid", extra: 1 }]);
    // Bob's own event, later on the same partition: once he has it, Alice's was emitted before it.
    await kafka.send("order.updated", [{ orderId: "B-1", userId: "bob", status: "paid" }]);

    for (const c of [a1, a2]) await waitFor(() => c.of("order:updated").length === 1, { what: "alice's order:updated" });
    await waitFor(() => b.of("order:updated").length === 1, { what: "bob's order:updated" });
    await waitFor(() => admin.of("admin:order:updated").length === 2, { what: "both admin:order:updated" });

    const env = a1.of("order:updated")[0].payload;
    assert.equal(env.type, "order.updated");
    assert.match(env.id, /^order\.updated:0:\d+$/);
    assert.ok(!Number.isNaN(Date.parse(env.occurredAt)));
    assert.deepEqual(env.data, { orderId: "A-1", buyerId: "alice", status: "shipped", previousStatus: "paid" });
    assert.equal(env.message, "Your order A-1 has shipped");
    assert.equal(env.priority, "normal");
    assert.deepEqual(a2.of("order:updated")[0].payload, env, "every device gets the same envelope");
    assert.equal(env.position.room, "user:alice");
    assert.equal(env.position.seq, 1);

    assert.deepEqual(b.events.map((e) => e.payload?.data?.orderId).filter(Boolean), ["B-1"], "bob sees only his own order");
    assert.equal(b.of("order:updated")[0].payload.data.buyerId, "bob", "userId is accepted as buyerId");
    assert.deepEqual(admin.of("admin:order:updated").map((e) => e.payload.data.orderId), ["A-1", "B-1"]);
    assert.equal(admin.of("admin:order:updated")[0].payload.id, env.id, "one id per record across rooms");
    assert.equal(admin.of("order:updated").length, 0, "the admin is not in buyers' rooms");
    t.diagnostic(`Kafka produce → socket receive: ${(a1.of("order:updated")[0].at - sentAt).toFixed(1)} ms (Apache Kafka, default fetch settings)`);
  });

  test("stock at 0 reaches inventory subscribers and raises the out-of-stock alert", async () => {
    const [shopper, idle, admin] = await Promise.all([
      open(bridge.url, { auth: { token: token("shopper") } }),
      open(bridge.url, { auth: { token: token("idle") } }),
      open(bridge.url, { auth: { token: token("ops", { roles: ["admin"] }) } }),
    ]);
    assert.equal((await request(shopper, "subscribe:inventory")).ok, true);
    assert.equal((await request(admin, "subscribe:admin")).ok, true);

    await kafka.send("inventory.updated", [
      { productId: "P-9", sku: "MUG-1", productName: "Mug", stock: 4, previousStock: 9 },
      { productId: "P-9", sku: "MUG-1", productName: "Mug", stock: 0, previousStock: 4 },
    ]);
    await waitFor(() => shopper.of("inventory:updated").length === 2, { what: "two inventory:updated" });
    await waitFor(() => admin.of("admin:inventory:out-of-stock").length === 1, { what: "out-of-stock alert" });
    assert.deepEqual(shopper.of("inventory:updated").map((e) => e.payload.data.stock), [4, 0]);
    assert.equal(admin.of("admin:inventory:low-stock").length, 1, "crossing 5 raised one low-stock alert");
    const alert = admin.of("admin:inventory:out-of-stock")[0].payload;
    assert.equal(alert.type, "inventory.out-of-stock");
    assert.equal(alert.priority, "high");
    assert.equal(alert.message, "Mug (MUG-1) is out of stock");
    assert.equal(shopper.of("admin:inventory:out-of-stock").length, 0, "alerts are for admins only");
    assert.equal(admin.of("inventory:updated").length, 0, "the admin did not subscribe to inventory");

    // After unsubscribing, stock news stops (checked against a later event the idle user does get).
    assert.equal((await request(shopper, "unsubscribe:inventory")).ok, true);
    await kafka.send("inventory.updated", [{ productId: "P-9", stock: 20, previousStock: 0 }]);
    await kafka.send("order.created", [{ orderId: "I-1", buyerId: "shopper", status: "pending" }]);
    await waitFor(() => shopper.of("order:created").length === 1, { what: "shopper's order:created" });
    assert.equal(shopper.of("inventory:updated").length, 2);
    assert.deepEqual(idle.events.map((e) => e.name), ["connection:success"], "a socket in no shared room gets nothing else");
  });

  test("a garbage record between two good ones does not stop them, and order is kept", async () => {
    const c = await open(bridge.url, { auth: { token: token("carol") } });
    const json = (v) => JSON.stringify(v);
    await kafka.sendRaw("order.updated", [
      { value: json({ orderId: "C-1", buyerId: "carol", status: "paid" }) },
      { value: "{ this is not json" },
      { value: json({ orderId: "C-2", buyerId: "carol" }), invalid: true }, // status missing: invalid too
      { value: json({ orderId: "C-3", buyerId: "carol", status: "shipped" }) },
    ]);
    await waitFor(() => c.of("order:updated").length === 2, { what: "carol's two good events" });
    assert.deepEqual(c.of("order:updated").map((e) => e.payload.data.orderId), ["C-1", "C-3"]);
    const [first, second] = c.of("order:updated").map((e) => Number(e.payload.id.split(":").pop()));
    assert.equal(second, first + 3, "the two bad records in between were consumed and skipped");
    await waitFor(
      () => bridge.logs.filter((l) => l.message === "record dead-lettered" && l.topic === "order.updated").length >= 2,
      { what: "the dead-lettering to be logged" },
    );
    const skipped = bridge.logs.find((l) => l.message === "record is not a valid event");
    assert.equal(skipped.partition, 0);
    assert.equal(skipped.offset, first + 1);
    const { body } = await bridge.health("/health");
    assert.equal(body.kafka.recordsInvalid, 2, "both bad records are counted");
    assert.equal(body.kafka.recordsDeadLettered, 2);
  });

  test("latency sample: one event at a time, produce → receive (reported, not asserted)", async (t) => {
    const c = await open(bridge.url, { auth: { token: token("latency") } });
    const samples = [];
    for (let i = 0; i < 30; i++) {
      const sentAt = performance.now();
      await kafka.send("order.updated", [{ orderId: `L-${i}`, buyerId: "latency", status: "paid" }]);
      await waitFor(() => c.of("order:updated").length === i + 1, { intervalMs: 1, what: `latency event ${i}` });
      samples.push(c.of("order:updated")[i].at - sentAt);
    }
    assert.deepEqual(c.of("order:updated").map((e) => e.payload.data.orderId), samples.map((_, i) => `L-${i}`));
    samples.sort((a, b) => a - b);
    const pct = (p) => samples[Math.min(samples.length - 1, Math.floor(p * samples.length))].toFixed(1);
    t.diagnostic(`produce → receive over ${samples.length} events: p50 ${pct(0.5)} ms, p90 ${pct(0.9)} ms, max ${pct(1)} ms (Apache Kafka, default fetch settings)`);
  });

  test("a new order.* topic is picked up without a restart", async () => {
    const c = await open(bridge.url, { auth: { token: token("dave") } });
    await broker.createTopics(["order.returned"], 1);
    await kafka.send("order.returned", [{ orderId: "D-1", buyerId: "dave", status: "returned" }]);
    await waitFor(() => c.of("order:returned").length === 1, { timeoutMs: 30000, what: "order:returned from the new topic" });
    assert.equal(c.of("order:returned")[0].payload.message, "Your order D-1 has been returned");
  });

  test("records compressed with each codec (gzip, snappy, lz4, zstd) are consumed like plain ones", async () => {
    for (const codec of ["none", "gzip", "snappy", "lz4", "zstd"]) {
      const before = await counters(bridge);
      // The bridge's own demo producer, compressing its batches.
      execFileSync(BRIDGE_BIN, ["demo", "--brokers", broker.brokers, "--rate", "500", "--count", "20", "--compression", codec], { env: { PATH: process.env.PATH }, stdio: "pipe" });
      await waitFor(async () => (await counters(bridge)).recordsConsumed >= before.recordsConsumed + 20, { what: `20 ${codec} records consumed` });
      const after = await counters(bridge);
      assert.equal(after.recordsInvalid, before.recordsInvalid, `${codec}: none refused`);
      assert.equal(after.recordsDeadLettered, before.recordsDeadLettered, `${codec}: none dead-lettered`);
    }
  });
});

describe("development mode with nothing configured", () => {
  test("starts on the embedded broker and the demo stream reaches the demo buyer", async () => {
    const dev = await startBridge({ DEV_DEMO_RATE: "20", KAFKA_AUTO_OFFSET_RESET: "earliest" });
    try {
      const line = await waitFor(() => dev.lines.find((l) => l.startsWith("Buyer token (demo-buyer):")), { what: "the dev banner" });
      const buyerToken = line.split(":").pop().trim();
      assert.ok(dev.lines.some((l) => l.startsWith("Embedded Kafka (development only):")));
      await dev.ready();
      const c = await connect(dev.url, { auth: { token: buyerToken } });
      await waitFor(() => c.events.some((e) => e.name.startsWith("order:")), { timeoutMs: 30000, what: "a demo order event" });
      const e = c.events.find((e) => e.name.startsWith("order:"));
      assert.equal(e.payload.data.buyerId, "demo-buyer");
      c.socket.close();
    } finally {
      assert.equal(await dev.stop(), 0);
    }
  });

  test("production refuses to start without a JWT key, naming the variable", async () => {
    await assert.rejects(
      startBridge({ APP_ENV: "production", KAFKA_BROKERS: "127.0.0.1:1", CORS_ORIGINS: "https://shop.example.com" }),
      /JWT_SECRET must be set when APP_ENV=production/,
    );
  });


});

describe("the suite's records and the published record schemas", () => {
  test("the schemas say what the bridge accepts, and the records above were checked against them", () => {
    assert.throws(() => checkRecord("order.shipped", JSON.stringify({ orderId: "1", buyerId: "u" })), /refuses/, "status missing");
    checkRecord("order.shipped", JSON.stringify({ orderId: "1", buyerId: "u" }), { invalid: true });
    assert.throws(() => checkRecord("order.cancelled", JSON.stringify({ orderId: "1", buyerId: "u" }), { invalid: true }), /accepts/);
    checkRecord("product.created", JSON.stringify({ productId: 5, name: "Mug" }));
    assert.ok(checkedRecords.count >= 20, `checked ${checkedRecords.count} records`);
  });
});
