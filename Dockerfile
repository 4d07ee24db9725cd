# adopt-worker container image.
#
#   docker build -t adopt-worker .
#   docker run --rm -e DATABASE_URL=... -e SMTP_URL=... -p 8080:8080 adopt-worker          # run
#   docker run --rm -e DATABASE_URL=... adopt-worker migrate                                # one-shot
#
# deploy/docker-compose.yml runs it with PostgreSQL + PostGIS and a mail catcher.
# docs/operations.md covers configuration, probes, metrics, scaling and upgrades.

# The base images, as build arguments so that a local stand-in can be named (scripts/image-check
# builds this file with images it makes from Debian packages, where no registry is reachable):
#   docker build --build-arg RUST_IMAGE=... --build-arg RUNTIME_IMAGE=... .
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- build ----------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
WORKDIR /build

# Dependencies first, in their own layer: it is rebuilt only when Cargo.toml or Cargo.lock
# change. A stub crate stands in for ours; its build outputs are removed afterwards so the
# real sources below are always compiled (COPY keeps the context's mtimes, which may be
# older than the stub's artifacts).
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/adopt-worker* target/release/deps/adopt_worker-* \
        target/release/deps/libadopt_worker-* target/release/.fingerprint/adopt-worker-*

# The crate: migrations, config/default.toml and templates/layout.html are compiled into
# the binary (tests/it/ops.rs checks that every file the build reads is copied here).
COPY src src
COPY migrations migrations
COPY config config
COPY templates templates
RUN cargo build --release --locked \
    && strip --strip-debug target/release/adopt-worker

# ---- run ------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}

# ca-certificates is the system store (/etc/ssl/certs). PostgreSQL's certificate (checked with
# sslmode=verify-ca/verify-full) must chain to it or to sslrootcert=, the relay's to it, to the
# Mozilla roots compiled in or to smtp.ca_file. A private CA added to it (in a derived
# image: copy it to /usr/local/share/ca-certificates/ and run update-ca-certificates) is trusted
# by both; SSL_CERT_FILE / SSL_CERT_DIR, when set, are read instead of it.
# docs/operations.md "TLS and private CAs".
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin adopt \
    && mkdir -p /app/outbox \
    && chown 10001:10001 /app/outbox

WORKDIR /app
COPY --from=builder /build/target/release/adopt-worker /usr/local/bin/adopt-worker
# `templates sync` and `templates check` read templates/ from the working directory.
COPY templates templates
# The annotated defaults, for reference (the binary has them built in).
COPY config config

ENV HTTP_ADDR=0.0.0.0:8080 \
    ADOPT__LOG__FORMAT=json \
    ADOPT__OUTBOX__DIR=/app/outbox

USER 10001
EXPOSE 8080

# The slim base has no curl or wget. Rather than add one (and its libraries) only for this,
# bash, which the base image has, sends the request itself over /dev/tcp and checks the
# status line. It uses the port of HTTP_ADDR, where `run --no-api` workers serve /healthz
# too (unless http.metrics_addr moves it).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${HTTP_ADDR##*:} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

ENTRYPOINT ["adopt-worker"]
CMD ["run"]
