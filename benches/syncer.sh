#!/usr/bin/env bash
# Syncer benchmark: `mop validate` and `mop plan --base HEAD~1` on the synthetic
# repositories of benches/gen-synthetic-repo.py, both generators:
#
#   realistic  1,000 tenants / 10,000 dashboards of 20–500 KB / 15,000 rule groups;
#              the head commit changes 10 dashboards
#   legacy     1,000 tenants / 10,000 dashboards of ~6 KB / 5,000 rule groups;
#              the head commit changes 5% of dashboards and rule files
#
# next to the floor measured in the same run: serde_json parsing the same dashboard
# bytes on one thread (syncer/src/bin/json_floor.rs; `IgnoredAny` is the floor).
# Each run prints wall, user+sys CPU and peak RSS (GNU time) and the load average;
# the rounds alternate between the repositories (and binaries, see BASELINE), so
# load from others on the machine spreads over all of them alike.
#
#   benches/syncer.sh [ROUNDS]            (needs GNU time: apt-get install time)
#
#   SYNTH_DIR=DIR      where the repositories are generated (default target/bench-synth);
#                      regenerated when the generator changes
#   MODES="realistic legacy"   which generators to run
#   BASELINE=PATH      another `mop` binary to alternate with, e.g. one built from
#                      main, to measure a change under the same load
#
# Targets (issue 11), realistic repository on 2 cores: validate < 3 s and plan < 3 s
# wall, both < 512 MiB peak RSS, validate ≤ 3× the floor.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
dir=${SYNTH_DIR:-$PWD/target/bench-synth}
modes=${MODES:-realistic legacy}
[ -x /usr/bin/time ] || { echo "needs GNU time: apt-get install time" >&2; exit 2; }

cargo build --release -q -p mop-syncer --bin mop --bin mop-bench-json-floor
mop=$PWD/target/release/mop
floor=$PWD/target/release/mop-bench-json-floor
bins=("$mop")
[ -n "${BASELINE:-}" ] && bins+=("$BASELINE")
gen_hash=$(sha256sum benches/gen-synthetic-repo.py | cut -c1-16)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for mode in $modes; do
  repo=$dir/$mode
  if [ "$(cat "$repo/.gen-hash" 2>/dev/null)" != "$gen_hash" ]; then
    echo "generating $mode repository in $repo ..."
    flag=(); [ "$mode" = legacy ] && flag=(--legacy)
    python3 benches/gen-synthetic-repo.py --out "$repo" "${flag[@]}" > "$repo.json"
    echo "$gen_hash" > "$repo/.gen-hash"
  fi
  echo "$mode: $(cat "$repo.json")"
done

echo "machine: $(nproc) cores, $(uname -r); $(uptime)"
for mode in $modes; do
  echo "== floor, $mode ($(cut -d' ' -f1-3 /proc/loadavg) load)"
  "$floor" "$dir/$mode" 5 | tee "$tmp/floor-$mode"
done

# One measured run: appends "wall cpu rss" to $tmp/<name> and prints the run.
run() {
  local name=$1 dir=$2; shift 2
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  # `mop plan` exits 2 when there are changes; that is the expected outcome here.
  (cd "$dir" && /usr/bin/time -o "$tmp/time" -f "%e %U %S %M" "$@" >/dev/null 2>"$tmp/stderr") || true
  # GNU time prefixes "Command exited with non-zero status N" then.
  read -r wall user sys rss < <(tail -1 "$tmp/time")
  local cpu; cpu=$(echo "$user + $sys" | bc)
  printf '%-34s %5.2f s wall, %5.2f s CPU (%5.2f user + %4.2f sys), %4d MiB peak RSS, load %s\n' \
    "$name" "$wall" "$cpu" "$user" "$sys" "$((rss / 1024))" "$load"
  echo "$wall $cpu $rss" >> "$tmp/$(echo "$name" | tr ' /' '__')"
}

for i in $(seq "$rounds"); do
  echo "== round $i"
  for mode in $modes; do
    for b in "${bins[@]}"; do
      tag=$mode; [ "$b" != "$mop" ] && tag="$mode baseline"
      run "$tag validate" "$dir/$mode" "$b" validate .
      run "$tag plan" "$dir/$mode" "$b" plan --base HEAD~1 --head HEAD --format json
    done
  done
done

median() { sort -n | sed -n "$(( (rounds + 1) / 2 ))p"; }
echo "== summary (median of $rounds rounds; peak RSS is the largest)"
for mode in $modes; do
  fwall=$(grep 'IgnoredAny' "$tmp/floor-$mode" | sed -E 's/.*best ([0-9.]+) s wall.*/\1/')
  fcpu=$(grep 'IgnoredAny' "$tmp/floor-$mode" | sed -E 's/.*best ([0-9.]+) s CPU.*/\1/')
  echo "$mode floor (IgnoredAny, one thread): $fwall s wall, $fcpu s CPU"
  for b in "${bins[@]}"; do
    tag=$mode; [ "$b" != "$mop" ] && tag="$mode baseline"
    for cmd in validate plan; do
      f=$tmp/$(echo "$tag $cmd" | tr ' /' '__')
      w=$(cut -d' ' -f1 "$f" | median); c=$(cut -d' ' -f2 "$f" | median)
      r=$(cut -d' ' -f3 "$f" | sort -n | tail -1)
      printf '%-24s median %5.2f s wall, %5.2f s CPU, %4d MiB peak RSS; %4.1fx the floor (wall), %4.1fx (CPU)\n' \
        "$tag $cmd" "$w" "$c" "$((r / 1024))" "$(echo "$w / $fwall" | bc -l)" "$(echo "$c / $fcpu" | bc -l)"
    done
  done
done
