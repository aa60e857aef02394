#!/usr/bin/env bash
# Micro-benchmarks of the kernel side, without nginx or the agent's userspace
# (docs/performance.md, "Issue 16, 2026-12-04 (session 23)"). Needs root,
# clang, gcc and libbpf-dev. Usage:
#   agent/bench/ebpf-micro/run.sh [rounds] [OBJ...]
# OBJ: sockets.bpf.o builds to compare (default: this tree's, and empty
# programs as floors: nop.o on the same four tracepoints, nop-fexit.o and
# nop-fexit-ksys.o as fexit on the functions behind read/write, nop-other-tp.o
# on a syscall tracepoint the pair never hits). Per round and object:
#   untracked: CPU ns added per write(/dev/null)+read(/dev/zero) pair of a
#              process the programs do not track (stats off);
#   tracked:   bpf_stats ns per run of each program for a tracked process
#              sending an nginx-sized response (writev, 2 iovecs) over
#              loopback TCP and reading it (recvfrom).
set -euo pipefail
cd "$(dirname "$0")"
ROUNDS=${1:-3}; shift || true
OUT=$(mktemp -d /tmp/mop-ebpf-micro.XXXXXX)
trap 'rm -rf "$OUT"; sysctl -q -w kernel.bpf_stats_enabled=0' EXIT
CFLAGS=(-target bpf -O2 -g -Wall -D__TARGET_ARCH_x86 -I ../../../agent-ebpf/include)
clang "${CFLAGS[@]}" -c ../../../agent-ebpf/sockets/sockets.bpf.c -o "$OUT/tree.o"
for n in nop nop-fexit nop-fexit-ksys nop-other-tp; do clang "${CFLAGS[@]}" -c $n.bpf.c -o "$OUT/$n.o"; done
gcc -O2 -o "$OUT/untracked" untracked.c -lbpf
gcc -O2 -o "$OUT/tracked" tracked.c -lbpf
OBJS=("$@"); ((${#OBJS[@]})) || OBJS=("$OUT/nop.o" "$OUT/nop-fexit.o" "$OUT/nop-fexit-ksys.o" "$OUT/nop-other-tp.o" "$OUT/tree.o")
echo "$(uname -r), $(nproc) CPUs; $(uptime)"
for r in $(seq "$ROUNDS"); do
  sysctl -q -w kernel.bpf_stats_enabled=0
  for o in "${OBJS[@]}"; do printf 'untracked %-20s ' "$(basename "$o")"; "$OUT/untracked" "$o" 1000000 1 | head -1; done
  sysctl -q -w kernel.bpf_stats_enabled=1
  for o in "${OBJS[@]}"; do
    [[ $(basename "$o") == nop*.o ]] && continue
    printf 'tracked   %-20s ' "$(basename "$o")"
    "$OUT/tracked" "$o" 100000 | grep -E 'enter_writev|exit_writev|enter_recvfrom|exit_recvfrom' | awk '{printf "%s %s ns/run  ", $1, $4} END {print ""}'
  done
done
