// Test harness: an Apache Kafka broker process, the real realtime-bridge binary, Kafka producers
// (kafkajs) and the official socket.io-client. Everything binds 127.0.0.1 on free ports.
import { spawn, execFileSync } from "node:child_process";
import { createHmac, randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import net from "node:net";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import Ajv from "ajv";
import { Kafka, logLevel, Partitioners } from "kafkajs";
import { io } from "socket.io-client";
import { makeCerts } from "./certs.mjs";
import { startIdentityProvider } from "./idp.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
export const BRIDGE_BIN = process.env.BRIDGE_BIN ?? path.join(here, "..", "target", "debug", "realtime-bridge");
export const JWT_SECRET = "e2e-secret-e2e-secret-e2e-secret-0123";

/** Resolves when `predicate()` is truthy; polls a condition, fails after `timeoutMs`. */
export async function waitFor(predicate, { timeoutMs = 30000, intervalMs = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** `promise`, or a failure naming `what` after `ms`. */
export function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export async function freePort() {
  return (await freePorts(1))[0];
}

/** `n` distinct free ports: all held open until each is known (one after the other, the
 * system may hand out a just-closed port again; a broker given one port twice refuses to
 * start). */
export async function freePorts(n) {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => resolve(srv));
  })));
  const ports = servers.map((srv) => srv.address().port);
  await Promise.all(servers.map((srv) => new Promise((resolve) => srv.close(resolve))));
  return ports;
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => { s.destroy(); resolve(true); });
    s.once("error", () => resolve(false));
  });
}

/** The Apache Kafka version kafka/pom.xml pins. */
export const KAFKA_VERSION = /<kafka.version>(.*)<\/kafka.version>/.exec(readFileSync(path.join(here, "kafka", "pom.xml"), "utf8"))[1];
/** Where scripts/test.sh put its jars (from Maven Central). */
export const KAFKA_LIB = process.env.KAFKA_LIB ?? path.join(os.homedir(), ".cache", "realtime-bridge", `kafka-${KAFKA_VERSION}`, "lib");

/**
 * Starts a single-node Apache Kafka (KRaft: broker and controller in one JVM, its own log
 * directory) and returns { brokers, createTopics, stop }. Clients use `brokers`; with
 * `advertisedPort`, they are told to reach it there (a proxy in front of it). The harness
 * itself administers it through a listener of its own, so topics can be created while the
 * proxy is cut.
 */
