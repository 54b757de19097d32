"""The Backup model: valid objects parse to the dataclass, invalid ones name every bad field;
the CRD's openAPIV3Schema agrees with the model on the same tables."""

from __future__ import annotations

import copy

import pytest

from reconciler.api.backup import (
    DEFAULT_RESOURCES,
    Backup,
    InvalidBackup,
    Retention,
    parse_backup,
)
from reconciler.api.fields import FieldError, parse_quantity
from reconciler.api.schedule import parse_schedule
from tests.factories import backup, crd_validator, example_objects


def _with(raw: dict, path: str, value) -> dict:
    """A copy of ``raw`` with the dotted ``path`` set (``value is DELETE`` removes it)."""
    out = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return out


DELETE = object()
BASE = backup()
DUMP = {"command": ["pg_dumpall"], "filename": "pg_dumpall.sql"}
COMMAND_SOURCE = _with(BASE, "spec.backupSource", {"command": DUMP})


# ---------------------------------------------------------------- valid Backups

VALID = {
    "local-pvc": backup(),
    "local-pvc-read-only": backup(
        volume={"persistentVolumeClaim": {"claimName": "nas", "readOnly": True}}
    ),
    "local-named-volume": backup(
        volume={"name": "repo", "persistentVolumeClaim": {"claimName": "nas"}}
    ),
    "six-field": backup(schedule="0 */30 * * * *"),
    "every": backup(schedule="@every 90m"),
    "paused": backup(paused=True),
    "tags-excludes": backup(tags=["prod", "www"], excludes=["*.tmp", "cache/"]),
    "retention": backup(
        retentionPolicy={
            "keepLastSnapshots": 7,
            "keepHourlySnapshots": 0,
            "keepDailySnapshots": 14,
            "keepWeeklySnapshots": 4,
            "keepMonthlySnapshots": 6,
            "keepYearlySnapshots": 1,
            "keepTags": ["keep"],
            "prune": True,
        }
    ),
    "resources": backup(
        resources={"limits": {"cpu": "500m", "memory": "512Mi"}, "requests": {"cpu": "250m"}}
    ),
    "metrics-port": backup(metricsPort=9100),
    "metrics-port-bounds": backup(metricsPort=65535),
    "security-context": backup(securityContext={"runAsUser": 999, "runAsGroup": 0}),
    "security-context-user-only": backup(securityContext={"runAsUser": 1}),
    "no-namespace": {**backup(), "metadata": {"name": "www"}},
    "command-source": COMMAND_SOURCE,
    "command-source-full": _with(
        BASE,
        "spec.backupSource",
        {"command": {**DUMP, "container": "postgres", "timeout": "1h30m"}},
    ),
    "hooks": backup(
        hooks={
            "preBackup": {"command": ["fsfreeze", "-f", "/data"], "container": "app"},
            "postBackup": {
                "command": ["fsfreeze", "-u", "/data"],
                "timeout": "30s",
                "onError": "Continue",
            },
        }
    ),
    "check": backup(check={"schedule": "0 3 * * 0"}),
    **{
        f"check-subset-{subset}": backup(check={"schedule": "@daily", "readDataSubset": subset})
        for subset in ("5%", "2.5%", "100%", "1/10", "10/10", "500M", "2G", "1t")
    },
    "dotted-secret": backup(secret="restic.www"),
    **{
        f"repo-{repo.split(':')[0] or 'abs'}": backup(repository=repo)
        for repo in (
            "s3:http://minio.backup:9000/bucket/www",
            "s3:s3.amazonaws.com/bucket",
            "rest:https://host:8000/www",  # credentials: the Secret (issue 13 item 8)
            "sftp:user@host:/srv/restic-repo",
            "b2:bucketname:path/to/repo",
            "gs:foo:/bar",
            "azure:container:/path",
            "swift:container:/path",
            "rclone:remote:path",
            "local:/mnt/repo",
            "/mnt/repo",
        )
    },
}


