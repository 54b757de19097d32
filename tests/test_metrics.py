"""The metrics the alert rules and the dashboard read: sidecar and controller, in-process."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.api.schedule import parse_schedule
from reconciler.controller.cycle import Controller
from reconciler.controller.metrics import ControllerMetrics
from reconciler.controller.options import Settings
from reconciler.kube.client import Kube
from sidecar.metrics import Metrics
from tests.factories.cluster import BACKUP_API, NS, backup, rolled_out, workload

LABELS = {"namespace": "web", "backup": "www"}


def samples(registry) -> dict[str, float]:
    """{'name{k=v,...}': value} of everything a scrape would show."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def value(registry, name: str, **extra) -> float | None:
    labels = ",".join(f"{k}={v}" for k, v in sorted({**LABELS, **extra}.items()))
    return samples(registry).get(f"{name}{{{labels}}}")


def metrics(**kw) -> tuple[Metrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return Metrics("web", "www", registry=registry, **kw), registry


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_schedule_exports_next_run_start_and_interval_and_drops_them_when_unscheduled():
    m, reg = metrics()
    before = datetime.now(UTC).timestamp()
    every = parse_schedule("@every 90m")
    fire = datetime(2024, 1, 8, 9, tzinfo=UTC)
    m.schedule(every, fire)
    since = value(reg, "restik_backup_scheduled_since_timestamp_seconds")
    assert since >= before
    assert value(reg, "restik_backup_next_run_timestamp_seconds") == fire.timestamp()
    assert value(reg, "restik_backup_schedule_interval_seconds") == 5400
    m.schedule(every, fire + timedelta(minutes=90))
    assert value(reg, "restik_backup_next_run_timestamp_seconds") == fire.timestamp() + 5400
    # rescheduling is not a new start: the clock of "success due" keeps running
    assert value(reg, "restik_backup_scheduled_since_timestamp_seconds") == since
    m.schedule(every, None)  # paused / invalid / deleted: nothing to compare against
    for name in (
        "restik_backup_next_run_timestamp_seconds",
        "restik_backup_schedule_interval_seconds",
        "restik_backup_scheduled_since_timestamp_seconds",
    ):
        assert value(reg, name) is None, name
    m.schedule(None, None)  # twice is fine
    m.schedule(every, fire)  # resumed: a new start
    assert value(reg, "restik_backup_schedule_interval_seconds") == 5400
    assert value(reg, "restik_backup_scheduled_since_timestamp_seconds") >= since


def test_interval_follows_the_last_success_on_an_uneven_cron():
    weekdays = parse_schedule("0 9 * * 1-5")
    friday = {
        "lastBackupTime": "2024-01-05T09:00:00Z",
        "lastSuccessfulBackupTime": "2024-01-05T09:00:00Z",
    }
    thursday = {
        "lastBackupTime": "2024-01-04T09:00:00Z",
        "lastSuccessfulBackupTime": "2024-01-04T09:00:00Z",
    }
    tuesday = {
        "lastBackupTime": "2024-01-02T09:00:00Z",
        "lastSuccessfulBackupTime": "2024-01-02T09:00:00Z",
    }
    # scheduling started before all these successes: the last success decides
    m, reg = metrics(clock=lambda: datetime(2024, 1, 1, tzinfo=UTC).timestamp())
    m.schedule(weekdays, datetime(2024, 1, 1, 9, tzinfo=UTC))
    # started on Monday at 0:00, after Friday's run: due two runs later, Tuesday at 9
    assert value(reg, "restik_backup_schedule_interval_seconds") == 2 * 86400
    for status, days in ((tuesday, 1), (thursday, 2), (friday, 2)):
        m.status_seen(status)
        assert value(reg, "restik_backup_schedule_interval_seconds") == days * 86400, status


def test_own_runs_set_result_success_time_duration_and_bytes():
    m, reg = metrics()
    assert value(reg, "restik_backup_last_run_success") is None
    before = datetime.now(UTC).timestamp()
    m.observe(True, 2.5, 1234, datetime.now(UTC))
    assert value(reg, "restik_backup_last_run_success") == 1
    assert value(reg, "restik_backup_last_success_timestamp_seconds") >= before
    assert value(reg, "restik_backup_last_duration_seconds") == 2.5
    assert value(reg, "restik_backup_last_bytes_added") == 1234
    assert value(reg, "restik_backup_runs_total", result="success") == 1
    success_at = value(reg, "restik_backup_last_success_timestamp_seconds")
    m.observe(False, 0.5, None, datetime.now(UTC))
    assert value(reg, "restik_backup_last_run_success") == 0
    assert value(reg, "restik_backup_last_success_timestamp_seconds") == success_at
    assert value(reg, "restik_backup_runs_total", result="failed") == 1


def test_status_carries_the_last_success_and_result_across_restarts_and_replicas():
    m, reg = metrics()
    m.status_seen(None)
    m.status_seen({})
    assert value(reg, "restik_backup_last_success_timestamp_seconds") is None
    # a fresh sidecar: the last success and result come from the persistent status
    ok = {
        "lastBackupTime": "2024-01-08T09:00:00Z",
        "lastSuccessfulBackupTime": "2024-01-08T09:00:00Z",
    }
    m.status_seen(ok)
    assert value(reg, "restik_backup_last_success_timestamp_seconds") == ts("2024-01-08T09:00:00Z")
    assert value(reg, "restik_backup_last_run_success") == 1
    # another replica's failed run
    failed = {**ok, "lastBackupTime": "2024-01-09T09:00:00Z"}
    m.status_seen(failed)
    assert value(reg, "restik_backup_last_run_success") == 0
    assert value(reg, "restik_backup_last_success_timestamp_seconds") == ts("2024-01-08T09:00:00Z")
    # the status never moves the last success backwards
    m.status_seen({"lastSuccessfulBackupTime": "2024-01-01T00:00:00Z"})
    assert value(reg, "restik_backup_last_success_timestamp_seconds") == ts("2024-01-08T09:00:00Z")
    # this process's own run is newer than the status: its result wins ...
    m.observe(True, 1.0, 10, datetime.now(UTC))
    m.status_seen(failed)
    assert value(reg, "restik_backup_last_run_success") == 1
    # ... until the status reports a newer run (the Lease moved to another replica)
    later = datetime.now(UTC) + timedelta(minutes=5)
    m.status_seen({"lastBackupTime": later.strftime("%Y-%m-%dT%H:%M:%SZ")})
    assert value(reg, "restik_backup_last_run_success") == 0
    m.status_seen({"lastBackupTime": "not a time", "lastSuccessfulBackupTime": 7})  # ignored
    assert value(reg, "restik_backup_last_run_success") == 0


def test_controller_exports_readiness_per_backup_and_its_cycles(cluster, kubeconfig):
    cluster.create(backup("www"))
    cluster.create(workload())
    cluster.create(backup("bad", schedule="every day"))
    reg_metrics = ControllerMetrics(interval=30)
    reg = reg_metrics.registry
    started = samples(reg)["restik_last_cycle_timestamp_seconds{}"]
    assert samples(reg)["restik_cycle_interval_seconds{}"] == 30
    controller = Controller(Kube.connect(str(kubeconfig)), Settings(), metrics=reg_metrics)
    reg_metrics.observe(controller.cycle())
    # not Ready while the Deployment has not rolled the sidecar out (issue 12 item 3)
    assert samples(reg)[f"restik_backup_ready{{backup=www,namespace={NS}}}"] == 0
    # each kind of write counted apart: the patch, the sidecars' Role and RoleBinding (kind
    # rolebinding: restik's RBAC writes), two statuses, the Events of the invalid Backup and
    # of the binding of ServiceAccount default
    writes = {k: v for k, v in samples(reg).items() if k.startswith("restik_writes_total")}
    assert writes == {
        "restik_writes_total{kind=workload}": 1,
        "restik_writes_total{kind=rolebinding}": 2,
        "restik_writes_total{kind=status}": 2,
        "restik_writes_total{kind=event}": 2,
    }
    rolled_out(cluster, "Deployment")
    reg_metrics.observe(controller.cycle())
    got = samples(reg)
    assert got[f"restik_backup_ready{{backup=www,namespace={NS}}}"] == 1
    assert got[f"restik_backup_ready{{backup=bad,namespace={NS}}}"] == 0
    assert got["restik_last_cycle_timestamp_seconds{}"] >= started
    assert got["restik_leader{}"] == 1
    # unchanged status (no write this cycle): readiness still comes from the Backup
    reg_metrics.observe(controller.cycle())
    assert samples(reg)[f"restik_backup_ready{{backup=bad,namespace={NS}}}"] == 0
    # a deleted Backup's series goes away; a dry run (no status written) changes nothing
    cluster.delete(BACKUP_API, "backups", "bad", NS)
    reg_metrics.observe(controller.cycle())
    assert f"restik_backup_ready{{backup=bad,namespace={NS}}}" not in samples(reg)
    # leadership lost: the new leader reports readiness, this replica's would go stale
    reg_metrics.set_leader(False)
    assert samples(reg)["restik_leader{}"] == 0
    assert not [k for k in samples(reg) if k.startswith("restik_backup_ready")]
    reg_metrics.observe(controller.cycle())
    dry = Controller(Kube.connect(str(kubeconfig)), Settings(dry_run=True), out=io.StringIO())
    reg_metrics.observe(dry.cycle())
    assert samples(reg)[f"restik_backup_ready{{backup=www,namespace={NS}}}"] == 1
