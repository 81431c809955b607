# syntax=docker/dockerfile:1
#
# hookgate: build with `docker build -t hookgate .` from the repository root.
# Runtime: non-root (uid 10001), SQLite under the /var/lib/hookgate volume,
# config at /etc/hookgate/hookgate.toml (mount it read-only), port 8080.
# Destinations: inside the container 127.0.0.1 is the container itself; name
# the app by its Compose service (http://app:8000/…) or host.docker.internal.

# The workspace's rust-version (Cargo.toml) or newer.
ARG RUST_VERSION=1.94

FROM rust:${RUST_VERSION}-slim-bookworm AS base
WORKDIR /src

# Only the manifests and the lockfile, so the download layer below is reused
# until a dependency changes (editing sources leaves this tree identical).
FROM base AS manifests
COPY . .
RUN find . -type f ! -name Cargo.toml ! -name Cargo.lock -delete \
 && find . -depth -type d -empty -delete

FROM base AS build
COPY --from=manifests /src ./
# Cargo needs a target per member (and the [[test]] paths) to read the
# workspace: empty stand-ins, overwritten by the real sources below.
RUN for crate in crates/*/; do mkdir -p "${crate}src" && touch "${crate}src/lib.rs"; done \
 && for t in it faults; do mkdir -p "crates/hookgate/tests/$t" && touch "crates/hookgate/tests/$t/main.rs"; done \
 && cargo fetch --locked
COPY . .
# gcc from the slim image is enough: SQLite (bundled), mimalloc and aws-lc
# (rustls) are C, built with the cc crate; no cmake, no OpenSSL.
# The target dir is a cache mount (compiled dependencies survive between
# builds), so the binary is copied out in the same step.
RUN --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --offline -p hookgate \
 && install -m 0755 target/release/hookgate /usr/local/bin/hookgate

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="hookgate" \
      org.opencontainers.image.description="A self-hosted webhook gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
# ca-certificates: rustls verifies https:// destinations against the system store.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 hookgate \
 && useradd --system --no-log-init --uid 10001 --gid hookgate \
      --home-dir /var/lib/hookgate --no-create-home --shell /usr/sbin/nologin hookgate \
 && install -d -o hookgate -g hookgate -m 0700 /var/lib/hookgate \
 && install -d -m 0755 /etc/hookgate
COPY --from=build /usr/local/bin/hookgate /usr/local/bin/hookgate

# HOOKGATE_CONFIG: `check` (and `serve` without --config) read this file.
# HOOKGATE_SERVER__LISTEN overrides the file's listen: every interface.
# The working directory is the volume, so a relative sqlite:// path (the
# default sqlite://hookgate.db) keeps the file, its -wal, -shm and .lock there.
ENV HOOKGATE_CONFIG=/etc/hookgate/hookgate.toml \
    HOOKGATE_SERVER__LISTEN=0.0.0.0:8080
WORKDIR /var/lib/hookgate
USER 10001:10001
VOLUME ["/var/lib/hookgate"]
EXPOSE 8080

# Liveness with bash alone (no curl): /dev/tcp to the port HOOKGATE_SERVER__LISTEN
# names, one HTTP/1.0 request, the status line must say 200.
HEALTHCHECK --interval=15s --timeout=5s --start-period=15s --retries=3 \
  CMD ["bash", "-c", "port=${HOOKGATE_SERVER__LISTEN##*:}; exec 3<>/dev/tcp/127.0.0.1/${port:-8080} && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && IFS= read -r -t 3 status <&3 && [[ $status == *' 200 '* ]]"]

# SIGTERM: stop accepting, let deliveries in flight finish for
# server.shutdown_grace (30 s). Docker's default stop timeout is 10 s:
# run with --stop-timeout 45 (compose: stop_grace_period: 45s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["hookgate"]
CMD ["serve", "--config", "/etc/hookgate/hookgate.toml"]