@pytest.mark.parametrize("raw", VALID.values(), ids=VALID.keys())
def test_valid_backups_parse(raw):
    b = parse_backup(raw)
    assert isinstance(b, Backup)
    assert b.name == raw["metadata"]["name"]
    assert b.namespace == raw["metadata"].get("namespace", "default")
    dest = raw["spec"]["destination"]
    assert b.is_local is ("repository" not in dest)
    assert b.repository == dest.get("repository")
    assert b.schedule == parse_schedule(raw["spec"]["schedule"])


def test_local_backup_parses_to_the_expected_dataclass():
    raw = backup(
        tags=["prod"],
        excludes=["*.tmp"],
        paused=False,
        retentionPolicy={"keepLastSnapshots": 7, "keepDailySnapshots": 14, "prune": True},
        resources={"limits": {"cpu": "500m", "memory": 40000000}},
    )
    raw["metadata"].update(uid="u-1", generation=3)
    assert parse_backup(raw) == Backup(
        name="www",
        namespace="web",
        schedule=parse_schedule("@hourly"),
        source_volume="data",
        source_path="/data",
        secret_name="www-restic",
        repository=None,
        destination_volume={"persistentVolumeClaim": {"claimName": "backups"}},
        destination_path="/repo",
        tags=("prod",),
        excludes=("*.tmp",),
        retention=Retention(last=7, daily=14, prune=True),
        paused=False,
        resources={
            "limits": {"cpu": "500m", "memory": "40000000"},
            "requests": {"cpu": "50m", "memory": "40000000"},  # lowered to the limit
        },
        uid="u-1",
        generation=3,
    )


def test_remote_backup_parses_to_the_expected_dataclass():
    raw = backup(repository="s3:http://minio:9000/b", schedule="0 */30 * * * *", paused=True)
    assert parse_backup(raw) == Backup(
        name="www",
        namespace="web",
        schedule=parse_schedule("0 */30 * * * *"),
        source_volume="data",
        source_path="/data",
        secret_name="www-restic",
        repository="s3:http://minio:9000/b",
        paused=True,
        resources=DEFAULT_RESOURCES,
        metrics_port=9464,
        run_as_user=None,
        run_as_group=None,
    )


# user's spec.resources -> the sidecar's effective resources
RESOURCE_MERGES = {
    "defaults": (None, DEFAULT_RESOURCES),
    "empty": ({}, DEFAULT_RESOURCES),
    "one-field-replaced": (
        {"limits": {"memory": "1Gi"}},
        {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    ),
    "other-resource-added": (
        {"limits": {"ephemeral-storage": "2Gi"}, "requests": {"ephemeral-storage": "1Gi"}},
        {
            "requests": {"cpu": "50m", "memory": "64Mi", "ephemeral-storage": "1Gi"},
            "limits": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "2Gi"},
        },
    ),
    "request-above-default-limit-raises-it": (
        {"requests": {"memory": "2Gi", "cpu": 2}},
        {"requests": {"cpu": "2", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
    ),
    "limit-below-default-request-lowers-it": (
        {"limits": {"cpu": "20m", "memory": "32Mi"}},
        {"requests": {"cpu": "20m", "memory": "32Mi"}, "limits": {"cpu": "20m", "memory": "32Mi"}},
    ),
    "both-given-equal": (
        {"requests": {"cpu": "0.5"}, "limits": {"cpu": "500m"}},
        {
            "requests": {"cpu": "0.5", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "512Mi"},
        },
    ),
}


@pytest.mark.parametrize(
    ("given", "effective"), RESOURCE_MERGES.values(), ids=RESOURCE_MERGES.keys()
)
def test_resources_merge_with_the_defaults_per_field(given, effective):
    raw = backup() if given is None else backup(resources=given)
    assert parse_backup(raw).resources == effective


def test_default_resources_satisfy_a_limits_quota():
    """A ResourceQuota on limits.cpu/limits.memory rejects a container without them."""
    limits, requests = DEFAULT_RESOURCES["limits"], DEFAULT_RESOURCES["requests"]
    assert {"cpu", "memory"} <= set(limits) and {"cpu", "memory"} <= set(requests)
    for name in ("cpu", "memory"):
        assert parse_quantity(requests[name]) <= parse_quantity(limits[name])


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", "0.5"),
        ("1", "1"),
        ("1.5", "1.5"),
        (".5", "0.5"),
        ("64Mi", str(64 * 2**20)),
        ("1Gi", str(2**30)),
        ("2k", "2000"),
        ("1E", str(10**18)),
        ("1Ei", str(2**60)),
        ("2e3", "2000"),
        ("1E-2", "0.01"),
        ("+3M", "3000000"),
    ],
)
def test_parse_quantity(text, value):
    from decimal import Decimal

    assert parse_quantity(text) == Decimal(value)


