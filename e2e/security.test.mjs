// Secured Kafka: the bridge connects over SASL_SSL (SCRAM-SHA-512), over mutual TLS and with
// OIDC client credentials (SASL/OAUTHBEARER, tokens from a local identity provider) and
// delivers; a wrong password, an untrusted CA or a wrong client secret leave it live, not
// ready, saying why.
// Real binary, Apache Kafka with secured listeners and certificates made at test time.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { bridgeEnv, connect, producer, startBridge, startBroker, token, waitFor } from "./harness.mjs";

describe("secured Kafka", () => {
  let broker, kafka;
  const stops = [];

  before(async () => {
    broker = await startBroker({ secure: true });
    await broker.createTopics(["order.secure", "realtime-bridge.dlq"], 1);
    kafka = await producer(broker.brokers);
  });

  after(async () => {
    for (const stop of stops.reverse()) await stop();
    await kafka?.disconnect();
    await broker?.stop();
  });

  const bridgeOn = async (brokers, security) => {
    const bridge = await startBridge(bridgeEnv(brokers, { KAFKA_TOPICS: "order.secure", ...security }));
    stops.push(() => bridge.stop());
    return bridge;
  };

  const delivers = async (bridge, user) => {
    await bridge.ready();
    const c = await connect(bridge.url, { auth: { token: token(user) } });
    stops.push(async () => c.socket.close());
    await kafka.send("order.secure", [{ orderId: `S-${user}`, buyerId: user, status: "paid" }]);
    await waitFor(() => c.of("order:secure").length === 1, { what: `the event over ${user}'s connection` });
    assert.equal(c.of("order:secure")[0].payload.data.orderId, `S-${user}`);
  };

  test("over SASL_SSL with SCRAM-SHA-512", async () => {
    const s = broker.secured;
    const bridge = await bridgeOn(s.sasl, {
      KAFKA_SECURITY_PROTOCOL: "SASL_SSL", KAFKA_SASL_MECHANISM: "SCRAM-SHA-512",
      KAFKA_SASL_USERNAME: s.user, KAFKA_SASL_PASSWORD: s.password, KAFKA_SSL_CA_LOCATION: s.certs.ca.cert,
    });
    await delivers(bridge, "scram-user");
    assert.ok(!bridge.lines.join("\n").includes(s.password), "the password is never logged");
  });

  test("over mutual TLS", async () => {
    const s = broker.secured;
    const bridge = await bridgeOn(s.mtls, {
      KAFKA_SECURITY_PROTOCOL: "SSL", KAFKA_SSL_CA_LOCATION: s.certs.ca.cert,
      KAFKA_SSL_CERTIFICATE_LOCATION: s.certs.client.cert, KAFKA_SSL_KEY_LOCATION: s.certs.client.key,
    });
    await delivers(bridge, "mtls-user");
  });

  /** librdkafka's OIDC settings for the identity provider, as an operator writes them. */
  const oidcProperties = (secret) => {
    const { idp } = broker.secured;
    const file = path.join(mkdtempSync(path.join(os.tmpdir(), "e2e-oidc-")), "kafka.properties");
    writeFileSync(file, [
      "# OIDC client credentials (librdkafka fetches and refreshes the token)",
      "sasl.oauthbearer.method=oidc",
      `sasl.oauthbearer.client.id=${idp.clientId}`,
      `sasl.oauthbearer.client.secret=${secret}`,
      `sasl.oauthbearer.token.endpoint.url=${idp.tokenUrl}`,
      "sasl.oauthbearer.scope=kafka",
    ].join("\n"));
    return { KAFKA_SECURITY_PROTOCOL: "SASL_PLAINTEXT", KAFKA_SASL_MECHANISM: "OAUTHBEARER", KAFKA_PROPERTIES_FILE: file };
  };

  test("with OIDC client credentials (SASL/OAUTHBEARER)", async () => {
    const s = broker.secured;
    const before = s.idp.issued();
    const bridge = await bridgeOn(s.oauth, oidcProperties(s.idp.clientSecret));
    await delivers(bridge, "oidc-user");
    assert.ok(s.idp.issued() > before, "the token came from the identity provider");
    assert.ok(!bridge.lines.join("\n").includes(s.idp.clientSecret), "the client secret is never logged");
  });

  /** Live, never ready, and one log line naming the cause. */
  const refused = async (bridge, cause) => {
    await waitFor(() => bridge.logs.some((l) => l.message === "kafka client error" && cause.test(`${l.error} ${l.reason}`)), { what: `a log line naming ${cause}`, timeoutMs: 30000 });
    assert.equal((await bridge.health("/health/live")).status, 200);
    const { status, body } = await bridge.health();
    assert.equal(status, 503);
    assert.equal(body.kafka.status, "connecting");
  };

  test("a wrong password: live, not ready, the cause logged", async () => {
    const s = broker.secured;
    const bridge = await bridgeOn(s.sasl, {
      KAFKA_SECURITY_PROTOCOL: "SASL_SSL", KAFKA_SASL_MECHANISM: "SCRAM-SHA-512",
      KAFKA_SASL_USERNAME: s.user, KAFKA_SASL_PASSWORD: "not-the-password", KAFKA_SSL_CA_LOCATION: s.certs.ca.cert,
    });
    await refused(bridge, /[Aa]uthentication/);
  });

  test("a wrong OIDC client secret: live, not ready, the cause logged", async () => {
    const bridge = await bridgeOn(broker.secured.oauth, oidcProperties("not-the-secret"));
    await refused(bridge, /Failed to acquire SASL OAUTHBEARER token.*invalid_client/);
  });

  test("an untrusted CA: live, not ready, the cause logged", async () => {
    const s = broker.secured;
    const bridge = await bridgeOn(s.mtls, {
      KAFKA_SECURITY_PROTOCOL: "SSL", KAFKA_SSL_CA_LOCATION: s.certs.otherCa.cert,
      KAFKA_SSL_CERTIFICATE_LOCATION: s.certs.client.cert, KAFKA_SSL_KEY_LOCATION: s.certs.client.key,
    });
    await refused(bridge, /certificate verify failed|SSL handshake failed/);
  });
});
