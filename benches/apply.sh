#!/usr/bin/env bash
# Apply benchmark: `mop sync` of the synthetic 1,000-tenant repository (legacy shape)
# (benches/gen-synthetic-repo.py) against the strict fakes of Grafana, the rulers
# and Kubernetes (tests/examples/fake-platform.rs), then a second, no-op sync.
# Prints wall time, CPU and peak RSS of each `mop sync` and the requests and
# writes the fakes received.
#
#   benches/apply.sh            (needs GNU time: apt-get install time)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /usr/bin/time ] || { echo "needs GNU time: apt-get install time" >&2; exit 2; }
cargo build --release -q -p mop-syncer
cargo build --release -q -p mop-fakes --example fake-platform
mop=$PWD/target/release/mop
work=$(mktemp -d)
trap 'rm -rf "$work"; kill %1 2>/dev/null || true' EXIT
python3 benches/gen-synthetic-repo.py --legacy --out "$work/repo" >/dev/null
echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "repo: $($mop validate "$work/repo" | tail -1)"

coproc FAKES { target/release/examples/fake-platform "$work/repo"; }
read -r line <&"${FAKES[0]}"
[ "$line" = ready ] || { echo "fakes did not start: $line" >&2; exit 1; }
counts() { echo counts >&"${FAKES[1]}"; read -r c <&"${FAKES[0]}"; echo "$c"; }

run() {
  local name=$1
  KUBECONFIG=$work/kubeconfig /usr/bin/time -o "$work/$name.time" -f "%e %U %S %M" \
    "$mop" sync "$work/repo" >"$work/$name.out" 2>"$work/$name.err" || true
  # GNU time prefixes "Command exited with non-zero status N" when mop fails.
  read -r wall user sys rss < <(tail -1 "$work/$name.time")
  printf '%-8s %6.2f s wall, %6.2f s user, %5.2f s sys, %4d MiB peak RSS; %s\n' \
    "$name" "$wall" "$user" "$sys" "$((rss / 1024))" "$(tail -1 "$work/$name.out")"
  echo "         fakes so far: $(counts)"
  grep -E 'FAILED|cannot read|!' "$work/$name.out" | head -5 || true
}
run apply
run no-op
