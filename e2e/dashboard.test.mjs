// The operations dashboard in a real browser: Debian's chromium driven headless by
// playwright-core, against the real binary, Apache Kafka and (for the cluster panel) Redis.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { bridgeEnv, connect, counters, producer, startBridge, startBroker, token, waitFor } from "./harness.mjs";
import { prefix, twoNodes } from "./cluster-kit.mjs";

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");
const API_KEY = "dashboard-e2e-key-dashboard-e2e-key";
// The machine has no route out: Chromium's own background connections are switched off.
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"];
const admin = () => token("ops", { roles: ["admin"] });

describe("the dashboard", () => {
  let broker, kafka, bridge, browser;
  const stops = [];

  before(async () => {
    broker = await startBroker();
    await broker.createTopics(["order.created", "inventory.updated", "realtime-bridge.dlq"], 1);
    kafka = await producer(broker.brokers);
    bridge = await startBridge(bridgeEnv(broker.brokers, { KAFKA_TOPICS: "order.created,inventory.updated", API_KEYS: API_KEY }));
    await bridge.ready();
    browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: FLAGS });
  });

  after(async () => {
    for (const stop of stops.reverse()) await stop();
    await browser?.close();
    await kafka?.disconnect();
    await bridge?.stop();
    await broker?.stop();
  });

  /** A fresh page on `url`, recording every request it makes. */
  const open = async (url) => {
    const context = await browser.newContext();
    stops.push(() => context.close());
    const page = await context.newPage();
    const requests = [];
    page.on("request", (r) => requests.push(r.url()));
    await page.goto(`${url}/dashboard`);
    return { page, requests };
  };
  const signIn = async (page, { token: t = "", apiKey = "" }) => {
    await page.fill("#token", t);
    await page.fill("#api-key", apiKey);
    await page.click("#sign-in-form button[type=submit]");
  };

  test("its files are current, and it is served with a strict Content-Security-Policy", async () => {
    const vendored = readFileSync(path.join(root, "dashboard", "socket.io.min.js"), "utf8");
    const pinned = readFileSync(path.join(root, "e2e", "node_modules", "socket.io-client", "dist", "socket.io.min.js"), "utf8");
    assert.equal(vendored, pinned, "dashboard/socket.io.min.js is not socket.io-client's pinned build: copy it again");
    const res = await fetch(`${bridge.url}/dashboard`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-security-policy"), /script-src 'self'/);
    assert.doesNotMatch(res.headers.get("content-security-policy"), /unsafe-inline/);
    assert.equal(res.headers.get("x-frame-options"), "DENY");
    const rootRes = await fetch(`${bridge.url}/`, { redirect: "manual" });
    assert.equal(rootRes.headers.get("location"), "/dashboard", "development: / leads to the dashboard");
  });

  test("signed in as an admin: components, the node, the lag table; orders and alerts in the live tail within 2 s; the chart moves", async () => {
    const { page, requests } = await open(bridge.url);
    await signIn(page, { token: admin() });
    await page.waitForSelector("#component-list li[data-component=kafka].up");
    await page.waitForSelector("#node-rows tr");
    await waitFor(async () => (await page.locator("#lag-rows tr").count()) >= 2, { what: "the lag table filled" });
    await page.waitForFunction(() => document.getElementById("tail-status").textContent === "following");
    await kafka.send("order.created", [{ orderId: "D-1", buyerId: "u-d", status: "paid" }]);
    await kafka.send("inventory.updated", [{ productId: "p-d", stock: 0, previousStock: 3, productName: "Dash Mug" }]);
    const sent = performance.now();
    await page.waitForSelector('#tail-list li[data-event="admin:order:created"]', { timeout: 2000 });
    await page.waitForSelector('#tail-list li.alert[data-event="admin:inventory:out-of-stock"]', { timeout: Math.max(1, 2000 - (performance.now() - sent)) });
    assert.match(await page.textContent("#tail-list li.alert"), /Dash Mug is out of stock/);
    await page.waitForFunction(() => Number(document.getElementById("rate-consumed").textContent) > 0, null, { timeout: 10000 });
    // Filter and pause.
    await page.fill("#filter", "out-of-stock");
    assert.equal(await page.locator("#tail-list li:not([hidden])").count(), 1);
    const foreign = requests.filter((u) => !u.startsWith(bridge.url));
    assert.deepEqual(foreign, [], "no request to any other host");
  });

  test("a buyer token or a wrong API key is refused with a readable message, nothing shown", async () => {
    const { page } = await open(bridge.url);
    await signIn(page, { token: token("buyer") });
    await page.waitForFunction(() => document.getElementById("sign-in-error").textContent.includes("403"));
    assert.match(await page.textContent("#sign-in-error"), /admin role required/);
    assert.equal(await page.isVisible("#board"), false);
    await signIn(page, { apiKey: "not-a-key" });
    await page.waitForFunction(() => document.getElementById("sign-in-error").textContent.includes("401"));
    assert.equal(await page.isVisible("#board"), false);
  });

  test("a test broadcast from the form: the answer's positions shown, a connected client receives it", async () => {
    const listener = await connect(bridge.url, { auth: { token: admin() } });
    stops.push(async () => listener.socket.close());
    assert.equal((await listener.socket.emitWithAck("subscribe:admin")).ok, true);
    const { page } = await open(bridge.url);
    await signIn(page, { apiKey: API_KEY });
    await page.waitForSelector("#node-rows tr");
    await page.fill("#b-event", "dash-test");
    await page.fill("#b-data", '{"n": 7}');
    await page.click("#broadcast-form button[type=submit]");
    await page.waitForFunction(() => document.getElementById("broadcast-answer").textContent.startsWith("Sent"));
    assert.match(await page.textContent("#broadcast-answer"), /"seq"/);
    await waitFor(() => listener.of("admin:dash-test").length === 1, { what: "the client to receive it" });
    assert.equal(listener.of("admin:dash-test")[0].payload.data.n, 7);
    await page.fill("#b-data", "not json");
    await page.click("#broadcast-form button[type=submit]");
    await page.waitForFunction(() => document.getElementById("broadcast-answer").textContent.includes("not JSON"));
  });
});