@pytest.mark.parametrize("text", ["", "lots", "1Mb", "1e", "--1"])
def test_parse_quantity_rejects_non_quantities(text):
    with pytest.raises(ValueError, match="is not a quantity"):
        parse_quantity(text)


def test_metrics_port_and_security_context_reach_the_model():
    raw = backup(metricsPort=9100, securityContext={"runAsUser": 999, "runAsGroup": 0})
    b = parse_backup(raw)
    assert (b.metrics_port, b.run_as_user, b.run_as_group) == (9100, 999, 0)
    b = parse_backup(backup(securityContext={"runAsGroup": 5}))
    assert (b.metrics_port, b.run_as_user, b.run_as_group) == (9464, None, 5)


def test_backup_is_frozen():
    b = parse_backup(backup())
    with pytest.raises(AttributeError):
        b.name = "other"


def test_retention_keeps_anything():
    assert not Retention().keeps_anything
    assert not Retention(last=0).keeps_anything
    assert Retention(daily=1).keeps_anything
    assert Retention(keep_tags=("x",)).keeps_anything


# ---------------------------------------------------------------- invalid Backups
# id -> (raw, the exact set of field paths in the errors, does the CRD schema reject it?)
# The schema cannot express some rules; those rows say False and are listed in MODEL_ONLY.

