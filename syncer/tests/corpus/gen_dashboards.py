#!/usr/bin/env python3
"""Writes the dashboard corpus: a config repository of dashboards shaped like the
ones platform teams bring (community exports for sharing externally with
`__inputs` and `${DS_*}`, dashboards without a uid, schemaVersion < 16 with `rows`,
long uids, nested row panels, library panels, datasource/query/custom variables,
20-300 queries, mixed datasources), and the verdict MOP must give each file.

The verdicts are written here from what each dashboard was built to contain (the
line and column found in the written text, the message Grafana's rule calls for),
not from MOP's output; `syncer/tests/dashboard_corpus.rs` compares the two.

    python3 syncer/tests/corpus/gen_dashboards.py   # rewrites corpus/dashboards/
"""
import json
import os
import random
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "dashboards")
EXPECTED = os.path.join(HERE, "dashboards.expected")

rng = random.Random(20261203)

MOP = """\
cluster: corpus
grafana:
  url: http://grafana:3000
  admin_password:
    file: /run/secrets/grafana
backends:
  mimir:
    url: http://mimir
    overrides: { namespace: monitoring, name: mimir-overrides }
  loki:
    url: http://loki
    overrides: { namespace: monitoring, name: loki-overrides }
  tempo:
    url: http://tempo
    overrides: { namespace: monitoring, name: tempo-overrides }
  pyroscope:
    url: http://pyroscope
    overrides: { namespace: monitoring, name: pyroscope-overrides }
"""

VERSIONS = """\
agent:
  image: ghcr.io/example/mop-agent
  version: 1.2.3
gateway:
  image: ghcr.io/example/mop-gateway
  version: 1.2.3
"""

TENANTS = {
    "payments": "id: payments\nnamespaces: [payments, payments-*]\n",
    "search": "id: search\nnamespaces: [search]\n",
    "infra": "id: infra\nnamespaces: [kube-system, monitoring]\n",
}

METRICS = [
    'sum(rate(node_cpu_seconds_total{{mode!="idle", instance=~"$instance", job=~"$job"}}[$__rate_interval])) by (instance)',
    'node_memory_MemAvailable_bytes{{instance=~"$instance", job=~"$job"}} / node_memory_MemTotal_bytes{{instance=~"$instance"}}',
    'rate(node_network_receive_bytes_total{{device!~"lo|veth.*", instance=~"$instance"}}[$__rate_interval])',
    'histogram_quantile(0.{q}, sum by (le) (rate(http_server_request_duration_seconds_bucket{{job=~"$job", http_route=~"$route"}}[$__rate_interval])))',
    'sum(rate(http_server_request_duration_seconds_count{{job=~"$job", http_response_status_code=~"5.."}}[$__rate_interval])) / sum(rate(http_server_request_duration_seconds_count{{job=~"$job"}}[$__rate_interval]))',
    'sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{{namespace=~"$namespace", container!=""}}[$__rate_interval]))',
    'sum by (namespace, pod) (container_memory_working_set_bytes{{namespace=~"$namespace", container!=""}})',
    'kube_deployment_status_replicas_available{{namespace=~"$namespace"}} / kube_deployment_spec_replicas{{namespace=~"$namespace"}}',
    'increase(kube_pod_container_status_restarts_total{{namespace=~"$namespace"}}[1h]) > {n}',
    '1 - (node_filesystem_avail_bytes{{fstype!~"tmpfs|overlay", instance=~"$instance"}} / node_filesystem_size_bytes{{fstype!~"tmpfs|overlay", instance=~"$instance"}})',
    'sum(rate(pg_stat_database_xact_commit{{datname=~"$db", instance=~"$instance"}}[$__rate_interval]))',
    'redis_connected_clients{{instance=~"$instance"}}',
    'sum(rate(nginx_http_requests_total{{status=~"{c}..", instance=~"$instance"}}[5m])) by (status)',
    'topk({n}, sum by (http_route) (rate(http_server_request_duration_seconds_count{{job=~"$job"}}[$__rate_interval])))',
    'avg_over_time(up{{job=~"$job"}}[{n}m])',
]

