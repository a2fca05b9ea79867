// Scale-out: two bridge nodes in one consumer group, the Socket.IO Redis adapter and the
// replay history in Redis between them. Real binary ×2, Apache Kafka broker process, real Redis
// (127.0.0.1:6379, or a throwaway redis-server for the restart test), official client.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  bridgeEnv, bulkAdminBroadcasts, counters, producer, startBridge, startBroker, startProxy, startRedis, token, waitFor,
} from "./harness.mjs";
import { resumable } from "@realtime-bridge/client";
import { DLQ, PARTITIONS, client, expected, portOf, prefix, send, settled, stream, tally, twoNodes } from "./cluster-kit.mjs";

const percentile = (xs, p) => xs.length ? [...xs].sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] : NaN;

describe("two nodes, one group, Redis between them", () => {
  test("1 000 events for 50 users reach every socket of their user on both nodes, whichever node consumed them, and no one else", async (t) => {
    const broker = await startBroker();
    await broker.createTopics(["order.cluster", DLQ], PARTITIONS);
    const kafka = await producer(broker.brokers);
    const env = bridgeEnv(broker.brokers, { KAFKA_TOPICS: "order.cluster", REDIS_URL: process.env.REDIS_URL ?? "redis://127.0.0.1:6379", REDIS_PREFIX: prefix() });
    const [a, b] = await twoNodes(env);
    const users = Array.from({ length: 50 }, (_, i) => `cu${i}`);
    // Each user has one socket on each node.
    const onA = users.map((u) => client(a.url, u, "order:cluster"));
    const onB = users.map((u) => client(b.url, u, "order:cluster"));
    const all = [...onA, ...onB];
    try {
      await waitFor(() => all.every((c) => c.hellos.length === 1), { what: "100 sockets connected" });
      await send(kafka, "order.cluster", stream(users, 20));
      await waitFor(() => all.every((c) => c.unique().length >= 20), { timeoutMs: 60000, what: "every socket to get its user's 20 events" });

      for (const c of all) {
        assert.ok(c.got.every((g) => g.buyerId === c.user), `${c.user} got only its own events`);
        assert.deepEqual(c.got.map((g) => g.orderId), expected(c.user, 0, 20), `${c.user}: each event once, in order`);
      }
      const [ca, cb] = await Promise.all([counters(a), counters(b)]);
      assert.equal(ca.recordsConsumed + cb.recordsConsumed, 1000, "each record consumed by exactly one node");
      assert.ok(ca.recordsConsumed > 0 && cb.recordsConsumed > 0, "both nodes consumed");

      // Cluster stats through the adapter, asked of either node.
      const stats = await (await fetch(`${a.url}/realtime/stats`, { headers: { authorization: `Bearer ${token("ops", { roles: ["admin"] })}` } })).json();
      assert.equal(stats.connections, 50, "this node");
      assert.equal(stats.cluster.connections, 100, "both nodes");
      assert.equal(stats.cluster.distinctUsers, 50);
      assert.deepEqual(stats.cluster.nodes.map((n) => n.sockets), [50, 50]);

      // Cross-node cost: the same event reaches the consuming node's socket directly and
      // the other node's socket through Redis; the difference is the added latency.
      const added = [];
      users.forEach((u, k) => {
        const local = new Map(onA[k].got.map((g) => [g.orderId, g.at]));
        for (const g of onB[k].got) added.push(Math.abs(g.at - local.get(g.orderId)));
      });
      t.diagnostic(`consumed: A ${ca.recordsConsumed}, B ${cb.recordsConsumed}; cross-node added latency p50 ${percentile(added, 50).toFixed(2)} ms, p99 ${percentile(added, 99).toFixed(2)} ms, max ${Math.max(...added).toFixed(2)} ms over ${added.length} deliveries`);
    } finally {
      all.forEach((c) => c.socket.close());
      await kafka.disconnect();
      assert.equal(await a.stop(), 0);
      assert.equal(await b.stop(), 0);
      await broker.stop();
    }
  });

  test("a node SIGKILLed mid-stream: its clients reconnect to the other with their positions; every event arrives or is reported", async (t) => {
    const broker = await startBroker();
    await broker.createTopics(["order.killed", DLQ], PARTITIONS);
    const kafka = await producer(broker.brokers);
    const env = bridgeEnv(broker.brokers, { KAFKA_TOPICS: "order.killed", REDIS_URL: process.env.REDIS_URL ?? "redis://127.0.0.1:6379", REDIS_PREFIX: prefix() });
    const [a, b] = await twoNodes(env);
    // A's clients come through a load balancer that sends them to B once A is gone.
    const lb = await startProxy(portOf(a.url));
    const users = Array.from({ length: 20 }, (_, i) => `ku${i}`);
    const viaLb = users.map((u) => client(lb.url, u, "order:killed"));
    const onB = users.map((u) => client(b.url, u, "order:killed"));
    const all = [...viaLb, ...onB];
    const N = 40;
    try {
      await waitFor(() => all.every((c) => c.hellos.length === 1), { what: "40 sockets connected" });
      await send(kafka, "order.killed", stream(users, N / 2));
      await waitFor(() => all.some((c) => c.unique().length >= 5), { what: "delivery under way" });
      await a.stop("SIGKILL");
      lb.retarget(portOf(b.url));
      await send(kafka, "order.killed", stream(users, N / 2, N / 2));

      // B takes A's partitions after the session timeout and re-delivers from A's last commit.
      await waitFor(async () => (await counters(b)).assignedPartitions === PARTITIONS, { timeoutMs: 60000, what: "B to own every partition" });
      await waitFor(() => all.every(settled(N)), { timeoutMs: 90000, what: "every client to have every event or a recovered: false" });

      const { delivered, duplicates, reported, missing } = tally(all, N);
      for (const c of all) {
        assert.ok(c.got.every((g) => g.buyerId === c.user), "only its own events");
        // A re-delivered record keeps its envelope id.
        const ids = new Map();
        for (const g of c.got) {
          if (ids.has(g.orderId)) assert.equal(ids.get(g.orderId), g.id);
          ids.set(g.orderId, g.id);
        }
      }
      assert.equal(missing, 0, "no event missing without a recovered: false");
      assert.ok(viaLb.every((c) => c.hellos.length >= 2), "A's clients reconnected (to B)");
      const resyncs = onB.reduce((n, c) => n + c.hellos.length - 1, 0);
      const resumed = viaLb.flatMap((c) => c.hellos.slice(1).map((h) => h.recovery[`user:${c.user}`]?.recovered));
      t.diagnostic(`${all.length} clients × ${N} events: delivered ${delivered}/${all.length * N}, duplicates ${duplicates} (re-consumed after the kill), reported recovered:false ${reported}, missing silently ${missing}; reconnections to B recovered: ${resumed.filter((r) => r === true).length}/${resumed.length}; resyncs of B's own clients ${resyncs}`);
    } finally {
      all.forEach((c) => c.socket.close());
      await lb.close();
      await kafka.disconnect();
      await b.stop();
      await broker.stop();
    }
  });

  test("Redis restarted mid-stream: both nodes not ready, then ready, re-subscribed (cross-node delivery works again); nothing lost silently", async (t) => {
    const broker = await startBroker();
    await broker.createTopics(["order.rrestart", DLQ], PARTITIONS);
    const kafka = await producer(broker.brokers);
    let redis = await startRedis();
    const env = bridgeEnv(broker.brokers, { KAFKA_TOPICS: "order.rrestart", REDIS_URL: redis.url });
    const [a, b] = await twoNodes(env);
    const users = Array.from({ length: 10 }, (_, i) => `ru${i}`);
    const onA = users.map((u) => client(a.url, u, "order:rrestart"));
    const onB = users.map((u) => client(b.url, u, "order:rrestart"));
    const all = [...onA, ...onB];
    try {
      await waitFor(() => all.every((c) => c.hellos.length === 1), { what: "20 sockets connected" });
      await send(kafka, "order.rrestart", stream(users, 10));
      await waitFor(() => all.every((c) => c.unique().length >= 10), { timeoutMs: 60000, what: "the first 10 events everywhere" });

      await redis.kill();
      await waitFor(async () => (await a.health()).status === 503 && (await b.health()).status === 503, { what: "both nodes not ready" });
      // Produced while Redis is away: the consumers hold them (history append retried).
      await send(kafka, "order.rrestart", stream(users, 10, 10));
      redis = await startRedis(redis.port);
      await Promise.all([a.ready(), b.ready()]);
      await send(kafka, "order.rrestart", stream(users, 10, 20));
      await waitFor(() => all.every(settled(30)), { timeoutMs: 90000, what: "every client to have all 30 events or a recovered: false" })
        .catch((e) => { throw new Error(`${e.message}; missing: ${JSON.stringify(all.map((c) => expected(c.user, 0, 30).filter((id) => !c.unique().includes(id))).flat())}`); });

      const { delivered, duplicates, reported, missing } = tally(all, 30);
      assert.equal(missing, 0, "no event missing without a recovered: false");
      // Events consumed by one node reached the other node's sockets after the restart:
      // each user's two sockets, one per node, both have the post-restart events.
      for (let k = 0; k < users.length; k++) {
        for (const c of [onA[k], onB[k]]) {
          assert.ok(expected(c.user, 20, 10).every((id) => c.unique().includes(id)), `${c.user}: post-restart events on both nodes`);
        }
      }
      const logs = [a, b].map((n) => n.logs.map((l) => l.message));
      assert.ok(logs.every((m) => m.includes("Redis is unreachable; not ready until it answers again")), "the outage is logged on both nodes");
      assert.ok(logs.every((m) => m.includes("Redis is reachable again; ready")), "the return is logged on both nodes");
      assert.ok(logs.every((m) => m.includes("Redis pub/sub reconnected and re-subscribed; room heads announced so clients resync")), "both nodes re-subscribed");
      const resyncs = all.reduce((n, c) => n + c.hellos.length - 1, 0);
      t.diagnostic(`${all.length} clients × 30 events across a Redis restart: delivered ${delivered}/${all.length * 30}, duplicates ${duplicates}, resyncs ${resyncs}, reported recovered:false ${reported}, missing silently ${missing}`);
    } finally {
      all.forEach((c) => c.socket.close());
      await kafka.disconnect();
      assert.equal(await a.stop(), 0);
      assert.equal(await b.stop(), 0);
      await redis.kill();
      await broker.stop();
    }
  });

  for (const protocol of ["classic", "consumer"]) {
    test(`a third node joins, then leaves, a two-node group mid-stream (${protocol} group protocol): no event missing silently, duplicates only with the same id`, async (t) => {
      const broker = await startBroker();
      const topic = `order.join-${protocol}`;
      await broker.createTopics([topic, DLQ], PARTITIONS);
      const kafka = await producer(broker.brokers);
      const group = protocol === "consumer" ? { KAFKA_GROUP_PROTOCOL: "consumer", KAFKA_SESSION_TIMEOUT_MS: "" } : {};
      const env = bridgeEnv(broker.brokers, { KAFKA_TOPICS: topic, REDIS_URL: process.env.REDIS_URL ?? "redis://127.0.0.1:6379", REDIS_PREFIX: prefix(), ...group });
      const [a, b] = await twoNodes(env);
      const users = Array.from({ length: 12 }, (_, i) => `j${protocol[0]}${i}`);
      const all = users.flatMap((u) => [client(a.url, u, `order:join-${protocol}`), client(b.url, u, `order:join-${protocol}`)]);
      const N = 45;
      let c;
      try {
        await waitFor(() => all.every((x) => x.hellos.length === 1), { what: "24 sockets connected" });
        await send(kafka, topic, stream(users, 15));
        c = await startBridge(env);
        await c.ready(60000);
        await waitFor(async () => (await counters(c)).assignedPartitions > 0, { timeoutMs: 60000, what: "the third node to get partitions" });
        await send(kafka, topic, stream(users, 15, 15));
        assert.equal(await c.stop(), 0, "the third node drains and leaves");
        await send(kafka, topic, stream(users, 15, 30));
        await waitFor(async () => {
          const [ca, cb] = await Promise.all([counters(a), counters(b)]);
          return ca.assignedPartitions + cb.assignedPartitions === PARTITIONS;
        }, { timeoutMs: 60000, what: "the two nodes to own every partition again" });
        await waitFor(() => all.every(settled(N)), { timeoutMs: 90000, what: "every client to have every event or a recovered: false" });
        const { delivered, duplicates, reported, missing } = tally(all, N);
        for (const x of all) {
          const ids = new Map();
          for (const g of x.got) {
            if (ids.has(g.orderId)) assert.equal(ids.get(g.orderId), g.id, "a duplicate keeps its id");
            ids.set(g.orderId, g.id);
          }
        }
        assert.equal(missing, 0, "no event missing without a recovered: false");
        t.diagnostic(`${protocol}: ${all.length} clients × ${N} events: delivered ${delivered}/${all.length * N}, duplicates ${duplicates}, reported recovered:false ${reported}, missing silently ${missing}`);
      } finally {
        all.forEach((x) => x.socket.close());
        await kafka.disconnect();
        await c?.stop();
        await a.stop();
        await b.stop();
        await broker.stop();
      }
    });
  }
});

