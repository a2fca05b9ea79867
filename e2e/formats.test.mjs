// Bring your records: the nine shapes producers already write reach the buyer as the same
// typed event, on Apache Kafka, through a real schema registry (Apicurio Registry 3.3.3
// behind nginx with TLS and Basic auth), written by producers nobody here wrote
// (confluent-kafka's AvroSerializer / ProtobufSerializer / JSONSerializer, the CloudEvents
// SDK's Kafka binding; the Connect and outbox shapes as their projects document them).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { SchemaRegistry, SchemaType } from "@kafkajs/confluent-schema-registry";
import {
  bridgeEnv, connect, counters, producer, readTopic, startBridge, startBroker, startProxy, token, waitFor,
} from "./harness.mjs";
import { produceWith, startApicurio, startAuthProxy } from "./registry.mjs";

const DLQ = "realtime-bridge.dlq";
const USER = "bridge";
const PASSWORD = "registry-secret-e2e";

// The mapping file of docs/producers.md's recipes: a shop's own topic and field names, a
// Debezium outbox topic, CloudEvents whose type says the event.
const MAPPING = `
[[source]]
topic = "shop.orders"
event = "{header:eventType}"
[source.events]
OrderPlaced = "order.created"
OrderShipped = "order.updated"
[source.fields]
orderId = "/id"
buyerId = "/customer/id"
status = "/state"
totalAmount = "/total/amount"

[[source]]
topic = "outbox.event.order"
event = "{header:eventType}"
[source.events]
OrderShipped = "order.updated"

[[source]]
topic = "ref.orders"
event = "order.updated"
[source.fields]
buyerId = "/customer/id"

[[source]]
topic = "ce.orders"
event = "{ce:type}"
[source.events]
"com.shop.order.shipped" = "order.updated"
[source.fields]
buyerId = "{ce:subject}"
`;

const avroOrder = (extra = []) => JSON.stringify({
  type: "record", name: "Order", namespace: "com.shop", fields: [
    { name: "orderId", type: "string" },
    { name: "buyerId", type: "string" },
    { name: "status", type: "string" },
    { name: "totalAmount", type: ["null", { type: "bytes", logicalType: "decimal", precision: 10, scale: 2 }], default: null },
    { name: "updatedAt", type: { type: "long", logicalType: "timestamp-millis" } },
    ...extra,
  ],
});
const jsonSchema = JSON.stringify({
  $schema: "http://json-schema.org/draft-07/schema#", title: "Order", type: "object",
  properties: { orderId: { type: "string" }, buyerId: { type: "string" }, status: { type: "string" } },
  required: ["orderId", "buyerId", "status"],
});
const proto = {
  file: "shop/order.proto", package: "shop", message: "Order",
  fields: [["orderId", "string", 1], ["buyerId", "string", 2], ["status", "string", 3], ["totalAmount", "double", 4], ["updatedAt", "timestamp", 5]],
};

/** One record of each of the nine shapes, for `buyer`, order ids `<prefix>-<shape>`. */
function nineShapes(buyer, prefix) {
  const order = (shape) => ({ orderId: `${prefix}-${shape}`, buyerId: buyer, status: "shipped" });
  return [
    { shape: "raw", topic: "order.updated", value: order("own-json") },
    { shape: "avro", topic: "order.updated", schema: avroOrder(), value: { ...order("avro"), totalAmount: { $decimal: "12.34" }, updatedAt: 1795359845123 } },
    { shape: "protobuf", topic: "order.updated", proto, value: { ...order("protobuf"), totalAmount: 12.5, updatedAt: { seconds: 1795359845 } } },
    { shape: "json-schema", topic: "order.updated", schema: jsonSchema, value: order("json-schema") },
    {
      shape: "ce-binary", topic: "ce.orders",
      attributes: { type: "com.shop.order.shipped", source: "/orders", subject: buyer }, value: { orderId: `${prefix}-ce-binary`, status: "shipped" },
    },
    {
      shape: "ce-structured", topic: "ce.orders",
      attributes: { type: "com.shop.order.shipped", source: "/orders", subject: buyer }, value: { orderId: `${prefix}-ce-structured`, status: "shipped" },
    },
    // Kafka Connect's JsonConverter with schemas.enable=true.
    {
      shape: "raw", topic: "order.updated", value: {
        schema: { type: "struct", optional: false, name: "shop.Order", fields: [
          { type: "string", optional: false, field: "orderId" }, { type: "string", optional: false, field: "buyerId" },
          { type: "string", optional: false, field: "status" }] },
        payload: order("connect"),
      },
    },
    // Debezium's outbox event router, defaults plus the event type as a header: the payload
    // column as an escaped JSON string, the aggregate id as the key.
    {
      shape: "raw", topic: "outbox.event.order", key: `${prefix}-outbox`, headers: { id: "8a1e", eventType: "OrderShipped" },
      value: JSON.stringify(order("outbox")),
    },
    {
      shape: "raw", topic: "shop.orders", headers: { eventType: "OrderShipped" },
      value: { id: `${prefix}-shop`, customer: { id: buyer }, state: "SHIPPED", total: { amount: 99.9 } },
    },
  ];
}

