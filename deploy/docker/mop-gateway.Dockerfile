# The OTLP gateway, `mop-gateway`. Build from the repository root:
#   docker build -f deploy/docker/mop-gateway.Dockerfile -t registry.example/mop-gateway:0.1.0 .
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mop-gateway --bin mop-gateway \
    && cp target/release/mop-gateway /mop-gateway

# Non-root (uid 65532, what the rendered Deployment's runAsUser expects); the
# disk queue is an emptyDir mounted at /var/lib/mop-gateway.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /mop-gateway /usr/local/bin/mop-gateway
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mop-gateway"]
