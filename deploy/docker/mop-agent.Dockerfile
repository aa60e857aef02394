# The eBPF node agent, `mop-agent`. Build from the repository root:
#   docker build -f deploy/docker/mop-agent.Dockerfile -t registry.example/mop-agent:0.1.0 .
FROM rust:1.89-bookworm AS build
WORKDIR /src
# agent/build.rs compiles agent-ebpf/*.bpf.c with clang; the BPF headers come
# from libbpf-dev (.ci/apt.d/agent.txt).
RUN apt-get update && apt-get install -y --no-install-recommends clang llvm libbpf-dev \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mop-agent --bin mop-agent \
    && cp target/release/mop-agent /mop-agent

# Runs as uid 0 with only CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE,
# CAP_DAC_READ_SEARCH and CAP_SYS_RESOURCE (the rendered DaemonSet drops the
# rest; docs/security.md says why each). Root is needed for those capabilities
# to be effective without file capabilities, and uid 0 owns tracefs' files.
# The BPF objects are embedded in the binary.
FROM gcr.io/distroless/cc-debian12
COPY --from=build /mop-agent /usr/local/bin/mop-agent
ENTRYPOINT ["/usr/local/bin/mop-agent"]
