// The deployment examples, read by machine: settings that are only safe together.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parse } from "yaml";

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
