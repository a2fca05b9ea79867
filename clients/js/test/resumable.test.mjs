// Unit tests of the resumable connection against a scripted socket (the end-to-end suite,
// e2e/, runs it against the real bridge).
import assert from "node:assert/strict";
import { describe, mock, test } from "node:test";

import { expiryOf, resumable } from "../dist/index.js";

/** The part of socket.io-client's Socket the helper uses, driven by the test. */
class ScriptedSocket {
  constructor(url, options) {
    this.url = url;
    this.options = options;
    this.handlers = new Map();
    this.anyHandlers = [];
    this.sent = [];
    this.acks = new Map();
    this.connects = 0;
    this.disconnects = 0;
    this.active = false;
    this.held = [];
  }
  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, []);
    this.handlers.get(event).push(fn);
    return this;
  }
  once(event, fn) {
    const wrapper = (...args) => {
      this.off(event, wrapper);
      fn(...args);
    };
    return this.on(event, wrapper);
  }
  off(event, fn) {
    const list = this.handlers.get(event) ?? [];
    const i = list.indexOf(fn);
    if (i >= 0) list.splice(i, 1);
    return this;
  }
  onAny(fn) {
    this.anyHandlers.push(fn);
    return this;
  }
  connect() {
    this.connects++;
    return this;
  }
  disconnect() {
    this.disconnects++;
    this.fire("disconnect", "io client disconnect");
    return this;
  }
  close() {
    return this.disconnect();
  }
  /** `emit(event, ...args, ack)`: the ack is answered from `acks` a moment later, as over a
   * network, or held until `answer(event)` when `holdAcks` is set. */
  emit(event, ...args) {
    const ack = typeof args.at(-1) === "function" ? args.pop() : undefined;
    this.sent.push([event, ...args]);
    if (!ack) return this;
    const reply = () => {
      const r = this.acks.get(event);
      return typeof r === "function" ? r(...args) : r;
    };
    if (this.holdAcks) this.held.push({ event, answer: () => ack(reply()) });
    else queueMicrotask(() => ack(reply()));
    return this;
  }
  /** Answers the oldest held ack of `event`, in the caller's step. */
  answer(event) {
    const i = this.held.findIndex((h) => h.event === event);
    assert.ok(i >= 0, `an ack of ${event} is held`);
    this.held.splice(i, 1)[0].answer();
  }
  emitWithAck(event, ...args) {
    return new Promise((resolve) => this.emit(event, ...args, resolve));
  }
  /** What the next handshake sends as `auth`. */
  handshake() {
    return new Promise((resolve) => this.options.auth(resolve));
  }
  /** A packet from the server: any-listeners first, as socket.io-client does. */
  receive(event, payload) {
    for (const fn of [...this.anyHandlers]) fn(event, payload);
    this.fire(event, payload);
  }
  fire(event, ...args) {
    for (const fn of [...(this.handlers.get(event) ?? [])]) fn(...args);
  }
}

function open(token = "t0", options = {}) {
  let socket;
  const c = resumable("http://bridge", token, {
    ...options,
    socketFactory: (url, o) => (socket = new ScriptedSocket(url, o)),
  });
  return { c, socket };
}

const jwt = (claims) => `e30.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.sig`;
const envelope = (id, room, epoch, seq, data = {}) => ({ id, type: "order.updated", occurredAt: "", data, position: { room, epoch, seq } });
const hello = (positions, recovery = {}) => ({ socketId: "s", userId: "u", isAdmin: false, rooms: Object.keys(positions), positions, recovery });

