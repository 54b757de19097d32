"""The Grafana dashboard, and every metric the dashboard and the alert rules read checked
against the real /metrics of a running sidecar and controller (on the API emulator)."""

from __future__ import annotations

import signal
import urllib.request

import pytest

from tests.factories import free_port, needs_restic, wait_for
from tests.factories.cluster import finish, restik
from tests.observability import dashboard, dashboard_queries, metric_names, rule_groups

SUFFIXES = {"histogram": ("_bucket", "_sum", "_count")}


def exported_names(text: str) -> set[str]:
    """The metric names a scrape declares (# TYPE lines: a labeled metric that has no
    sample yet, such as restik_patches_total before the first patch, still counts)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names |= {name + suffix for suffix in SUFFIXES.get(kind, ("",))}
    return {n for n in names if n.startswith("restik_")}


def test_dashboard_is_valid_grafana_json():
    dash = dashboard()
    assert dash["uid"] == "restik-backups" and dash["title"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert {"x", "y", "w", "h"} <= p["gridPos"].keys(), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["refId"], p["title"]
            assert t["datasource"]["uid"] == "${datasource}"
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for what in ("last success", "duration", "bytes", "failed", "snapshots", "cycle"):
        assert what in titles, what
    for what in ("patches", "restarts", "errors"):
        assert what in titles, what
    # every $variable a query uses is defined
    defined = {v["name"] for v in dash["templating"]["list"]} | {"__rate_interval", "__range"}
    for expr in dashboard_queries(dash):
        for word in expr.split("$")[1:]:
            name = word.split('"')[0].split("]")[0].split(",")[0].strip("{}")
            assert name in defined, (name, expr)


def test_metric_names_parser():
    assert metric_names(
        'sum by (le) (rate(restik_cycle_duration_seconds_bucket{ns=~"$x"}[$__rate_interval]))'
    ) == {"restik_cycle_duration_seconds_bucket"}
    assert metric_names(
        'time() - max by (namespace) ({__name__=~"a_b|c_d", x="y"}) > 2 * max(e_f offset 5m)'
    ) == {"a_b", "c_d", "e_f"}
    assert metric_names("count(x == 0) and on (pod) y") == {"x", "y"}
    assert metric_names('label_values(a_total{namespace=~"$namespace"}, backup)') == {"a_total"}


@needs_restic
@pytest.mark.slow
def test_dashboard_and_rules_read_only_metrics_restik_exports(world):
    world.backup(schedule="@every 1s", check={"schedule": "@every 1s"})  # spec.check's too
    sidecar = world.sidecar("--workload", "Deployment/www")
    world.wait_events(1)
    wait_for(lambda: "lastSuccessfulCheckTime" in world.status(), 30, [sidecar])
    port = free_port()
    kubeconfig = world.tmp / "kubeconfig"
    controller = restik(
        "run",
        "--interval",
        "5m",
        "--kubeconfig",
        str(kubeconfig),
        "--metrics-port",
        str(port),
        "--metrics-address",
        "127.0.0.1",
    )
    try:

        def scrape() -> str:
            try:
                url = f"http://127.0.0.1:{port}/metrics"
                return urllib.request.urlopen(url, timeout=5).read().decode()
            except OSError:
                return ""

        wait_for(lambda: "restik_backup_ready{" in scrape(), 30, [sidecar])
        controller_text = scrape()
    finally:
        controller.send_signal(signal.SIGTERM)
        finish(controller)
    code, sidecar_text = sidecar.get("/metrics")
    assert code == 200
    exported = exported_names(sidecar_text) | exported_names(controller_text)
    # the series the alerts need are there, with the Backup's labels
    for name in (
        "restik_backup_last_run_success",
        "restik_backup_schedule_interval_seconds",
        "restik_backup_scheduled_since_timestamp_seconds",
        "restik_backup_next_run_timestamp_seconds",
        "restik_backup_last_success_timestamp_seconds",
        "restik_check_last_run_success",
        "restik_check_last_success_timestamp_seconds",
        "restik_check_schedule_interval_seconds",
    ):
        assert f'{name}{{backup="www",namespace="default"}}' in sidecar_text, name
    assert 'restik_backup_ready{backup="www",namespace="default"} 1.0' in controller_text
    assert "restik_cycle_interval_seconds 300.0" in controller_text

    used = set()
    for expr in dashboard_queries(dashboard()):
        used |= metric_names(expr)
    assert not used - exported, f"the dashboard reads unknown metrics: {used - exported}"
    rule_names = set()
    for group in rule_groups():
        for rule in group["rules"]:
            rule_names |= metric_names(rule["expr"])
    assert rule_names - exported == set()


@needs_restic
@pytest.mark.slow
def test_a_fresh_sidecar_reports_the_last_success_and_result_from_status(world):
    from tests.factories import backup_object

    obj = backup_object(str(world.src), str(world.repo), name="www", schedule="@every 1h")
    obj["status"] = {
        "backupCount": 5,
        "lastSuccessfulBackupTime": "2026-01-01T09:00:00Z",
        "lastBackupTime": "2026-01-02T09:00:00Z",  # a later run failed
    }
    world.emu.create(obj)
    sidecar = world.sidecar("--workload", "Deployment/www")
    labels = '{backup="www",namespace="default"}'

    def scraped() -> str:
        return sidecar.get("/metrics")[1]

    wait_for(lambda: f"restik_backup_last_run_success{labels}" in scraped(), 30, [sidecar])
    text = scraped()
    assert f"restik_backup_last_run_success{labels} 0.0" in text
    assert f"restik_backup_last_success_timestamp_seconds{labels} 1.767258e+09" in text
    assert f"restik_backup_schedule_interval_seconds{labels} 3600.0" in text
    # paused: the schedule series go away, so RestikBackupTooOld cannot fire
    world.patch_spec(paused=True)
    wait_for(lambda: "restik_backup_next_run_timestamp_seconds{" not in scraped(), 30, [sidecar])
    assert "restik_backup_schedule_interval_seconds{" not in scraped()
