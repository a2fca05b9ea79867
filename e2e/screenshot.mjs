// Regenerates docs/dashboard.png: the bridge in development mode (embedded broker, demo
// stream), the banner's link opened in Debian's chromium, a screenshot once events flow.
//   cd e2e && BRIDGE_BIN=../target/debug/realtime-bridge node screenshot.mjs
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startBridge, waitFor } from "./harness.mjs";

const out = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "docs", "dashboard.png");
const bridge = await startBridge({ DEV_DEMO_RATE: "10" });
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"] });
try {
  const link = await waitFor(() => bridge.lines.map((l) => l.trim()).find((l) => /^http:\/\/127\.0\.0\.1:\d+\/dashboard#token=/.test(l)), { what: "the banner link" });
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  await page.goto(link);
  await waitFor(async () => (await page.locator("#tail-list li").count()) >= 12, { timeoutMs: 60000, what: "events in the tail" });
  await page.screenshot({ path: out, fullPage: true });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await bridge.stop();
}
