#!/usr/bin/env bash
# Benchmark: nginx under wrk with and without mop-agent attached.
#
# Reports, per mode (saturation, and a fixed rate of about half of nginx's
# capacity as measured by the saturated runs without the agent):
#   - requests/s with and without the agent (throughput loss),
#   - wrk's p99 latency with and without the agent,
#   - eBPF run time per request from kernel.bpf_stats_enabled counters,
#   - agent userspace CPU per request (utime+stime of the agent process),
#   - nginx CPU per request (the in-kernel cost lands in nginx's syscalls),
#   - the load generator's CPU per request (its syscalls pay the untracked
#     programs' cost), and "added": agent userspace + the growth of nginx's
#     and the load generator's CPU per request. Unlike the eBPF figure
#     (bpf_stats run_time) this counts the kernel's own cost per hit around
#     the programs, so it compares attach modes fairly; it is a difference
#     of two ~10 us figures, so read it over several rounds.
# Needs root (CAP_BPF), nginx, wrk, bpftool, python3. Usage:
#   [PER_PROG=1] agent/bench/nginx-wrk.sh [seconds-per-run] [rounds]
# PER_PROG=1 adds each eBPF program's runs and time per request.
# WAKEUP_BYTES and POLL_MS set the agent's capture.wakeup_bytes and
# capture.poll_interval_ms (defaults: the agent's defaults).
# PROFILE=FILE records the agent with perf (DWARF call graphs) during the
# first saturated run; read it with `perf report -i FILE --no-children`.
# PERF_EVENT=page-faults records every page fault of the agent instead.
# TLS=1 serves HTTPS (self-signed, made by openssl) and runs wrk over TLS:
# the agent then sees nginx's plaintext through the OpenSSL uprobes.
# AGENT_WRAP="chrt --idle 0" (or "nice -n 10") starts the agent under that
# command: the scheduling class is what decides how much of the agent's
# drain bursts lands in the served requests' latency.
# MODES picks the modes (default "saturated fixed"; "rate" is an open-loop
# fixed rate of half the capacity with h2load, RATE_CONNS connections, p99
# from its per-request log; "openloop" is the same rate with this
# repository's own generator, agent/bench/openloop/openloop.c, pinned to
# CPU 0 and busy-polling, nginx's worker pinned to CPU 1, whose cpuidle
# states deeper than polling are disabled for the run and restored after:
# on this VM waking a halted vCPU costs tens of microseconds, which buries
# a 50 us budget (docs/performance.md, "Issue 16, session 25: latency at a
# fixed rate"); the agent and the sink are not pinned; its capacity is its
# own closed-loop run, OPENLOOP_CONNS connections); AGENT=path runs another
# mop-agent binary; AGENTS="path1 path2 ..." runs each build after the same
# baseline in every round, rotating which goes first (an A/B of builds; each
# line is labelled with the binary's file name).
set -euo pipefail
cd "$(dirname "$0")/../.."
DUR=${1:-10}
ROUNDS=${2:-3}
CONNS=${CONNS:-50}
for b in nginx wrk bpftool python3 openssl; do
  command -v "$b" >/dev/null || { echo "missing $b (apt-get install nginx-light wrk bpftool python3)"; exit 1; }
done
if [[ " ${MODES:-saturated fixed} " == *" rate "* ]]; then
  command -v h2load >/dev/null || { echo "missing h2load for MODES=rate (apt-get install nghttp2-client)"; exit 1; }
fi
# NO_BUILD=1 uses the binaries already built (an A/B of saved builds).
[[ -n "${NO_BUILD:-}" ]] || cargo build -q --release -p mop-agent --bin mop-agent --example otlp_sink
AGENT=${AGENT:-target/release/mop-agent}
SINK=target/release/examples/otlp_sink

TMP=$(mktemp -d /tmp/mop-bench.XXXXXX)
PORT=18080
SCHEME=http
LISTEN_SSL=
if [[ -n "${TLS:-}" ]]; then
  SCHEME=https
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
  LISTEN_SSL="ssl; ssl_certificate $TMP/cert.pem; ssl_certificate_key $TMP/key.pem"
