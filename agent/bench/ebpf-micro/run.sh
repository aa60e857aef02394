#!/usr/bin/env bash
# Micro-benchmarks of the kernel side, without nginx or the agent's userspace
# (docs/performance.md, "Issue 16, 2026-12-04 (session 23)" and "Issue 16,
# session 24"). Needs root, clang, gcc and libbpf-dev. Usage:
#   agent/bench/ebpf-micro/run.sh [rounds] [OBJ...]
# OBJ: sockets.bpf.o builds to compare (default: this tree's), each run in
# both attach modes (MOP_ATTACH=tracepoints and btf, attach.h), after empty
# programs as floors: nop.o on the four read/write tracepoints, nop-tpbtf.o
# and nop-rawtp.o on sys_exit, nop-fexit.o and nop-fexit-ksys.o as fexit on
# the functions behind read/write (not loadable on every kernel: then said
# so), nop-other-tp.o on a syscall tracepoint the pair never hits. Per round:
#   untracked: CPU ns added per write(/dev/null)+read(/dev/zero) pair of a
#              process the programs do not track (stats off);
#   tracked:   CPU ns per loop of a tracked process sending an nginx-sized
#              response (writev, 2 iovecs) over loopback TCP and reading it
#              (recvfrom), stats off (this counts the kernel's per-hit cost
#              around the programs, which bpf_stats does not), then
#              bpf_stats ns per run of each program (stats on).
set -euo pipefail
cd "$(dirname "$0")"
ROUNDS=${1:-3}; shift || true
OUT=$(mktemp -d /tmp/mop-ebpf-micro.XXXXXX)
trap 'rm -rf "$OUT"; sysctl -q -w kernel.bpf_stats_enabled=0' EXIT
CFLAGS=(-target bpf -O2 -g -Wall -D__TARGET_ARCH_x86 -I ../../../agent-ebpf/include)
clang "${CFLAGS[@]}" -c ../../../agent-ebpf/sockets/sockets.bpf.c -o "$OUT/tree.o"
NOPS=(nop nop-tpbtf nop-rawtp nop-fexit nop-fexit-ksys nop-other-tp)
for n in "${NOPS[@]}"; do clang "${CFLAGS[@]}" -c $n.bpf.c -o "$OUT/$n.o"; done
gcc -O2 -o "$OUT/untracked" untracked.c -lbpf
gcc -O2 -o "$OUT/tracked" tracked.c -lbpf
OBJS=("$@"); ((${#OBJS[@]})) || OBJS=("$OUT/tree.o")
echo "$(uname -r), $(nproc) CPUs; $(uptime)"
for r in $(seq "$ROUNDS"); do
  sysctl -q -w kernel.bpf_stats_enabled=0
  for n in "${NOPS[@]}"; do
    printf 'untracked %-28s ' "$n.o"
    "$OUT/untracked" "$OUT/$n.o" 1000000 1 2>&1 | head -1 || true
  done
  for o in "${OBJS[@]}"; do
    for m in tracepoints btf; do
      printf 'untracked %-28s ' "$(basename "$o") $m"
      MOP_ATTACH=$m "$OUT/untracked" "$o" 1000000 1 | head -1
    done
  done
  for o in "${OBJS[@]}"; do
    for m in tracepoints btf; do
      sysctl -q -w kernel.bpf_stats_enabled=0
      printf 'tracked   %-28s ' "$(basename "$o") $m"
      MOP_ATTACH=$m "$OUT/tracked" "$o" 100000 | head -1
      sysctl -q -w kernel.bpf_stats_enabled=1
      printf '          %-28s ' ''
      MOP_ATTACH=$m "$OUT/tracked" "$o" 100000 | grep -E 'enter_writev|exit_writev|enter_recvfrom|exit_recvfrom|sys_exit' | awk '{printf "%s %s ns/run  ", $1, $4} END {print ""}'
    done
  done
done
