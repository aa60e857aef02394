#!/usr/bin/env bash
# CPU time of the gateway benchmarks' single paths (MOP_BENCH_PATH), measured in
# alternating rounds so that a loaded, shared machine affects every path alike.
# Each run is one process doing 5 passes over the benchmark's 20,000 spans; its
# task-clock (CPU time, `perf stat`) minus the median of the `none` runs (setup
# only: building the requests and tables) is the CPU of 100,000 spans.
#
# Usage: benches/gateway-paths.sh BENCH ROUNDS PATH...
#   benches/gateway-paths.sh ring 7 floor local ring
#   benches/gateway-paths.sh pipeline 9 route verified
# The order of PATH rotates every round; `none` is added and measured each round.
# Prints every run (with the 1-minute load average at its start), then per path
# the median and range of µs of CPU per span, and each path's ratio to the first
# PATH within the same round (median and range). BENCH_BIN=path skips the build.
set -euo pipefail
BENCH=$1
ROUNDS=$2
shift 2
PATHS=("$@")
cd "$(dirname "$0")/.."
B=${BENCH_BIN:-}
[[ -n "$B" ]] || B=$(cargo bench -p mop-gateway --bench "$BENCH" --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["kind"] == ["bench"] and m.get("executable"):
        print(m["executable"])' | grep "/$BENCH-" | head -1)
OUT=$(mktemp)
trap 'rm -f "$OUT" "$OUT.perf"' EXIT
all=(none "${PATHS[@]}")
n=${#all[@]}
for r in $(seq 1 "$ROUNDS"); do
    for k in $(seq 0 $((n - 1))); do
        p=${all[$(((k + r) % n))]}
        load=$(cut -d' ' -f1 /proc/loadavg)
        MOP_BENCH_PATH=$p perf stat -x, -e task-clock -o "$OUT.perf" "$B" >/dev/null
        ms=$(grep task-clock "$OUT.perf" | cut -d, -f1)
        printf '%s\t%s\t%s\t%s\n' "$r" "$p" "$load" "$ms" | tee -a "$OUT"
    done
done
python3 - "$OUT" "${PATHS[@]}" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1])]
paths = sys.argv[2:]
spans = 5 * 20_000
runs = {}
for r, p, load, ms in rows:
    runs.setdefault(p, {})[int(r)] = float(ms)
none = statistics.median(runs["none"].values())
loads = [float(l) for _, _, l, _ in rows]
print(f"setup (none) median {none:.1f} ms; load average during the runs {min(loads):.1f}-{max(loads):.1f}")
def mr(v, f="{:.3f}"):
    return f"median {f.format(statistics.median(v))} (range {f.format(min(v))}-{f.format(max(v))})"
us = {p: {r: (ms - none) * 1000 / spans for r, ms in runs[p].items()} for p in paths}
for p in paths:
    v = list(us[p].values())
    print(f"{p}: CPU µs/span {mr(v)}; spans per CPU-second {mr([1e6 / x for x in v], '{:.0f}')}")
base = paths[0]
for p in paths[1:]:
    ratio = [us[p][r] / us[base][r] for r in us[base] if r in us[p]]
    print(f"{p} / {base} CPU per span, paired by round: {mr(ratio)}")
EOF
