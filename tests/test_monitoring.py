"""The shipped Grafana dashboard and Prometheus alert rules: well formed, and querying only
metrics that a running daemon really exposes. promtool, where installed, checks the PromQL and
runs the alerts' unit tests (systemd/alerts.test.yml)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO

DASHBOARD = REPO / "systemd" / "grafana-dashboard.json"
ALERTS = REPO / "systemd" / "alerts.yml"
ALERT_TESTS = REPO / "systemd" / "alerts.test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")

# Series Prometheus makes itself for every target; not the daemon's to expose.
SYNTHETIC = {"up"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
KEYWORDS |= {"and", "or", "unless", "inf", "nan"}
# Grafana's variables, replaced by what Prometheus would see.
GRAFANA_VARS = {"$__rate_interval": "5m", "$instance": ".*", "${datasource}": ""}
REQUIRED_ALERTS = {
    "AssetmgrNotReady": "5m",
    "AssetmgrRejectedAssets": "10m",
    "AssetmgrPropagationSlow": "10m",
    "AssetmgrOverflowRescans": None,
    "AssetmgrValkeyDown": "2m",
    "AssetmgrSyncStale": "5m",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers, ranges, strings and
    grouping labels removed; an identifier before `(` is a function or aggregation)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        if not match.group(2) and match.group(1).lower() not in KEYWORDS:
            names.add(match.group(1))
    return names


def test_metric_names_finds_selectors_not_functions_labels_or_keywords():
    expr = (
        'histogram_quantile(0.99, sum by (le, job) (rate(a_bucket{x="y", le=~"1.*"}[5m])))'
        " > 1 and on (job) b_total offset 5m == bool 1 or time() - c"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of every panel, Grafana variables substituted."""
    exprs = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            exprs.append(expr)
    return exprs


def template_metrics() -> set[str]:
    """Metric names in the template variables' `label_values(metric, label)` queries."""
    names = set()
    for var in dashboard()["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query["query"])
            assert match, query
            names.add(match.group(1))
    return names


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_dashboard_is_grafana_json_with_the_panels_an_operator_needs():
    doc = dashboard()
    assert doc["uid"] and doc["title"] and doc["schemaVersion"] >= 30
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in doc["panels"]:
        assert panel["type"] in ("stat", "timeseries", "gauge", "table"), panel["title"]
        assert panel["targets"] and set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert [t["refId"] for t in panel["targets"]] == [
            chr(65 + i) for i in range(len(panel["targets"]))
        ]
    exprs = " | ".join(dashboard_exprs())
    for needed in (
        "min(assetmgr_ready",
        "min(assetmgr_leader",
        "min(assetmgr_valkey_up",
        "sum by (state) (assetmgr_assets",
        "histogram_quantile(0.5, sum by (le) (rate(assetmgr_propagation_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(assetmgr_propagation_seconds_bucket",
        "sum by (op) (rate(assetmgr_writes_total",
        "sum by (reason) (increase(assetmgr_rejections_total",
        "max by (stage) (assetmgr_queue_depth",
        "sum by (reason) (increase(assetmgr_rescans_total",
        "time() - max(assetmgr_last_sync_timestamp_seconds",
    ):
        assert needed in exprs, needed


def test_alert_rules_are_well_formed_and_cover_the_operating_cases():
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    assert set(REQUIRED_ALERTS) <= set(names)
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"])
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert rule["expr"].count("(") == rule["expr"].count(")")
        if "for" in rule:
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule
        if rule["alert"] in REQUIRED_ALERTS:
            assert rule.get("for") == REQUIRED_ALERTS[rule["alert"]], rule["alert"]
    by_name = {rule["alert"]: rule["expr"] for rule in rules}
    assert 'reason="overflow"' in by_name["AssetmgrOverflowRescans"]
    assert "histogram_quantile(0.99" in by_name["AssetmgrPropagationSlow"]
    assert "> 1" in by_name["AssetmgrPropagationSlow"]
    assert "3 * 300" in by_name["AssetmgrSyncStale"]
    # Every alert has a unit test in alerts.test.yml.
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    tested = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"]}
    assert tested == set(names)


def test_every_query_names_only_metrics_a_running_daemon_exposes(root, start_daemon):
    daemon = start_daemon(root)
    status, body = daemon.get("/metrics")
    assert status == 200
    exposed = {
        sample.name
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    from_dashboard = set().union(*map(metric_names, dashboard_exprs())) | template_metrics()
    from_alerts = set().union(*(metric_names(rule["expr"]) for rule in alert_rules()))
    assert from_dashboard - exposed == set()
    assert from_alerts - exposed - SYNTHETIC == set()
    # And they do look at the daemon: most families of docs/operating.md are on the dashboard.
    assert len({n for n in from_dashboard if n.startswith("assetmgr_")}) >= 14


@needs_promtool
def test_alert_rules_pass_promtool_check_and_their_unit_tests():
    check = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [PROMTOOL, "test", "rules", ALERT_TESTS.name],
        capture_output=True,
        cwd=ALERT_TESTS.parent,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path):
    """promtool parses every panel query, given to it as a recording rule."""
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(rules)} rules found".encode() in check.stdout