export async function startBroker({ port, advertisedPort, secure = false } = {}) {
  const [free, controllerPort, adminPort, sasl, mtls, oauth] = await freePorts(6);
  port ??= free;
  const dir = mkdtempSync(path.join(os.tmpdir(), "e2e-kafka-"));
  const config = path.join(dir, "server.properties");
  // With `secure`: SASL_SSL (SCRAM-SHA-512, a user created at format time) and SSL with
  // client certificates (mTLS) beside the plaintext listeners, certificates made here; and
  // SASL/OAUTHBEARER (on SASL_PLAINTEXT) validating tokens from a local identity provider.
  const tls = secure ? { sasl, mtls, oauth, certs: makeCerts(dir), user: "bridge", password: `pw-${randomUUID()}`, idp: await startIdentityProvider() } : null;
  let secured = [];
  if (tls) {
    const keystore = path.join(dir, "broker-keystore.pem");
    writeFileSync(keystore, readFileSync(tls.certs.broker.key, "utf8") + readFileSync(tls.certs.broker.cert, "utf8"));
    secured = [
      "sasl.enabled.mechanisms=SCRAM-SHA-512",
      "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
      "ssl.keystore.type=PEM",
      `ssl.keystore.location=${keystore}`,
      "ssl.truststore.type=PEM",
      `ssl.truststore.location=${tls.certs.ca.cert}`,
      "listener.name.ssl.ssl.client.auth=required",
      "listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER",
      "listener.name.oauth.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
      "listener.name.oauth.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerValidatorCallbackHandler",
      `sasl.oauthbearer.jwks.endpoint.url=${tls.idp.jwksUrl}`,
      `sasl.oauthbearer.expected.audience=${tls.idp.audience}`,
    ];
  }
  const extraListeners = tls ? `,SASL_SSL://127.0.0.1:${tls.sasl},SSL://127.0.0.1:${tls.mtls},OAUTH://127.0.0.1:${tls.oauth}` : "";
  writeFileSync(config, [
    "process.roles=broker,controller",
    "node.id=1",
    `controller.quorum.bootstrap.servers=127.0.0.1:${controllerPort}`,
    `listeners=PLAINTEXT://127.0.0.1:${port},ADMIN://127.0.0.1:${adminPort},CONTROLLER://127.0.0.1:${controllerPort}${extraListeners}`,
    `advertised.listeners=PLAINTEXT://127.0.0.1:${advertisedPort ?? port},ADMIN://127.0.0.1:${adminPort}${extraListeners}`,
    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,ADMIN:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,OAUTH:SASL_PLAINTEXT",
    "controller.listener.names=CONTROLLER",
    "inter.broker.listener.name=ADMIN",
    `log.dirs=${path.join(dir, "data")}`,
    // One node: internal topics with one replica and one partition (50 slow the start).
    "offsets.topic.replication.factor=1",
    "offsets.topic.num.partitions=1",
    "transaction.state.log.replication.factor=1",
    "transaction.state.log.min.isr=1",
    "share.coordinator.state.topic.replication.factor=1",
    "share.coordinator.state.topic.min.isr=1",
    "group.initial.rebalance.delay.ms=0",
    "auto.create.topics.enable=false",
    // Kafka 4 refuses record timestamps over an hour ahead by default; older brokers and
    // permissive configurations accept any, and the bridge must cope with those too.
    "log.message.timestamp.after.max.ms=9223372036854775807",
    // KIP-848 groups: heartbeats and session timeout short enough for tests.
    "group.consumer.min.heartbeat.interval.ms=500",
    "group.consumer.heartbeat.interval.ms=500",
    "group.consumer.min.session.timeout.ms=6000",
    "group.consumer.session.timeout.ms=6000",
    ...secured,
  ].join("\n"));
  const java = (args) => execFileSync("java", ["-cp", `${KAFKA_LIB}/*`, ...args], { stdio: "pipe" });
  // A base64url UUID, as kafka-storage random-uuid makes: never one starting with "-",
  // which the tool would read as an option (Kafka's own generator avoids them too).
  let clusterId;
  do clusterId = randomBytes(16).toString("base64url"); while (clusterId.startsWith("-"));
  const scram = tls ? ["--add-scram", `SCRAM-SHA-512=[name=${tls.user},password=${tls.password}]`] : [];
  java([`-Dlog4j2.configurationFile=${path.join(here, "kafka", "log4j2.properties")}`, "kafka.tools.StorageTool", "format", "-t", clusterId, "-c", config, "--standalone", ...scram]);
  let proc, stderr;
  const kafka = new Kafka({ clientId: "e2e-admin", brokers: [`127.0.0.1:${adminPort}`], logLevel: logLevel.NOTHING, retry: { retries: 0 } });
  const admin = kafka.admin();
  // Starts the JVM on the formatted log directory and waits until it answers.
  const launch = async () => {
    proc = spawn("java", [
      "-Xms128m", "-Xmx512m", "-XX:+UseG1GC",
      // Kafka 4 fetches JWKS only from URLs allowed here.
      ...(tls ? [`-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls=${tls.idp.jwksUrl}`] : []),
      `-Dlog4j2.configurationFile=${path.join(here, "kafka", "log4j2.properties")}`,
      "-cp", `${KAFKA_LIB}/*`, "kafka.Kafka", config,
    ], { stdio: ["ignore", "ignore", "pipe"] });
    stderr = "";
    proc.stderr.on("data", (d) => { stderr = (stderr + d).slice(-4000); });
    await waitFor(async () => {
      if (proc.exitCode !== null) throw new Error(`kafka exited (${proc.exitCode}): ${stderr}`);
      if (!(await canConnect(adminPort))) return false;
      try {
        await admin.connect();
        await admin.listTopics();
        return true;
      } catch {
        await admin.disconnect().catch(() => {});
        return false;
      }
    }, { what: "Apache Kafka to answer", timeoutMs: 60000, intervalMs: 100 });
  };
  const kill = async () => {
    await admin.disconnect().catch(() => {});
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGKILL");
      await exited;
    }
  };
  await launch();
  return {
    brokers: `127.0.0.1:${port}`,
    /** With `secure`: { sasl, mtls, oauth } addresses, the certificates, the SCRAM user, the identity provider. */
    secured: tls && { sasl: `127.0.0.1:${tls.sasl}`, mtls: `127.0.0.1:${tls.mtls}`, oauth: `127.0.0.1:${tls.oauth}`, certs: tls.certs, user: tls.user, password: tls.password, idp: tls.idp },
    /** Creates topics (and waits for their leaders). */
    async createTopics(names, partitions = 3) {
      await admin.createTopics({ topics: names.map((topic) => ({ topic, numPartitions: partitions })), waitForLeaders: true });
    },
    /** SIGKILL: the broker dies mid-whatever; its log directory stays. */
    kill,
    /** Starts it again from its log directory, same ports. */
    restart: launch,
    async stop() {
      await kill();
      await tls?.idp.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A TCP proxy on 127.0.0.1 that can be cut (every connection reset, new ones refused) and
 * restored, or pointed at another target: a network failure, or a load balancer.
 */
export async function startProxy(targetPort, port) {
  port ??= await freePort();
  let target = targetPort;
  const open = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, "127.0.0.1");
    for (const s of [client, upstream]) {
      open.add(s);
      s.on("error", () => {});
      s.on("close", () => { open.delete(s); client.destroy(); upstream.destroy(); });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const listen = () => new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => { server.off("error", reject); resolve(); });
  });
  await listen();
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    /** Resets every connection and refuses new ones. */
    async cut() {
      const closed = new Promise((r) => server.close(r));
      for (const s of open) s.resetAndDestroy();
      await closed;
    },
    restore: listen,
    retarget(p) { target = p; },
    async close() { if (server.listening) await this.cut(); },
  };
}

