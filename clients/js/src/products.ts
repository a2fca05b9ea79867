// Live product state on the client: the `subscribe:products` snapshot, then every product
// envelope after the position it is as of — the rule of docs/client-protocol.md, kept in one
// place. The fields are merged as the bridge merges them (src/routing.rs, `product_state`).
import type { Cursor, InventoryEventEnvelope, ProductEventEnvelope, ProductState, Reply } from "./generated/contract.js";

/** The product events that change a product's state, as the socket receives them. */
export const PRODUCT_EVENTS = ["inventory:updated", "product:created", "product:updated"] as const;

/** The room of one product. */
export const productRoom = (productId: string): string => `product:${productId}`;

/** Products followed with {@link Resumable.watchProducts}. */
export interface ProductWatch {
  /** The answer to `subscribe:products` (`ok: false` with the reason when refused: nothing is followed then). */
  readonly reply: Reply;
  /** The product's state now (`undefined` when nothing is known of it yet, or it is not followed). */
  state(productId: string): ProductState | undefined;
  /** Stops following these products and leaves their rooms (`unsubscribe:products`). */
  stop(): Promise<Reply>;
}

/** One product's state and the position it is as of. */
export interface Tracked {
  state: ProductState | undefined;
  at: Cursor;
}

/** Whether `p` comes right after `at`: later in the same epoch, or the first entry of a new
 * one (a room that had no history when read — its epoch `~…` — starts one with its first
 * envelope; a room whose history was lost starts again at 1). */
function follows(at: Cursor, p: Cursor): boolean {
  return p.epoch === at.epoch ? p.seq > at.seq : p.seq === 1;
}

/** `tracked` with `envelope` applied if it comes after the position `tracked` is as of (an
 * envelope at or before it is already in the state); `undefined` when it changes nothing. */
export function applyProductEnvelope(tracked: Tracked, envelope: InventoryEventEnvelope | ProductEventEnvelope): Tracked | undefined {
  const p = envelope.position;
  if (!p || !follows(tracked.at, p)) return undefined;
  const data = envelope.data as Partial<InventoryEventEnvelope["data"] & ProductEventEnvelope["data"]>;
  const fields: ProductState = {
    productId: data.productId,
    stock: data.stock,
    previousStock: data.previousStock,
    name: data.name ?? data.productName,
    sku: data.sku,
    price: data.price,
    updatedAt: data.updatedAt ?? envelope.occurredAt,
  };
  // Only the fields the record has are merged over what was known.
  const merged: ProductState = { ...tracked.state };
  for (const [key, value] of Object.entries(fields) as [keyof ProductState, unknown][]) {
    if (value !== undefined && value !== null) (merged as Record<string, unknown>)[key] = value;
  }
  return { state: merged, at: { epoch: p.epoch, seq: p.seq } };
}