INVALID = {
    "schedule-missing": (_with(BASE, "spec.schedule", DELETE), {"spec.schedule"}, True),
    "schedule-not-string": (backup(schedule=5), {"spec.schedule"}, True),
    "schedule-empty": (backup(schedule=""), {"spec.schedule"}, True),
    "schedule-bad-cron": (backup(schedule="61 * * * *"), {"spec.schedule"}, False),
    "schedule-4-fields": (backup(schedule="* * * *"), {"spec.schedule"}, False),
    "schedule-bad-every": (backup(schedule="@every soon"), {"spec.schedule"}, False),
    "volume-name-missing": (
        _with(BASE, "spec.backupSource.volumeName", DELETE),
        {"spec.backupSource.volumeName"},
        True,
    ),
    "volume-name-upper": (backup(volume_name="Data"), {"spec.backupSource.volumeName"}, True),
    "volume-name-underscore": (
        backup(volume_name="my_data"),
        {"spec.backupSource.volumeName"},
        True,
    ),
    "volume-name-too-long": (
        backup(volume_name="a" * 64),
        {"spec.backupSource.volumeName"},
        True,
    ),
    "volume-name-restik": (
        backup(volume_name="restik-repo"),
        {"spec.backupSource.volumeName"},
        False,
    ),
    "source-missing": (_with(BASE, "spec.backupSource", DELETE), {"spec.backupSource"}, True),
    "path-missing": (
        _with(BASE, "spec.backupSource.path", DELETE),
        {"spec.backupSource.path"},
        True,
    ),
    "path-relative": (backup(path="var/www"), {"spec.backupSource.path"}, True),
    "path-root": (backup(path="/"), {"spec.backupSource.path"}, True),
    "path-dotdot": (backup(path="/var/../etc"), {"spec.backupSource.path"}, False),
    "path-reserved": (backup(path="/restik/cache"), {"spec.backupSource.path"}, False),
    "path-newline": (backup(path="/var\n/www"), {"spec.backupSource.path"}, False),
    "path-number": (backup(path=5), {"spec.backupSource.path"}, True),
    "destination-both": (
        _with(backup(), "spec.destination.repository", "s3:host/b"),
        {"spec.destination"},
        True,
    ),
    "destination-neither": (
        _with(_with(BASE, "spec.destination.volume", DELETE), "spec.destination.path", DELETE),
        {"spec.destination"},
        True,
    ),
    "destination-missing": (_with(BASE, "spec.destination", DELETE), {"spec.destination"}, True),
    "destination-path-only": (
        _with(BASE, "spec.destination.volume", DELETE),
        {"spec.destination.volume"},
        True,
    ),
    "secret-missing": (
        _with(BASE, "spec.destination.repositorySecretName", DELETE),
        {"spec.destination.repositorySecretName"},
        True,
    ),
    "secret-bad": (
        backup(secret="My Secret"),
        {"spec.destination.repositorySecretName"},
        True,
    ),
    "secret-too-long": (
        backup(secret="s" * 254),
        {"spec.destination.repositorySecretName"},
        True,
    ),
    "repository-unknown-scheme": (
        backup(repository="ftp://host/repo"),
        {"spec.destination.repository"},
        True,
    ),
    "repository-empty": (backup(repository=""), {"spec.destination.repository"}, True),
    "repository-flag": (backup(repository="--repo=/x"), {"spec.destination.repository"}, True),
    "repository-newline": (
        backup(repository="s3:host/b\n--x"),
        {"spec.destination.repository"},
        False,
    ),
    "dest-volume-no-source": (
        backup(volume={"name": "repo"}),
        {"spec.destination.volume"},
        True,
    ),
    "dest-volume-two-sources": (
        backup(volume={"emptyDir": {}, "hostPath": {"path": "/x"}}),
        {"spec.destination.volume"},
        True,
    ),
    # Issue 13 item 3: only a claim, never a node's or a network's filesystem.
    "dest-volume-host-path": (
        backup(volume={"hostPath": {"path": "/"}}),
        {"spec.destination.volume"},
        True,
    ),
    "dest-volume-nfs": (
        backup(volume={"nfs": {"server": "nfs", "path": "/"}}),
        {"spec.destination.volume"},
        True,
    ),
    "dest-path-relative": (backup(dest_path="repo"), {"spec.destination.path"}, True),
    "tag-with-comma": (backup(tags=["a,b"]), {"spec.tags[0]"}, True),
    "tag-empty": (backup(tags=[""]), {"spec.tags[0]"}, True),
    "tag-number": (backup(tags=[7]), {"spec.tags[0]"}, True),
    "tags-not-list": (backup(tags="prod"), {"spec.tags"}, True),
    "second-tag-bad": (backup(tags=["ok", "a,b"]), {"spec.tags[1]"}, True),
    "exclude-newline": (backup(excludes=["a\nb"]), {"spec.excludes[0]"}, True),
    "keep-last-negative": (
        backup(retentionPolicy={"keepLastSnapshots": -1}),
        {"spec.retentionPolicy.keepLastSnapshots"},
        True,
    ),
    "keep-last-string": (
        backup(retentionPolicy={"keepLastSnapshots": "7"}),
        {"spec.retentionPolicy.keepLastSnapshots"},
        True,
    ),
    "keep-last-bool": (
        backup(retentionPolicy={"keepLastSnapshots": True}),
        {"spec.retentionPolicy.keepLastSnapshots"},
        True,
    ),
    "prune-string": (
        backup(retentionPolicy={"prune": "yes"}),
        {"spec.retentionPolicy.prune"},
        True,
    ),
    "retention-not-object": (backup(retentionPolicy=[7]), {"spec.retentionPolicy"}, True),
    "paused-string": (backup(paused="true"), {"spec.paused"}, True),
    "paused-number": (backup(paused=1), {"spec.paused"}, True),
    "cpu-bool": (
        backup(resources={"limits": {"cpu": True}}),
        {"spec.resources.limits.cpu"},
        True,
    ),
    "cpu-list": (
        backup(resources={"limits": {"cpu": ["1"]}}),
        {"spec.resources.limits.cpu"},
        True,
    ),
    "cpu-not-quantity": (
        backup(resources={"limits": {"cpu": "lots"}}),
        {"spec.resources.limits.cpu"},
        False,
    ),
    "cpu-negative": (
        backup(resources={"requests": {"cpu": "-1"}}),
        {"spec.resources.requests.cpu"},
        False,
    ),
    "request-above-limit": (
        backup(resources={"requests": {"memory": "1Gi"}, "limits": {"memory": "512Mi"}}),
        {"spec.resources.requests.memory"},
        False,
    ),
    "metrics-port-low": (backup(metricsPort=80), {"spec.metricsPort"}, True),
    "metrics-port-zero": (backup(metricsPort=0), {"spec.metricsPort"}, True),
    "metrics-port-high": (backup(metricsPort=65536), {"spec.metricsPort"}, True),
    "metrics-port-string": (backup(metricsPort="9464"), {"spec.metricsPort"}, True),
    "metrics-port-bool": (backup(metricsPort=True), {"spec.metricsPort"}, True),
    "run-as-user-negative": (
        backup(securityContext={"runAsUser": -1}),
        {"spec.securityContext.runAsUser"},
        True,
    ),
    "run-as-user-root": (
        backup(securityContext={"runAsUser": 0}),
        {"spec.securityContext.runAsUser"},
        True,
    ),
    "run-as-user-too-big": (
        backup(securityContext={"runAsUser": 2**31}),
        {"spec.securityContext.runAsUser"},
        True,
    ),
    "run-as-group-negative": (
        backup(securityContext={"runAsGroup": -5}),
        {"spec.securityContext.runAsGroup"},
        True,
    ),
    "run-as-user-string": (
        backup(securityContext={"runAsUser": "999"}),
        {"spec.securityContext.runAsUser"},
        True,
    ),
    "security-context-not-object": (
        backup(securityContext="root"),
        {"spec.securityContext"},
        True,
    ),
    "security-context-unknown-field": (
        backup(securityContext={"privileged": True}),
        {"spec.securityContext.privileged"},
        False,
    ),
    "unknown-spec-field": (backup(foo=1), {"spec.foo"}, False),
    "unknown-source-field": (
        _with(BASE, "spec.backupSource.readOnly", True),
        {"spec.backupSource.readOnly"},
        False,
    ),
    "name-missing": (_with(BASE, "metadata.name", DELETE), {"metadata.name"}, False),
    "name-upper": (backup(name="WWW"), {"metadata.name"}, False),
    "name-empty": (backup(name=""), {"metadata.name"}, False),
    "name-not-string": (backup(name=5), {"metadata.name"}, False),
    "spec-missing": (_with(BASE, "spec", DELETE), {"spec", "spec.schedule"}, True),
    "spec-not-object": (_with(BASE, "spec", "x"), {"spec", "spec.schedule"}, True),
    "source-both": (
        _with(BASE, "spec.backupSource.command", DUMP),
        {"spec.backupSource"},
        True,
    ),
    "command-empty": (
        _with(COMMAND_SOURCE, "spec.backupSource.command.command", []),
        {"spec.backupSource.command.command"},
        True,
    ),
    "command-no-filename": (
        _with(COMMAND_SOURCE, "spec.backupSource.command.filename", DELETE),
        {"spec.backupSource.command.filename"},
        True,
    ),
    "command-filename-path": (
        _with(COMMAND_SOURCE, "spec.backupSource.command.filename", "a/b.sql"),
        {"spec.backupSource.command.filename"},
        True,
    ),
    "command-bad-timeout": (
        _with(COMMAND_SOURCE, "spec.backupSource.command.timeout", "an hour"),
        {"spec.backupSource.command.timeout"},
        True,
    ),
    "command-zero-timeout": (
        _with(COMMAND_SOURCE, "spec.backupSource.command.timeout", "0s"),
        {"spec.backupSource.command.timeout"},
        False,
    ),
    "command-in-restik": (
        _with(COMMAND_SOURCE, "spec.backupSource.command.container", "restik"),
        {"spec.backupSource.command.container"},
        False,
    ),
    "hook-without-command": (
        backup(hooks={"preBackup": {"container": "app"}}),
        {"spec.hooks.preBackup.command"},
        True,
    ),
    "hook-bad-on-error": (
        backup(hooks={"postBackup": {"command": ["x"], "onError": "Ignore"}}),
        {"spec.hooks.postBackup.onError"},
        True,
    ),
    "hook-bad-timeout": (
        backup(hooks={"postBackup": {"command": ["x"], "timeout": 30}}),
        {"spec.hooks.postBackup.timeout"},
        True,
    ),
    "check-not-object": (backup(check="daily"), {"spec.check"}, True),
    "check-no-schedule": (
        backup(check={"readDataSubset": "5%"}),
        {"spec.check.schedule"},
        True,
    ),
    "check-bad-cron": (backup(check={"schedule": "0 25 * * *"}), {"spec.check.schedule"}, False),
    "check-subset-bare-number": (
        backup(check={"schedule": "@daily", "readDataSubset": "500"}),
        {"spec.check.readDataSubset"},
        True,
    ),
    "check-subset-fraction-size": (
        backup(check={"schedule": "@daily", "readDataSubset": "1.5G"}),
        {"spec.check.readDataSubset"},
        True,
    ),
    "check-subset-not-string": (
        backup(check={"schedule": "@daily", "readDataSubset": 5}),
        {"spec.check.readDataSubset"},
        True,
    ),
    "check-subset-n-above-t": (
        backup(check={"schedule": "@daily", "readDataSubset": "3/2"}),
        {"spec.check.readDataSubset"},
        False,
    ),
    "check-subset-zero-percent": (
        backup(check={"schedule": "@daily", "readDataSubset": "0%"}),
        {"spec.check.readDataSubset"},
        False,
    ),
    "check-subset-over-100-percent": (
        backup(check={"schedule": "@daily", "readDataSubset": "101%"}),
        {"spec.check.readDataSubset"},
        False,
    ),
    "check-subset-zero-size": (
        backup(check={"schedule": "@daily", "readDataSubset": "0M"}),
        {"spec.check.readDataSubset"},
        False,
    ),
    "check-unknown-field": (
        backup(check={"schedule": "@daily", "readData": True}),
        {"spec.check.readData"},
        False,
    ),
    "spec-empty": (
        _with(BASE, "spec", {}),
        {"spec.schedule", "spec.backupSource", "spec.destination"},
        True,
    ),
}

