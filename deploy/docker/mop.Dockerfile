# The syncer, `mop`. Build from the repository root:
#   docker build -f deploy/docker/mop.Dockerfile -t registry.example/mop:0.1.0 .
# Rust version: workspace rust-version (Cargo.toml) or newer.
FROM rust:1.89-bookworm AS build
WORKDIR /src
# libgit2 (git2) links OpenSSL and zlib for https/ssh remotes.
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mop-syncer --bin mop \
    && cp target/release/mop /mop

# distroless cc: glibc, libgcc, OpenSSL and CA certificates, no shell; `nonroot`
# is uid 65532, the uid deploy/base/deployment.yaml runs as. zlib is copied from
# the build stage (libgit2 needs it; distroless has none).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /lib/x86_64-linux-gnu/libz.so.1 /lib/x86_64-linux-gnu/libz.so.1
COPY --from=build /mop /usr/local/bin/mop
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mop"]
