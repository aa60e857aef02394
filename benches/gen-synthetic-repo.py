#!/usr/bin/env python3
"""Generates a synthetic MOP config repository for benchmarks, as a git repository
with two commits: `base`, and `head` which changes a share of dashboards, rules and
tenants the way a busy week of pull requests would.

    benches/gen-synthetic-repo.py --out /tmp/synth [--tenants 1000 --dashboards 10000 --rule-groups 5000]

Dashboards are shaped like the repo-template's RED dashboard (8 panels, ~6 KB);
rule groups hold 3 rules each, alternating recording and alerting rules.
"""
import argparse
import json
import os
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "..", "repo-template")


def dashboard(tenant, i, variant=0):
    panels = []
    for p in range(8):
        panels.append({
            "id": p + 1,
            "type": "timeseries",
            "title": f"Panel {p} of {tenant}",
            "gridPos": {"h": 8, "w": 12, "x": (p % 2) * 12, "y": (p // 2) * 8},
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "fieldConfig": {"defaults": {"unit": "s", "color": {"mode": "palette-classic"}}, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
            "targets": [{
                "refId": "A",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": f'histogram_quantile(0.{95 + variant % 4}, sum by (le, http_route) (rate(http_server_request_duration_seconds_bucket{{job=~"$job", k8s_namespace_name="{tenant}"}}[$__rate_interval])))',
                "legendFormat": "{{http_route}}",
            }],
        })
    return {
        "uid": f"{tenant}-d{i}",
        "title": f"{tenant} dashboard {i}" + (" (v2)" if variant else ""),
        "tags": ["synthetic", tenant],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus"},
            {"name": "job", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": "label_values(http_server_request_duration_seconds_count, job)", "multi": True, "includeAll": True},
        ]},
        "panels": panels,
    }


def rule_file(tenant, first, count, variant=0):
    lines = ["groups:"]
    for g in range(first, first + count):
        lines += [
            f"  - name: {tenant}-group-{g}",
            "    interval: 1m",
            "    rules:",
            f"      - record: {tenant.replace('-', '_')}:http_requests:rate5m",
            f'        expr: sum by (job) (rate(http_server_request_duration_seconds_count{{k8s_namespace_name="{tenant}"}}[5m]))',
            f"      - alert: {tenant.title().replace('-', '')}HighErrorRate{g}",
            f'        expr: sum(rate(http_server_request_duration_seconds_count{{k8s_namespace_name="{tenant}", http_response_status_code=~"5.."}}[5m])) / sum(rate(http_server_request_duration_seconds_count{{k8s_namespace_name="{tenant}"}}[5m])) > 0.0{1 + variant}',
            f"        for: {5 + variant}m",
            "        labels: { severity: page }",
            "        annotations:",
            f"          summary: Error rate above {1 + variant}% for {tenant}",
            f"      - alert: {tenant.title().replace('-', '')}SlowRequests{g}",
            f'        expr: histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{{k8s_namespace_name="{tenant}"}}[5m]))) > 1',
            "        for: 10m",
            "        labels: { severity: ticket }",
        ]
    return "\n".join(lines) + "\n"


def tenant_yaml(name, members):
    out = [f"id: {name}", f"display_name: {name.title()}", "namespaces:", f"  - {name}", f"  - {name}-*", "grafana:", "  members:"]
    for m in range(members):
        out.append(f"    - {{ user: user{m}@{name}.example.com, role: {'Admin' if m == 0 else 'Editor'} }}")
    out += ["limits:", "  metrics:", "    ingestion_rate: 50000"]
    return "\n".join(out) + "\n"


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def git(root, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="b@example.com",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="b@example.com")
    # No background auto-gc: it would race the explicit `git gc` below.
    return subprocess.run(["git", "-c", "gc.auto=0", *args], cwd=root, env=env, check=True, capture_output=True, text=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--dashboards", type=int, default=10000)
    ap.add_argument("--rule-groups", type=int, default=5000)
    ap.add_argument("--change-percent", type=float, default=5.0,
                    help="share of dashboards and rule files the head commit changes")
    a = ap.parse_args()
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    os.makedirs(a.out)
    for f in ("mop.yaml", "versions.yaml"):
        shutil.copy(os.path.join(TEMPLATE, f), os.path.join(a.out, f))
    names = [f"team-{i:04d}" for i in range(a.tenants)]
    mop = open(os.path.join(a.out, "mop.yaml")).read().replace("default_tenant: platform", f"default_tenant: {names[0]}")
    write(a.out, "mop.yaml", mop)
    d_per, g_per = a.dashboards // a.tenants, a.rule_groups // a.tenants
    files_per = max(1, g_per // 5)  # up to 5 groups a file
    step = max(1, int(round(100 / a.change_percent))) if a.change_percent > 0 else 0
    changed = []
    for t, name in enumerate(names):
        write(a.out, f"tenants/{name}/tenant.yaml", tenant_yaml(name, 3))
        write(a.out, f"tenants/{name}/sampling.yaml",
              "policies:\n  - { name: errors, type: errors }\n  - { name: base, type: probabilistic, percentage: 10 }\n")
        for i in range(d_per):
            rel = f"tenants/{name}/dashboards/f{i % 3}/d{i}.json"
            write(a.out, rel, json.dumps(dashboard(name, i), indent=2))
            if step and (t * d_per + i) % step == 0:
                changed.append(("d", rel, name, i))
        per_file = g_per // files_per
        for f in range(files_per):
            rel = f"tenants/{name}/rules/metrics/rules{f}.yaml"
            write(a.out, rel, rule_file(name, f * per_file, per_file))
            if step and (t * files_per + f) % step == 0:
                changed.append(("r", rel, name, (f, per_file)))
    git(a.out, "init", "-q", "-b", "main")
    git(a.out, "add", "-A")
    git(a.out, "commit", "-q", "-m", "base")
    base = git(a.out, "rev-parse", "HEAD")
    for kind, rel, name, extra in changed:
        if kind == "d":
            write(a.out, rel, json.dumps(dashboard(name, extra, variant=1), indent=2))
        else:
            f, per = extra
            write(a.out, rel, rule_file(name, f * per, per, variant=1))
    git(a.out, "add", "-A")
    git(a.out, "commit", "-q", "-m", "head")
    # A CI clone holds a pack, not loose objects; measure what users get.
    git(a.out, "gc", "-q")
    head = git(a.out, "rev-parse", "HEAD")
    print(json.dumps({"out": a.out, "base": base, "head": head, "tenants": a.tenants,
                      "dashboards": d_per * a.tenants, "rule_groups": per_file * files_per * a.tenants,
                      "changed_files": len(changed)}))


if __name__ == "__main__":
    main()
