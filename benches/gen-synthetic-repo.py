#!/usr/bin/env python3
"""Generates a synthetic MOP config repository for benchmarks, as a git repository
with two commits: `base`, and `head` which changes some of it.

    benches/gen-synthetic-repo.py --out DIR                 # realistic (default)
    benches/gen-synthetic-repo.py --out DIR --legacy        # the old small shape

Realistic mode (the default; 1,000 tenants, 10,000 dashboards, 15,000 rule groups):

- Dashboard sizes (pretty-printed JSON, as Grafana's "Export → JSON" writes it) follow
  a mixture: 88% log-normal with a median of 34 KB (sigma 0.28, kept to 20–60 KB),
  12% a Pareto tail (alpha 1.2) from 60 KB to 500 KB. Why: the repo-template's own
  dashboards, exported from Grafana, are 20–51 KB; most team dashboards are a few
  rows of RED/USE panels of that size, while the widely used community dashboards
  (node-exporter-full, the kubernetes-mixin ones) are 100–500 KB and a repository
  collects a few of them per team. The mean comes out at about 50 KB, i.e. ~500 MB
  of JSON for 10,000 dashboards.
- Queries: 20–300 per dashboard, growing with the size (20 + 0.6 per KB above
  20 KB); 1–4 targets per panel. Every query is distinct per tenant: selectors carry
  the tenant's namespace and service names. They use the regex matchers real
  dashboards use (`=~"$job"`, `=~"$namespace"`, `=~"${pod:regex}"`,
  `=~"$instance"`, `!~"…"`), `[$__rate_interval]`, `$__interval`, subqueries,
  `offset`, `histogram_quantile`, `topk`, `label_replace`, binary operators.
- Panels: rows (open rows followed by their panels, and collapsed rows holding
  nested `panels`), timeseries/stat/gauge/bargauge/table/heatmap/text panels with
  Grafana 11's fieldConfig (thresholds, mappings, overrides), options, links and
  transformations; templating with datasource, query (regex, multi, includeAll),
  interval, custom and adhoc variables; annotations and links.
- Rule groups: 15 per tenant in 3–5 files, 2–12 rules each (below Mimir's default of
  20 per group), half recording rules, half alerts with Go-templated annotations
  (`{{ $labels.job }}`, `{{ $value | humanizePercentage }}`) and labels; every
  expression carries the tenant's selectors and group-specific thresholds.
- The head commit changes 10 dashboards (one query and the title each), spread over
  the tenants: what a `mop plan --base HEAD~1` on a pull request sees.

Everything is seeded (`--seed`), so the same arguments give byte-identical files.

Legacy mode (`--legacy`; 1,000 tenants, 10,000 dashboards, 5,000 rule groups) keeps
the earlier shape for comparison with earlier figures: dashboards like the
repo-template's RED dashboard cut down to 8 panels (~6 KB), rule groups of 3 rules;
the head commit changes 5% of dashboards and rule files.
"""
import argparse
import json
import math
import os
import random
import shutil
import subprocess
from multiprocessing import Pool

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "..", "repo-template")


# ---------------------------------------------------------------- legacy shape

def legacy_dashboard(tenant, i, variant=0):
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


def legacy_rule_file(tenant, first, count, variant=0):
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


# ------------------------------------------------------------- realistic shape

DS = {"type": "prometheus", "uid": "${datasource}"}

