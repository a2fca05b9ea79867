// Draining behind the load balancer: two bridges of one group behind the repository's nginx
// configuration (deploy/nginx.conf, run by Debian's nginx with the upstream addresses
// replaced by the test's bridges). A draining node refuses new handshakes (503) while it
// still serves its sockets; nginx sends handshakes to the other node; the drained node's
// clients — over WebSocket and over long-polling — reconnect there and resume; nothing is
// lost, and no client lands on the draining node.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { bridgeEnv, producer, startBroker, waitFor } from "./harness.mjs";
import { DLQ, PARTITIONS, client, portOf, prefix, send, settled, stream, tally, twoNodes } from "./cluster-kit.mjs";

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");

const freePort = () => new Promise((resolve) => {
  const s = net.createServer().listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
});

/** deploy/nginx.conf in front of `upstreams` (ports on 127.0.0.1), on a free port. */
async function startNginx(upstreams) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "e2e-nginx-"));
  const port = await freePort();
  const original = readFileSync(path.join(root, "deploy", "nginx.conf"), "utf8");
  let i = 0;
  const conf = original
    .replace(/^(\s*server )[\d.]+:3009/gm, (_, lead) => `${lead}127.0.0.1:${upstreams[i++]}`)
    .replace(/^(\s*listen )3009;/m, `$1127.0.0.1:${port};`);
  assert.equal(i, upstreams.length, "one upstream server line per bridge");
  writeFileSync(path.join(dir, "nginx.conf"), conf);
  const proc = spawn("nginx", ["-c", path.join(dir, "nginx.conf"), "-g", `daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log;`], { stdio: "ignore" });
  await waitFor(() => new Promise((resolve) => {
    const c = net.connect(port, "127.0.0.1", () => { c.destroy(); resolve(true); });
    c.on("error", () => resolve(false));
  }), { what: "nginx to listen" });
  return {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGQUIT");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const handshake = async (url) => (await fetch(`${url}/socket.io/?EIO=4&transport=polling`)).status;
const sockets = async (bridge) => (await bridge.health("/health")).body.socketio.connections;

describe("draining behind nginx", () => {
  test("handshakes refused while draining go to the other node; the drained node's clients resume there; nothing lost", async (t) => {
    const broker = await startBroker();
    await broker.createTopics(["order.drain", DLQ], PARTITIONS);
    const kafka = await producer(broker.brokers);
    const env = bridgeEnv(broker.brokers, {
      KAFKA_TOPICS: "order.drain", REDIS_URL: process.env.REDIS_URL ?? "redis://127.0.0.1:6379", REDIS_PREFIX: prefix(),
      // Readiness off and handshakes refused for 2 s before the sockets are closed.
      SHUTDOWN_DELAY_SECS: "2", TRUST_FORWARDED_FOR: "true", LOG_LEVEL: "info,realtime_bridge::socket=debug",
    });
    const [a, b] = await twoNodes(env);
    const lb = await startNginx([portOf(a.url), portOf(b.url)]);
    const users = Array.from({ length: 20 }, (_, i) => `dr${i}`);
    // Half over WebSocket, half over long-polling only: both go through nginx.
    const clients = users.map((u, i) => client(lb.url, u, "order:drain", i % 2 ? ["polling"] : ["websocket"]));
    const N = 40;
    try {
      await waitFor(() => clients.every((c) => c.hellos.length === 1), { what: "20 sockets connected through nginx" });
      // ip_hash: every client comes from 127.0.0.1, so all are on one node.
      const [onA, onB] = [await sockets(a), await sockets(b)];
      assert.deepEqual([onA, onB].sort((x, y) => x - y), [0, 20], `sockets per node: ${onA} / ${onB}`);
      const [drained, other] = onA === 20 ? [a, b] : [b, a];
      await send(kafka, "order.drain", stream(users, N / 2));
      await waitFor(() => clients.some((c) => c.unique().length >= 5), { what: "delivery under way" });

      const exited = drained.stop("SIGTERM");
      await waitFor(async () => (await drained.health()).status === 503, { what: "the drained node not ready" });
      // Draining: a handshake straight to it is refused; through nginx it reaches the other.
      assert.equal(await handshake(drained.url), 503, "a new session at the draining node");
      assert.equal(await handshake(lb.url), 200, "the same request through nginx");
      assert.equal(await sockets(drained), 20, "its open sockets are still served during the delay");
      await send(kafka, "order.drain", stream(users, N / 2, N / 2));
      assert.equal(await exited, 0, "the drained node exits cleanly");

      // A client may have every event before its transport is closed (the node serves its
      // sockets during the delay): wait for the reconnections themselves.
      await waitFor(() => clients.every((c) => c.hellos.length >= 2), { timeoutMs: 30000, what: "every client reconnected" });
      await waitFor(async () => (await sockets(other)) >= 20, { timeoutMs: 30000, what: "every client on the other node" });
      await waitFor(() => clients.every(settled(N)), { timeoutMs: 60000, what: "every client to have every event or a recovered: false" });
      const { delivered, duplicates, reported, missing } = tally(clients, N);
      assert.equal(missing, 0, "no event missing without a recovered: false");
      assert.equal(reported, 0, "every reconnection recovered its gap from the history");
      // No handshake was accepted by the node after it started draining.
      const drainStarted = drained.logs.findIndex((l) => l.message === "shutdown: readiness is now false");
      assert.ok(drainStarted >= 0);
      const connects = (logs) => logs.filter((l) => l.message === "socket connected").length;
      assert.equal(connects(drained.logs.slice(0, drainStarted)), 20, "its connections before the drain are logged");
      const lateConnects = drained.logs.slice(drainStarted).filter((l) => l.message === "socket connected");
      assert.equal(lateConnects.length, 0, "no client connected to the draining node");
      t.diagnostic(`${clients.length} clients (10 WebSocket, 10 polling) × ${N} events: delivered ${delivered}/${clients.length * N}, duplicates ${duplicates}, recovered:false ${reported}, missing ${missing}`);
    } finally {
      clients.forEach((c) => c.socket.close());
      await lb.stop();
      await kafka.disconnect();
      await a.stop();
      await b.stop();
      await broker.stop();
    }
  });
});
