#!/usr/bin/env bash
# One benchmark scenario of the load tool against a release build of the bridge:
#   ./scripts/bench.sh idle | personal | fanout | ingest | smoke  [options, see --help]
# Prints a summary table and writes target/load/<scenario>.json. Uses an in-process
# librdkafka mock cluster as the broker unless --brokers is given.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --locked --workspace --bins
target="${CARGO_TARGET_DIR:-$PWD/target}/release"
exec "$target/realtime-load" "$@" --bridge-bin "$target/realtime-bridge"