/** The link the development banner prints (signed in as the dev admin). */
export const bannerLink = (bridge) => bridge.lines.map((l) => l.trim()).find((l) => /^http:\/\/127\.0\.0\.1:\d+\/dashboard#token=/.test(l));

describe("a newcomer's first minute", () => {
  test("cargo run's banner link opens the dashboard signed in, with the demo stream flowing", async () => {
    // Development mode, nothing configured: embedded broker, generated key, demo stream.
    const bridge = await startBridge({ DEV_DEMO_RATE: "20" });
    const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: FLAGS });
    try {
      const link = await waitFor(() => bannerLink(bridge), { what: "the dashboard link in the banner" });
      const page = await (await browser.newContext()).newPage();
      await page.goto(link);
      await page.waitForSelector("#component-list li[data-component=kafka].up", { timeout: 30000 });
      await waitFor(async () => (await page.locator("#tail-list li").count()) >= 3, { timeoutMs: 30000, what: "demo events in the live tail" });
    } finally {
      await browser.close();
      await bridge.stop();
    }
  });
});

describe("the dashboard on two nodes", () => {
  test("the cluster panel lists both nodes", async () => {
    const broker = await startBroker();
    await broker.createTopics(["order.created", "realtime-bridge.dlq"], 2);
    const env = bridgeEnv(broker.brokers, { KAFKA_TOPICS: "order.created", REDIS_URL: process.env.REDIS_URL ?? "redis://127.0.0.1:6379", REDIS_PREFIX: prefix() });
    const a = await startBridge(env);
    const b = await startBridge(env);
    const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: FLAGS });
    const sockets = [];
    try {
      await Promise.all([a.ready(), b.ready()]);
      // One socket on each node, so both appear (nodes without sockets are not listed).
      for (const n of [a, b]) sockets.push(await connect(n.url, { auth: { token: token(`u-${sockets.length}`) } }));
      const page = await (await browser.newContext()).newPage();
      await page.goto(`${a.url}/dashboard#token=${admin()}`);
      await page.waitForFunction(() => document.querySelectorAll("#node-rows tr").length === 2, null, { timeout: 20000 });
      assert.equal(new URL(page.url()).hash, "", "the token left the address bar");
    } finally {
      sockets.forEach((s) => s.socket.close());
      await browser.close();
      await a.stop();
      await b.stop();
      await broker.stop();
    }
  });
});
