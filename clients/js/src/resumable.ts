// The resumable connection: a socket.io-client socket that keeps the last position of every
// room it is in and hands them back on each (re)connect, so the bridge replays what was
// missed; resyncs when it sees a gap; de-duplicates envelopes by (event, id); refreshes its
// token before `exp` and after `auth:expired`; tells the app which rooms could not be
// recovered so it refetches. docs/client-protocol.md describes the protocol it speaks.
import { io, type ManagerOptions, type Socket, type SocketOptions } from "socket.io-client";

import type {
  ClientToServerEvents,
  ConnectionSuccess,
  Cursor,
  HandshakeAuth,
  InventoryEventEnvelope,
  Position,
  ProductEventEnvelope,
  ProductState,
  Refreshed,
  Reply,
  RoomRecovery,
  ServerToClientEvents,
} from "./generated/contract.js";
import { applyProductEnvelope, PRODUCT_EVENTS, productRoom, type ProductWatch, type Tracked } from "./products.js";

/** A socket typed with the bridge's events. */
export type BridgeSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

/** The token, or a function that returns a fresh one (called at the first connect, before
 * the token expires, after `auth:expired` and after a handshake refused as expired). */
export type TokenSource = string | (() => string | Promise<string>);

/** Client events answered with a {@link Reply}, and the arguments they take before the ack. */
export type RequestEvent = {
  [E in keyof ClientToServerEvents]: Parameters<ClientToServerEvents[E]> extends [...unknown[], (reply: infer R) => void]
    ? [R] extends [Reply] ? ([Reply] extends [R] ? E : never) : never
    : never;
}[keyof ClientToServerEvents];
type RequestArgs<E extends RequestEvent> = Parameters<ClientToServerEvents[E]> extends [...infer A, (reply: Reply) => void] ? A : never;

/** Events whose listeners {@link Resumable.on} de-duplicates (those that carry an envelope). */
export type ServerEvent = keyof ServerToClientEvents & string;

export interface ResumableOptions extends Partial<ManagerOptions & SocketOptions> {
  /** Called for each room the bridge could not recover on a (re)connect (`recovered: false`):
   * what was missed is gone, refetch it (e.g. `GET /realtime/products/{id}`). */
  onLost?: (room: string, recovery: RoomRecovery) => void;
  /** Called when a token refresh fails (the fresh token was refused, or the hook threw). */
  onRefreshError?: (error: Error) => void;
  /** How long before `exp` the token is refreshed, in seconds (default 60). */
  refreshBeforeExpirySeconds?: number;
  /** How many (event, id) pairs are remembered for de-duplication (default 1024). */
  dedupWindow?: number;
  /** Makes the socket (default: socket.io-client's `io`); for tests. */
  socketFactory?: (url: string, options: Partial<ManagerOptions & SocketOptions>) => BridgeSocket;
}

interface WithPosition {
  id?: unknown;
  position?: Position | null;
}

/** The resumable connection. `socket` is the typed socket.io-client socket underneath. */
export class Resumable {
  /** The socket: listen to it directly for every packet as it arrives (duplicates included). */
  readonly socket: BridgeSocket;
  /** The last position seen per room: what the next handshake hands back. */
  readonly positions: Record<string, Cursor> = {};

  #token: TokenSource;
  #current: string | undefined;
  #options: ResumableOptions;
  #lost = new Map<string, Set<(recovery: RoomRecovery) => void>>();
  /** The packet each (event, id) was first seen in, oldest first (a bounded window). */
  #firstSeen = new Map<string, number>();
  #packet = 0;
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;
  #expired = false;
  #closed = false;

