# syntax=docker/dockerfile:1
# realtime-bridge: multi-stage build, slim non-root runtime.

FROM rust:1.95-slim-bookworm AS build
# Unpinned apt packages on purpose: the base image tag pins the Debian release and its
# security updates should flow in.
# librdkafka, libcurl and OpenSSL are compiled from source by the Rust crates (static);
# they need a C toolchain, CMake, Perl (OpenSSL's configure) and zlib.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake perl zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Build the dependencies first, in their own layer, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
# The workspace's other member (the load tool) only needs its manifest to be there.
COPY load/Cargo.toml load/
# The patched engineioxide crates that [patch.crates-io] points to (vendor/PATCHES.md).
COPY vendor ./vendor
# Placeholders for every target the manifest names (cargo checks they exist).
RUN mkdir src benches && echo "fn main() {}" > src/main.rs && touch src/lib.rs \
 && echo "fn main() {}" > benches/pipeline.rs \
 && cargo build --release --locked -p realtime-bridge \
 && rm -rf src
COPY src ./src
# The dashboard's files are compiled into the binary (include_str!).
COPY dashboard ./dashboard
# Make cargo see the real sources as newer than the placeholder build.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked -p realtime-bridge

FROM debian:bookworm-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin bridge
COPY --from=build /src/target/release/realtime-bridge /usr/local/bin/realtime-bridge
USER 10001:10001
ENV APP_ENV=production \
    PORT=3009 \
    LOG_FORMAT=json
EXPOSE 3009 9100
# The binary probes itself (no curl in the image); liveness never depends on Kafka.
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/realtime-bridge", "healthcheck"]
# Kubernetes sends SIGTERM; the service drains within SHUTDOWN_GRACE_SECS.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/realtime-bridge"]
CMD ["serve"]