LOGS = [
    'sum by (level) (count_over_time({{namespace="$namespace", app=~"$app"}} | json | level=~"error|warn" [$__interval]))',
    '{{namespace="$namespace", app=~"$app"}} |= "$search" | logfmt | line_format "{{{{.msg}}}}"',
    'topk({n}, sum by (path) (rate({{namespace="$namespace"}} | json | status >= 500 [5m])))',
]

PANEL_TYPES = ["timeseries", "stat", "gauge", "table", "bargauge", "heatmap"]
OLD_TYPES = ["graph", "singlestat", "table"]


def expr(logs=False):
    t = rng.choice(LOGS if logs else METRICS)
    return t.format(q=rng.choice([5, 9, 99]), n=rng.randint(1, 30), c=rng.randint(2, 5))


class Dash:
    """One dashboard under construction and the verdicts it must get."""

    def __init__(self, tenant, folder, name):
        self.tenant, self.folder, self.name = tenant, folder, name
        self.path = f"tenants/{tenant}/dashboards/{folder}/{name}.json"
        self.model = {}
        # (severity, locate, message): locate(text) -> byte offset of the key.
        self.verdicts = []
        self.next_id = 1

    def pid(self):
        i = self.next_id
        self.next_id += 1
        return i


def target(ref, ds, logs=False, mixed_ds=None):
    t = {"datasource": ds, "editorMode": "code", "expr": expr(logs),
         "legendFormat": rng.choice(["{{instance}}", "{{pod}}", "__auto", "{{status}}"]),
         "range": True, "refId": ref}
    if mixed_ds is not None:
        t["datasource"] = mixed_ds
    return t