/**
 * Starts the real binary. Resolves once it listens; `ready()` waits for /health/ready.
 * Captures stdout (the development banner) and JSON log lines.
 */
export async function startBridge(env = {}) {
  const proc = spawn(BRIDGE_BIN, [], {
    env: { PATH: process.env.PATH, PORT: "0", HOST: "127.0.0.1", LOG_FORMAT: "json", LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines = [];
  const logs = [];
  readline.createInterface({ input: proc.stdout }).on("line", (l) => {
    lines.push(l);
    if (l.startsWith("{")) { try { logs.push(JSON.parse(l)); } catch { /* banner text */ } }
  });
  let stderr = "";
  proc.stderr.on("data", (d) => { stderr = (stderr + d).slice(-8000); });
  const listening = await waitFor(() => {
    if (proc.exitCode !== null) throw new Error(`bridge exited (${proc.exitCode}): ${stderr}\n${lines.join("\n")}`);
    return logs.find((l) => l.message === "listening");
  }, { what: "the bridge to listen" });
  const port = Number(listening.addr.split(":").pop());
  const url = `http://127.0.0.1:${port}`;
  return {
    url, proc, lines, logs,
    stderr: () => stderr,
    async health(path = "/health/ready") {
      const res = await fetch(url + path);
      return { status: res.status, body: await res.json() };
    },
    async ready(timeoutMs = 60000) {
      await waitFor(async () => (await this.health()).status === 200, { timeoutMs, intervalMs: 100, what: "/health/ready = 200" });
    },
    async stop(signal = "SIGTERM") {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      const exited = new Promise((r) => proc.once("exit", (code) => r(code)));
      proc.kill(signal);
      return exited;
    },
  };
}

/** Environment for a bridge consuming from `brokers` with a fresh group. */
export function bridgeEnv(brokers, extra = {}) {
  return {
    KAFKA_BROKERS: brokers,
    KAFKA_GROUP_ID: `e2e-${randomUUID()}`,
    KAFKA_SESSION_TIMEOUT_MS: "6000",
    KAFKA_AUTO_OFFSET_RESET: "earliest",
    JWT_SECRET,
    ...extra,
  };
}

const b64url = (x) => Buffer.from(typeof x === "string" ? x : JSON.stringify(x)).toString("base64url");

/** An HS256 JWT signed with `secret`. */
export function token(sub, { roles = ["buyer"], secret = JWT_SECRET, expiresIn = 3600, claims = {} } = {}) {
  const header = b64url({ alg: "HS256", typ: "JWT" });
  const body = b64url({ sub, roles, exp: Math.floor(Date.now() / 1000) + expiresIn, ...claims });
  const sig = createHmac("sha256", secret).update(`${header}.${body}`).digest("base64url");
  return `${header}.${body}.${sig}`;
}

/**
 * Connects with the official client over WebSocket. Resolves with a client whose `events`
 * records every event received (name, payload, time), or rejects with the connect_error.
 */
export function connect(url, { auth, query } = {}) {
  return new Promise((resolve, reject) => {
    const socket = io(url, { auth, query, transports: ["websocket"], reconnection: false, forceNew: true, timeout: 10000 });
    const events = [];
    socket.onAny((name, payload) => events.push({ name, payload, at: performance.now() }));
    socket.once("connection:success", (hello) => resolve({ socket, events, hello, of: (name) => events.filter((e) => e.name === name) }));
    socket.once("connect_error", (err) => { socket.close(); reject(err); });
  });
}

/** A throwaway redis-server on `port` (a free one by default), for restart tests. */
export async function startRedis(port) {
  port ??= await freePort();
  const proc = spawn("redis-server", ["--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  await waitFor(async () => {
    if (proc.exitCode !== null) throw new Error(`redis-server exited (${proc.exitCode})`);
    return canConnect(port);
  }, { what: "redis-server to listen" });
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async kill() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGKILL");
      await exited;
    },
  };
}

/** Counters from the bridge's /health body. */
export async function counters(bridge) {
  const { body } = await bridge.health("/health");
  return { ...body.kafka, ...body.socketio };
}

/** Emits a client event and resolves with its ack. */
export function request(client, event) {
  return client.socket.timeout(5000).emitWithAck(event);
}

// Every record the suite produces is checked against the published record schema of its
// topic (schemas/, generated from the service's types): a record a test means as an event
// must validate, and one marked `invalid: true` (a test of the dead-letter path) must not —
// so the schemas producer teams validate with say what the bridge accepts.
const schemaValidator = new Ajv({ allErrors: true, allowUnionTypes: true });
const recordSchemas = new Map();
function recordSchemaFile(topic) {
  const [family, action] = topic.split(".");
  if (family === "order") return ["created", "cancelled"].includes(action) ? topic : "order.updated";
  return ["inventory.updated", "product.created", "product.updated"].includes(topic) ? topic : null;
}
/** Throws when the schema's verdict on `value` is not what the test means. */
export function checkRecord(topic, value, { invalid = false } = {}) {
  const file = recordSchemaFile(topic);
  if (!file || value === null || value === undefined) return;
  let parsed;
  try {
    parsed = JSON.parse(Buffer.isBuffer(value) ? value.toString("utf8") : value);
  } catch {
    return; // not JSON: no schema can accept it, nor does the bridge
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) return;
  if (!recordSchemas.has(file)) recordSchemas.set(file, schemaValidator.compile(JSON.parse(readFileSync(path.join(here, "..", "schemas", `${file}.json`), "utf8"))));
  const validate = recordSchemas.get(file);
  const valid = validate(parsed);
  if (!valid && !invalid) throw new Error(`a record for ${topic} that schemas/${file}.json refuses (${schemaValidator.errorsText(validate.errors)}); mark it {invalid: true} if that is the point`);
  if (valid && invalid) throw new Error(`a record for ${topic} marked invalid that schemas/${file}.json accepts: the schema is looser than the test thinks`);
  checkedRecords.count++;
}
/** How many records the schemas were checked against (tests assert it is not zero). */
export const checkedRecords = { count: 0 };

/** A connected kafkajs producer. */
export async function producer(brokers) {
  const kafka = new Kafka({ clientId: "e2e", brokers: [brokers], logLevel: logLevel.NOTHING });
  const p = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: false });
  await p.connect();
  return {
    /** Sends raw values (strings or objects) to one partition of a topic, in order. */
    async send(topic, values, partition = 0) {
      for (const v of values) checkRecord(topic, typeof v === "string" ? v : JSON.stringify(v));
      await p.send({
        topic,
        messages: values.map((v) => ({ partition, value: typeof v === "string" ? v : JSON.stringify(v) })),
      });
    },
    /** Sends records with keys and headers as given: [{ key, value, headers, invalid? }]. */
    async sendRaw(topic, messages, partition = 0) {
      for (const m of messages) checkRecord(topic, m.value, m);
      await p.send({ topic, messages: messages.map(({ invalid: _, ...m }) => ({ partition, ...m })) });
    },
    disconnect: () => p.disconnect(),
  };
}