describe("resumable", () => {
  test("hands back the last position of each room in every handshake", async () => {
    const { c, socket } = open("tok");
    assert.deepEqual(await socket.handshake(), { token: "tok", positions: {} });
    socket.receive("connection:success", hello({ "user:u": { epoch: "e1", seq: 4 } }));
    socket.receive("order:updated", envelope("o:0:5", "user:u", "e1", 5));
    assert.deepEqual(await socket.handshake(), { token: "tok", positions: { "user:u": { epoch: "e1", seq: 5 } } });
    assert.equal(c.positions["user:u"].seq, 5);
  });

  test("a gap in a room's seq reconnects (the handshake replays it) and keeps the old position", () => {
    const { c, socket } = open();
    socket.receive("connection:success", hello({ "user:u": { epoch: "e1", seq: 3 } }));
    socket.receive("order:updated", envelope("o:0:9", "user:u", "e1", 5));
    assert.equal(socket.disconnects, 1);
    assert.equal(socket.connects, 1);
    assert.deepEqual(c.positions["user:u"], { epoch: "e1", seq: 3 }, "resumes from before the gap");
    // The replay then moves it on one by one.
    socket.receive("order:updated", envelope("o:0:8", "user:u", "e1", 4));
    socket.receive("order:updated", envelope("o:0:9", "user:u", "e1", 5));
    assert.deepEqual(c.positions["user:u"], { epoch: "e1", seq: 5 });
    assert.equal(socket.connects, 1, "no further reconnect");
  });

  test("a new epoch under a live connection resumes from its start", () => {
    const { c, socket } = open();
    socket.receive("connection:success", hello({ "user:u": { epoch: "e1", seq: 7 } }));
    socket.receive("order:updated", envelope("o:0:1", "user:u", "e2", 1));
    assert.deepEqual(c.positions["user:u"], { epoch: "e2", seq: 1 }, "seq 1 of a new epoch follows on");
    socket.receive("order:updated", envelope("o:0:4", "user:u", "e3", 3));
    assert.deepEqual(c.positions["user:u"], { epoch: "e3", seq: 0 }, "seqs 1 and 2 of e3 were missed: replay from 0");
    assert.equal(socket.connects, 1);
  });

  test("sync:position ahead of the client resyncs; at or behind it does nothing", () => {
    const { socket } = open();
    socket.receive("connection:success", hello({ "admin:dashboard": { epoch: "e", seq: 2 } }));
    socket.receive("sync:position", { room: "admin:dashboard", epoch: "e", seq: 2 });
    assert.equal(socket.connects, 0);
    socket.receive("sync:position", { room: "admin:dashboard", epoch: "e", seq: 3 });
    assert.equal(socket.connects, 1);
  });

  test("each (event, id) reaches on() listeners once within the window; the socket sees every copy", () => {
    const { c, socket } = open("t", { dedupWindow: 2 });
    const got = [];
    const raw = [];
    c.on("order:updated", (e) => got.push(e.id));
    c.on("order:updated", (e) => got.push(`second listener ${e.id}`));
    c.on("admin:order:updated", (e) => got.push(`admin ${e.id}`));
    socket.on("order:updated", (e) => raw.push(e.id));
    socket.receive("order:updated", envelope("a", "user:u", "e", 1));
    socket.receive("admin:order:updated", envelope("a", "admin:dashboard", "e", 1));
    socket.receive("order:updated", envelope("a", "user:u", "e", 1)); // replayed copy
    assert.deepEqual(got, ["a", "second listener a", "admin a"], "same id under another event is another envelope");
    assert.deepEqual(raw, ["a", "a"]);
    socket.receive("order:updated", envelope("b", "user:u", "e", 2));
    socket.receive("order:updated", envelope("c", "user:u", "e", 3));
    socket.receive("order:updated", envelope("a", "user:u", "e", 1)); // out of the 2-entry window
    assert.deepEqual(got.slice(3).filter((x) => !x.startsWith("second")), ["b", "c", "a"]);
  });

  test("the token hook is asked before exp and the fresh token sent with auth:refresh", async () => {
    mock.timers.enable({ apis: ["setTimeout", "Date"], now: 1_000_000 });
    try {
      const now = () => Math.floor(Date.now() / 1000);
      const tokens = [jwt({ sub: "u", exp: now() + 120 }), jwt({ sub: "u", exp: now() + 600 })];
      let asked = 0;
      const { socket } = open(() => tokens[asked++], { refreshBeforeExpirySeconds: 60 });
      socket.acks.set("auth:refresh", () => ({ ok: true, expiresAt: now() + 600 }));
      assert.equal((await socket.handshake()).token, tokens[0]);
      socket.receive("connection:success", hello({}));
      mock.timers.tick(59_000);
      await new Promise(setImmediate);
      assert.equal(socket.sent.length, 0, "not yet: 60 s before exp is at 60 s");
      mock.timers.tick(1_000);
      await new Promise(setImmediate);
      assert.deepEqual(socket.sent, [["auth:refresh", { token: tokens[1] }]]);
      assert.equal((await socket.handshake()).token, tokens[1], "reconnects use the fresh token");
    } finally {
      mock.timers.reset();
    }
  });

  test("after auth:expired it reconnects with a fresh token from the hook", async () => {
    let n = 0;
    const { socket } = open(() => `token-${++n}`);
    assert.equal((await socket.handshake()).token, "token-1");
    socket.receive("connection:success", hello({}));
    socket.receive("auth:expired", { reason: "token expired" });
    socket.fire("disconnect", "io server disconnect");
    assert.equal(socket.connects, 1, "reconnected");
    assert.equal((await socket.handshake()).token, "token-2");
  });

  test("a static token is not retried after auth:expired", () => {
    const { socket } = open("static");
    socket.receive("auth:expired", { reason: "token expired" });
    socket.fire("disconnect", "io server disconnect");
    assert.equal(socket.connects, 0);
  });

  test("rooms not recovered are reported, per room and to onLost", () => {
    const lost = [];
    const { c, socket } = open("t", { onLost: (room, r) => lost.push(["option", room, r.reason]) });
    c.onLost("product:p-1", (r) => lost.push(["room", r.reason]));
    c.onLost("*", (r) => lost.push(["any", r.reason]));
    socket.receive(
      "connection:success",
      hello(
        { "product:p-1": { epoch: "e9", seq: 0 }, "user:u": { epoch: "e1", seq: 9 } },
        {
          "product:p-1": { recovered: false, replayed: 0, reason: "epoch-changed" },
          "user:u": { recovered: true, replayed: 3 },
        },
      ),
    );
    assert.deepEqual(lost, [
      ["option", "product:p-1", "epoch-changed"],
      ["room", "epoch-changed"],
      ["any", "epoch-changed"],
    ]);
    assert.deepEqual(c.positions["product:p-1"], { epoch: "e9", seq: 0 }, "continues from the new head");
  });

  test("request keeps joined rooms' positions and forgets left ones", async () => {
    const { c, socket } = open();
    socket.receive("connection:success", hello({ "user:u": { epoch: "e", seq: 1 } }));
    socket.acks.set("subscribe:products", () => ({ ok: true, rooms: ["product:p", "user:u"], positions: { "product:p": { epoch: "x", seq: 4 } }, snapshot: { p: { stock: 3 } } }));
    const reply = await c.subscribeProducts(["p"]);
    assert.equal(reply.snapshot.p.stock, 3);
    assert.deepEqual(socket.sent.at(-1), ["subscribe:products", { productIds: ["p"] }]);
    assert.deepEqual(Object.keys(c.positions).sort(), ["product:p", "user:u"]);
    socket.acks.set("unsubscribe:products", () => ({ ok: true, rooms: ["user:u"] }));
    await c.unsubscribeProducts(["p"]);
    assert.deepEqual(Object.keys(c.positions), ["user:u"]);
  });

  test("a live envelope in the same network read as the ack finds the room's position kept (no needless resync)", async () => {
    const { c, socket } = open();
    socket.receive("connection:success", hello({}));
    socket.holdAcks = true;
    socket.acks.set("subscribe:products", () => ({ ok: true, rooms: ["product:p"], positions: { "product:p": { epoch: "x", seq: 4 } }, snapshot: {} }));
    const replied = c.subscribeProducts(["p"]);
    // Node's ws hands both packets over in one tick: no continuation runs in between.
    socket.answer("subscribe:products");
    socket.receive("inventory:updated", { ...envelope("i5", "product:p", "x", 5), data: { productId: "p", stock: 1 } });
    socket.receive("inventory:updated", { ...envelope("i6", "product:p", "x", 6), data: { productId: "p", stock: 0 } });
    await replied;
    assert.deepEqual(c.positions["product:p"], { epoch: "x", seq: 6 });
    assert.equal(socket.disconnects, 0, "seq 5 and 6 follow the ack's 4: no gap");
  });

  test("watchProducts: the snapshot, then only envelopes after its position, merged field by field", async () => {
    const { c, socket } = open();
    socket.receive("connection:success", hello({}));
    socket.holdAcks = true;
    socket.acks.set("subscribe:products", () => ({
      ok: true,
      rooms: ["product:p", "product:q"],
      positions: { "product:p": { epoch: "x", seq: 4 }, "product:q": { epoch: "y", seq: 0 } },
      snapshot: { p: { productId: "p", stock: 4, name: "Mug", price: 9.5 } },
    }));
    const changes = [];
    const watching = c.watchProducts(["p", "q"], (id, state) => changes.push([id, state.stock]));
    const inv = (id, room, epoch, seq, data) => ({ ...envelope(id, room, epoch, seq), type: "inventory.updated", occurredAt: `t${seq}`, data });
    socket.answer("subscribe:products");
    // Same tick as the ack: an envelope already in the snapshot, then a newer one.
    socket.receive("inventory:updated", inv("a", "product:p", "x", 4, { productId: "p", stock: 4 }));
    socket.receive("inventory:updated", inv("b", "product:p", "x", 5, { productId: "p", stock: 3, previousStock: 4 }));
    const watch = await watching;
    assert.equal(watch.reply.ok, true);
    assert.deepEqual(watch.state("p"), { productId: "p", stock: 3, previousStock: 4, name: "Mug", price: 9.5, updatedAt: "t5" });
    socket.receive("product:updated", { ...inv("c", "product:p", "x", 6, { productId: "p", price: 8, name: null }), type: "product.updated" });
    assert.equal(watch.state("p").price, 8);
    assert.equal(watch.state("p").name, "Mug", "a null field changes nothing");
    assert.equal(watch.state("q"), undefined, "nothing known of q yet");
    socket.receive("inventory:updated", inv("d", "product:q", "y", 1, { productId: "q", stock: 7 }));
    socket.receive("inventory:updated", inv("e", "product:z", "y", 1, { productId: "z", stock: 7 }));
    assert.equal(watch.state("q").stock, 7);
    assert.equal(watch.state("z"), undefined, "not followed");
    assert.deepEqual(changes, [["p", 4], ["p", 3], ["p", 3], ["q", 7]]);

    // A product room not recovered on a reconnect is subscribed again: a fresh snapshot.
    socket.acks.set("subscribe:products", () => ({ ok: true, rooms: ["product:p", "product:q"], positions: { "product:p": { epoch: "x2", seq: 9 } }, snapshot: { p: { productId: "p", stock: 11 } } }));
    socket.receive("connection:success", { ...hello({ "product:p": { epoch: "x2", seq: 9 } }), recovery: { "product:p": { recovered: false, reason: "epoch-changed" } } });
    assert.deepEqual(socket.sent.at(-1), ["subscribe:products", { productIds: ["p"] }]);
    socket.answer("subscribe:products");
    assert.equal(watch.state("p").stock, 11);
    socket.receive("inventory:updated", inv("f", "product:p", "x2", 10, { productId: "p", stock: 10 }));
    assert.equal(watch.state("p").stock, 10);

    socket.acks.set("unsubscribe:products", () => ({ ok: true, rooms: [] }));
    const stopped = watch.stop();
    socket.answer("unsubscribe:products");
    assert.equal((await stopped).ok, true);
    socket.receive("inventory:updated", inv("g", "product:p", "x2", 11, { productId: "p", stock: 1 }));
    assert.equal(watch.state("p"), undefined, "stopped: nothing followed");
  });

  test("watchProducts: a product room without history takes its first envelope, in its new epoch", async () => {
    const { c, socket } = open();
    socket.receive("connection:success", hello({}));
    socket.holdAcks = true;
    socket.acks.set("subscribe:products", () => ({
      ok: true,
      rooms: ["product:n"],
      // The state is known (from an older history), the room has none now: reads create nothing.
      positions: { "product:n": { epoch: "~1796000000000", seq: 0 } },
      snapshot: { n: { productId: "n", stock: 5, name: "Cup" } },
    }));
    const watching = c.watchProducts(["n"]);
    socket.answer("subscribe:products");
    const watch = await watching;
    const inv = (id, epoch, seq, stock) => ({ ...envelope(id, "product:n", epoch, seq), type: "inventory.updated", occurredAt: `t${seq}`, data: { productId: "n", stock } });
    socket.receive("inventory:updated", inv("a", "e7", 1, 3));
    assert.deepEqual(watch.state("n"), { productId: "n", stock: 3, name: "Cup", updatedAt: "t1" });
    socket.receive("inventory:updated", inv("b", "e7", 2, 2));
    assert.equal(watch.state("n").stock, 2);
    assert.equal(socket.disconnects, 0, "seq 1 of the room's first epoch follows the unborn position: no resync");
    socket.receive("inventory:updated", inv("c", "e8", 4, 1));
    assert.equal(watch.state("n").stock, 2, "seq 4 of another epoch does not follow: not applied (the client resyncs)");
  });

  test("watchProducts refused: the reason, and nothing followed", async () => {
    const { c, socket } = open();
    socket.acks.set("subscribe:products", () => ({ ok: false, error: "too many product subscriptions", rooms: [] }));
    const watch = await c.watchProducts(["p"]);
    assert.equal(watch.reply.error, "too many product subscriptions");
    assert.equal(socket.handlers.get("inventory:updated")?.length ?? 0, 0, "no listener left behind");
  });

  test("its methods work detached, and copied with the object's fields", async () => {
    const { c, socket } = open();
    const { request, positions } = c;
    socket.acks.set("subscribe:inventory", () => ({ ok: true, rooms: ["inventory:updates"], positions: { "inventory:updates": { epoch: "e", seq: 2 } } }));
    assert.equal((await request("subscribe:inventory")).ok, true);
    assert.deepEqual(positions["inventory:updates"], { epoch: "e", seq: 2 });
    const copy = { ...c, extra: 1 };
    assert.equal((await copy.request("subscribe:inventory")).ok, true);
  });

  test("session:closing with reconnect comes back after the disconnect; without, stays away", () => {
    const { socket } = open();
    socket.receive("session:closing", { reason: "slow-consumer", reconnect: true });
    socket.fire("disconnect", "io server disconnect");
    assert.equal(socket.connects, 1);
    socket.receive("session:closing", { reason: "too many client events" });
    socket.fire("disconnect", "io server disconnect");
    assert.equal(socket.connects, 1);
  });

  test("expiryOf reads exp from a JWT and nothing from other strings", () => {
    assert.equal(expiryOf(jwt({ exp: 42 })), 42);
    assert.equal(expiryOf("not-a-jwt"), undefined);
    assert.equal(expiryOf("a.%%%.c"), undefined);
  });
});
