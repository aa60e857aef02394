#!/usr/bin/env bash
# Several clusters (issue 17): `mop validate` and `mop plan --base HEAD~1` of a
# synthetic repository (benches/gen-synthetic-repo.py, realistic mode) as one
# cluster, and the same repository with clusters/dev, staging and prod, each
# serving every tenant (the worst case: three full renders and diffs per plan).
# Target: 3 clusters within 1.5× of one cluster. Prints user+sys CPU seconds,
# wall and peak RSS per run (GNU time), rounds alternating between the two.
#
#   benches/clusters.sh [ROUNDS]
#   MOP=path/to/mop        the binary (default: a release build of this tree)
#   GEN_ARGS="--tenants 1000 --dashboards 10000"   generator size (its defaults)
#   DIR=DIR                where the repositories go (default target/bench-clusters)
#   FROM=DIR               clone an already generated repository (e.g. the one
#                          benches/syncer.sh made, target/bench-synth/realistic)
#                          instead of generating one: generation takes ~30 min
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
dir=${DIR:-$PWD/target/bench-clusters}
if [ -z "${MOP:-}" ]; then
  cargo build --release -q -p mop-syncer --bin mop
  MOP=$PWD/target/release/mop
fi
[ -x /usr/bin/time ] || { echo "needs GNU time: apt-get install time" >&2; exit 2; }
rm -rf "$dir" && mkdir -p "$dir"
if [ -n "${FROM:-}" ]; then
  git clone -q "$FROM" "$dir/one"
  echo "repository: a clone of $FROM$(cat "$FROM.json" 2>/dev/null | sed 's/^/: /')"
else
  # shellcheck disable=SC2086
  python3 benches/gen-synthetic-repo.py --out "$dir/one" ${GEN_ARGS:-} > "$dir/one.json"
  echo "repository: $(cat "$dir/one.json")"
fi
base=$(git -C "$dir/one" rev-parse HEAD~1)
head=$(git -C "$dir/one" rev-parse HEAD)
git clone -q "$dir/one" "$dir/three"
(
  cd "$dir/three"
  git checkout -q -b clusters "$base"
  mkdir clusters
  for c in dev staging prod; do printf 'environment: %s\n' "$c" > "clusters/$c.yaml"; done
  git add clusters
  git -c user.email=bench@example.com -c user.name=bench commit -qm "the base, as three clusters"
  git -c user.email=bench@example.com -c user.name=bench cherry-pick "$head" > /dev/null
)
echo "machine: $(nproc) cores; $(uptime)"
for _ in $(seq "$rounds"); do
  for repo in one three; do
    /usr/bin/time -f "$repo validate: cpu %U+%S s, wall %e s, peak %M KiB" "$MOP" validate "$dir/$repo" > /dev/null
    /usr/bin/time -f "$repo plan: cpu %U+%S s, wall %e s, peak %M KiB" "$MOP" plan "$dir/$repo" --base HEAD~1 --head HEAD --format json > /dev/null || [ $? = 2 ]
  done
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
done
