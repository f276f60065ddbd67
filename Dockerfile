# syntax=docker/dockerfile:1
# Multi-stage build: dependencies are compiled in their own layer, so editing src/ rebuilds only deskbot.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Dependency layer: a stub crate with the real manifest.
COPY Cargo.toml Cargo.lock ./
# Cargo refuses a manifest whose declared targets are missing, so the test and bench targets get stubs too.
RUN mkdir -p src tests/it benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs tests/it/main.rs \
 && echo 'fn main() {}' > benches/calendar.rs && echo 'fn main() {}' > benches/policy.rs \
 && cargo build --release --locked \
 && rm -rf src
COPY src ./src
# Touch so cargo sees the real sources as newer than the stub's build.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app deskbot \
 && mkdir -p /data && chown deskbot /data
WORKDIR /app
COPY --from=build /src/target/release/deskbot /usr/local/bin/deskbot
# Shipped policies; mount your own over /app/rules (or point DESKBOT_RULES elsewhere).
COPY rules ./rules
USER deskbot
ENV DESKBOT_LISTEN=0.0.0.0:8080 \
    DESKBOT_DB=/data/deskbot.db \
    DESKBOT_RULES=/app/rules \
    DESKBOT_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=2s CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '200 OK' <&3"]
ENTRYPOINT ["deskbot"]
CMD ["serve"]