# (metric family, kind) pairs as OpenTelemetry, kube-state-metrics, cAdvisor and
# node-exporter expose them.
COUNTERS = [
    "http_server_request_duration_seconds_count", "http_client_request_duration_seconds_count",
    "rpc_server_duration_milliseconds_count", "container_cpu_usage_seconds_total",
    "container_network_receive_bytes_total", "container_network_transmit_bytes_total",
    "node_network_receive_bytes_total", "node_disk_read_bytes_total", "node_disk_written_bytes_total",
    "kube_pod_container_status_restarts_total", "process_cpu_seconds_total",
    "db_client_operation_duration_seconds_count", "messaging_process_duration_seconds_count",
    "grpc_server_handled_total", "nginx_ingress_controller_requests", "go_gc_duration_seconds_count",
]
HISTOGRAMS = [
    "http_server_request_duration_seconds_bucket", "http_client_request_duration_seconds_bucket",
    "rpc_server_duration_milliseconds_bucket", "db_client_operation_duration_seconds_bucket",
    "messaging_process_duration_seconds_bucket", "grpc_server_handling_seconds_bucket",
]
GAUGES = [
    "container_memory_working_set_bytes", "container_memory_rss", "kube_pod_status_phase",
    "kube_deployment_status_replicas_available", "kube_deployment_spec_replicas",
    "node_filesystem_avail_bytes", "node_memory_MemAvailable_bytes", "process_resident_memory_bytes",
    "go_goroutines", "jvm_memory_used_bytes", "kube_pod_container_resource_requests",
    "kube_horizontalpodautoscaler_status_current_replicas", "up",
]
BY = ["job", "pod", "http_route", "instance", "container", "namespace", "service", "rpc_method",
      "http_response_status_code", "db_operation_name", "node"]
UNITS = ["s", "ms", "reqps", "percentunit", "bytes", "Bps", "short", "none", "ops", "cps", "decbytes"]
PANEL_KINDS = ["timeseries"] * 6 + ["stat"] * 3 + ["gauge", "bargauge", "table", "heatmap"]
COLORS = ["green", "yellow", "orange", "red", "blue", "purple", "dark-red", "semi-dark-orange"]
WORDS = ("the of requests errors latency service pod namespace saturation traffic budget "
         "burn rate window queue backlog cpu memory throttling restarts replicas ingress "
         "upstream database connection pool cache hit ratio p99 slo availability").split()


def selector(rng, tenant, svc, extra=()):
    """A tenant-specific selector with the variables real dashboards use."""
    m = [f'job=~"$job"', f'k8s_namespace_name="{tenant}"']
    r = rng.random()
    if r < 0.35:
        m.append('namespace=~"$namespace"')
    if r > 0.55:
        m.append('pod=~"${pod:regex}"')
    if rng.random() < 0.25:
        m.append('instance=~"$instance"')
    if rng.random() < 0.3:
        m.append(f'service_name="{svc}"')
    if rng.random() < 0.2:
        m.append('http_route!~"/(healthz|readyz|metrics).*"')
    if rng.random() < 0.15:
        m.append('cluster="$cluster"')
    m.extend(extra)
    return ", ".join(m)


def query(rng, tenant, svc, n):
    """One PromQL query of a dashboard, distinct per tenant (selectors) and per
    position `n` (thresholds, quantiles, label choices)."""
    s = selector(rng, tenant, svc)
    c, h, g = rng.choice(COUNTERS), rng.choice(HISTOGRAMS), rng.choice(GAUGES)
    by = ", ".join(rng.sample(BY, rng.randint(1, 3)))
    q = f"0.{rng.choice([5, 75, 9, 95, 99, 999])}"
    k = rng.choice([5, 10, 15, 20])
    shapes = [
        lambda: f"sum by ({by}) (rate({c}{{{s}}}[$__rate_interval]))",
        lambda: f"histogram_quantile({q}, sum by (le, {by}) (rate({h}{{{s}}}[$__rate_interval])))",
        lambda: (f'sum by ({by}) (rate({c}{{{s}, http_response_status_code=~"5.."}}[$__rate_interval]))\n/\n'
                 f"sum by ({by}) (rate({c}{{{s}}}[$__rate_interval]))"),
        lambda: f'topk({k}, sum by ({by}) ({g}{{{s}, container!="", container!="POD"}}))',
        lambda: f"increase({c}{{{s}}}[$__range])",
        lambda: f"avg_over_time({g}{{{s}}}[$__interval])",
        lambda: (f"sum by (pod) (rate(container_cpu_usage_seconds_total{{namespace=~\"$namespace\", "
                 f"pod=~\"${{pod:regex}}\", container!=\"POD\", k8s_namespace_name=\"{tenant}\"}}[$__rate_interval]))"),
        lambda: f"predict_linear(node_filesystem_avail_bytes{{{s}, fstype!~\"tmpfs|overlay\"}}[6h], {k} * 3600) < 0",
        lambda: (f'1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle", instance=~"$instance", '
                 f'k8s_namespace_name="{tenant}"}}[$__rate_interval]))'),
        lambda: f'max by ({by}) (kube_pod_status_phase{{{s}, phase=~"Pending|Unknown|Failed"}}) > 0',
        lambda: f"max_over_time(sum by ({by}) (rate({c}{{{s}}}[5m]))[1h:1m])",
        lambda: (f"sum(rate({c}{{{s}}}[$__rate_interval]))\n/\n"
                 f"sum(rate({c}{{{s}}}[$__rate_interval] offset 1w))"),
        lambda: (f'label_replace(sum by (pod) ({g}{{{s}}}), "service", "$1", "pod", "({svc})-[a-z0-9]+-[a-z0-9]+")'),
        lambda: f"sum by ({by}) ({g}{{{s}}}) / on ({by}) group_left sum by ({by}) (kube_pod_container_resource_requests{{{s}, resource=\"memory\"}})",
        lambda: f"absent(up{{{s}}} == 1) or vector({n % 3})",
        lambda: f"quantile_over_time({q}, {g}{{{s}}}[$__interval]) > {round(rng.random() * 100, 2)}",
    ]
    return rng.choice(shapes)()


