// The chaos soak: three nodes in one group with Redis between them, resumable clients that
// fail over between the nodes through a load balancer with their positions, and a steady
// idempotent producer — while a node is SIGKILLed and restarted, Redis is SIGKILLed and
// restarted empty, the broker is SIGKILLed and restarted from its log dir, and a node is
// drained and restarted. Counted and asserted: every record Kafka acknowledged reaches its
// buyer's socket, or that socket was told `recovered: false`; nothing reaches another user.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { Kafka, Partitioners, logLevel } from "kafkajs";
import { bridgeEnv, checkRecord, startBridge, startBroker, startRedis, waitFor } from "./harness.mjs";
import { DLQ, PARTITIONS, client, portOf, prefix } from "./cluster-kit.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A TCP load balancer over `nodes()` (their current ports): each connection goes to the
 * next node that accepts it, so a client whose node died reconnects to another. */
async function balancer(nodes) {
  let next = 0;
  const sockets = new Set();
  const server = net.createServer((downstream) => {
    sockets.add(downstream);
    downstream.on("close", () => sockets.delete(downstream));
    const ports = nodes();
    const attempt = (tries) => {
      if (tries === 0) return downstream.destroy();
      const upstream = net.connect(ports[next++ % ports.length], "127.0.0.1");
      upstream.once("connect", () => {
        downstream.pipe(upstream).pipe(downstream);
        upstream.on("error", () => downstream.destroy());
        downstream.on("error", () => upstream.destroy());
        upstream.on("close", () => downstream.destroy());
        downstream.on("close", () => upstream.destroy());
      });
      upstream.once("error", () => attempt(tries - 1));
    };
    attempt(ports.length);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => { sockets.forEach((s) => s.destroy()); return new Promise((r) => server.close(r)); },
  };
}

/** Sends one order per user per round until stopped, retrying a round Kafka did not
 * acknowledge; `acked` holds every order id Kafka acknowledged. */
function steadyProducer(brokers, topic, users) {
  const kafka = new Kafka({ clientId: "e2e-chaos", brokers: [brokers], logLevel: logLevel.NOTHING, retry: { retries: 2 } });
  const p = kafka.producer({ idempotent: true, maxInFlightRequests: 1, createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: false });
  const acked = new Set();
  let stopped = false, rounds = 0, failures = 0;
  const done = (async () => {
    await p.connect();
    while (!stopped) {
      const messages = users.map((u) => ({ key: u, value: JSON.stringify({ orderId: `${u}-${rounds}`, buyerId: u, status: "paid" }) }));
      messages.forEach((m) => checkRecord(topic, m.value));
      try {
        await p.send({ topic, messages, acks: -1 });
        messages.forEach((m) => acked.add(JSON.parse(m.value).orderId));
        rounds++;
        await sleep(100);
      } catch {
        failures++; // not acknowledged: the same round again (ids unchanged)
        await sleep(500);
      }
    }
    await p.disconnect().catch(() => {});
  })();
  return { acked, stats: () => ({ rounds, failures }), stop: () => { stopped = true; return done; } };
}

test("chaos soak: a node killed, Redis wiped, the broker killed, a node drained — nothing lost silently, nothing misrouted", async (t) => {
  const topic = "order.chaos";
  const broker = await startBroker();
  await broker.createTopics([topic, DLQ], PARTITIONS);
  let redis = await startRedis();
  const env = bridgeEnv(broker.brokers, { KAFKA_TOPICS: topic, REDIS_URL: redis.url, REDIS_PREFIX: prefix(), SHUTDOWN_DELAY_SECS: "0" });
  const nodes = [await startBridge(env), await startBridge(env), await startBridge(env)];
  await Promise.all(nodes.map((n) => n.ready()));
  const lb = await balancer(() => nodes.map((n) => portOf(n.url)));
  const users = Array.from({ length: 30 }, (_, i) => `chaos${i}`);
  const clients = users.map((u) => client(lb.url, u, "order:chaos"));
  const step = (what) => t.diagnostic(`${(performance.now() / 1000).toFixed(1)} s: ${what}`);
  let producer;
  try {
    // A first connection starts at the room's head: orders from before it are not the
    // socket's to get. So the stream starts once every client is in.
    await waitFor(() => clients.every((c) => c.hellos.length >= 1), { what: "30 clients connected" });
    producer = steadyProducer(broker.brokers, topic, users);
    await sleep(8000);
    step("SIGKILL node 0");
    await nodes[0].stop("SIGKILL");
    await sleep(4000);
    nodes[0] = await startBridge(env);
    await sleep(8000);
    step("SIGKILL Redis, then restart it empty");
    await redis.kill();
    await sleep(3000);
    redis = await startRedis(redis.port);
    await sleep(8000);
    step("SIGKILL the broker, then restart it from its log dir");
    await broker.kill();
    await sleep(3000);
    await broker.restart();
    await sleep(8000);
    step("drain node 1 (SIGTERM), then restart it");
    assert.equal(await nodes[1].stop("SIGTERM"), 0, "a drain exits 0");
    nodes[1] = await startBridge(env);
    await sleep(8000);
    await producer.stop();
    step(`producer stopped: ${producer.acked.size} orders acknowledged (${JSON.stringify(producer.stats())})`);

    const missing = (c) => [...producer.acked].filter((id) => id.startsWith(`${c.user}-`) && !c.unique().includes(id));
    try {
      await waitFor(() => clients.every((c) => missing(c).length === 0 || c.toldLost()), { timeoutMs: 60000, what: "every acknowledged order delivered, or its socket told recovered: false" });
    } finally {
      for (const c of clients.filter((x) => missing(x).length > 0 && !x.toldLost())) {
        t.diagnostic(`${c.user}: missing ${missing(c).length} (${missing(c).slice(0, 5).join(", ")}…), got ${c.unique().length}, hellos ${JSON.stringify(c.hellos.map((h) => h.recovery))}, positions ${JSON.stringify(c.positions)}`);
      }
    }
    let delivered = 0, reported = 0, duplicates = 0;
    for (const c of clients) {
      assert.ok(c.got.every((g) => g.buyerId === c.user), `${c.user} got only its own orders`);
      delivered += c.unique().filter((id) => producer.acked.has(id)).length;
      reported += c.toldLost() ? missing(c).length : 0;
      duplicates += c.got.length - c.unique().length;
      assert.ok(missing(c).length === 0 || c.toldLost(), `${c.user}: ${missing(c).length} orders missing silently`);
    }
    assert.ok(producer.acked.size >= users.length * 100, `the producer kept going: ${producer.acked.size}`);
    t.diagnostic(`acknowledged ${producer.acked.size}; delivered ${delivered}; missing but reported (recovered: false) ${reported}; missing silently 0; duplicates ${duplicates}; reconnections ${clients.reduce((n, c) => n + c.hellos.length - 1, 0)}`);
  } finally {
    await producer?.stop();
    clients.forEach((c) => c.socket.close());
    await lb.close();
    await Promise.all(nodes.map((n) => n.stop()));
    await redis.kill();
    await broker.stop();
  }
});