def modern_panel(d, ds, n_targets, logs=False, y=0, title=None):
    refs = [chr(ord("A") + i) for i in range(n_targets)]
    p = {
        "datasource": ds,
        "fieldConfig": {
            "defaults": {
                "color": {"mode": "palette-classic"},
                "custom": {"drawStyle": "line", "fillOpacity": rng.choice([0, 10, 25]),
                           "lineWidth": 1, "showPoints": "never", "spanNulls": False},
                "mappings": [],
                "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                             {"color": "red", "value": 80}]},
                "unit": rng.choice(["percentunit", "bytes", "reqps", "s", "short"]),
            },
            "overrides": [],
        },
        "gridPos": {"h": 8, "w": 12, "x": rng.choice([0, 12]), "y": y},
        "id": d.pid(),
        "options": {"legend": {"calcs": ["mean", "max"], "displayMode": "table", "placement": "bottom"},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [target(r, ds, logs) for r in refs],
        "title": title or rng.choice(["CPU busy", "Memory used", "Requests", "Errors", "Latency p99",
                                      "Restarts", "Disk used", "Network in", "Connections", "Commits/s"]) + f" {d.next_id}",
        "type": "logs" if logs else rng.choice(PANEL_TYPES),
    }
    return p


def variables(ds_var="datasource", ds_query="${datasource}", plugin="prometheus", extra_ds=True):
    vs = []
    if extra_ds:
        vs.append({"current": {}, "hide": 0, "includeAll": False, "label": "Data source", "multi": False,
                   "name": ds_var, "options": [], "query": plugin, "refresh": 1, "regex": "", "type": "datasource"})
    vs += [
        {"current": {}, "datasource": {"type": plugin, "uid": ds_query}, "definition": "label_values(up, job)",
         "hide": 0, "includeAll": True, "multi": True, "name": "job",
         "query": {"query": "label_values(up, job)", "refId": "StandardVariableQuery"},
         "refresh": 2, "regex": "", "sort": 1, "type": "query"},
        {"current": {}, "datasource": {"type": plugin, "uid": ds_query}, "definition": 'label_values(up{job=~"$job"}, instance)',
         "hide": 0, "includeAll": True, "multi": True, "name": "instance",
         "query": {"query": 'label_values(up{job=~"$job"}, instance)', "refId": "StandardVariableQuery"},
         "refresh": 2, "regex": "", "sort": 1, "type": "query"},
        {"current": {"text": "5m", "value": "5m"}, "hide": 0, "name": "window",
         "options": [{"selected": True, "text": v, "value": v} for v in ["1m", "5m", "15m", "1h"]],
         "query": "1m,5m,15m,1h", "type": "custom"},
    ]
    return vs


BUILTIN_ANNOTATION = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                      "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}


def modern(d, uid, title, queries, ds=None, rows=0, logs=False, variables_=None):
    ds = ds or {"type": "prometheus", "uid": "${datasource}"}
    panels, y, left = [], 0, queries
    row_left = rows
    while left > 0:
        if row_left and rng.random() < 0.2:
            # A collapsed row holds its panels inside itself.
            inner = []
            for _ in range(rng.randint(1, 3)):
                n = min(left, rng.randint(1, 4))
                if n <= 0:
                    break
                inner.append(modern_panel(d, ds, n, logs, y))
                left -= n
            panels.append({"collapsed": True, "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "id": d.pid(),
                           "panels": inner, "title": f"Row {y}", "type": "row"})
            row_left -= 1
        else:
            n = min(left, rng.randint(1, 4))
            panels.append(modern_panel(d, ds, n, logs, y))
            left -= n
        y += 8
    m = {
        "annotations": {"list": [dict(BUILTIN_ANNOTATION)]},
        "editable": True, "fiscalYearStartMonth": 0, "graphTooltip": 1, "id": rng.randint(1, 900),
        "links": [], "liveNow": False, "panels": panels, "refresh": rng.choice(["30s", "1m", ""]),
        "schemaVersion": rng.choice([36, 37, 38, 39]), "tags": ["corpus"],
        "templating": {"list": variables_ if variables_ is not None else variables()},
        "time": {"from": "now-6h", "to": "now"}, "timepicker": {}, "timezone": "browser",
        "title": title, "version": rng.randint(1, 40), "weekStart": "",
    }
    if uid is not None:
        m["uid"] = uid
    d.model = m
    return m


def shared_export(d, uid, title, queries, inputs=("prometheus",), rows=0, constants=()):
    """What "Export → Export for sharing externally" writes."""
    names = {"prometheus": "DS_PROMETHEUS", "loki": "DS_LOKI", "tempo": "DS_TEMPO",
             "grafana-pyroscope-datasource": "DS_PYROSCOPE", "influxdb": "DS_INFLUXDB",
             "__expr__": "DS___EXPR__"}
    ins = [{"name": names[p], "label": p.title(), "description": "", "type": "datasource",
            "pluginId": p, "pluginName": p.title()} for p in inputs]
    for name, value in constants:
        ins.append({"name": name, "type": "constant", "label": name.lower(), "value": value, "description": ""})
    ds = {"type": inputs[0], "uid": "${" + names[inputs[0]] + "}"}
    vs = variables(ds_query="${" + names[inputs[0]] + "}", extra_ds=False)
    m = modern(d, uid, title, queries, ds=ds, rows=rows, variables_=vs)
    del m["id"]
    m = {"__inputs": ins,
         "__elements": {},
         "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.4.1"}]
         + [{"type": "datasource", "id": p, "name": p.title(), "version": "1.0.0"} for p in inputs],
         **m}
    d.model = m
    return m, names


