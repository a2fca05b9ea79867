// @realtime-bridge/client: the bridge's event maps and payload types (generated from the
// service's AsyncAPI contract, itself generated from the service's Rust types), the REST
// bodies (from its OpenAPI document), and the resumable connection.
export * from "./generated/contract.js";
export * as Rest from "./generated/rest.js";
export { Resumable, resumable, expiryOf } from "./resumable.js";
export { applyProductEnvelope, productRoom, PRODUCT_EVENTS } from "./products.js";
export type { ProductWatch, Tracked } from "./products.js";
export type { BridgeSocket, RequestEvent, ResumableOptions, ServerEvent, TokenSource } from "./resumable.js";
