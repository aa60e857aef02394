#!/usr/bin/env bash
# Offline checks of MOP's Kubernetes manifests; no cluster needed.
#
#   deploy/check.sh              every kustomization under deploy/ (base, overlays/*)
#   deploy/check.sh --files DIR  every *.yaml under DIR (e.g. `mop render`'s
#                                out/kubernetes), one object per file or a stream
#
# For each set of objects:
#   1. `kubectl kustomize` renders it (kustomizations only; `kubectl apply
#      --dry-run=client` is no use offline, it needs API discovery);
#   2. kubernetes-validate checks every object against the Kubernetes OpenAPI
#      schemas it ships, strictly: an unknown field (a typo) or a wrong type
#      fails, and so does a kind it has no schema for;
#   3. no Role or ClusterRole rule may have `*` in apiGroups, resources, verbs or
#      resourceNames (least privilege, docs/security.md).
# Validated against the oldest and the newest Kubernetes minor we support
# (MOP_K8S_VERSIONS to override). Needs kubectl and
# `pip install -r .ci/pip.d/deploy.txt`.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
versions="${MOP_K8S_VERSIONS:-1.30.0 1.35.0}"

die() {
  echo "check.sh: $*" >&2
  exit 2
}
command -v kubernetes-validate >/dev/null ||
  die "kubernetes-validate not found: pip install -r .ci/pip.d/deploy.txt"
command -v python3 >/dev/null || die "python3 not found"

failed=0
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Validates one multi-document YAML file named $2 (for messages) at $1.
check_stream() {
  local file="$1" what="$2" out v bad=0
  for v in $versions; do
    # --quiet prints only warnings and failures; a warning is a kind without a
    # schema (a typo'd kind or apiVersion), which must fail too.
    if ! out="$(kubernetes-validate --strict --quiet -k "$v" "$file" 2>&1)"; then
      echo "FAIL $what (Kubernetes $v):"
      sed 's/^/  /' <<<"$out"
      bad=1
    elif [[ -n "$out" ]]; then
      echo "FAIL $what (Kubernetes $v): not validated:"
      sed 's/^/  /' <<<"$out"
      bad=1
    fi
  done
  if ! out="$(python3 - "$file" <<'PY' 2>&1
import sys
import yaml

bad = []
with open(sys.argv[1]) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
if not docs:
    bad.append("no objects")
for d in docs:
    if not isinstance(d, dict):
        bad.append(f"not an object: {d!r}")
        continue
    if d.get("kind") not in ("Role", "ClusterRole"):
        continue
    name = f'{d["kind"]}/{d.get("metadata", {}).get("name")}'
    for i, rule in enumerate(d.get("rules") or []):
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            if any("*" in str(x) for x in rule.get(field) or []):
                bad.append(f"{name} rule {i}: wildcard in {field}: {rule[field]}")
    if d.get("aggregationRule"):
        bad.append(f"{name}: aggregationRule grants whatever matching roles grant")
for b in bad:
    print(b)
sys.exit(1 if bad else 0)
PY
)"; then
    echo "FAIL $what: RBAC:"
    sed 's/^/  /' <<<"$out"
    bad=1
  fi
  if ((bad)); then
    failed=1
  else
    echo "ok   $what"
  fi
}

if [[ "${1:-}" == "--files" ]]; then
  [[ -d "${2:-}" ]] || die "--files needs a directory"
  stream="$work/files.yaml"
  : >"$stream"
  while IFS= read -r -d '' f; do
    printf -- '---\n' >>"$stream"
    cat "$f" >>"$stream"
    printf '\n' >>"$stream"
  done < <(find "$2" -type f \( -name '*.yaml' -o -name '*.yml' \) -print0 | sort -z)
  check_stream "$stream" "$2"
else
  command -v kubectl >/dev/null || die "kubectl not found (its client renders kustomizations)"
  n=0
  while IFS= read -r -d '' k; do
    dir="$(dirname "$k")"
    rel="${dir#"$here"/}"
    out="$work/$(echo "$rel" | tr / _).yaml"
    n=$((n + 1))
    if ! kubectl kustomize "$dir" >"$out" 2>"$work/err"; then
      echo "FAIL deploy/$rel: kubectl kustomize:"
      # This kubectl build may print its error on either stream.
      sed 's/^/  /' "$work/err" "$out"
      failed=1
      continue
    fi
    check_stream "$out" "deploy/$rel"
  done < <(find "$here" -name kustomization.yaml -not -path '*/docker/*' -print0 | sort -z)
  ((n > 0)) || die "no kustomization.yaml under $here"
fi

exit "$failed"
