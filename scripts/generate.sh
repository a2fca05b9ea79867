#!/usr/bin/env bash
# Regenerates every file generated from the service's own types, in order:
#   openapi/openapi.json   REST API (utoipa)                      ← handlers and their bodies
#   openapi/asyncapi.json  Socket.IO + Kafka contract (schemars)  ← events, envelope, protocol types
#   schemas/<topic>.json   record value schemas for producers     ← the same types, as producers may write them
#   clients/js/src/generated/*.ts  TypeScript types and event maps ← the two documents above
# Tests fail when a committed copy differs (tests/api.rs, clients/js/test/contract.test.mjs).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run -q -- openapi > openapi/openapi.json
cargo run -q -- asyncapi > openapi/asyncapi.json
rm -f schemas/*.json
cargo run -q -- record-schemas schemas
(cd clients/js && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && node scripts/generate.mjs)
