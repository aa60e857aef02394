#!/usr/bin/env bash
# mop-gateway against rotel (the Rust OTLP collector), end to end on loopback, in
# alternating paired rounds:
#
#   load generator --OTLP/HTTP protobuf--> collector --OTLP/HTTP protobuf--> counting sink
#
# Each round starts a fresh sink and a fresh collector, posts TOTAL_SPANS spans as
# 100-span requests (200 distinct pre-encoded bodies, IN_FLIGHT at a time), waits
# until the sink has counted every span, then reads the collector's CPU time
# (utime+stime from /proc/PID/stat, before and after the load) and its peak RSS
# (VmHWM). Rounds alternate which collector goes first. No sampling, no
# compression either way (the sink refuses compressed bodies), batching at both
# collectors' defaults (8192 items / 200 ms for both).
#
# rotel is not part of MOP and is never built by this script or the repository:
# pass a rotel binary built elsewhere as ROTEL_BIN (docs/performance.md, "Gateway
# vs rotel", says which build the recorded figures used). Its exporter must really
# send uncompressed bodies with `--otlp-exporter-compression none`; the sink
# answers 415 otherwise and the round fails.
#
# Usage:
#   ROTEL_BIN=/path/to/rotel benches/gateway-vs-rotel.sh [ROUNDS] [TOTAL_SPANS] [IN_FLIGHT]
#   (defaults 7 rounds, 2,000,000 spans, 16 in flight)
# Environment: MOP_GATEWAY_BIN and OTLP_LOAD_BIN (default: both built by
# `cargo build --profile gateway -p mop-gateway --bin mop-gateway --bench otlp_load`),
# OTLP_LOAD_SET=sdk|agent (default sdk: SDK-shaped traffic of 40 services, see
# gateway/benches/common/sdk.rs; agent: the pipeline benchmark's uniform set),
# MOP_GATEWAY_ARGS: extra mop-gateway flags, split on spaces (e.g.
# "--queue-max-bytes 33554432" to compare buffer settings),
# ONLY=mop|rotel to run one collector (profiling), PERF_RECORD=DIR to run every
# collector under `perf record -g` (software cpu-clock) writing DIR/<name>-<round>.data.
set -euo pipefail

ROUNDS=${1:-7}
TOTAL_SPANS=${2:-2000000}
IN_FLIGHT=${3:-16}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

# Both built with the `gateway` profile (fat LTO, one codegen unit: what the
# gateway's image ships, and what rotel's own release profile does), in one cargo
# run so that the binary and the load generator share one feature resolution.
if [[ -z "${MOP_GATEWAY_BIN:-}" || -z "${OTLP_LOAD_BIN:-}" ]]; then
    BUILT=$(cargo build --profile gateway -p mop-gateway --bin mop-gateway --bench otlp_load \
        --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] in ("mop-gateway", "otlp_load") and m.get("executable"):
        print(m["target"]["name"], m["executable"])')
    MOP_GATEWAY_BIN=${MOP_GATEWAY_BIN:-$(awk '$1 == "mop-gateway" {print $2}' <<<"$BUILT")}
    OTLP_LOAD_BIN=${OTLP_LOAD_BIN:-$(awk '$1 == "otlp_load" {print $2}' <<<"$BUILT")}
fi
for b in "$MOP_GATEWAY_BIN" "$OTLP_LOAD_BIN"; do
    [[ -x "$b" ]] || { echo "not built: '$b' (run the cargo build above to see why)" >&2; exit 1; }
done
ONLY=${ONLY:-}
read -ra MOP_EXTRA <<<"${MOP_GATEWAY_ARGS:-}"
if [[ "$ONLY" != mop && -z "${ROTEL_BIN:-}" ]]; then
    echo "set ROTEL_BIN to a rotel binary (or ONLY=mop)" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gw-vs-rotel.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_tcp() { # host port
    for _ in $(seq 1 500); do
        if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
        sleep 0.02
    done
    echo "nothing listens on $1:$2" >&2
    return 1
}