# Rules only the model checks (the schema accepts these, the model rejects them):
MODEL_ONLY = {
    "schedule-bad-cron": "cron syntax",
    "schedule-4-fields": "cron field count",
    "schedule-bad-every": "@every duration syntax",
    "volume-name-restik": "restik-* volume names are reserved",
    "path-dotdot": "no '..' in paths",
    "path-reserved": "/restik is reserved for restik's own mounts",
    "path-newline": "no line breaks in backupSource.path (the schema has no pattern for it)",
    "repository-newline": "no line breaks in the repository",
    "cpu-not-quantity": "quantity syntax (int-or-string in the schema)",
    "cpu-negative": "quantity sign (int-or-string in the schema)",
    "request-above-limit": "requests <= limits needs quantity arithmetic",
    "security-context-unknown-field": "unknown fields (the API server prunes them instead)",
    "unknown-spec-field": "unknown fields (the API server prunes them instead)",
    "unknown-source-field": "unknown fields",
    "command-zero-timeout": "a positive duration (the pattern takes 0s)",
    "command-in-restik": "commands never run in restik's own container",
    "check-bad-cron": "cron syntax",
    "check-subset-n-above-t": "1 <= n <= t needs arithmetic",
    "check-subset-zero-percent": "0 < x <= 100 needs arithmetic",
    "check-subset-over-100-percent": "0 < x <= 100 needs arithmetic",
    "check-subset-zero-size": "a size above 0 needs arithmetic",
    "check-unknown-field": "unknown fields (the API server prunes them instead)",
    "name-missing": "metadata is validated by the API server, not the CRD schema",
    "name-upper": "metadata.name syntax",
    "name-empty": "metadata.name required",
    "name-not-string": "metadata.name type",
}