describe("bring your records", () => {
  let broker, apicurio, nginx, proxy, bridge, dir, registry;
  const clients = [];

  before(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "e2e-formats-"));
    [broker, apicurio] = await Promise.all([startBroker(), startApicurio()]);
    await broker.createTopics(["order.updated", "shop.orders", "outbox.event.order", "ce.orders", "ref.orders", DLQ], 1);
    nginx = await startAuthProxy(apicurio.port, { user: USER, password: PASSWORD });
    // The bridge reaches the registry through a proxy the outage test can cut; producers
    // go to nginx directly.
    proxy = await startProxy(nginx.port);
    registry = { url: `https://127.0.0.1:${nginx.port}/apis/ccompat/v7`, user: USER, password: PASSWORD, ca: nginx.ca };
    writeFileSync(path.join(dir, "mapping.toml"), MAPPING);
    writeFileSync(path.join(dir, "password"), `${PASSWORD}\n`);
    bridge = await startBridge(bridgeEnv(broker.brokers, {
      EVENT_MAPPING_FILE: path.join(dir, "mapping.toml"),
      SCHEMA_REGISTRY_URL: `https://127.0.0.1:${proxy.port}/apis/ccompat/v7`,
      SCHEMA_REGISTRY_USERNAME: USER,
      SCHEMA_REGISTRY_PASSWORD_FILE: path.join(dir, "password"),
      SCHEMA_REGISTRY_CA_FILE: nginx.ca,
    }));
    await bridge.ready();
  });

  after(async () => {
    for (const c of clients) c.socket.close();
    await bridge?.stop();
    await proxy?.close();
    await nginx?.stop();
    await apicurio?.stop();
    await broker?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const buyer = async (name) => {
    const c = await connect(bridge.url, { auth: { token: token(name) } });
    clients.push(c);
    return c;
  };
  const orders = (c) => c.events.filter((e) => e.name.startsWith("order:")).map((e) => e.payload);

  test("all nine shapes reach the buyer as the same typed event", async (t) => {
    t.diagnostic(`Apicurio Registry 3.3.3 answered ${(apicurio.startMs / 1000).toFixed(1)} s after start`);
    const nina = await buyer("nina");
    const shapes = nineShapes("nina", "N");
    await produceWith(broker.brokers, registry, shapes);
    await waitFor(() => orders(nina).length >= 9, { what: "nine orders on nina's socket" }).catch(async (e) => {
      const warnings = bridge.logs.filter((l) => l.message === "record is not a valid event").map((l) => l.error);
      throw new Error(`${e.message}: got ${JSON.stringify(orders(nina).map((o) => o.data.orderId))}; bridge: ${JSON.stringify(warnings.slice(-10))}`);
    });
    const byId = Object.fromEntries(orders(nina).map((o) => [o.data.orderId, o]));
    const expected = ["own-json", "avro", "protobuf", "json-schema", "ce-binary", "ce-structured", "connect", "outbox", "shop"].map((s) => `N-${s}`);
    assert.deepEqual(Object.keys(byId).sort(), [...expected].sort());
    for (const id of expected) {
      assert.equal(byId[id].type, "order.updated", id);
      assert.equal(byId[id].data.buyerId, "nina", id);
    }
    // Logical and well-known types as the typed event accepts them.
    assert.equal(byId["N-avro"].data.totalAmount, 12.34);
    assert.equal(byId["N-avro"].data.updatedAt, "2026-11-22T15:04:05.123Z");
    assert.equal(byId["N-protobuf"].data.updatedAt, "2026-11-22T15:04:05Z");
    assert.equal(byId["N-protobuf"].data.totalAmount, 12.5);
    assert.equal(byId["N-shop"].data.status, "SHIPPED");
    assert.equal(byId["N-shop"].data.totalAmount, 99.9);
    assert.equal((await counters(bridge)).recordsDeadLettered, 0);
    const metrics = await (await fetch(`${bridge.url}/metrics`)).text();
    for (const [format, envelope] of [["avro", "none"], ["protobuf", "none"], ["json-schema", "none"], ["json", "cloudevents-binary"], ["json", "cloudevents-structured"], ["json", "connect"], ["json", "json-string"]]) {
      assert.match(metrics, new RegExp(`realtime_records_decoded_total\\{(format="${format}",envelope="${envelope}"|envelope="${envelope}",format="${format}")\\} [1-9]`), `${format}/${envelope}`);
    }
  });

  test("kafkajs with @kafkajs/confluent-schema-registry: Avro and Protobuf (written without the message-index path) reach the buyer", async () => {
    const kim = await buyer("kim");
    const js = new SchemaRegistry({ host: apicurio.url });
    const avro = await js.register({
      type: SchemaType.AVRO,
      schema: JSON.stringify({ type: "record", name: "JsOrder", namespace: "com.shop.js", fields: [
        { name: "orderId", type: "string" }, { name: "buyerId", type: "string" }, { name: "status", type: "string" },
        { name: "reason", type: ["null", "string"], default: null }] }),
    }, { subject: "js-order-avro" });
    const protobuf = await js.register({
      type: SchemaType.PROTOBUF,
      schema: `syntax = "proto3";\npackage shop.js;\nmessage JsOrder { string order_id = 1; string buyer_id = 2; string status = 3; int64 stock_left = 4; }\n`,
    }, { subject: "js-order-protobuf" });
    const kafka = await producer(broker.brokers);
    try {
      await kafka.sendRaw("order.updated", [
        { value: await js.encode(avro.id, { orderId: "K-avro", buyerId: "kim", status: "paid", reason: "gift" }) },
        { value: await js.encode(protobuf.id, { orderId: "K-protobuf", buyerId: "kim", status: "paid", stockLeft: 0 }) },
      ]);
    } finally {
      await kafka.disconnect();
    }
    await waitFor(() => orders(kim).length >= 2, { what: "kim's two orders" });
    const [a, p] = orders(kim);
    assert.deepEqual([a.data.orderId, a.data.reason, p.data.orderId, p.data.buyerId], ["K-avro", "gift", "K-protobuf", "kim"]);
  });

  test("an Avro schema with a reference, through the registry's ccompat API, is resolved", async () => {
    const rex = await buyer("rex");
    const js = new SchemaRegistry({ host: apicurio.url });
    const customer = await js.register({
      type: SchemaType.AVRO,
      schema: JSON.stringify({ type: "record", name: "Customer", namespace: "com.shop.ref", fields: [{ name: "id", type: "string" }] }),
    }, { subject: "com.shop.ref.Customer" });
    const { version } = await (await fetch(`${apicurio.url}/subjects/com.shop.ref.Customer/versions/latest`)).json();
    const order = await js.register({
      type: SchemaType.AVRO,
      schema: JSON.stringify({ type: "record", name: "RefOrder", namespace: "com.shop.ref", fields: [
        { name: "orderId", type: "string" }, { name: "customer", type: "com.shop.ref.Customer" }, { name: "status", type: "string" }] }),
      references: [{ name: "com.shop.ref.Customer", subject: "com.shop.ref.Customer", version }],
    }, { subject: "ref-order-avro" });
    assert.notEqual(order.id, customer.id);
    const kafka = await producer(broker.brokers);
    try {
      await kafka.sendRaw("ref.orders", [{ value: await js.encode(order.id, { orderId: "X-avro", customer: { id: "rex" }, status: "paid" }) }]);
    } finally {
      await kafka.disconnect();
    }
    await waitFor(() => orders(rex).length >= 1, { what: "rex's order (a schema with a reference)" }).catch((e) => {
      throw new Error(`${e.message}: ${JSON.stringify(bridge.logs.filter((l) => l.message === "record is not a valid event").map((l) => l.error).slice(-3))}`);
    });
    assert.deepEqual([orders(rex)[0].data.orderId, orders(rex)[0].data.buyerId], ["X-avro", "rex"]);
  });

  test("a schema evolution mid-stream (v2 adds a field) is read in order", async () => {
    const ed = await buyer("ed");
    const v1 = avroOrder();
    const v2 = avroOrder([{ name: "channel", type: "string", default: "web" }]);
    const rec = (schema, n, extra = {}) => ({ shape: "avro", topic: "order.updated", schema, value: { orderId: `E-${n}`, buyerId: "ed", status: "paid", updatedAt: 1795359845123, ...extra } });
    const produced = await produceWith(broker.brokers, registry, [rec(v1, 1), rec(v2, 2, { channel: "app" }), rec(v1, 3), rec(v2, 4, { channel: "store" })]);
    const ids = new Set(produced.map((p) => Buffer.from(p.hex, "hex").readUInt32BE(1)));
    assert.equal(ids.size, 2, "two schema versions, two ids");
    await waitFor(() => orders(ed).length >= 4, { what: "ed's four orders" });
    assert.deepEqual(orders(ed).map((o) => o.data.orderId), ["E-1", "E-2", "E-3", "E-4"]);
  });

  test("the registry unreachable: the partition waits, not ready after 10 s, nothing dead-lettered, all delivered after", async (t) => {
    const rita = await buyer("rita");
    const before = await counters(bridge);
    await proxy.cut();
    const cutAt = performance.now();
    // A schema the bridge has not seen (a new id), then a record behind it.
    const v3 = avroOrder([{ name: "warehouse", type: "string", default: "main" }]);
    await produceWith(broker.brokers, registry, [
      { shape: "avro", topic: "order.updated", schema: v3, value: { orderId: "R-1", buyerId: "rita", status: "paid", updatedAt: 1795359845123, warehouse: "north" } },
      { shape: "raw", topic: "order.updated", value: { orderId: "R-2", buyerId: "rita", status: "paid" } },
    ]);
    await waitFor(async () => (await bridge.health()).status === 503, { timeoutMs: 40000, intervalMs: 250, what: "not ready while the registry is away" });
    const notReadyAfter = performance.now() - cutAt;
    t.diagnostic(`not ready ${(notReadyAfter / 1000).toFixed(1)} s after the registry went away`);
    assert.ok(notReadyAfter >= 10000, `not ready only after 10 s of failures (${notReadyAfter.toFixed(0)} ms)`);
    const { body } = await bridge.health("/health");
    assert.equal(body.kafka.schemaRegistry, "failing");
    assert.equal(orders(rita).length, 0, "R-2 waits behind R-1 (one partition, in order)");
    assert.equal((await counters(bridge)).recordsDeadLettered, before.recordsDeadLettered);
    await proxy.restore();
    await waitFor(() => orders(rita).length >= 2, { what: "rita's orders once the registry is back" });
    assert.deepEqual(orders(rita).map((o) => o.data.orderId), ["R-1", "R-2"]);
    await bridge.ready();
    assert.equal((await bridge.health("/health")).body.kafka.schemaRegistry, "ok");
    assert.equal((await counters(bridge)).recordsDeadLettered, before.recordsDeadLettered);
  });

  test("an unknown schema id and a corrupt Avro body are dead-lettered with the reason; the next records are delivered", async () => {
    const una = await buyer("una");
    const [valid] = await produceWith(broker.brokers, registry, [
      { shape: "avro", topic: "order.updated", schema: avroOrder(), value: { orderId: "U-1", buyerId: "una", status: "paid", updatedAt: 1795359845123 } },
    ]);
    const known = valid.hex.slice(0, 10);
    await produceWith(broker.brokers, null, [
      { shape: "raw", topic: "order.updated", hex: `000000270f${valid.hex.slice(10)}` }, // schema id 9999
      { shape: "raw", topic: "order.updated", hex: `${known}0affffffff` }, // a string longer than the body
      { shape: "raw", topic: "order.updated", value: { orderId: "U-2", buyerId: "una", status: "paid" } },
    ]);
    await waitFor(() => orders(una).length >= 2, { what: "una's valid orders" });
    assert.deepEqual(orders(una).map((o) => o.data.orderId), ["U-1", "U-2"]);
    const letters = await readTopic(broker.brokers, DLQ, 2);
    const reasons = letters.map((l) => l.headers["dlq.error"]);
    assert.match(reasons[0], /^registry: schema id 9999: not found in the registry$/);
    assert.match(reasons[1], new RegExp(`^avro: schema id ${parseInt(known.slice(2), 16)}: `));
  });

  test("a mapping with an error: the start is refused, naming the line and the key", async () => {
    const bad = path.join(dir, "bad.toml");
    writeFileSync(bad, `[[source]]\ntopic = "shop.orders"\nevent = "order.created"\n[source.fields]\nbuyerID = "/customer/id"\n`);
    await assert.rejects(
      startBridge(bridgeEnv(broker.brokers, { EVENT_MAPPING_FILE: bad })),
      /EVENT_MAPPING_FILE: .*bad\.toml: line 5: fields\.buyerID: not an event field/,
    );
  });
});