def old_rows(d, uid, title, queries, ds="${DS_PROMETHEUS}", inputs=True):
    """schemaVersion < 16: panels live in `rows`, datasources are names or ${DS_*}."""
    rows, left = [], queries
    while left > 0:
        panels = []
        for _ in range(rng.randint(1, 4)):
            n = min(left, rng.randint(1, 3))
            if n <= 0:
                break
            panels.append({
                "aliasColors": {}, "bars": False, "dashLength": 10, "datasource": ds, "fill": 1,
                "id": d.pid(), "legend": {"avg": False, "current": False, "max": False, "show": True},
                "lines": True, "linewidth": 1, "span": rng.choice([4, 6, 12]),
                "targets": [{"expr": expr(), "format": "time_series", "intervalFactor": 2,
                             "legendFormat": "{{instance}}", "refId": chr(ord("A") + i), "step": 10} for i in range(n)],
                "title": rng.choice(["Load", "Memory", "Disk IO", "Network", "Context switches"]) + f" {d.next_id}",
                "type": rng.choice(OLD_TYPES), "yaxes": [{"format": "short", "show": True}, {"format": "short", "show": True}],
            })
            left -= n
        rows.append({"collapse": False, "height": "250px", "panels": panels, "repeat": None,
                     "showTitle": True, "title": f"Row {len(rows) + 1}", "titleSize": "h6"})
    m = {}
    if inputs:
        m["__inputs"] = [{"name": "DS_PROMETHEUS", "label": "Prometheus", "description": "", "type": "datasource",
                          "pluginId": "prometheus", "pluginName": "Prometheus"}]
        m["__requires"] = [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "4.6.3"}]
    m.update({
        "annotations": {"list": []}, "editable": True, "gnetId": rng.randint(100, 15000), "graphTooltip": 0,
        "hideControls": False, "id": None, "links": [], "refresh": "1m", "rows": rows,
        "schemaVersion": rng.choice([12, 13, 14, 15]), "style": "dark", "tags": ["prometheus"],
        "templating": {"list": [
            {"allValue": None, "current": {}, "datasource": ds, "hide": 0, "includeAll": True, "label": None,
             "multi": True, "name": "instance", "options": [], "query": "label_values(node_uname_info, instance)",
             "refresh": 1, "regex": "", "sort": 1, "tagValuesQuery": "", "tags": [], "tagsQuery": "",
             "type": "query", "useTags": False}]},
        "time": {"from": "now-24h", "to": "now"}, "timezone": "browser", "title": title, "version": 3,
    })
    if uid is not None:
        m["uid"] = uid
    d.model = m
    return m


def text_of(d):
    return json.dumps(d.model, indent=2, ensure_ascii=False) + "\n"


def line_col(text, offset):
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def top_key(key):
    return lambda text: text.index(f'\n  "{key}":') + 3


def key_before(marker, key='"datasource"'):
    """The `key` that holds the first occurrence of `marker`."""
    return lambda text: text.rindex(key, 0, text.index(marker))


def last_datasource(text):
    return text.rindex('"datasource"')


def panel_datasource(pid):
    """An old-style panel's `datasource`, which comes just before its `id`."""
    return lambda text: text.rindex('"datasource"', 0, text.index(f'"id": {pid},'))


OWN_HINT = ("the tenant's organisation has the datasources Mimir, Loki, Tempo (and Pyroscope) that MOP creates; "
            "use a datasource variable or `__inputs` so the panel follows the tenant")
UID_HINT = "give each dashboard of a tenant its own uid; in one Grafana organisation one would overwrite the other"
TITLE_HINT = ("Grafana keeps one dashboard per title in a folder and would replace one with the other; "
              "rename one or move it to another folder")
LIB_HINT = "unlink the library panel in Grafana (its JSON then lives in the dashboard) and export again"


