# The traffic-manager image: the release binary on a distroless base.
#
#   docker build -t traffic-manager:local .
#   docker run --rm -p 127.0.0.1:8080:8080 -v tm-data:/var/lib/traffic-manager traffic-manager:local
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts below.
# Pass --build-arg VERSION=... --build-arg REVISION=... to fill in the OCI labels.

# The toolchain the project is built and tested with. The locked dependencies need
# Rust 1.89 or newer, whatever `rust-version` in Cargo.toml says. Debian 12 (bookworm),
# like the runtime image, so the binary links against the same glibc it runs on.
FROM rust:1.95.0-slim-bookworm AS builder

WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates

# The registry and the target directory live in BuildKit cache mounts: a rebuild after a
# source change downloads nothing and recompiles only the crates that changed. The cache
# is not part of any layer, so the binary is copied out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --package traffic-manager \
    && install -D -m 0755 target/release/traffic-manager /out/traffic-manager \
    && install -d -m 0700 /out/data

# glibc, libgcc_s (all the binary links against besides the kernel), CA certificates and
# a `nonroot` user (65532), and no shell or package manager. TLS (webhooks, endpoint
# probes) is rustls with its own bundled Mozilla roots, so the certificates are unused.
# Distroless publishes no versioned tags: pin the digest of the image you vetted in
# your own registry (`FROM gcr.io/distroless/cc-debian12:nonroot@sha256:...`).
FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="traffic-manager" \
      org.opencontainers.image.description="A multi-tenant service-routing registry." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=builder /out/traffic-manager /usr/local/bin/traffic-manager
# The data directory (SQLite, bootstrap key, sealing key, cold-start file) belongs to
# the user the process runs as; a named volume mounted here starts with that owner.
COPY --from=builder --chown=65532:65532 /out/data /var/lib/traffic-manager

ENV TM_LISTEN=0.0.0.0:8080 \
    TM_DATA_DIR=/var/lib/traffic-manager
VOLUME ["/var/lib/traffic-manager"]
EXPOSE 8080

# Numeric, so that a runtime refusing to run as root (Kubernetes' runAsNonRoot) can tell.
USER 65532:65532

# No HEALTHCHECK: probing is the orchestrator's job, through the HTTP probes
# /health/live and /health/ready (Kubernetes probes, a load balancer's checks). The image
# has no shell or HTTP client to run one with, and Kubernetes ignores it anyway.
ENTRYPOINT ["traffic-manager"]
CMD ["serve"]