def sentence(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def thresholds(rng):
    steps = [{"color": "green", "value": None}]
    v = 0.0
    for _ in range(rng.randint(1, 3)):
        v += round(rng.random() * 50, 2)
        steps.append({"color": rng.choice(COLORS), "value": v})
    return {"mode": rng.choice(["absolute", "percentage"]), "steps": steps}


def override(rng, tenant, n):
    matcher = rng.choice([
        {"id": "byName", "options": f"{rng.choice(BY)}-{n}"},
        {"id": "byRegexp", "options": f"/.*{tenant}.*{n}/"},
        {"id": "byFrameRefID", "options": "ABCD"[n % 4]},
    ])
    props = [
        {"id": "color", "value": {"fixedColor": rng.choice(COLORS), "mode": "fixed"}},
        {"id": "unit", "value": rng.choice(UNITS)},
        {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}},
        {"id": "custom.axisPlacement", "value": rng.choice(["left", "right", "hidden"])},
        {"id": "displayName", "value": f"{rng.choice(WORDS)} {n}"},
        {"id": "custom.fillOpacity", "value": rng.randint(0, 40)},
        {"id": "thresholds", "value": thresholds(rng)},
    ]
    return {"matcher": matcher, "properties": rng.sample(props, rng.randint(1, 4))}


def field_config(rng, kind, tenant):
    defaults = {
        "color": {"mode": rng.choice(["palette-classic", "thresholds", "continuous-GrYlRd"])},
        "mappings": [],
        "thresholds": thresholds(rng),
        "unit": rng.choice(UNITS),
    }
    if rng.random() < 0.4:
        defaults["decimals"] = rng.randint(0, 3)
    if rng.random() < 0.3:
        defaults["mappings"] = [{"options": {"0": {"color": "red", "index": 0, "text": "down"},
                                             "1": {"color": "green", "index": 1, "text": "up"}},
                                 "type": "value"}]
    if kind == "timeseries":
        defaults["custom"] = {
            "axisBorderShow": False, "axisCenteredZero": False, "axisColorMode": "text",
            "axisLabel": "", "axisPlacement": "auto", "barAlignment": 0, "drawStyle": "line",
            "fillOpacity": rng.choice([0, 10, 20]), "gradientMode": rng.choice(["none", "opacity"]),
            "hideFrom": {"legend": False, "tooltip": False, "viz": False},
            "insertNulls": False, "lineInterpolation": "smooth", "lineWidth": rng.choice([1, 2]),
            "pointSize": 5, "scaleDistribution": {"type": "linear"}, "showPoints": "never",
            "spanNulls": False, "stacking": {"group": "A", "mode": rng.choice(["none", "normal"])},
            "thresholdsStyle": {"mode": rng.choice(["off", "line", "dashed"])},
        }
    elif kind == "table":
        defaults["custom"] = {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False,
                              "filterable": rng.random() < 0.5}
    return {"defaults": defaults, "overrides": [override(rng, tenant, i) for i in range(rng.randint(0, 2))]}