def build():
    out = []

    def new(tenant, folder, name):
        d = Dash(tenant, folder, name)
        out.append(d)
        return d

    # --- modern dashboards with datasource variables (valid) ---
    for i, (t, f, n, q) in enumerate([
        ("payments", "services", "checkout-red", 24), ("payments", "services", "ledger-latency", 60),
        ("payments", "databases", "postgres-overview", 120), ("search", "services", "query-api", 36),
        ("search", "kubernetes", "compute-resources-namespace", 90), ("infra", "kubernetes", "cluster-overview", 300),
        ("infra", "nodes", "node-exporter-full", 220), ("infra", "kubernetes", "kubelet", 48),
    ]):
        d = new(t, f, n)
        modern(d, f"{t[:3]}-{n}"[:40], n.replace("-", " ").title(), q, rows=3)

    # --- the same community dashboard in two tenants: uids are per org (valid) ---
    for t in ["payments", "search", "infra"]:
        d = new(t, "community", "redis")
        modern(d, "redis-dashboard-v2", "Redis", 40, rows=1)

    # --- shared exports with __inputs (valid) ---
    for t, n, q, ins, cons in [
        ("payments", "jvm-micrometer", 80, ("prometheus",), ()),
        ("search", "elasticsearch-exporter", 150, ("prometheus",), (("VAR_CLUSTER", "search-prod"),)),
        ("infra", "coredns", 30, ("prometheus",), ()),
        ("infra", "loki-logs-app", 20, ("loki", "prometheus"), ()),
        ("payments", "kafka-exporter", 64, ("prometheus", "__expr__"), ()),
        ("infra", "nginx-ingress", 110, ("prometheus",), (("VAR_INGRESS_CLASS", "nginx"),)),
    ]:
        d = new(t, "community", n)
        m, names = shared_export(d, f"{n}-imported", n.replace("-", " ").title(), q, inputs=ins, rows=2, constants=cons)
        if "loki" in ins:
            # Mixed datasources: one panel queries Loki and Prometheus through both inputs.
            m["panels"].append({"datasource": {"type": "datasource", "uid": "-- Mixed --"}, "id": d.pid(),
                                "gridPos": {"h": 8, "w": 24, "x": 0, "y": 400}, "title": "Errors vs log lines",
                                "type": "timeseries", "targets": [
                                    target("A", {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}),
                                    target("B", {"type": "loki", "uid": "${DS_LOKI}"}, logs=True)]})

    # --- shared exports without a uid: one is derived from the path (valid) ---
    for t, n in [("payments", "grpc-server"), ("search", "go-runtime")]:
        d = new(t, "community", n)
        shared_export(d, None, n.replace("-", " ").title(), 28)
    d = new("infra", "community", "uid-null")
    shared_export(d, None, "Uid Null", 22)
    d.model["uid"] = None

    # --- old schemaVersion with rows (valid: Grafana migrates them) ---
    for t, n, q in [("infra", "node-exporter-0-16", 70), ("infra", "prometheus-2-stats", 26), ("search", "blackbox", 33)]:
        d = new(t, "legacy", n)
        old_rows(d, None if n == "blackbox" else n, n.replace("-", " ").title(), q)

    # --- old rows naming a datasource by a name the tenant does not have (warning) ---
    d = new("payments", "legacy", "mysql-overview")
    old_rows(d, "mysql-overview", "MySQL Overview", 45, ds="Prometheus", inputs=False)
    first_panel = d.model["rows"][0]["panels"][0]
    d.verdicts.append(("warning", last_datasource,
                       f'variable "instance": datasource "Prometheus" is not one of this tenant\'s datasources', OWN_HINT))
    for r in d.model["rows"]:
        for p in r["panels"]:
            d.verdicts.append(("warning", panel_datasource(p["id"]), f'panel "{p["title"]}" (id {p["id"]}): datasource "Prometheus" is not one of this tenant\'s datasources', OWN_HINT))
    assert first_panel

    # --- long uids: 40 is the most Grafana takes ---
    d = new("search", "services", "uid-40")
    modern(d, "u" * 40, "Forty", 20)
    d = new("search", "services", "uid-41")
    modern(d, "search-services-query-api-latency-overview", "Forty One", 20)
    d.verdicts.append(("error", top_key("uid"),
                       'dashboard uid "search-services-query-api-latency-overview" is 42 characters; Grafana allows at most 40',
                       "shorten the uid; links to the dashboard use it, so pick one and keep it"))

    # --- folders Grafana could not take as uids: slug + hash (valid) ---
    d = new("infra", "Kubernetes Compute", "pods")
    modern(d, "k8s-pods", "Pods", 30, rows=2)
    d = new("infra", "Übersicht", "dienste")
    modern(d, "uebersicht-dienste", "Dienste", 20)

    # --- Tempo and Pyroscope panels through inputs (valid: both backends exist) ---
    d = new("payments", "tracing", "service-graph")
    m, _ = shared_export(d, "service-graph", "Service Graph", 20, inputs=("prometheus", "tempo", "grafana-pyroscope-datasource"))
    m["panels"].append({"datasource": {"type": "tempo", "uid": "${DS_TEMPO}"}, "id": d.pid(), "title": "Traces",
                        "type": "traces", "gridPos": {"h": 8, "w": 24, "x": 0, "y": 500},
                        "targets": [{"datasource": {"type": "tempo", "uid": "${DS_TEMPO}"}, "queryType": "traceqlSearch", "refId": "A"}]})
    m["panels"].append({"datasource": {"type": "grafana-pyroscope-datasource", "uid": "${DS_PYROSCOPE}"}, "id": d.pid(),
                        "title": "CPU profile", "type": "flamegraph", "gridPos": {"h": 8, "w": 24, "x": 0, "y": 508},
                        "targets": [{"datasource": {"type": "grafana-pyroscope-datasource", "uid": "${DS_PYROSCOPE}"},
                                     "profileTypeId": "process_cpu:cpu:nanoseconds:cpu:nanoseconds", "refId": "A"}]})

    # --- a ${DS_*} resolved by a variable of that name, not by __inputs (valid) ---
    d = new("search", "community", "ds-variable")
    vs = variables(ds_var="DS_PROMETHEUS", ds_query="${DS_PROMETHEUS}")
    modern(d, "ds-variable", "DS Variable", 26, ds={"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, variables_=vs)

    # --- a ${DS_*} nothing resolves (error, naming the panel) ---
    d = new("payments", "community", "half-exported")
    modern(d, "half-exported", "Half Exported", 22)
    p = d.model["panels"][0]
    p["datasource"] = {"type": "prometheus", "uid": "${DS_THANOS}"}
    label = f'panel "{p["title"]}" (id {p["id"]})'
    d.verdicts.append(("error", key_before('"uid": "${DS_THANOS}"'),
                       f"{label}: datasource ${{DS_THANOS}} is neither an `__inputs` entry nor a dashboard variable",
                       'add a variable named DS_THANOS of type datasource to `templating.list`, or an `__inputs` entry {"name": "DS_THANOS", "type": "datasource", "pluginId": "prometheus"}'))

    # --- an input of a type no tenant has (error where used) ---
    d = new("infra", "legacy", "telegraf-system")
    old_rows(d, "telegraf-system", "Telegraf System", 21, ds="${DS_INFLUXDB}", inputs=False)
    d.model = {"__inputs": [{"name": "DS_INFLUXDB", "label": "InfluxDB", "description": "", "type": "datasource",
                             "pluginId": "influxdb", "pluginName": "InfluxDB"}], **d.model}
    msg = ("datasource ${DS_INFLUXDB} is an `__inputs` entry of type \"influxdb\", and this tenant has no influxdb datasource")
    hint = ("MOP gives each tenant Mimir (prometheus), Loki, Tempo and Pyroscope datasources; "
            "point the panel at one of them or remove it")
    d.verdicts.append(("error", last_datasource, f'variable "instance": {msg}', hint))
    for r in d.model["rows"]:
        for p in r["panels"]:
            d.verdicts.append(("error", panel_datasource(p["id"]), f'panel "{p["title"]}" (id {p["id"]}): {msg}', hint))

    # --- a hard-coded datasource uid from another Grafana (warning with the panel) ---
    d = new("search", "services", "indexer")
    modern(d, "indexer", "Indexer", 40)
    p = d.model["panels"][-1]
    p["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
    d.verdicts.append(("warning", key_before('"uid": "P1809F7CD0C75ACF3"'),
                       f'panel "{p["title"]}" (id {p["id"]}): datasource "P1809F7CD0C75ACF3" is not one of this tenant\'s datasources', OWN_HINT))

    # --- library panels (warning) ---
    d = new("payments", "services", "fraud-scoring")
    m, _ = shared_export(d, "fraud-scoring", "Fraud Scoring", 30)
    lib = {"gridPos": {"h": 8, "w": 12, "x": 0, "y": 600}, "id": d.pid(),
           "libraryPanel": {"uid": "b8d3e7a1-lib", "name": "Shared SLO burn rate"}, "title": "SLO burn rate"}
    m["panels"].append(lib)
    m["__elements"] = {"b8d3e7a1-lib": {"name": "Shared SLO burn rate", "uid": "b8d3e7a1-lib", "kind": 1,
                                        "model": {"type": "timeseries", "title": "SLO burn rate"}}}
    d.verdicts.append(("warning", lambda text: text.index('"libraryPanel"'),
                       f'panel "SLO burn rate" (id {lib["id"]}): library panel "Shared SLO burn rate" (uid "b8d3e7a1-lib") is not created by MOP; the tenant\'s organisation shows it only if someone created it there', LIB_HINT))

    # --- two dashboards of one tenant with one uid (error at the uid line of the
    # later one by path) ---
    a = new("search", "kubernetes", "workloads")
    modern(a, "k8s-workloads", "Workloads", 32)
    b = new("search", "kubernetes", "workloads2")
    modern(b, "k8s-workloads", "Workloads (copy)", 32)
    b.verdicts.append(("error", top_key("uid"), None, UID_HINT))
    b.dup_of = (a, "uid")

    # --- the same title twice in a folder (error at the second's title line) ---
    a = new("infra", "nodes", "disk-io")
    modern(a, "disk-io", "Disk I/O", 24)
    b = new("infra", "nodes", "disk-io2")
    modern(b, "disk-io-v2", "disk I/O", 24)
    b.verdicts.append(("error", top_key("title"), None, TITLE_HINT))
    b.dup_of = (a, "title")
    # --- more valid shapes: a big API server board, Loki logs through a Loki
    # variable, panels naming the tenant's datasource by name, server-side expressions ---
    d = new("infra", "kubernetes", "apiserver")
    modern(d, "k8s-apiserver", "API server", 180, rows=4)
    d = new("payments", "logs", "app-logs")
    modern(d, "payments-app-logs", "App logs", 20, logs=True, ds={"type": "loki", "uid": "${loki}"},
           variables_=[{"name": "loki", "type": "datasource", "query": "loki", "current": {}, "hide": 0},
                       {"name": "namespace", "type": "custom", "query": "payments,payments-canary"},
                       {"name": "app", "type": "query", "datasource": {"type": "loki", "uid": "${loki}"},
                        "query": "label_values(app)"},
                       {"name": "search", "type": "textbox", "query": ""}])
    d = new("search", "services", "by-name")
    modern(d, "search-by-name", "By name", 24, ds="Mimir")
    d = new("payments", "services", "slo-math")
    m = modern(d, "payments-slo-math", "SLO math", 30)
    m["panels"][0]["targets"].append({"datasource": {"type": "__expr__", "uid": "__expr__"}, "expression": "$A / $B",
                                      "refId": "Z", "type": "math"})
    return out


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(ROOT)
    with open(os.path.join(ROOT, "mop.yaml"), "w") as f:
        f.write(MOP)
    with open(os.path.join(ROOT, "versions.yaml"), "w") as f:
        f.write(VERSIONS)
    for t, spec in TENANTS.items():
        os.makedirs(os.path.join(ROOT, "tenants", t), exist_ok=True)
        with open(os.path.join(ROOT, "tenants", t, "tenant.yaml"), "w") as f:
            f.write(spec)
    dashes = build()
    texts = {d.path: text_of(d) for d in dashes}
    lines = []
    for d in dashes:
        path = os.path.join(ROOT, d.path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(texts[d.path])
        text = texts[d.path]
        if not d.verdicts:
            lines.append(f"{d.path}\tvalid")
        for sev, locate, msg, hint in d.verdicts:
            if hasattr(d, "dup_of") and msg is None:
                first, what = d.dup_of
                fl, _ = line_col(texts[first.path], top_key(what)(texts[first.path]))
                if what == "uid":
                    msg = f'dashboard uid "{d.model["uid"]}" is also used by {first.path}:{fl}'
                else:
                    msg = f'dashboard title "{d.model["title"]}" is also used in folder "{d.folder}" by {first.path}:{fl}'
            l, c = line_col(text, locate(text))
            at = f"{l}:{c}"
            lines.append(f"{d.path}\t{sev}\t{at}\t{msg}\t{hint}")
    with open(EXPECTED, "w", encoding="utf-8") as f:
        f.write("# path\tverdict[\tline:col\tmessage\thint]; written by gen_dashboards.py\n")
        f.write("\n".join(sorted(lines)) + "\n")
    print(f"{len(dashes)} dashboards, {sum(len(d.verdicts) for d in dashes)} expected diagnostics")


if __name__ == "__main__":
    main()
