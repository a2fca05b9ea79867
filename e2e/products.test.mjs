// Live stock for the products on screen: `subscribe:products` joins `product:<id>` rooms and
// answers with each product's latest state as of the position it gives; a page then applies
// the envelopes after that position. Real binary, Apache Kafka, official client; one node,
// then two with Redis between them.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { bridgeEnv, connect, counters, producer, startBridge, startBroker, token, waitFor } from "./harness.mjs";
import { resumable } from "@realtime-bridge/client";
import { twoNodes, prefix } from "./cluster-kit.mjs";

const TOPICS = ["inventory.updated", "product.updated", "realtime-bridge.dlq"];
const stock = (productId, s, previous) => ({ key: productId, value: JSON.stringify({ productId, stock: s, ...(previous === undefined ? {} : { previousStock: previous }) }) });

/** A storefront page: its products' state, from the snapshot, then every live envelope after
 * the position the snapshot is as of (earlier ones are already in it). */
function page(socket) {
  const state = {}; // productId -> { seq, ...fields }
  const events = [];
  const apply = (env) => {
    const id = env.data.productId;
    const known = state[id];
    if (!known || env.position.seq <= known.seq) return;
    const { productId: _, ...fields } = env.data;
    state[id] = { ...known, ...fields, ...(fields.productName ? { name: fields.productName } : {}), seq: env.position.seq };
  };
  for (const name of ["inventory:updated", "product:updated", "product:created"]) socket.on(name, (env) => { events.push({ name, env }); apply(env); });
  return {
    state, events,
    // The ack is taken in its callback, not after an `await`: Node's ws hands over several
    // packets in one tick, and a continuation would run after the room's first live envelopes.
    subscribe(productIds) {
      return new Promise((resolve) =>
        socket.emit("subscribe:products", { productIds }, (ack) => {
          if (ack.ok) for (const id of productIds) state[id] = { ...(ack.snapshot[id] ?? {}), seq: ack.positions[`product:${id}`].seq };
          resolve(ack);
        }),
      );
    },
  };
}

