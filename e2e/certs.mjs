// Test certificates, made at test time with the openssl CLI: a CA, a broker certificate
// for 127.0.0.1, and a client certificate for mutual TLS (plus a second, untrusted CA).
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import path from "node:path";

const openssl = (args) => execFileSync("openssl", args, { stdio: "pipe" });

function ca(dir, name) {
  const key = path.join(dir, `${name}.key`);
  const cert = path.join(dir, `${name}.pem`);
  openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", `/CN=${name}`]);
  return { key, cert };
}

function signed(dir, name, authority, san) {
  const key = path.join(dir, `${name}.key`);
  const csr = path.join(dir, `${name}.csr`);
  const cert = path.join(dir, `${name}.pem`);
  const ext = path.join(dir, `${name}.ext`);
  writeFileSync(ext, san ? `subjectAltName=${san}\n` : "basicConstraints=CA:FALSE\n");
  openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", `/CN=${name}`]);
  openssl(["x509", "-req", "-in", csr, "-CA", authority.cert, "-CAkey", authority.key, "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext]);
  return { key, cert };
}

/** Makes { ca, broker, client, otherCa } in `dir`; each is { key, cert } (PEM files). */
export function makeCerts(dir) {
  const authority = ca(dir, "ca");
  return {
    ca: authority,
    broker: signed(dir, "broker", authority, "IP:127.0.0.1,DNS:localhost"),
    client: signed(dir, "client", authority),
    otherCa: ca(dir, "other-ca"),
  };
}
