// A storefront page with no framework: the signed-in buyer's orders as they change, and the
// live stock of the product on screen. Bundle it with any bundler (esbuild, Vite, …);
// `npm test` in clients/js type-checks it against the package.
import { resumable, type OrderEventEnvelope, type ProductState, type Rest } from "@realtime-bridge/client";

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

// Stock: the snapshot in the subscribe ack, then every change after it.
let product: ProductState = {};
bridge.socket.on("connection:success", async () => {
  const reply = await bridge.subscribeProducts([productId]);
  if (!reply.ok) return console.warn("subscribe:products refused:", reply.error);
  product = reply.snapshot?.[productId] ?? product;
  renderStock();
});
bridge.on("inventory:updated", (envelope) => {
  if (envelope.data.productId !== productId) return;
  product = { ...product, stock: envelope.data.stock, previousStock: envelope.data.previousStock };
  renderStock();
});
bridge.on("product:updated", (envelope) => {
  if (envelope.data.productId !== productId) return;
  product = { ...product, name: envelope.data.name ?? product.name, price: envelope.data.price ?? product.price };
  renderStock();
});

// What could not be replayed (the bridge restarted, the gap was too old): refetch it.
bridge.onLost(`product:${productId}`, async () => {
  const res = await fetch(`${BRIDGE}/realtime/products/${encodeURIComponent(productId)}`, {
    headers: { authorization: `Bearer ${await token()}` },
  });
  if (res.ok) {
    product = ((await res.json()) as Rest.ProductResponse).state as ProductState;
    renderStock();
  }
});
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
