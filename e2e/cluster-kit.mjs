// Shared by the multi-node suites (cluster, drain): two nodes of one group, resumable
// clients that record what they get, order streams per user, and the tally of what arrived.
import { counters, startBridge, token, waitFor } from "./harness.mjs";
import { resumable } from "@realtime-bridge/client";

export const DLQ = "realtime-bridge.dlq";
export const PARTITIONS = 4;
export const portOf = (url) => Number(new URL(url).port);
export const prefix = () => `e2e-${Date.now()}-${Math.random().toString(16).slice(2)}:`;

/** A resumable client recording every envelope of `event` with its arrival time (WebSocket
 * only unless `transports` says otherwise). */
export function client(url, user, event, transports = ["websocket"]) {
  const c = resumable(url, token(user), { transports, reconnectionDelay: 100, reconnectionDelayMax: 300, forceNew: true });
  const got = [];
  const hellos = [];
  c.socket.on(event, (env) => got.push({ id: env.id, orderId: env.data.orderId, buyerId: env.data.buyerId, at: performance.now() }));
  c.socket.on("connection:success", (h) => hellos.push(h));
  const unique = () => [...new Set(got.map((g) => g.orderId))];
  // Told in a connection:success that its room could not be recovered.
  const toldLost = () => hellos.some((h) => h.recovery?.[`user:${user}`]?.recovered === false);
  return Object.assign(c, { user, got, hellos, unique, toldLost });
}

/** Has its user's first `n` events, or was told they cannot all be recovered. */
export const settled = (n) => (c) => c.unique().length >= n || c.toldLost();

/** Over `clients` and their user's first `n` events: delivered once or more, duplicates,
 * missing but reported (recovered: false), missing silently. */
export function tally(clients, n) {
  const t = { delivered: 0, duplicates: 0, reported: 0, missing: 0 };
  for (const c of clients) {
    const unique = c.unique();
    const lost = expected(c.user, 0, n).filter((id) => !unique.includes(id)).length;
    if (c.toldLost()) t.reported += lost; else t.missing += lost;
    t.delivered += unique.length;
    t.duplicates += c.got.length - unique.length;
  }
  return t;
}

/** Two nodes of one group (same env), both ready, the topic's partitions split between them. */
export async function twoNodes(env) {
  const a = await startBridge(env);
  const b = await startBridge(env);
  await Promise.all([a.ready(), b.ready()]);
  await waitFor(async () => {
    const [ca, cb] = await Promise.all([counters(a), counters(b)]);
    return ca.assignedPartitions > 0 && cb.assignedPartitions > 0 && ca.assignedPartitions + cb.assignedPartitions === PARTITIONS;
  }, { timeoutMs: 60000, what: "the group to split the partitions between both nodes" });
  return [a, b];
}

/** `n` order events per user, each user's on one partition (so in order), interleaved. */
export function stream(users, n, from = 0) {
  const batches = new Map();
  for (let i = from; i < from + n; i++) {
    users.forEach((u, k) => {
      const partition = k % PARTITIONS;
      if (!batches.has(partition)) batches.set(partition, []);
      batches.get(partition).push({ key: u, value: JSON.stringify({ orderId: `${u}-${i}`, buyerId: u, status: "paid" }) });
    });
  }
  return batches;
}

export async function send(kafka, topic, batches) {
  await Promise.all([...batches].map(([partition, messages]) => kafka.sendRaw(topic, messages, partition)));
}

export const expected = (user, from, n) => Array.from({ length: n }, (_, i) => `${user}-${from + i}`);
