#!/usr/bin/env bash
# Syncer benchmark: `mop validate` and `mop plan` on a synthetic repository of
# 1,000 tenants / 10,000 dashboards / 5,000 rule groups (benches/gen-synthetic-repo.py),
# base → head changing 5% of dashboards and rule files. Prints wall time, CPU time
# and peak RSS of each run, then the median wall time.
#
#   benches/syncer.sh [RUNS]        (needs GNU time: apt-get install time)
#
# Targets (DESIGN.md §7): < 2 s wall and < 300 MiB peak RSS each, on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
repo=${SYNTH_REPO:-/tmp/mop-synth}
[ -x /usr/bin/time ] || { echo "needs GNU time: apt-get install time" >&2; exit 2; }

cargo build --release -q -p mop-syncer
mop=$PWD/target/release/mop
if [ ! -d "$repo/.git" ]; then
  python3 benches/gen-synthetic-repo.py --out "$repo" >/dev/null
fi
echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "repo: $($mop validate "$repo" | tail -1)"

measure() {
  local name=$1; shift
  local walls=()
  for i in $(seq "$runs"); do
    # `mop plan` exits 2 when there are changes; that is the expected outcome here.
    /usr/bin/time -o /tmp/mop-bench.time -f "%e %U %S %M" "$@" >/dev/null || true
    # GNU time prefixes "Command exited with non-zero status N" then.
    read -r wall user sys rss < <(tail -1 /tmp/mop-bench.time)
    printf '%-9s run %d: %5.2f s wall, %5.2f s user, %4.2f s sys, %4d MiB peak RSS\n' \
      "$name" "$i" "$wall" "$user" "$sys" "$((rss / 1024))"
    walls+=("$wall")
  done
  printf '%-9s median wall: %s s\n' "$name" "$(printf '%s\n' "${walls[@]}" | sort -n | sed -n "$(( (runs + 1) / 2 ))p")"
}

measure validate "$mop" validate "$repo"
(cd "$repo" && measure plan "$mop" plan --base HEAD~1 --head HEAD --format json)