/** Reads `count` records of `topic` from the start, with their headers as strings. */
export async function readTopic(brokers, topic, count, timeoutMs = 30000) {
  const kafka = new Kafka({ clientId: "e2e-reader", brokers: [brokers], logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: `e2e-reader-${randomUUID()}`, sessionTimeout: 6000 });
  const records = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        const headers = Object.fromEntries(Object.entries(message.headers ?? {}).map(([k, v]) => [k, v?.toString()]));
        records.push({ partition, offset: Number(message.offset), key: message.key?.toString(), value: message.value?.toString(), headers });
      },
    });
    await waitFor(() => records.length >= count, { timeoutMs, what: `${count} records of ${topic}` });
    return records;
  } finally {
    await consumer.disconnect();
  }
}

/** `n` admin broadcasts `{event: "bulk", data: {i, pad}}` (40 KB each) through `url`'s REST
 * API, one after the other, each answered 200: enough to fill a paused socket's buffers. */
export async function bulkAdminBroadcasts(url, key, n) {
  const pad = "x".repeat(40 * 1024);
  for (let i = 0; i < n; i++) {
    const res = await fetch(`${url}/realtime/broadcast/admin`, {
      method: "POST", headers: { "content-type": "application/json", "x-api-key": key }, body: JSON.stringify({ event: "bulk", data: { i, pad } }),
    });
    if (res.status !== 200) throw new Error(`admin broadcast ${i}: ${res.status} ${await res.text()}`);
  }
}