def options(rng, kind):
    if kind == "timeseries":
        return {"legend": {"calcs": rng.sample(["mean", "max", "lastNotNull", "p95"], rng.randint(0, 3)),
                           "displayMode": rng.choice(["list", "table"]), "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "desc"}}
    if kind in ("stat", "gauge", "bargauge"):
        return {"colorMode": "value", "graphMode": "area", "justifyMode": "auto", "orientation": "auto",
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "showThresholdLabels": False, "showThresholdMarkers": True, "textMode": "auto",
                "wideLayout": True}
    if kind == "table":
        return {"cellHeight": "sm", "footer": {"countRows": False, "fields": "", "reducer": ["sum"], "show": False},
                "showHeader": True, "sortBy": [{"desc": True, "displayName": "Value"}]}
    if kind == "heatmap":
        return {"calculate": False, "cellGap": 1, "color": {"exponent": 0.5, "fill": "dark-orange", "mode": "scheme",
                                                            "scheme": "Oranges", "steps": 64},
                "yAxis": {"axisPlacement": "left", "reverse": False, "unit": "s"},
                "tooltip": {"mode": "single", "yHistogram": False}}
    return {}


class Ids:
    def __init__(self):
        self.next = 1

    def take(self):
        self.next += 1
        return self.next - 1


def panel(rng, tenant, svc, ids, n_targets, qn, x, y):
    kind = rng.choice(PANEL_KINDS)
    targets = []
    for t in range(n_targets):
        expr = query(rng, tenant, svc, qn + t)
        tgt = {"datasource": DS, "editorMode": "code", "expr": expr,
               "legendFormat": "{{" + rng.choice(BY) + "}}", "range": True, "refId": "ABCDEFGH"[t]}
        if kind == "table":
            tgt.update({"format": "table", "instant": True, "range": False})
        if kind == "heatmap":
            tgt.update({"format": "heatmap", "legendFormat": "{{le}}"})
        targets.append(tgt)
    w = rng.choice([6, 8, 12, 24])
    p = {
        "datasource": DS,
        "description": sentence(rng, rng.randint(6, 24)),
        "fieldConfig": field_config(rng, kind, tenant),
        "gridPos": {"h": rng.choice([4, 6, 8, 10]), "w": w, "x": x % 24, "y": y},
        "id": ids.take(),
        "options": options(rng, kind),
        "pluginVersion": "11.4.0",
        "targets": targets,
        "title": f"{sentence(rng, 3)[:-1]} ({svc})",
        "type": kind,
    }
    if rng.random() < 0.15:
        p["links"] = [{"title": "Runbook", "url": f"https://runbooks.example.com/{tenant}/{svc}"}]
    if kind == "table" and rng.random() < 0.7:
        p["transformations"] = [
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True},
                                           "renameByName": {"Value #A": "Rate", "Value #B": "Errors"}}},
        ]
    return p, w


def dashboard_size(rng):
    """Target size in bytes: see the module doc for the distribution and why."""
    if rng.random() < 0.88:
        kb = math.exp(rng.gauss(math.log(34), 0.28))
        kb = min(60.0, max(20.0, kb))
    else:
        kb = min(500.0, 60.0 * rng.paretovariate(1.2))
    return int(kb * 1024)