describe("two nodes, one group, no Redis", () => {
  test("are not ready and say why (each would emit only to its own sockets); alone again, a node is ready", async () => {
    const broker = await startBroker();
    await broker.createTopics(["order.alone", DLQ], 2);
    const env = bridgeEnv(broker.brokers, { KAFKA_TOPICS: "order.alone" });
    const a = await startBridge(env);
    let b;
    try {
      await a.ready();
      await waitFor(async () => (await a.health("/health")).body.kafka.groupMembers === 1, { what: "the node to list its group: itself" });
      b = await startBridge(env);
      for (const node of [a, b]) {
        await waitFor(async () => (await node.health()).body.kafka.sharedWithoutRedis === true, { timeoutMs: 60000, what: "a node to see the other member" });
        const { status, body } = await node.health();
        assert.equal(status, 503);
        assert.equal(body.kafka.groupMembers, 2);
      }
      const warned = (node) => node.logs.filter((l) => l.level === "WARN" && /REDIS_URL is unset/.test(l.message ?? ""));
      await waitFor(() => warned(a).length === 1 && warned(b).length === 1, { what: "the reason logged on each node" });
      assert.equal(await b.stop(), 0);
      await a.ready(60000);
      assert.ok(a.logs.some((l) => /alone in the consumer group again/.test(l.message ?? "")));
      assert.equal(warned(a).length, 1, "logged once per change, not per check");
    } finally {
      await b?.stop();
      await a.stop();
      await broker.stop();
    }
  });
});