fi
OTLP=127.0.0.1:14317
METRICS=127.0.0.1:19464
cleanup() {
  [[ -n "${AGENT_PID:-}" ]] && kill "$AGENT_PID" 2>/dev/null || true
  [[ -n "${SINK_PID:-}" ]] && kill "$SINK_PID" 2>/dev/null || true
  [[ -n "${NGINX_PID:-}" ]] && kill "$NGINX_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

mkdir -p "$TMP/www"
printf 'hello from nginx\n' > "$TMP/www/index.html"
cat > "$TMP/nginx.conf" <<CONF
daemon off; master_process on; worker_processes 1;
pid $TMP/nginx.pid; error_log $TMP/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $TMP/b; proxy_temp_path $TMP/p; fastcgi_temp_path $TMP/f;
  uwsgi_temp_path $TMP/u; scgi_temp_path $TMP/s;
  server { listen 127.0.0.1:$PORT $LISTEN_SSL; root $TMP/www;
    location /api/ { default_type text/plain; return 200 "ok\n"; } }
}
CONF
nginx -c "$TMP/nginx.conf" -p "$TMP" & NGINX_PID=$!
for _ in $(seq 50); do curl -sk -o /dev/null "$SCHEME://127.0.0.1:$PORT/" && break; sleep 0.1; done

cat > "$TMP/agent.yaml" <<CONF
otlp_endpoint: http://$OTLP
instrument:
  ports: [$PORT]
services:
  - port: $PORT
    service_name: bench-nginx
    namespace: bench
metrics_listen: $METRICS
capture:
  wakeup_bytes: ${WAKEUP_BYTES:-2097152}
  poll_interval_ms: ${POLL_MS:-100}
CONF
# A 1 ms pause per request per connection: with N connections, a fixed
# rate of at most N*1000/s. N is chosen from the saturated capacity.
cat > "$TMP/fixed.lua" <<'LUA'
function delay() return 1 end
LUA

nginx_cpu() { # utime+stime ticks of all nginx processes of this run
  local t=0; for p in $(pgrep -f "nginx -c $TMP/nginx.conf" || true) $(pgrep -P "$NGINX_PID" || true); do
    [[ -r /proc/$p/stat ]] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo "$t"; }