def realistic_dashboard(seed, tenant, i, variant=0):
    rng = random.Random(f"{seed}/{tenant}/{i}")
    size = dashboard_size(rng)
    n_queries = max(20, min(300, int(20 + 0.6 * (size / 1024 - 20))))
    svcs = [f"{tenant}-{rng.choice(['api', 'web', 'worker', 'gateway', 'db', 'cache'])}-{k}" for k in range(4)]
    ids = Ids()
    panels, q, y, body = [], 0, 0, 0
    # The dashboard outside `panels` (templating, annotations, links) pretty-prints
    # to about 8 KB; the panels fill the rest. Each panel's size is measured as
    # `json.dumps(indent=2)` writes it at its depth in the file.
    budget = size - 8000
    per_query = budget / n_queries
    row_open = None

    def pretty_len(v, depth):
        text = json.dumps(v, indent=2)
        return len(text) + 2 * depth * text.count("\n")

    while q < n_queries or body < budget:
        if (not panels or rng.random() < 0.12) and q < n_queries:
            collapsed = rng.random() < 0.35
            row = {"collapsed": collapsed, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "id": ids.take(),
                   "panels": [], "title": f"{sentence(rng, 2)[:-1]} — {rng.choice(svcs)}", "type": "row"}
            panels.append(row)
            row_open = row if collapsed else None
            y += 1
            body += pretty_len(row, 2)
            continue
        svc = rng.choice(svcs)
        if q >= n_queries:
            # The queries are spent: grow the panels instead (more overrides), as big
            # dashboards do with their per-series styling.
            p = rng.choice([p for p in panels if p["type"] != "row"] or [None])
            if p is None:
                break
            extra = override(rng, tenant, ids.next)
            p["fieldConfig"]["overrides"].append(extra)
            body += pretty_len(extra, 5)
            continue
        # Small dashboards pack several queries per panel (Grafana allows A–Z);
        # pick more targets when the panels so far cost more bytes per query than
        # the size allows.
        dense = q > 0 and body / q > per_query
        n_t = rng.randint(3, 8) if dense else rng.choice([1, 1, 2, 2, 3, 4])
        n_t = min(n_queries - q, n_t)
        p, w = panel(rng, tenant, svc, ids, n_t, q, 0, y)
        q += n_t
        body += pretty_len(p, 4 if row_open is not None else 2)
        (row_open["panels"] if row_open is not None else panels).append(p)
        y += p["gridPos"]["h"]
    if variant:
        # A pull request's edit: one query's regex and the title.
        for p in panels:
            if p.get("targets"):
                p["targets"][0]["expr"] = p["targets"][0]["expr"].replace('=~"$job"', '=~"$job|$job-canary"', 1)
                break
    variables = [
        {"current": {}, "hide": 0, "includeAll": False, "label": "Data source", "multi": False,
         "name": "datasource", "options": [], "query": "prometheus", "refresh": 1, "regex": "",
         "type": "datasource"},
        {"current": {}, "datasource": DS, "definition": "label_values(up, cluster)", "hide": 0,
         "includeAll": False, "multi": False, "name": "cluster", "options": [],
         "query": {"qryType": 1, "query": "label_values(up, cluster)", "refId": "PrometheusVariableQueryEditor-VariableQuery"},
         "refresh": 2, "regex": "", "type": "query"},
        {"allValue": ".+", "current": {}, "datasource": DS,
         "definition": f'label_values(kube_pod_info{{k8s_namespace_name="{tenant}"}}, namespace)',
         "includeAll": True, "multi": True, "name": "namespace", "options": [],
         "query": {"qryType": 1, "query": f'label_values(kube_pod_info{{k8s_namespace_name="{tenant}"}}, namespace)',
                   "refId": "PrometheusVariableQueryEditor-VariableQuery"},
         "refresh": 2, "regex": f"/^{tenant}.*/", "sort": 1, "type": "query"},
        {"allValue": ".+", "current": {}, "datasource": DS,
         "definition": 'label_values(http_server_request_duration_seconds_count{namespace=~"$namespace"}, job)',
         "includeAll": True, "multi": True, "name": "job", "options": [],
         "query": {"qryType": 1, "query": 'label_values(http_server_request_duration_seconds_count{namespace=~"$namespace"}, job)',
                   "refId": "PrometheusVariableQueryEditor-VariableQuery"},
         "refresh": 2, "regex": "", "sort": 1, "type": "query"},
        {"current": {}, "datasource": DS, "definition": 'label_values(kube_pod_info{namespace=~"$namespace", job=~"$job"}, pod)',
         "includeAll": True, "multi": True, "name": "pod", "options": [],
         "query": {"qryType": 1, "query": 'label_values(kube_pod_info{namespace=~"$namespace", job=~"$job"}, pod)',
                   "refId": "PrometheusVariableQueryEditor-VariableQuery"},
         "refresh": 2, "regex": "", "sort": 1, "type": "query"},
        {"current": {}, "datasource": DS, "definition": 'label_values(up{job=~"$job"}, instance)',
         "includeAll": True, "multi": True, "name": "instance", "options": [],
         "query": {"qryType": 1, "query": 'label_values(up{job=~"$job"}, instance)',
                   "refId": "PrometheusVariableQueryEditor-VariableQuery"},
         "refresh": 2, "regex": "", "sort": 1, "type": "query"},
        {"auto": True, "auto_count": 30, "auto_min": "10s", "current": {"text": "auto", "value": "$__auto_interval_interval"},
         "name": "interval", "options": [], "query": "1m,5m,10m,30m,1h", "refresh": 2, "type": "interval"},
        {"current": {"text": "0.99", "value": "0.99"}, "name": "quantile", "options": [],
         "query": "0.5,0.9,0.95,0.99", "type": "custom"},
        {"datasource": DS, "filters": [], "name": "Filters", "type": "adhoc"},
    ]
    return {
        "annotations": {"list": [
            {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
             "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"},
            {"datasource": DS, "enable": True, "expr": f'changes(kube_deployment_status_observed_generation{{k8s_namespace_name="{tenant}"}}[2m]) > 0',
             "iconColor": "purple", "name": "Deploys", "step": "60s", "titleFormat": "{{deployment}} rolled out"},
        ]},
        "description": sentence(rng, 20),
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [{"asDropdown": True, "includeVars": True, "keepTime": True, "tags": [tenant],
                   "title": "Team dashboards", "type": "dashboards"}],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": [tenant, rng.choice(["red", "use", "slo", "kubernetes", "jvm", "database"])],
        "templating": {"list": variables},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": f"{tenant} {sentence(rng, 2)[:-1]} {i}" + (" (v2)" if variant else ""),
        "uid": f"{tenant}-d{i}",
        "version": 1 + variant,
        "weekStart": "",
    }


