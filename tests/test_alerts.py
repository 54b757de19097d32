"""The alert rules of the prometheus component, run by the real `promtool`."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.observability import metric_names, rule_groups

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)"
)
TESTS = Path(__file__).resolve().parent / "alerts" / "restik_test.yaml"
ALERTS = {
    "RestikBackupFailed",
    "RestikBackupTooOld",
    "RestikBackupNotReady",
    "RestikCheckFailed",
    "RestikCheckTooOld",
    "RestikControllerStalled",
    "RestikControllerAbsent",
    "RestikRestoreFailed",
}


def rules() -> list[dict]:
    return [r for g in rule_groups() for r in g["rules"]]


@pytest.fixture
def rule_file(tmp_path) -> Path:
    """The PrometheusRule's spec as a plain rule file, next to a copy of the unit tests."""
    path = tmp_path / "restik-rules.yaml"
    with path.open("w") as f:
        YAML().dump({"groups": rule_groups()}, f)
    shutil.copy(TESTS, tmp_path / TESTS.name)
    return path


def test_every_alert_has_severity_summary_description_and_runbook():
    assert {r["alert"] for r in rules()} == ALERTS
    for rule in rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        for key in ("summary", "description", "runbook"):
            assert rule["annotations"][key].strip(), (rule["alert"], key)


def test_every_alert_is_unit_tested_firing_and_quiet():
    tests = YAML(typ="safe").load(TESTS.read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    for alert in ALERTS:
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in mine), f"{alert} never fires in the tests"
        assert any(not c["exp_alerts"] for c in mine), f"{alert} is never quiet in the tests"


@needs_promtool
def test_promtool_checks_the_rules(rule_file):
    proc = subprocess.run(
        [PROMTOOL, "check", "rules", str(rule_file)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(ALERTS)} rules found" in proc.stdout


@needs_promtool
def test_promtool_unit_tests_pass(rule_file):
    proc = subprocess.run(
        [PROMTOOL, "test", "rules", TESTS.name],
        cwd=rule_file.parent,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@needs_promtool
def test_promtool_catches_a_wrong_threshold(rule_file):
    """The unit tests can fail: with three intervals instead of two they do."""
    groups = copy.deepcopy(rule_groups())  # the built objects are cached: never edit them
    for group in groups:
        for rule in group["rules"]:
            if rule["alert"] == "RestikBackupTooOld":
                rule["expr"] = rule["expr"].replace("> 2 *", "> 3 *")
    with rule_file.open("w") as f:
        YAML().dump({"groups": groups}, f)
    proc = subprocess.run(
        [PROMTOOL, "test", "rules", TESTS.name],
        cwd=rule_file.parent,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "RestikBackupTooOld" in proc.stdout + proc.stderr


def test_metric_names_of_the_rules():
    """What the rules read (checked against real scrapes in tests/test_dashboard.py)."""
    names = set().union(*(metric_names(r["expr"]) for r in rules()))
    assert "restik_backup_last_run_success" in names
    assert "restik_restore_phase" in names
    assert "time" not in names and "max" not in names and "namespace" not in names


def test_monitors_scrape_the_controller_and_every_sidecar_keeping_their_labels():
    from reconciler.api.constants import METRICS_PORT_NAME
    from tests.observability import prometheus_objects

    objs = {(o["kind"], o["metadata"]["name"]): o for o in prometheus_objects()}
    pods = objs[("PodMonitor", "restik-sidecars")]["spec"]
    assert pods["namespaceSelector"] == {"any": True} and pods["selector"] == {}
    (endpoint,) = pods["podMetricsEndpoints"]
    assert endpoint["port"] == METRICS_PORT_NAME and endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True
    (endpoint,) = objs[("ServiceMonitor", "restik-controller")]["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    dashboard = objs[("ConfigMap", "restik-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert ("PrometheusRule", "restik") in objs
