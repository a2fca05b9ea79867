// The REST API end to end: REST call → the official socket.io-client receives the event,
// exactly as if a Kafka record had produced it; then schemathesis against the served spec.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import {
  bridgeEnv, connect, producer, request, startBridge, startBroker, token, waitFor,
} from "./harness.mjs";

const API_KEY = "e2e-api-key-e2e-api-key-e2e-api-key-0001";
const TOPICS = ["order.updated", "inventory.updated", "realtime-bridge.dlq"];

describe("REST API against the running bridge", () => {
  let broker, bridge, kafka;
  const clients = [];
  const open = async (...args) => {
    const c = await connect(...args);
    clients.push(c);
    return c;
  };
  const post = async (path, body, headers = { "x-api-key": API_KEY }) => {
    const res = await fetch(bridge.url + path, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: await res.json() };
  };

  before(async () => {
    broker = await startBroker();
    await broker.createTopics(TOPICS, 1);
    bridge = await startBridge(bridgeEnv(broker.brokers, { API_KEYS: API_KEY }));
    kafka = await producer(broker.brokers);
    await bridge.ready();
  });

  after(async () => {
    for (const c of clients) c.socket.close();
    await kafka?.disconnect();
    assert.equal(await bridge?.stop(), 0);
    await broker?.stop();
  });

  test("junk requests (random methods, paths, query keys, sessions never connected): /metrics and memory stay bounded", async (t) => {
    // A bridge of its own: the junk spends this address's session budget.
    const bridge = await startBridge(bridgeEnv(broker.brokers, { API_KEYS: API_KEY }));
    await bridge.ready();
    const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${bridge.proc.pid}/status`, "utf8"))[1]) * 1024;
    const metricsSize = async () => (await (await fetch(`${bridge.url}/metrics`)).text()).length;
    const junk = async (i) => {
      const method = `J${Math.random().toString(36).slice(2, 8).toUpperCase()}`;
      const path = `/${Math.random().toString(36).slice(2)}/${i}?${Math.random().toString(36).slice(2)}=${i}`;
      await fetch(bridge.url + path, { method }).then((r) => r.arrayBuffer()).catch(() => {});
      await fetch(`${bridge.url}/socket.io/?EIO=4&transport=polling&${Math.random().toString(36).slice(2)}=1`).then((r) => r.arrayBuffer()).catch(() => {});
    };
    // Warm-up, past the per-address session budget (240 a minute): every bounded series exists.
    for (let i = 0; i < 300; i++) await junk(i);
    await metricsSize(); // its own request's series, too
    const [size0, rss0] = [await metricsSize(), rss()];
    for (let i = 0; i < 2000; i++) await junk(i);
    const [size1, rss1] = [await metricsSize(), rss()];
    t.diagnostic(`/metrics ${size0} → ${size1} bytes; RSS ${(rss0 / 2 ** 20).toFixed(1)} → ${(rss1 / 2 ** 20).toFixed(1)} MiB after 4 000 junk requests`);
    assert.ok(size1 - size0 < 1024, `/metrics grew by ${size1 - size0} bytes`);
    assert.ok(rss1 - rss0 < 32 * 2 ** 20, `RSS grew by ${rss1 - rss0} bytes`);
    assert.equal((await bridge.health()).status, 200);
    assert.equal(await bridge.stop(), 0);
  });

  test("a notification reaches the user's devices and nobody else", async () => {
    const [n1, n2, other] = await Promise.all([
      open(bridge.url, { auth: { token: token("nina") } }),
      open(bridge.url, { auth: { token: token("nina") } }),
      open(bridge.url, { auth: { token: token("otto") } }),
    ]);
    const { status, body } = await post("/realtime/test/notification", { userId: "nina", title: "Hi", message: "Your parcel is on its way" });
    assert.equal(status, 200);
    for (const c of [n1, n2]) await waitFor(() => c.of("notification").length === 1, { what: "the notification" });
    const env = n1.of("notification")[0].payload;
    assert.equal(env.id, body.id);
    assert.deepEqual(env.data, { userId: "nina", title: "Hi", message: "Your parcel is on its way" });
    assert.equal(env.message, "Your parcel is on its way");
    assert.deepEqual(env.position, body.deliveries[0].position);
    // otto's own event, sent after: once he has it, nina's was emitted before it.
    await post("/realtime/test/notification", { userId: "otto", title: "Hi", message: "yours" });
    await waitFor(() => other.of("notification").length === 1, { what: "otto's notification" });
    assert.equal(other.of("notification")[0].payload.data.userId, "otto");
  });

  test("an order update sent over REST is indistinguishable from a Kafka order.updated record", async () => {
    const buyer = await open(bridge.url, { auth: { token: token("rosa") } });
    const admin = await open(bridge.url, { auth: { token: token("boss", { roles: ["admin"] }) } });
    assert.equal((await request(admin, "subscribe:admin")).ok, true);
    const order = { orderId: "O-7", status: "shipped", previousStatus: "paid" };
    await kafka.send("order.updated", [{ ...order, buyerId: "rosa" }]);
    await waitFor(() => buyer.of("order:updated").length === 1, { what: "the Kafka order event" });
    const { status } = await post("/realtime/broadcast/order", { ...order, userId: "rosa" });
    assert.equal(status, 200);
    await waitFor(() => buyer.of("order:updated").length === 2, { what: "the REST order event" });
    await waitFor(() => admin.of("admin:order:updated").length === 2, { what: "both admin events" });

    const comparable = ({ id, occurredAt, position, ...rest }) => ({ ...rest, room: position.room });
    const [fromKafka, fromRest] = buyer.of("order:updated").map((e) => e.payload);
    assert.deepEqual(comparable(fromRest), comparable(fromKafka));
    assert.match(fromKafka.id, /^order\.updated:0:\d+$/);
    assert.match(fromRest.id, /^rest:[0-9a-f]{32}$/);
    assert.equal(fromRest.position.seq, fromKafka.position.seq + 1, "same room history");
    const [adminKafka, adminRest] = admin.of("admin:order:updated").map((e) => e.payload);
    assert.deepEqual(comparable(adminRest), comparable(adminKafka));
  });

  test("an inventory update over REST reaches inventory subscribers and raises the alert", async () => {
    const shop = await open(bridge.url, { auth: { token: token("shop") } });
    const admin = await open(bridge.url, { auth: { token: token("ops", { roles: ["admin"] }) } });
    assert.equal((await request(shop, "subscribe:inventory")).ok, true);
    assert.equal((await request(admin, "subscribe:admin")).ok, true);
    const { status, body } = await post("/realtime/broadcast/inventory", { productId: "P-1", stock: 0, previousStock: 2, productName: "Mug" });
    assert.equal(status, 200);
    assert.deepEqual(body.deliveries.map((d) => [d.room, d.event]), [
      ["inventory:updates", "inventory:updated"],
      ["product:P-1", "inventory:updated"],
      ["admin:dashboard", "admin:inventory:out-of-stock"],
    ]);
    await waitFor(() => shop.of("inventory:updated").length === 1, { what: "inventory:updated" });
    await waitFor(() => admin.of("admin:inventory:out-of-stock").length === 1, { what: "the alert" });
    assert.equal(admin.of("admin:inventory:out-of-stock")[0].payload.message, "Mug is out of stock");
    assert.equal(shop.of("admin:inventory:out-of-stock").length, 0);
  });

  test("an admin broadcast reaches the admin dashboard only; bad requests are refused with a reason", async () => {
    const admin = await open(bridge.url, { auth: { token: token("chief", { roles: ["admin"] }) } });
    const buyer = await open(bridge.url, { auth: { token: token("bea") } });
    assert.equal((await request(admin, "subscribe:admin")).ok, true);
    const adminToken = token("chief", { roles: ["admin"] });
    const { status } = await post("/realtime/broadcast/admin", { event: "maintenance", data: { at: "22:00" } }, { authorization: `Bearer ${adminToken}` });
    assert.equal(status, 200);
    await waitFor(() => admin.of("admin:maintenance").length === 1, { what: "admin:maintenance" });
    assert.deepEqual(admin.of("admin:maintenance")[0].payload.data, { at: "22:00" });

    const denied = await post("/realtime/broadcast/admin", { event: "x", data: {} }, { authorization: `Bearer ${token("bea")}` });
    assert.deepEqual(denied, { status: 403, body: { error: "forbidden: admin role required" } });
    const bad = await post("/realtime/broadcast/admin", { event: "Not Valid", data: {} });
    assert.equal(bad.status, 422);
    assert.equal(bad.body.field, "event");
    assert.deepEqual(buyer.events.map((e) => e.name), ["connection:success"], "buyers never see admin events");
  });

  test("schemathesis: every generated request gets a documented, schema-conforming answer, never a 5xx", async (t) => {
    const st = process.env.SCHEMATHESIS_BIN;
    if (!st) {
      // scripts/test.sh always sets it; running this file alone without it is a developer shortcut.
      t.skip("SCHEMATHESIS_BIN is not set (scripts/test.sh installs schemathesis and sets it)");
      return;
    }
    const args = [
      "run", `${bridge.url}/api/docs/openapi.json`,
      "--header", `X-API-Key: ${API_KEY}`,
      "--checks", "all",
      "--max-examples", process.env.SCHEMATHESIS_MAX_EXAMPLES ?? "150",
      "--seed", process.env.SCHEMATHESIS_SEED ?? "20261122",
      // One worker: with two threads, hypothesis's ast.parse hits CPython 3.11.7's threaded
      // "AST constructor recursion depth mismatch" SystemError now and then (gh-106905, fixed
      // in 3.11.8; the machines run 3.11.7) — a crash of the tool, not a finding.
      "--workers", "1",
    ];
    const proc = spawn(st, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
    let out = "";
    proc.stdout.on("data", (d) => { out += d; });
    proc.stderr.on("data", (d) => { out += d; });
    const code = await new Promise((r) => proc.once("exit", r));
    const summary = out.match(/(\d+) generated, .*/)?.[0] ?? "no summary";
    t.diagnostic(`schemathesis: ${summary}`);
    assert.equal(code, 0, out.slice(-6000));
    const generated = Number(out.match(/(\d+) generated/)?.[1] ?? 0);
    assert.ok(generated >= 500, `only ${generated} cases ran`);
    const { body } = await bridge.health("/health");
    assert.equal(body.status, "ok", "the bridge is still healthy after the run");
  });
});