def test_model_only_rules_are_exactly_the_rows_the_schema_accepts():
    assert {k for k, (_, _, schema) in INVALID.items() if not schema} == set(MODEL_ONLY)


@pytest.mark.parametrize(("raw", "paths"), [v[:2] for v in INVALID.values()], ids=INVALID.keys())
def test_invalid_backups_name_the_field(raw, paths):
    with pytest.raises(InvalidBackup) as info:
        parse_backup(raw)
    exc = info.value
    assert {e.path for e in exc.errors} == paths, exc.errors
    assert all(isinstance(e, FieldError) and e.message for e in exc.errors)
    for path in paths:
        assert f"{path}: " in str(exc)


def test_every_error_is_collected_at_once():
    raw = backup(
        name="Bad_Name",
        schedule="not cron",
        volume_name="Data",
        path="relative",
        secret="",
        tags=["a,b", "ok", ""],
        paused="no",
        resources={"limits": {"cpu": "lots"}},
        retentionPolicy={"keepLastSnapshots": -1},
        foo=1,
    )
    raw["spec"]["destination"]["repository"] = "s3:x"
    with pytest.raises(InvalidBackup) as info:
        parse_backup(raw)
    assert [e.path for e in info.value.errors] == [
        "metadata.name",
        "spec.foo",
        "spec.schedule",
        "spec.backupSource.volumeName",
        "spec.backupSource.path",
        "spec.destination.repositorySecretName",
        "spec.destination",
        "spec.tags[0]",
        "spec.tags[2]",
        "spec.retentionPolicy.keepLastSnapshots",
        "spec.paused",
        "spec.resources.limits.cpu",
    ]
    assert info.value.namespace == "web"
    assert info.value.name == "Bad_Name"


