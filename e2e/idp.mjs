// A minimal OAuth 2.0 identity provider for the OIDC test: the client-credentials grant at
// /token (client id and secret by HTTP Basic auth or in the form body) issuing RS256 JWTs,
// and the signing key at /jwks for the broker to validate them. Node's crypto only.
import http from "node:http";
import { generateKeyPairSync, randomUUID, sign } from "node:crypto";

const b64url = (value) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

/** Starts it on 127.0.0.1 (a free port); returns { tokenUrl, jwksUrl, clientId, clientSecret, issued(), stop() }. */
export async function startIdentityProvider({ audience = "kafka" } = {}) {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const kid = randomUUID();
  const jwk = { ...publicKey.export({ format: "jwk" }), kid, alg: "RS256", use: "sig" };
  const clientId = "realtime-bridge";
  const clientSecret = `secret-${randomUUID()}`;
  let issued = 0;
  const jwt = (claims) => {
    const input = `${b64url({ alg: "RS256", typ: "JWT", kid })}.${b64url(claims)}`;
    return `${input}.${sign("sha256", Buffer.from(input), privateKey).toString("base64url")}`;
  };
  const server = http.createServer((req, res) => {
    const answer = (status, body) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.method === "GET" && req.url === "/jwks") return answer(200, { keys: [jwk] });
    if (req.method !== "POST" || req.url !== "/token") return answer(404, { error: "not_found" });
    let body = "";
    req.on("data", (d) => { body += d; });
    req.on("end", () => {
      const form = new URLSearchParams(body);
      const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? "");
      const [id, secret] = basic
        ? Buffer.from(basic[1], "base64").toString().split(":").map(decodeURIComponent)
        : [form.get("client_id"), form.get("client_secret")];
      if (form.get("grant_type") !== "client_credentials") return answer(400, { error: "unsupported_grant_type" });
      if (id !== clientId || secret !== clientSecret) return answer(401, { error: "invalid_client" });
      const now = Math.floor(Date.now() / 1000);
      issued += 1;
      answer(200, {
        access_token: jwt({ sub: id, aud: audience, iss: "e2e-idp", iat: now, exp: now + 3600, scope: form.get("scope") ?? "" }),
        token_type: "Bearer",
        expires_in: 3600,
      });
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    tokenUrl: `${base}/token`,
    jwksUrl: `${base}/jwks`,
    audience,
    clientId,
    clientSecret,
    /** Tokens handed out so far. */
    issued: () => issued,
    stop: () => new Promise((resolve) => server.close(resolve)),
  };
}
