// Type-level tests: `tsc --noEmit -p test` fails when a line marked @ts-expect-error
// compiles (the types would be too loose) or when another line does not (too tight).
import { io } from "socket.io-client";
import { resumable, type BridgeSocket, type OrderEvent, type Reply, type Rest } from "../src/index.js";

declare const socket: BridgeSocket;

// Every event the bridge sends has its payload type.
socket.on("order:created", (e) => {
  const orderId: string = e.data.orderId;
  const status: string = e.data.status;
  const seq: number | undefined = e.position?.seq;
  void [orderId, status, seq];
});
socket.on("order:returned", (e) => void (e.data.orderId satisfies string)); // any order.<action>
socket.on("inventory:updated", (e) => void (e.data.stock satisfies number));
socket.on("product:updated", (e) => void (e.data.price satisfies number | null | undefined));
socket.on("admin:inventory:low-stock", (e) => void (e.data.productId satisfies string));
socket.on("admin:maintenance", (e) => void (e.data satisfies unknown)); // operators' own admin events
socket.on("notification", (e) => void (e.data.title satisfies string));
socket.on("connection:success", (hello) => {
  const positions: Record<string, { epoch: string; seq: number } | undefined> = hello.positions;
  const lost: boolean | undefined = hello.recovery["user:1"]?.recovered;
  void [positions, lost];
});
socket.on("sync:position", (p) => void (p.room satisfies string));
socket.on("session:closing", (m) => void (m.reason satisfies string));
socket.on("auth:expired", (m) => void (m.reason satisfies string));

// @ts-expect-error: no such event
socket.on("inventory:update", () => {});
// @ts-expect-error: stock is a number
socket.on("inventory:updated", (e) => void (e.data.stock satisfies string));
// @ts-expect-error: an order has no `stock`
socket.on("order:created", (e) => void e.data.stock);
// @ts-expect-error: orderId is text, always
socket.on("order:updated", (e) => void (e.data.orderId satisfies number));

// Client events take their payload and ack types.
socket.emit("subscribe:products", { productIds: ["p-1"] }, (reply) => {
  const ok: boolean = reply.ok;
  const stock: number | null | undefined = reply.snapshot?.["p-1"]?.stock;
  void [ok, stock];
});
socket.emit("subscribe:inventory", (reply) => void (reply.rooms satisfies string[]));
socket.emit("auth:refresh", { token: "t" }, (answer) => void (answer.expiresAt satisfies number | null | undefined));
// @ts-expect-error: the field is productIds
socket.emit("subscribe:products", { productId: ["p-1"] }, () => {});
// @ts-expect-error: subscribe:inventory takes no payload
socket.emit("subscribe:inventory", { room: "x" }, () => {});
// @ts-expect-error: no such client event
socket.emit("subscribe:everything", () => {});

// The resumable connection.
const c = resumable("http://localhost:3009", () => "fresh-token", { transports: ["websocket"], onLost: (room, r) => void [room, r.reason] });
c.on("order:updated", (e) => void (e.data satisfies OrderEvent));
c.request("subscribe:inventory").then((r) => void (r satisfies Reply));
c.subscribeProducts(["p-1"]).then((r) => void r.snapshot);
// @ts-expect-error: auth:refresh is answered with Refreshed, not Reply (use refresh())
c.request("auth:refresh", { token: "t" });
// @ts-expect-error: a product list is required
c.request("subscribe:products");
// @ts-expect-error: no such event
c.on("order-created", () => {});

// A plain socket.io-client socket can be typed with the maps too.
const typed: BridgeSocket = io("http://localhost:3009", { auth: { token: "t" } });
void typed;

// REST bodies, from the OpenAPI document.
const body: Rest.OrderBroadcast | undefined = undefined;
void body;
