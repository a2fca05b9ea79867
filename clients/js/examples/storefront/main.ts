// A storefront page with no framework: the signed-in buyer's orders as they change, and the
// live stock of the product on screen. Bundle it with any bundler (esbuild, Vite, …);
// `npm test` in clients/js type-checks it against the package.
import { resumable, type OrderEventEnvelope, type ProductState } from "@realtime-bridge/client";

const BRIDGE = "https://realtime.example.com";
const productId = new URLSearchParams(location.search).get("product") ?? "p-100";

/** Your sign-in: a short-lived JWT for the buyer, fetched again whenever it nears `exp`. */
async function token(): Promise<string> {
  const res = await fetch("/session/realtime-token", { credentials: "include" });
  return ((await res.json()) as { token: string }).token;
}

const bridge = resumable(BRIDGE, token, { transports: ["websocket"] });

// Orders: every `order:<action>` of this buyer, each envelope once (replays de-duplicated).
const orders = new Map<string, OrderEventEnvelope>();
for (const event of ["order:created", "order:updated", "order:cancelled"] as const) {
  bridge.on(event, (envelope) => {
    orders.set(envelope.data.orderId, envelope);
    renderOrders();
  });
}

// Stock: the snapshot in the subscribe ack, then every change after the position it is as of
// (sent once the socket connects; resumed on every reconnect, and subscribed again when the
// room could not be recovered).
let product: ProductState = {};
void bridge
  .watchProducts([productId], (_, state) => {
    product = state;
    renderStock();
  })
  .then((watch) => watch.reply.ok || console.warn("subscribe:products refused:", watch.reply.error));

bridge.onLost("*", (recovery) => console.info("not recovered:", recovery.reason));

function renderOrders(): void {
  const list = document.querySelector("#orders");
  if (!list) return;
  list.replaceChildren(
    ...[...orders.values()].map((o) => {
      const li = document.createElement("li");
      li.textContent = o.message ?? `${o.data.orderId}: ${o.data.status}`;
      return li;
    }),
  );
}

function renderStock(): void {
  const el = document.querySelector("#stock");
  if (!el) return;
  el.textContent = product.stock === undefined || product.stock === null ? "…" : product.stock > 0 ? `${product.stock} in stock` : "Out of stock";
}