describe("per-product subscriptions", () => {
  let broker, kafka, bridge;
  const closers = [];

  before(async () => {
    broker = await startBroker();
    await broker.createTopics(TOPICS, 1);
    kafka = await producer(broker.brokers);
    bridge = await startBridge(bridgeEnv(broker.brokers, { KAFKA_TOPICS: "inventory.updated,product.updated", MAX_PRODUCT_SUBSCRIPTIONS: "3" }));
    await bridge.ready();
  });

  after(async () => {
    for (const close of closers.reverse()) await close();
    await kafka?.disconnect();
    await bridge?.stop();
    await broker?.stop();
  });

  const open = async (user) => {
    const c = await connect(bridge.url, { auth: { token: token(user) } });
    closers.push(async () => c.socket.close());
    return c;
  };
  const consumed = async (n) => waitFor(async () => (await counters(bridge)).recordsConsumed >= n, { what: `${n} records consumed` });

  test("two pages get only their products' events, and a snapshot equal to the last produced state", async () => {
    await kafka.sendRaw("inventory.updated", [stock("p-1", 10), stock("p-2", 3)]);
    await kafka.sendRaw("product.updated", [{ key: "p-1", value: JSON.stringify({ productId: "p-1", name: "Mug", sku: "MUG-1", price: 9.5 }) }]);
    await consumed(3);
    const [a, b] = [page((await open("shopper-a")).socket), page((await open("shopper-b")).socket)];
    const ackA = await a.subscribe(["p-1"]);
    assert.equal(ackA.ok, true, JSON.stringify(ackA));
    assert.ok(ackA.rooms.includes("product:p-1"));
    const snap = ackA.snapshot["p-1"];
    assert.deepEqual([snap.stock, snap.name, snap.sku, snap.price], [10, "Mug", "MUG-1", 9.5]);
    assert.equal(ackA.positions["product:p-1"].seq, 2, "the state is as of both records");
    const ackB = await b.subscribe(["p-2", "p-unknown"]);
    assert.equal(ackB.snapshot["p-2"].stock, 3);
    assert.ok(!("p-unknown" in ackB.snapshot), "nothing known: absent, not empty");

    await kafka.sendRaw("inventory.updated", [stock("p-1", 9, 10), stock("p-2", 2, 3), stock("p-3", 1)]);
    await waitFor(() => a.state["p-1"].stock === 9 && b.state["p-2"].stock === 2, { what: "each page's update" });
    await consumed(6);
    assert.deepEqual([...new Set(a.events.map((e) => e.env.data.productId))], ["p-1"], "page A: only p-1");
    assert.deepEqual([...new Set(b.events.map((e) => e.env.data.productId))], ["p-2"], "page B: only p-2");
    assert.equal(a.state["p-1"].name, "Mug", "the update merged over the snapshot");
  });

  test("invalid ids and more products than MAX_PRODUCT_SUBSCRIPTIONS are refused with the reason", async () => {
    const c = await open("shopper-c");
    const bad = await c.socket.emitWithAck("subscribe:products", { productIds: ["p 1"] });
    assert.equal(bad.ok, false);
    assert.match(bad.error, /productIds/);
    const none = await c.socket.emitWithAck("subscribe:products", { productIds: [] });
    assert.equal(none.ok, false);
    assert.equal((await c.socket.emitWithAck("subscribe:products", { productIds: ["a", "b", "c"] })).ok, true);
    const over = await c.socket.emitWithAck("subscribe:products", { productIds: ["d"] });
    assert.equal(over.ok, false);
    assert.match(over.error, /too many product subscriptions/);
    assert.match(await (await fetch(`${bridge.url}/metrics`)).text(), /realtime_limit_refusals_total\{limit="product_subscriptions"\} [1-9]/, "counted");
    const left = await c.socket.emitWithAck("unsubscribe:products", { productIds: ["a"] });
    assert.deepEqual(left.rooms.filter((r) => r.startsWith("product:")), ["product:b", "product:c"]);
    assert.equal((await c.socket.emitWithAck("subscribe:products", { productIds: ["d"] })).ok, true, "room again after leaving one");
  });

  test("a subscribe racing updates ends with the newest stock, whatever the interleaving (40 rounds)", async () => {
    for (let round = 0; round < 40; round++) {
      const id = `race-${round}`;
      // The protocol by hand, and the client package's watchProducts.
      const p = page((await open(`racer-${round}`)).socket);
      const lib = resumable(bridge.url, token(`racer-lib-${round}`), { transports: ["websocket"], forceNew: true });
      closers.push(async () => lib.close());
      await waitFor(() => lib.socket.connected, { what: "connected" });
      const updates = Array.from({ length: 8 }, (_, i) => stock(id, i + 1));
      // Half before, half racing the subscribe, at a different moment each round.
      await kafka.sendRaw("inventory.updated", updates.slice(0, 4));
      const racing = (async () => {
        await new Promise((r) => setTimeout(r, round % 10));
        await kafka.sendRaw("inventory.updated", updates.slice(4));
      })();
      const [ack, watch] = await Promise.all([p.subscribe([id]), lib.watchProducts([id])]);
      assert.equal(ack.ok, true);
      assert.equal(watch.reply.ok, true);
      await racing;
      await waitFor(() => p.state[id]?.stock === 8 && watch.state(id)?.stock === 8, {
        what: `round ${round}: the newest stock (by hand ${p.state[id]?.stock}, package ${watch.state(id)?.stock})`,
        timeoutMs: 20000,
      });
    }
  });

  test("a page that reconnects with its positions gets the product events it missed and keeps its product rooms", async () => {
    const c = resumable(bridge.url, token("returning"), { transports: ["websocket"], forceNew: true });
    closers.push(async () => c.socket.close());
    const got = [];
    c.socket.on("inventory:updated", (env) => got.push(env.data.stock));
    await waitFor(() => c.socket.connected, { what: "connected" });
    const ack = await c.request("subscribe:products", { productIds: ["p-back"] });
    assert.equal(ack.ok, true);
    await kafka.sendRaw("inventory.updated", [stock("p-back", 1)]);
    await waitFor(() => got.length === 1, { what: "the first update" });
    c.socket.disconnect();
    await kafka.sendRaw("inventory.updated", [stock("p-back", 2), stock("p-back", 3)]);
    await waitFor(async () => (await fetch(`${bridge.url}/realtime/products/p-back`, { headers: { authorization: `Bearer ${token("x")}` } }).then((r) => r.json())).state?.stock === 3, { what: "the bridge to have consumed them" });
    const hello = new Promise((r) => c.socket.once("connection:success", r));
    c.socket.connect();
    const { recovery, rooms } = await hello;
    assert.equal(recovery["product:p-back"].recovered, true, JSON.stringify(recovery));
    assert.ok(rooms.includes("product:p-back"), "the product room is resumed");
    await waitFor(() => got.length === 3, { what: "the two missed updates replayed" });
    assert.deepEqual(got, [1, 2, 3]);
  });
});

describe("per-product subscriptions on two nodes", () => {
  test("a page on the node that does not consume gets the snapshot and the events of records the other consumed", async () => {
    const broker = await startBroker();
    await broker.createTopics(TOPICS, 1);
    const kafka = await producer(broker.brokers);
    const env = bridgeEnv(broker.brokers, { KAFKA_TOPICS: "inventory.updated,product.updated", REDIS_URL: process.env.REDIS_URL ?? "redis://127.0.0.1:6379", REDIS_PREFIX: prefix() });
    const a = await startBridge(env);
    const b = await startBridge(env);
    try {
      await Promise.all([a.ready(), b.ready()]);
      // One partition per topic: one node consumes each; the page goes to a node without any.
      await waitFor(async () => (await counters(a)).assignedPartitions + (await counters(b)).assignedPartitions === 2, { timeoutMs: 60000, what: "the partitions assigned" });
      const [ca, cb] = [await counters(a), await counters(b)];
      const idle = ca.assignedPartitions === 0 ? a : cb.assignedPartitions === 0 ? b : null;
      await kafka.sendRaw("inventory.updated", [stock("p-x", 20)]);
      await waitFor(async () => (await counters(a)).recordsConsumed + (await counters(b)).recordsConsumed >= 1, { what: "consumed" });
      const target = idle ?? b;
      const c = await connect(target.url, { auth: { token: token("far-away") } });
      const p = page(c.socket);
      const ack = await p.subscribe(["p-x"]);
      assert.equal(ack.snapshot["p-x"].stock, 20, "the snapshot from Redis");
      await kafka.sendRaw("inventory.updated", [stock("p-x", 19, 20)]);
      await waitFor(() => p.state["p-x"].stock === 19, { what: "the live update through the other node" });
      c.socket.close();
    } finally {
      await kafka.disconnect();
      await a.stop();
      await b.stop();
      await broker.stop();
    }
  });
});
