#!/usr/bin/env bash
# The agent's CPU with no traffic: start-up excluded, so what is left is the
# periodic work (the rescan for new processes and listening sockets, metric
# exports). Needs root (CAP_BPF) and release builds. Usage:
#   agent/bench/idle-cpu.sh [seconds] [rounds] [mop-agent binaries...]
# Each round runs every binary once, in the given order, against the same
# local OTLP sink; prints ms of CPU (utime+stime) per run.
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${1:-20}
ROUNDS=${2:-2}
shift $(( $# >= 2 ? 2 : $# ))
BINS=("$@")
((${#BINS[@]})) || BINS=(target/release/mop-agent)
SINK=target/release/examples/otlp_sink
TMP=$(mktemp -d /tmp/mop-idle.XXXXXX)
cleanup() {
  [[ -n "${AGENT_PID:-}" ]] && kill "$AGENT_PID" 2>/dev/null || true
  [[ -n "${SINK_PID:-}" ]] && kill "$SINK_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
cat > "$TMP/agent.yaml" <<CONF
otlp_endpoint: http://127.0.0.1:14399
instrument:
  ports: [18080]
services:
  - port: 18080
    service_name: idle
    namespace: bench
CONF
"$SINK" 127.0.0.1:14399 > /dev/null & SINK_PID=$!
sleep 0.3
HZ=$(getconf CLK_TCK)
for r in $(seq "$ROUNDS"); do
  for b in "${BINS[@]}"; do
    RUST_LOG=error "$b" --config "$TMP/agent.yaml" & AGENT_PID=$!
    sleep 3
    t0=$(awk '{print $14+$15}' "/proc/$AGENT_PID/stat")
    sleep "$DUR"
    t1=$(awk '{print $14+$15}' "/proc/$AGENT_PID/stat")
    kill -TERM "$AGENT_PID"; wait "$AGENT_PID" || true; AGENT_PID=
    echo "$(basename "$b") round $r: $(( (t1 - t0) * 1000 / HZ )) ms CPU in ${DUR} s;" \
      "$(($(wc -l < /proc/net/tcp) - 1)) IPv4 TCP sockets; load $(cut -d' ' -f1-3 /proc/loadavg)"
  done
done