cpu_ticks() { # pid -> utime+stime in clock ticks
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

hwm_kib() {
    awk '/^VmHWM:/ {print $2}' "/proc/$1/status"
}

cat >"$WORK/gateway.json" <<'EOF'
{
  "version": 1,
  "tenants": [
    {
      "id": "bench",
      "namespaces": ["shop", "billing", "search", "infra-eu"],
      "sampling": { "decision_wait_ms": 0, "max_traces": 100000, "policies": [] }
    }
  ],
  "identity": {
    "static_sources": [ { "cidr": "127.0.0.0/8", "tenant": "bench" } ]
  }
}
EOF

RESULTS="$WORK/results.tsv"

# name round -> appends one TSV line to $RESULTS (and prints it on stderr):
# name round load1 cpu_s spans delivered_s vmhwm_kib retried request_set bytes_per_span
run_one() {
    local name=$1 round=$2 sink_addr url pid load1 c0 c1 out
    rm -f "$WORK/sink.addr"
    "$OTLP_LOAD_BIN" sink "$WORK/sink.addr" >/dev/null 2>"$WORK/sink.log" &
    local sink_pid=$!
    PIDS+=("$sink_pid")
    for _ in $(seq 1 500); do [[ -s "$WORK/sink.addr" ]] && break; sleep 0.02; done
    sink_addr=$(cat "$WORK/sink.addr")
    local prefix=()
    if [[ -n "${PERF_RECORD:-}" ]]; then
        mkdir -p "$PERF_RECORD"
        prefix=(perf record -e cpu-clock -F 999 -g -o "$PERF_RECORD/$name-$round.data" --)
    fi
    case $name in
    mop)
        : >"$WORK/mop.log"
        "${prefix[@]}" "$MOP_GATEWAY_BIN" --config "$WORK/gateway.json" \
            --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
            --tempo-url "http://$sink_addr/v1/traces" "${MOP_EXTRA[@]}" >"$WORK/mop.log" 2>&1 &
        pid=$!
        local http=""
        for _ in $(seq 1 500); do
            http=$(grep -o '"http":"[^"]*"' "$WORK/mop.log" | head -1 | cut -d'"' -f4 || true)
            [[ -n "$http" ]] && break
            sleep 0.02
        done
        [[ -n "$http" ]] || { cat "$WORK/mop.log" >&2; return 1; }
        url="http://$http/v1/traces"
        ;;
    rotel)
        local hp gp
        hp=$(free_port)
        gp=$(free_port)
        "${prefix[@]}" "$ROTEL_BIN" start \
            --otlp-http-endpoint "127.0.0.1:$hp" --otlp-grpc-endpoint "127.0.0.1:$gp" \
            --exporter otlp --otlp-exporter-protocol http --otlp-exporter-compression none \
            --otlp-exporter-endpoint "http://$sink_addr" >"$WORK/rotel.log" 2>&1 &
        pid=$!
        wait_tcp 127.0.0.1 "$hp"
        url="http://127.0.0.1:$hp/v1/traces"
        ;;
    esac
    PIDS+=("$pid")
    # With perf in front, the collector is perf's child.
    local cpid=$pid
    if [[ -n "${PERF_RECORD:-}" ]]; then
        for _ in $(seq 1 100); do
            cpid=$(pgrep -P "$pid" | head -1 || true)
            [[ -n "$cpid" ]] && break
            sleep 0.02
        done
    fi
    sleep 0.5
    load1=$(cut -d' ' -f1 /proc/loadavg)
    c0=$(cpu_ticks "$cpid")
    out=$("$OTLP_LOAD_BIN" load "$url" "http://$sink_addr" "$TOTAL_SPANS" "$IN_FLIGHT")
    c1=$(cpu_ticks "$cpid")
    local hwm
    hwm=$(hwm_kib "$cpid")
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    kill "$sink_pid" 2>/dev/null || true
    wait "$sink_pid" 2>/dev/null || true
    local tck
    tck=$(getconf CLK_TCK)
    python3 - "$name" "$round" "$load1" "$c0" "$c1" "$tck" "$hwm" "$out" <<'EOF' | tee -a "$RESULTS" >&2
import json, sys
name, rnd, load1, c0, c1, tck, hwm, out = sys.argv[1:]
o = json.loads(out)
cpu = (int(c1) - int(c0)) / int(tck)
print(f"{name}\t{rnd}\t{load1}\t{cpu:.2f}\t{o['spans']}\t{o['delivered_s']}\t{hwm}\t{o['retried']}\t{o['set']}\t{o['bytes_per_span']}")
EOF
}

echo "# collector round load1 cpu_s spans delivered_s vmhwm_kib retried request_set bytes_per_span" >&2
for round in $(seq 1 "$ROUNDS"); do
    if [[ -n "$ONLY" ]]; then
        order=("$ONLY")
    elif ((round % 2)); then
        order=(rotel mop)
    else
        order=(mop rotel)
    fi
    for c in "${order[@]}"; do
        run_one "$c" "$round"
    done
done

python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]) if l.strip()]
by = {}
for name, rnd, load1, cpu, spans, wall, hwm, retried, rset, bps in rows:
    by.setdefault(name, {})[int(rnd)] = dict(load=float(load1), cpu=float(cpu), spans=int(spans),
                                         wall=float(wall), hwm=int(hwm))
def med_range(v):
    return f"median {statistics.median(v):.3f} (range {min(v):.3f}-{max(v):.3f})"
for name, rs in sorted(by.items()):
    r = list(rs.values())
    print(f"{name}: CPU us/span {med_range([x['cpu'] / x['spans'] * 1e6 for x in r])}; "
          f"spans/s {med_range([x['spans'] / x['wall'] for x in r])}; "
          f"VmHWM MiB {med_range([x['hwm'] / 1024 for x in r])}; "
          f"load1 {min(x['load'] for x in r):.1f}-{max(x['load'] for x in r):.1f}")
print(f"request set {rows[0][8]}: {rows[0][9].strip()} bytes per span")
if "mop" in by and "rotel" in by:
    common = sorted(set(by["mop"]) & set(by["rotel"]))
    cpu = [(by["mop"][i]["cpu"] / by["mop"][i]["spans"]) / (by["rotel"][i]["cpu"] / by["rotel"][i]["spans"]) for i in common]
    thr = [(by["mop"][i]["spans"] / by["mop"][i]["wall"]) / (by["rotel"][i]["spans"] / by["rotel"][i]["wall"]) for i in common]
    mem = [by["mop"][i]["hwm"] / by["rotel"][i]["hwm"] for i in common]
    print(f"mop/rotel per paired round ({len(common)} rounds): CPU per span {med_range(cpu)}; "
          f"throughput {med_range(thr)}; peak RSS {med_range(mem)}")
EOF
