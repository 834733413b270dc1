# syntax=docker/dockerfile:1
#
# Coherency server image.
#
#   docker build -t coherency .
#   docker run --rm -p 8080:8080 --env-file .env coherency            # serve (default)
#   docker run --rm --env-file .env coherency migrate                 # one-shot migrations
#
# Migrations are embedded in the binary (sqlx::migrate!), so the image needs no
# migrations/ folder. The dashboard and consult pages are served from /app/web.

# ---------------------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src

# sqlx query macros must not reach for a database at build time: they read the prepared
# metadata in .sqlx/ (`cargo sqlx prepare --workspace`) if the code uses them at all.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# The image has gcc and make (ring, zstd-sys); a dependency that needs cmake, clang or
# protoc would need an apt-get install here.
COPY . .

# Cache mounts keep the crates.io index, downloaded crates and compiled dependencies between
# builds; the binary is copied out of the cached target dir in the same step.
RUN --mount=type=cache,id=coherency-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=coherency-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=coherency-target,target=/src/target \
    cargo build --release --locked -p coherency --bin coherency \
 && install -D -m 0755 target/release/coherency /out/coherency

# ---------------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# ca-certificates follows Debian's security updates: not pinned on purpose
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 coherency \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin coherency \
 && mkdir -p /app /var/lib/coherency/blobs \
 && chown -R 10001:10001 /var/lib/coherency

COPY --from=builder /out/coherency /usr/local/bin/coherency
COPY --chown=0:0 web/ /app/web/

WORKDIR /app

# Container defaults; every one can be overridden at run time.
ENV COHERENCY_HTTP_ADDR=0.0.0.0:8080 \
    COHERENCY_LOG_FORMAT=json \
    COHERENCY_BLOB_URL=file:///var/lib/coherency/blobs

VOLUME ["/var/lib/coherency/blobs"]
EXPOSE 8080

# Numeric uid so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

# No curl in the image: bash's /dev/tcp sends a plain HTTP/1.0 GET to /livez on the port of
# COHERENCY_HTTP_ADDR and checks for a 200 status line.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "port=${COHERENCY_HTTP_ADDR##*:}; exec 3<>/dev/tcp/127.0.0.1/${port:-8080} && printf 'GET /livez HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && timeout 4 head -n1 <&3 | grep -q ' 200 '"]

# The server drains on SIGTERM (COHERENCY_SHUTDOWN_GRACE_SECS, default 30): give
# `docker stop` at least that long (compose sets stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["coherency"]
CMD ["serve"]