describe("a slow socket on the node that did not emit", () => {
  test("is found, evicted, reconnects and replays everything (its node announces the quiet room's head)", async (t) => {
    const key = "cluster-api-key-cluster-api-key-0001";
    const broker = await startBroker();
    await broker.createTopics(["order.slow", DLQ], 1);
    const env = bridgeEnv(broker.brokers, {
      KAFKA_TOPICS: "order.slow", API_KEYS: key, SOCKET_BUFFER: "64", HISTORY_MAX_ROOM_BYTES: String(32 << 20),
      REDIS_URL: process.env.REDIS_URL ?? "redis://127.0.0.1:6379", REDIS_PREFIX: prefix(),
    });
    const [a, b] = await Promise.all([startBridge(env), startBridge(env)]);
    let slow;
    try {
      await Promise.all([a.ready(), b.ready()]);
      slow = resumable(b.url, token("boss-slow", { roles: ["admin"] }), { transports: ["websocket"], forceNew: true });
      const got = [];
      const notices = [];
      const hellos = [];
      slow.socket.on("admin:bulk", (env) => got.push(env.data.i));
      slow.socket.on("session:closing", (m) => notices.push(m));
      slow.socket.on("connection:success", (h) => hellos.push(h));
      await waitFor(() => hellos.length === 1, { what: "the slow client's connection to B" });
      assert.equal((await slow.request("subscribe:admin")).ok, true);
      // Stop reading: the kernel buffers fill, then B's 64-packet buffer. Every broadcast is
      // made by A (the REST call's node) and reaches B through Redis.
      slow.socket.io.engine.transport.ws._socket.pause();
      const N = 300;
      await bulkAdminBroadcasts(a.url, key, N);
      await waitFor(async () => /realtime_slow_disconnects_total [1-9]/.test(await (await fetch(`${b.url}/metrics`)).text()), { timeoutMs: 20000, what: "B to find its slow socket" });
      slow.socket.io.engine.transport.ws._socket.resume();
      await waitFor(() => hellos.length >= 2, { timeoutMs: 60000, what: "the slow client to reconnect" });
      assert.deepEqual(notices[0], { reason: "slow-consumer", reconnect: true });
      await waitFor(() => new Set(got).size === N, { timeoutMs: 60000, what: "every event at the slow client, after replay" });
      t.diagnostic(`${N} × 40 KB from A; the slow socket on B received ${got.length} (duplicates ${got.length - N}) after its eviction and replay`);
    } finally {
      slow?.close();
      await a.stop();
      await b.stop();
      await broker.stop();
    }
  });
});