def test_destination_message_says_both_or_neither():
    both = _with(backup(), "spec.destination.repository", "s3:x/b")
    neither = _with(_with(BASE, "spec.destination.volume", DELETE), "spec.destination.path", DELETE)
    for raw, word in ((both, "both were given"), (neither, "neither was given")):
        with pytest.raises(InvalidBackup) as info:
            parse_backup(raw)
        assert str(info.value.errors[0]) == (
            f"spec.destination: give either volume+path or repository ({word})"
        )


@pytest.mark.parametrize("raw", [None, [], "backup", 5])
def test_non_mapping_is_invalid_backup(raw):
    with pytest.raises(InvalidBackup):
        parse_backup(raw)


def test_wrong_api_version_and_kind():
    raw = {**backup(), "apiVersion": "v1", "kind": "Secret"}
    with pytest.raises(InvalidBackup) as info:
        parse_backup(raw)
    assert {e.path for e in info.value.errors} == {"apiVersion", "kind"}


# ---------------------------------------------------------------- CRD agreement


@pytest.mark.parametrize("raw", VALID.values(), ids=VALID.keys())
def test_schema_accepts_the_valid_backups(raw):
    errors = list(crd_validator().iter_errors(raw))
    assert errors == [], [e.message for e in errors]


@pytest.mark.parametrize(
    ("raw", "schema_rejects"), [(v[0], v[2]) for v in INVALID.values()], ids=INVALID.keys()
)
def test_schema_agrees_with_the_model_on_invalid_backups(raw, schema_rejects):
    schema_errors = list(crd_validator().iter_errors(raw))
    if schema_rejects:
        assert schema_errors, "the CRD schema should reject this Backup too"
    else:
        assert schema_errors == [], [e.message for e in schema_errors]
    with pytest.raises(InvalidBackup):
        parse_backup(raw)


def test_schema_has_no_preserve_unknown_fields_on_spec():
    from ruamel.yaml import YAML

    from tests.factories import CRD_PATH

    crd = YAML(typ="safe", pure=True).load(CRD_PATH.read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "x-kubernetes-preserve-unknown-fields" not in spec
    assert crd["metadata"]["name"] == "backups.backup.appscode.com"
    assert crd["spec"]["names"]["shortNames"] == ["bk"]
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}


EXAMPLE_BACKUPS = [(w, o) for w, o in example_objects() if o["kind"] == "Backup"]


@pytest.mark.parametrize(
    "raw", [o for _, o in EXAMPLE_BACKUPS], ids=[w for w, _ in EXAMPLE_BACKUPS]
)
def test_example_backups_validate_under_the_schema_and_the_model(raw):
    errors = list(crd_validator().iter_errors(raw))
    assert errors == [], [e.message for e in errors]
    parse_backup(raw)


def test_there_are_example_backups_of_both_destinations():
    backups = [parse_backup(o) for _, o in EXAMPLE_BACKUPS]
    assert {b.is_local for b in backups} == {True, False}