def yq(s):
    """A YAML double-quoted scalar."""
    return json.dumps(s)


def realistic_rule_file(seed, tenant, f, groups):
    rng = random.Random(f"{seed}/{tenant}/rules/{f}")
    ident = tenant.replace("-", "_")
    camel = tenant.title().replace("-", "")
    lines = ["groups:"]
    for g in groups:
        svc = f"{tenant}-{rng.choice(['api', 'web', 'worker', 'gateway', 'db'])}-{g}"
        sel = f'k8s_namespace_name="{tenant}", service_name="{svc}"'
        lines += [f"  - name: {svc}.rules", f"    interval: {rng.choice(['30s', '1m', '2m'])}", "    rules:"]
        for r in range(rng.randint(2, 12)):
            c, h = rng.choice(COUNTERS), rng.choice(HISTOGRAMS)
            by = ", ".join(rng.sample(BY, rng.randint(1, 2)))
            if r % 2 == 0:
                window = rng.choice(["1m", "5m", "30m", "1h"])
                expr = rng.choice([
                    f"sum by ({by}) (rate({c}{{{sel}}}[{window}]))",
                    f"histogram_quantile(0.{rng.choice([5, 9, 99])}, sum by (le, {by}) (rate({h}{{{sel}}}[{window}])))",
                    f'sum by ({by}) (rate({c}{{{sel}, http_response_status_code=~"5.."}}[{window}])) / sum by ({by}) (rate({c}{{{sel}}}[{window}]))',
                ])
                lines += [f"      - record: {ident}:{by.split(',')[0]}:{c}:rate{window}_{g}_{r}",
                          f"        expr: {yq(expr)}"]
                if rng.random() < 0.3:
                    lines += ["        labels:", f"          team: {tenant}"]
            else:
                thr = round(rng.random() * 0.1, 4)
                expr = rng.choice([
                    f'sum(rate({c}{{{sel}, http_response_status_code=~"5.."}}[5m])) / sum(rate({c}{{{sel}}}[5m])) > {thr}',
                    f"histogram_quantile(0.99, sum by (le) (rate({h}{{{sel}}}[5m]))) > {1 + r}",
                    f'increase(kube_pod_container_status_restarts_total{{{sel}, container!~"istio-proxy|linkerd-proxy"}}[15m]) > {r}',
                    f'(node_filesystem_avail_bytes{{{sel}, fstype!~"tmpfs|overlay"}} / node_filesystem_size_bytes{{{sel}}}) < 0.{r + 1}',
                    f"absent(up{{{sel}}} == 1)",
                ])
                lines += [
                    f"      - alert: {camel}{rng.choice(['HighErrorRate', 'SlowRequests', 'PodRestarting', 'DiskFilling', 'TargetDown'])}{g}x{r}",
                    "        expr: |-",
                    f"          {expr}",
                    f"        for: {rng.choice(['0m', '2m', '5m', '15m', '1h'])}",
                    "        labels:",
                    f"          severity: {rng.choice(['page', 'ticket', 'info'])}",
                    f"          team: {tenant}",
                    "        annotations:",
                    "          summary: " + yq(f"{{{{ $labels.job }}}} in {{{{ $labels.namespace }}}}: {sentence(rng, 4)[:-1]}"),
                    "          description: " + yq(f"{svc} is at {{{{ $value | humanizePercentage }}}} (threshold {thr}) for {{{{ $labels.instance }}}}."),
                    f"          runbook_url: https://runbooks.example.com/{tenant}/{svc}",
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
    return len(text.encode())


def git(root, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="b@example.com",
               GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="b@example.com",
               GIT_AUTHOR_DATE="2026-12-01T00:00:00Z", GIT_COMMITTER_DATE="2026-12-01T00:00:00Z")
    # No background auto-gc: it would race the explicit `git gc` below.
    return subprocess.run(["git", "-c", "gc.auto=0", *args], cwd=root, env=env, check=True, capture_output=True, text=True).stdout.strip()


def realistic_tenant(job):
    """Writes one tenant's files; returns (dashboard sizes, query count, rule groups)."""
    out, seed, name, d_per, g_per = job
    write(out, f"tenants/{name}/tenant.yaml", tenant_yaml(name, 3))
    write(out, f"tenants/{name}/sampling.yaml",
          "policies:\n  - { name: errors, type: errors }\n  - { name: base, type: probabilistic, percentage: 10 }\n")
    sizes, queries = [], 0
    for i in range(d_per):
        d = realistic_dashboard(seed, name, i)
        queries += sum(len(p.get("targets", [])) for p in d["panels"])
        queries += sum(len(c.get("targets", [])) for p in d["panels"] for c in p.get("panels", []))
        sizes.append(write(out, f"tenants/{name}/dashboards/f{i % 3}/d{i}.json", json.dumps(d, indent=2)))
    rng = random.Random(f"{seed}/{name}/files")
    files = rng.randint(3, 5)
    for f in range(files):
        groups = list(range(f, g_per, files))
        write(out, f"tenants/{name}/rules/metrics/{rng.choice(['slo', 'alerts', 'recording', 'k8s', 'app'])}-{f}.yaml",
              realistic_rule_file(seed, name, f, groups))
    return sizes, queries, g_per


def setup(out, names):
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    for f in ("mop.yaml", "versions.yaml"):
        shutil.copy(os.path.join(TEMPLATE, f), os.path.join(out, f))
    mop = open(os.path.join(out, "mop.yaml")).read().replace("default_tenant: platform", f"default_tenant: {names[0]}")
    write(out, "mop.yaml", mop)


def finish(out, change):
    git(out, "init", "-q", "-b", "main")
    git(out, "add", "-A")
    git(out, "commit", "-q", "-m", "base")
    base = git(out, "rev-parse", "HEAD")
    change()
    git(out, "add", "-A")
    git(out, "commit", "-q", "-m", "head")
    # A CI clone holds a pack, not loose objects; measure what users get.
    git(out, "gc", "-q")
    return base, git(out, "rev-parse", "HEAD")


def pct(sorted_vals, p):
    return sorted_vals[min(len(sorted_vals) - 1, int(p / 100 * len(sorted_vals)))]


def main_realistic(a):
    names = [f"team-{i:04d}" for i in range(a.tenants)]
    setup(a.out, names)
    d_per, g_per = a.dashboards // a.tenants, a.rule_groups // a.tenants
    jobs = [(a.out, a.seed, n, d_per, g_per) for n in names]
    with Pool(a.jobs) as pool:
        results = pool.map(realistic_tenant, jobs, chunksize=8)
    sizes = sorted(s for r in results for s in r[0])
    queries = sum(r[1] for r in results)
    n_dash = len(sizes)
    step = max(1, n_dash // max(1, a.changed_dashboards)) if a.changed_dashboards else 0
    changed = [(t, i) for t in range(a.tenants) for i in range(d_per)
               if step and (t * d_per + i) % step == 0][:a.changed_dashboards]

    def change():
        for t, i in changed:
            name = names[t]
            d = realistic_dashboard(a.seed, name, i, variant=1)
            write(a.out, f"tenants/{name}/dashboards/f{i % 3}/d{i}.json", json.dumps(d, indent=2))

    base, head = finish(a.out, change)
    print(json.dumps({
        "mode": "realistic", "out": a.out, "seed": a.seed, "base": base, "head": head,
        "tenants": a.tenants, "dashboards": n_dash, "rule_groups": g_per * a.tenants,
        "changed_dashboards": len(changed), "queries": queries,
        "dashboard_bytes": {"total_mb": round(sum(sizes) / 1e6, 1), "min_kb": sizes[0] // 1024,
                            "p50_kb": pct(sizes, 50) // 1024, "p90_kb": pct(sizes, 90) // 1024,
                            "p99_kb": pct(sizes, 99) // 1024, "max_kb": sizes[-1] // 1024},
    }))


def main_legacy(a):
    names = [f"team-{i:04d}" for i in range(a.tenants)]
    setup(a.out, names)
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
            write(a.out, rel, json.dumps(legacy_dashboard(name, i), indent=2))
            if step and (t * d_per + i) % step == 0:
                changed.append(("d", rel, name, i))
        per_file = g_per // files_per
        for f in range(files_per):
            rel = f"tenants/{name}/rules/metrics/rules{f}.yaml"
            write(a.out, rel, legacy_rule_file(name, f * per_file, per_file))
            if step and (t * files_per + f) % step == 0:
                changed.append(("r", rel, name, (f, per_file)))

    def change():
        for kind, rel, name, extra in changed:
            if kind == "d":
                write(a.out, rel, json.dumps(legacy_dashboard(name, extra, variant=1), indent=2))
            else:
                f, per = extra
                write(a.out, rel, legacy_rule_file(name, f * per, per, variant=1))

    base, head = finish(a.out, change)
    print(json.dumps({"mode": "legacy", "out": a.out, "base": base, "head": head, "tenants": a.tenants,
                      "dashboards": d_per * a.tenants, "rule_groups": per_file * files_per * a.tenants,
                      "changed_files": len(changed)}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--legacy", action="store_true", help="the earlier small shape (6 KB dashboards)")
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--dashboards", type=int, default=10000)
    ap.add_argument("--rule-groups", type=int, default=None,
                    help="default 15,000 (realistic) or 5,000 (legacy)")
    ap.add_argument("--seed", default="mop-1", help="realistic mode: the seed of every random choice")
    ap.add_argument("--changed-dashboards", type=int, default=10,
                    help="realistic mode: dashboards the head commit changes")
    ap.add_argument("--change-percent", type=float, default=5.0,
                    help="legacy mode: share of dashboards and rule files the head commit changes")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="realistic mode: writer processes")
    a = ap.parse_args()
    if a.rule_groups is None:
        a.rule_groups = 5000 if a.legacy else 15000
    (main_legacy if a.legacy else main_realistic)(a)


if __name__ == "__main__":
    main()