  constructor(url: string, token: TokenSource, options: ResumableOptions = {}) {
    const { onLost: _l, onRefreshError: _e, refreshBeforeExpirySeconds: _r, dedupWindow: _d, socketFactory, ...socketOptions } = options;
    // Bound, so that `const { socket, request } = resumable(…)` works as with a plain object.
    for (const method of ["on", "onLost", "request", "subscribeProducts", "watchProducts", "unsubscribeProducts", "refresh", "close"] as const) {
      (this as Record<string, unknown>)[method] = (this[method] as (...args: unknown[]) => unknown).bind(this);
    }
    this.#token = token;
    this.#current = typeof token === "string" ? token : undefined;
    this.#options = options;
    const auth = (cb: (data: object) => void): void => {
      this.#tokenNow().then(
        (token) => cb({ token, positions: this.positions } satisfies HandshakeAuth),
        // No token: the handshake goes without one and is refused with the reason.
        () => cb({ positions: this.positions } satisfies HandshakeAuth),
      );
    };
    this.socket = (socketFactory ?? (io as (url: string, o: object) => BridgeSocket))(url, { ...socketOptions, auth });
    const socket = this.socket as unknown as Socket;
    // Any-listeners run before the named ones: positions are up to date, and the packet
    // counted, before an app listener sees the envelope.
    socket.onAny((event: string, payload: WithPosition | undefined) => this.#onPacket(event, payload));
    socket.on("sync:position", (p: Position) => {
      if (this.#ahead(p) > 0) this.#resync(p);
    });
    socket.on("session:closing", (m: { reconnect?: boolean }) => {
      if (m.reconnect) socket.once("disconnect", () => this.#closed || socket.connect());
    });
    socket.on("connection:success", (hello: ConnectionSuccess) => this.#onConnected(hello));
    socket.on("auth:expired", () => {
      this.#expired = true;
    });
    socket.on("disconnect", () => {
      clearTimeout(this.#refreshTimer);
      // After `auth:expired` the server closed the socket and socket.io-client does not
      // come back by itself: with a token hook, fetch a fresh token and reconnect.
      if (this.#expired && typeof this.#token === "function" && !this.#closed) this.#reconnectWithFreshToken();
    });
    socket.on("connect_error", (error: Error) => {
      // A refused handshake is not retried by socket.io-client either.
      if (!socket.active && /expired/i.test(error.message) && typeof this.#token === "function" && !this.#closed) {
        this.#reconnectWithFreshToken();
      }
    });
  }

  /** Listens to `event`, each envelope once: a replayed copy of one already delivered (same
   * event and id, within the window) is skipped. */
  on<E extends ServerEvent>(event: E, listener: ServerToClientEvents[E]): () => void {
    const wrapped = (payload: WithPosition) => {
      if (typeof payload?.id === "string") {
        const first = this.#firstSeen.get(`${event}\u0000${payload.id}`);
        if (first !== undefined && first !== this.#packet) return;
      }
      (listener as (p: unknown) => void)(payload);
    };
    const socket = this.socket as unknown as Socket;
    socket.on(event as string, wrapped);
    return () => socket.off(event as string, wrapped);
  }

  /** Calls `callback` whenever `room` could not be recovered on a (re)connect; `"*"` for every room. */
  onLost(room: string, callback: (recovery: RoomRecovery) => void): () => void {
    let set = this.#lost.get(room);
    if (!set) this.#lost.set(room, (set = new Set()));
    set.add(callback);
    return () => set.delete(callback);
  }

  /** Sends a subscribe / unsubscribe event and keeps the positions of the rooms its ack
   * lists (joined rooms are resumed from then on, left ones no longer). */
  request<E extends RequestEvent>(event: E, ...args: NoInfer<RequestArgs<E>>): Promise<Reply> {
    return this.#ask(event, args);
  }

  /** `subscribe:products`: the ack's `snapshot` holds each product's latest state. */
  subscribeProducts(productIds: string[]): Promise<Reply> {
    return this.request("subscribe:products", { productIds });
  }

  /** Follows `productIds`: each one's state from the `subscribe:products` snapshot, then every
   * `inventory:updated` / `product:*` envelope after the position the snapshot is as of
   * (replays on reconnect included); `onChange` is called with each new state. A product room
   * the bridge could not recover on a reconnect is subscribed again (a fresh snapshot). */
  async watchProducts(productIds: string[], onChange?: (productId: string, state: ProductState) => void): Promise<ProductWatch> {
    const tracked = new Map<string, Tracked>();
    const socket = this.socket as unknown as Socket;
    // Runs inside the ack callback, before any later packet: the room's first live envelope
    // finds its product tracked (see `#ask`).
    const track = (reply: Reply, ids: string[]): void => {
      if (!reply.ok) return;
      for (const id of ids) {
        const at = reply.positions?.[productRoom(id)];
        if (!at) continue;
        const state = reply.snapshot?.[id];
        tracked.set(id, { state, at });
        if (state) onChange?.(id, state);
      }
    };
    const listener = (envelope: InventoryEventEnvelope | ProductEventEnvelope): void => {
      const id = envelope?.data?.productId;
      const known = typeof id === "string" ? tracked.get(id) : undefined;
      const next = known && applyProductEnvelope(known, envelope);
      if (!next || !id || !next.state) return;
      tracked.set(id, next);
      onChange?.(id, next.state);
    };
    for (const event of PRODUCT_EVENTS) socket.on(event, listener);
    const unlost = productIds.map((id) =>
      this.onLost(productRoom(id), () => {
        if (tracked.has(id)) void this.#ask("subscribe:products", [{ productIds: [id] }], (reply) => track(reply, [id]));
      }),
    );
    const forget = (): void => {
      for (const event of PRODUCT_EVENTS) socket.off(event, listener);
      unlost.forEach((off) => off());
      tracked.clear();
    };
    const reply = await this.#ask("subscribe:products", [{ productIds }], (reply) => track(reply, productIds));
    if (!reply.ok) forget();
    return {
      reply,
      state: (id) => tracked.get(id)?.state,
      stop: () => {
        forget();
        return this.unsubscribeProducts(productIds);
      },
    };
  }

  /** `unsubscribe:products`. */
  unsubscribeProducts(productIds: string[]): Promise<Reply> {
    return this.request("unsubscribe:products", { productIds });
  }

  /** Sends `auth:refresh` with a fresh token from the hook now (it also happens by itself
   * before `exp`). */
  async refresh(): Promise<Refreshed> {
    if (typeof this.#token !== "function") throw new Error("refresh needs a token function");
    const token = await this.#token();
    const emit = (this.socket as unknown as Socket).emitWithAck.bind(this.socket) as (event: string, data: unknown) => Promise<Refreshed>;
    const answer = await emit("auth:refresh", { token });
    if (answer.ok) {
      this.#current = token;
      this.#scheduleRefresh(answer.expiresAt ?? undefined);
    }
    return answer;
  }

  /** Closes the socket for good. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#refreshTimer);
    this.socket.close();
  }

  /** Sends `event` and takes its ack as it arrives, before any packet after it: an `await`
   * continuation would run only after the other packets of the same network read (Node's
   * `ws` hands several over in one tick), so a room's first live envelope could be seen
   * before its position is kept. `then` runs in that same step. */
  #ask(event: string, args: unknown[], then?: (reply: Reply) => void): Promise<Reply> {
    return new Promise((resolve) => {
      (this.socket as unknown as Socket).emit(event, ...args, (reply: Reply) => {
        for (const [room, p] of Object.entries(reply.positions ?? {})) if (p) this.#keep(room, p);
        for (const room of Object.keys(this.positions)) if (!reply.rooms?.includes(room)) delete this.positions[room];
        then?.(reply);
        resolve(reply);
      });
    });
  }

  #keep(room: string, p: Cursor): void {
    this.positions[room] = { epoch: p.epoch, seq: p.seq };
  }

  /** How far `p` is past what this client has seen of its room (in a new epoch: from its start). */
  #ahead(p: Position): number {
    const known = this.positions[p.room];
    return !known ? 0 : known.epoch === p.epoch ? p.seq - known.seq : p.seq;
  }

  /** Missed a live envelope (too slow, or lost while Redis came back): reconnect, the handshake replays it. */
  #resync(p: Position): void {
    if (this.positions[p.room]?.epoch !== p.epoch) this.#keep(p.room, { epoch: p.epoch, seq: 0 });
    this.socket.disconnect();
    this.socket.connect();
  }

  #onPacket(event: string, payload: WithPosition | undefined): void {
    this.#packet++;
    if (typeof payload?.id === "string") {
      const key = `${event}\u0000${payload.id}`;
      if (!this.#firstSeen.has(key)) {
        this.#firstSeen.set(key, this.#packet);
        const window = this.#options.dedupWindow ?? 1024;
        // Maps iterate in insertion order: the first key is the oldest.
        while (this.#firstSeen.size > window) this.#firstSeen.delete(this.#firstSeen.keys().next().value as string);
      }
    }
    const p = payload?.position;
    if (!p || typeof p !== "object") return;
    const ahead = this.#ahead(p);
    if (ahead > 1) this.#resync(p);
    else if (ahead === 1 || !this.positions[p.room]) this.#keep(p.room, p);
  }

  #onConnected(hello: ConnectionSuccess): void {
    this.#expired = false;
    for (const [room, p] of Object.entries(hello.positions)) if (p) this.#keep(room, p);
    for (const [room, recovery] of Object.entries(hello.recovery)) {
      if (!recovery || recovery.recovered) continue;
      this.#options.onLost?.(room, recovery);
      for (const key of [room, "*"]) this.#lost.get(key)?.forEach((callback) => callback(recovery));
    }
    this.#scheduleRefresh(this.#current ? expiryOf(this.#current) : undefined);
  }

  #scheduleRefresh(expiresAt: number | undefined): void {
    clearTimeout(this.#refreshTimer);
    if (typeof this.#token !== "function" || expiresAt === undefined || this.#closed) return;
    const before = (this.#options.refreshBeforeExpirySeconds ?? 60) * 1000;
    const delay = Math.max(0, expiresAt * 1000 - before - Date.now());
    // setTimeout holds at most 2^31-1 ms; a longer wait is re-planned when it fires.
    this.#refreshTimer = setTimeout(() => {
      if (expiresAt * 1000 - before > Date.now() + 1000) return this.#scheduleRefresh(expiresAt);
      this.refresh().then(
        (answer) => answer.ok || this.#options.onRefreshError?.(new Error(answer.error ?? "refresh refused")),
        (error: unknown) => this.#options.onRefreshError?.(error instanceof Error ? error : new Error(String(error))),
      );
    }, Math.min(delay, 2 ** 31 - 1));
  }

  #reconnectWithFreshToken(): void {
    this.#current = undefined;
    this.socket.connect();
  }

  async #tokenNow(): Promise<string> {
    if (this.#current !== undefined) return this.#current;
    const token = typeof this.#token === "function" ? await this.#token() : this.#token;
    this.#current = token;
    return token;
  }
}

/** The `exp` of a JWT (seconds since the epoch), if it has one; the token is not verified. */
export function expiryOf(token: string): number | undefined {
  try {
    const part = token.split(".")[1];
    if (!part) return undefined;
    const json = atob(part.replaceAll("-", "+").replaceAll("_", "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    const exp = (JSON.parse(json) as { exp?: unknown }).exp;
    return typeof exp === "number" ? exp : undefined;
  } catch {
    return undefined;
  }
}

/** A resumable connection to the bridge at `url` (`socket`, `positions`, `request`, …). */
export function resumable(url: string, token: TokenSource, options: ResumableOptions = {}): Resumable {
  return new Resumable(url, token, options);
}