agent_cpu() { awk '{print $14+$15}' "/proc/$AGENT_PID/stat"; }
agent_faults() { awk '{print $10}' "/proc/$AGENT_PID/stat"; } # minor page faults
sink_cpu() { awk '{print $14+$15}' "/proc/$SINK_PID/stat"; }
bpf_ns() { # total run_time_ns and run_cnt over the agent's programs
  bpftool prog show --json | python3 -c '
import json,sys
t=c=0
for p in json.load(sys.stdin):
    if p.get("name","").startswith("mop_"):
        t+=p.get("run_time_ns",0); c+=p.get("run_cnt",0)
print(t, c)'; }
prog_stats() { # per-program run_time_ns and run_cnt, JSON, to a file
  bpftool prog show --json > "$1"; }
prog_table() { # before after requests: per-program ns/run and runs/request
  python3 - "$@" <<'PY'
import json,sys
a={p["id"]:p for p in json.load(open(sys.argv[1])) if p.get("name","").startswith("mop_")}
b={p["id"]:p for p in json.load(open(sys.argv[2])) if p.get("name","").startswith("mop_")}
req=float(sys.argv[3])
rows=[]
for i,p in b.items():
    q=a.get(i,{})
    t=p.get("run_time_ns",0)-q.get("run_time_ns",0); c=p.get("run_cnt",0)-q.get("run_cnt",0)
    if c: rows.append((t/req,p["name"],c/req,t/c))
for per_req,name,runs,per_run in sorted(rows,reverse=True):
    print(f"    {name:24} {runs:5.2f} runs/req {per_run:6.0f} ns/run {per_req:6.0f} ns/req")
PY
}
run_wrk() { # mode -> prints "requests p99_us"
  [[ $1 == rate ]] && { run_rate; return; }
  [[ $1 == openloop ]] && { run_openloop "$OPENLOOP_RATE"; return; }
  local extra=() conns=$CONNS
  [[ $1 == fixed ]] && extra=(-s "$TMP/fixed.lua") && conns=$FIXED_CONNS
  /usr/bin/time -f '%U %S' -o "$TMP/gen.time" \
    wrk -t1 -c"$conns" -d"${DUR}s" --latency "${extra[@]}" "$SCHEME://127.0.0.1:$PORT/api/items/42" \
    | awk '/requests in/ {n=$1}
           $1 == "99%" {v=$2; u=1; if (v ~ /us$/) u=1; else if (v ~ /ms$/) u=1000; else if (v ~ /s$/) u=1000000;
                        sub(/[a-z]+$/, "", v); p=v*u}
           END {print n, p}'
}
# An open-loop fixed rate: h2load sends each of RATE_CONNS connections'
# requests on a schedule (--rps) whatever the latency, and logs every
# request's latency, from which p99 is taken here. (wrk's `fixed` mode
# paces with a 1 ms pause after each response, so its rate follows the
# latency, and its p99 measured ~1 ms even without the agent: wrk's own
# timer loop, not nginx.)
run_rate() {
  rm -f "$TMP/h2.log"
  /usr/bin/time -f '%U %S' -o "$TMP/gen.time" \
    h2load --h1 -t1 -c"$RATE_CONNS" --rps "$RATE_PER_CONN" -D "$DUR" --log-file "$TMP/h2.log" \
    "$SCHEME://127.0.0.1:$PORT/api/items/42" > "$TMP/h2.out" 2>&1 || true
  python3 - "$TMP/h2.log" <<'PY'
import sys
lat = sorted(int(l.split("\t")[2]) for l in open(sys.argv[1]) if l.split("\t")[1] == "200")
print(len(lat), lat[int(len(lat) * 0.99)] if lat else 0)
PY
}
OPENLOOP_CONNS=${OPENLOOP_CONNS:-50}
IDLE_SAVED=() # "file=value" of CPU 1's cpuidle states, read before any run
restore_idle() { for f in "${IDLE_SAVED[@]}"; do echo "${f#*=}" > "${f%%=*}"; done; }
# Rate 0: closed loop, the capacity. Prints "completed p99_us" and leaves
# the whole distribution in $TMP/openloop.out.
run_openloop() {
  local w
  for w in $(pgrep -P "$NGINX_PID"); do taskset -pc 1 "$w" >/dev/null; done
  for f in "${IDLE_SAVED[@]}"; do echo 1 > "${f%%=*}"; done
  /usr/bin/time -f '%U %S' -o "$TMP/gen.time" \
    taskset -c 0 "$TMP/openloop" 127.0.0.1 "$PORT" /api/items/42 "$OPENLOOP_CONNS" "$1" "$DUR" \
    > "$TMP/openloop.out"
  restore_idle
  for w in $(pgrep -P "$NGINX_PID"); do taskset -pc 0-$(($(nproc) - 1)) "$w" >/dev/null; done
  awk '{for (i = 1; i < NF; i++) v[$i] = $(i + 1)} END {print v["completed"], v["p99"]}' "$TMP/openloop.out"
}
if [[ " ${MODES:-saturated fixed} " == *" openloop "* ]]; then
  gcc -O2 -Wall -o "$TMP/openloop" agent/bench/openloop/openloop.c
  for f in /sys/devices/system/cpu/cpu1/cpuidle/state[1-9]/disable; do
    [[ -w $f ]] && IDLE_SAVED+=("$f=$(cat "$f")")
  done
  trap 'restore_idle; cleanup' EXIT
fi
CAPACITY=()
HZ=$(getconf CLK_TCK)
gen_cpu() { awk '{print $1+$2}' "$TMP/gen.time"; } # seconds, of the last run_wrk

start_agent() {
  "$SINK" "$OTLP" > "$TMP/sink.out" & SINK_PID=$!
  sleep 0.3
  RUST_LOG=error ${AGENT_WRAP:-} "${1:-$AGENT}" --config "$TMP/agent.yaml" & AGENT_PID=$!
  for _ in $(seq 50); do curl -s "http://$METRICS/metrics" >/dev/null 2>&1 && break; sleep 0.1; done
}
stop_agent() {
  kill -TERM "$AGENT_PID"; wait "$AGENT_PID" || true; AGENT_PID=
  kill -TERM "$SINK_PID"; wait "$SINK_PID" || true; SINK_PID=
}

sysctl -q -w kernel.bpf_stats_enabled=1
echo "nginx (1 worker, $SCHEME) + wrk -t1 -c$CONNS, ${DUR}s per run, $ROUNDS rounds, kernel $(uname -r), $(nproc) CPUs; $(uptime)"
FIXED_CONNS=${FIXED_CONNS:-}
for mode in ${MODES:-saturated fixed}; do
  if [[ $mode == rate && -z "${RATE_PER_CONN:-}" ]]; then
    # Half of the capacity measured without the agent (saturated runs of
    # this invocation, or one short run now), spread over RATE_CONNS.
    if ((${#CAPACITY[@]} == 0)); then read -r c _ < <(run_wrk saturated); CAPACITY+=("$c"); fi
    RATE_CONNS=${RATE_CONNS:-50}
    RATE_PER_CONN=$(python3 -c "import sys; c=[float(x) for x in sys.argv[1:]]; print(max(1, round(sum(c)/len(c)/$DUR/2/$RATE_CONNS)))" "${CAPACITY[@]}")
    echo "rate mode: h2load, $RATE_CONNS connections x $RATE_PER_CONN req/s = $((RATE_CONNS * RATE_PER_CONN)) req/s (half of the saturated capacity without the agent)"
  fi
  if [[ $mode == openloop && -z "${OPENLOOP_RATE:-}" ]]; then
    # Half of the generator's own closed-loop capacity without the agent,
    # in the same placement.
    read -r c _ < <(run_openloop 0)
    OPENLOOP_RATE=$(python3 -c "print(round($c / $DUR / 2))")
    echo "openloop mode: $OPENLOOP_CONNS connections, $OPENLOOP_RATE req/s (half of $(python3 -c "print(round($c / $DUR))") req/s, its closed-loop capacity without the agent)"
  fi
  if [[ $mode == fixed && -z "$FIXED_CONNS" ]]; then
    # Half of the capacity measured without the agent (or, with no
    # saturated runs, of one short run now), at 1 ms per request per conn.
    if ((${#CAPACITY[@]} == 0)); then read -r c _ < <(run_wrk saturated); CAPACITY+=("$c"); fi
    FIXED_CONNS=$(python3 -c "import sys; c=[float(x) for x in sys.argv[1:]]; print(max(1, round(sum(c)/len(c)/$DUR/2/1000)))" "${CAPACITY[@]}")
    echo "fixed mode: $FIXED_CONNS connections, 1 ms pause each: half of $(python3 -c "import sys; c=[float(x) for x in sys.argv[1:]]; print(round(sum(c)/len(c)/$DUR))" "${CAPACITY[@]}") req/s"
  fi
  for r in $(seq "$ROUNDS"); do
    n0=$(nginx_cpu); read -r base base_p99 < <(run_wrk $mode); n1=$(nginx_cpu); g0=$(gen_cpu)
    [[ $mode == openloop ]] && cp "$TMP/openloop.out" "$TMP/openloop.base"
    [[ $mode == saturated ]] && CAPACITY+=("$base")
    # With AGENTS, every build runs after the same baseline, the order
    # rotating by one each round (A B C, B C A, C A B, ...).
    order=("$AGENT")
    if [[ -n "${AGENTS:-}" ]]; then
      read -r -a all <<< "$AGENTS"
      k=$(( (r - 1) % ${#all[@]} ))
      order=("${all[@]:k}" "${all[@]:0:k}")
    fi
    for BIN in "${order[@]}"; do
    start_agent "$BIN"
    f0=$(agent_faults); a0=$(agent_cpu); s0=$(sink_cpu); read -r b0 c0 < <(bpf_ns); m0=$(nginx_cpu)
    prog_stats "$TMP/progs0.json"
    # Only the first build of the first round: with AGENTS, a second
    # profile would overwrite the first (and every profiled run is slowed).
    if [[ -n "${PROFILE:-}" && $mode == saturated && $r == 1 && $BIN == "${order[0]}" ]]; then
      ev=(-F 999); [[ -n "${PERF_EVENT:-}" ]] && ev=(-e "$PERF_EVENT" -c 1)
      perf record -q "${ev[@]}" --call-graph dwarf,16384 -o "$PROFILE" -p "$AGENT_PID" -- sleep "$DUR" 2>/dev/null &
      PERF_PID=$!
    fi
    read -r with with_p99 < <(run_wrk $mode)
    [[ -n "${PERF_PID:-}" ]] && { wait "$PERF_PID" || true; PERF_PID=; }
    f1=$(agent_faults); a1=$(agent_cpu); s1=$(sink_cpu); read -r b1 c1 < <(bpf_ns); m1=$(nginx_cpu); g1=$(gen_cpu)
    prog_stats "$TMP/progs1.json"
    spans=$(curl -s "http://$METRICS/metrics" | awk '/^mop_agent_exchanges_total/ {print $2}')
    drops=$(curl -s "http://$METRICS/metrics" | awk '/^mop_agent_kernel_drops_total/ {s+=$2} END {print s+0}')
    stop_agent
    [[ -n "${AGENTS:-}" ]] && printf '  [%s] ' "$(basename "$BIN")"
    python3 - "$mode" "$r" "$base" "$with" "$n0" "$n1" "$m0" "$m1" "$a0" "$a1" "$b0" "$b1" "$c0" "$c1" "$HZ" "$spans" "$drops" "$s0" "$s1" "$base_p99" "$with_p99" "$g0" "$g1" <<'PY'
import sys
mode, r = sys.argv[1], sys.argv[2]
base, with_, n0, n1, m0, m1, a0, a1, b0, b1, c0, c1, hz, spans, drops, s0, s1, p0, p1, g0, g1 = map(float, sys.argv[3:])
nginx0, nginx1 = (n1-n0)/hz/base*1e6, (m1-m0)/hz/with_*1e6
gen0, gen1 = g0/base*1e6, g1/with_*1e6
agent = (a1-a0)/hz/with_*1e9
loss = (base - with_) / base * 100
print(f"{mode:9} round {r}: without {base:9.0f} req  with {with_:9.0f} req  loss {loss:5.1f}%  "
      f"p99 {p0:6.0f} -> {p1:6.0f} us  "
      f"eBPF+agent {((b1-b0) + (a1-a0)/hz*1e9)/with_:6.0f} ns/req  "
      f"eBPF {(b1-b0)/with_:6.0f} ns/req ({(c1-c0)/with_:4.1f} prog runs/req)  "
      f"agent {(a1-a0)/hz/with_*1e9:6.0f} ns CPU/req  "
      f"sink {(s1-s0)/hz/with_*1e9:5.0f} ns CPU/req  "
      f"nginx {nginx0:5.1f} -> {nginx1:5.1f} us CPU/req  "
      f"load generator {gen0:5.1f} -> {gen1:5.1f} us CPU/req  "
      f"added {agent + (nginx1 - nginx0 + gen1 - gen0)*1e3:6.0f} ns/req  "
      f"exchanges {spans:.0f} kernel-drops {drops:.0f}")
PY
    if [[ $mode == openloop ]]; then
      echo "    without the agent: $(cat "$TMP/openloop.base")"
      echo "    with the agent:    $(cat "$TMP/openloop.out")"
    fi
    echo "    load average after the run: $(cut -d' ' -f1-3 /proc/loadavg); agent page faults per 1000 requests: $(python3 -c "print(round(($f1-$f0)*1000/$with, 1))")"
    [[ -n "${PER_PROG:-}" ]] && prog_table "$TMP/progs0.json" "$TMP/progs1.json" "$with"
    done
  done
done
sysctl -q -w kernel.bpf_stats_enabled=0
