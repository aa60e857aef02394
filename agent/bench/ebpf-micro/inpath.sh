#!/usr/bin/env bash
# In-path time of nginx's four program runs per request (recvfrom and writev,
# entry and exit): a distribution, not bpf_stats' mean. Needs a mop-agent
# built with inpath-histogram.patch (instrumentation, never for production):
#   git apply agent/bench/ebpf-micro/inpath-histogram.patch
#   cargo build --release -p mop-agent --bin mop-agent --example otlp_sink
#   cp target/release/mop-agent /tmp/mop-agent-inpath
#   git apply -R agent/bench/ebpf-micro/inpath-histogram.patch
#   agent/bench/ebpf-micro/inpath.sh /tmp/mop-agent-inpath saturated
# MODE is an nginx-wrk.sh mode (saturated, fixed, rate; rate uses
# RATE_CONNS=500 unless set). One 5 s run; prints mean and p50/p90/p99/p99.9
# per program in 25 ns buckets (the last bucket is "5 µs or more").
set -euo pipefail
cd "$(dirname "$0")/../../.."
AGENT_BIN=$1; MODE=${2:-saturated}
TMP=$(mktemp -d /tmp/mop-inpath.XXXXXX)
NO_BUILD=1 MODES="$MODE" AGENT="$AGENT_BIN" RATE_CONNS=${RATE_CONNS:-500} \
  agent/bench/nginx-wrk.sh 5 1 > "$TMP/bench.txt" 2>&1 &
B=$!
# The map goes with the agent: keep the last dump taken while it ran.
while kill -0 "$B" 2>/dev/null; do
  bpftool map dump name mop_lat --json > "$TMP/cur.json" 2>/dev/null && [[ -s "$TMP/cur.json" ]] &&
    cp "$TMP/cur.json" "$TMP/lat.json"
  sleep 0.3
done
grep -v '^    mop_' "$TMP/bench.txt"
python3 - "$TMP/lat.json" <<'PY'
import json, sys
def num(x):
    return x if isinstance(x, int) else int.from_bytes(bytes(int(y, 16) for y in x), "little")
cnt = [0] * 800
for e in json.load(open(sys.argv[1])):
    cnt[num(e["key"])] = sum(num(v["value"]) for v in e["values"])
names = ["sys_enter_recvfrom", "sys_exit_recvfrom", "sys_enter_writev", "sys_exit_writev"]
for p, name in enumerate(names):
    h = cnt[p * 200:(p + 1) * 200]
    n = sum(h)
    if not n:
        continue
    mean = sum((i * 25 + 12.5) * c for i, c in enumerate(h)) / n
    qs = []
    for q in (0.5, 0.9, 0.99, 0.999):
        acc = 0
        for i, c in enumerate(h):
            acc += c
            if acc >= q * n:
                qs.append(f"<{(i + 1) * 25}" if i < 199 else ">=5000")
                break
    print(f"{name:20} runs {n:8d} mean {mean:5.0f} ns  p50 {qs[0]} p90 {qs[1]} p99 {qs[2]} p99.9 {qs[3]}")
PY
rm -rf "$TMP"
