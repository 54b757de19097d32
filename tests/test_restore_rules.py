"""Each rule of the Restore model, one failing input each, with the exact field path and
message; what valid Restores parse to; and the CRD's schema agreeing with the model."""

from __future__ import annotations

import copy
import functools
import subprocess
from datetime import UTC, datetime, timedelta, timezone

import pytest
from ruamel.yaml import YAML

from reconciler.api import times
from reconciler.api.restore import InvalidRestore, Restore, parse_restore, parse_time
from tests.factories import REPO, strip_x_kubernetes

RESTORE_CRD_PATH = REPO / "kustomize" / "crd-restore.yaml"


def restore(name="r1", namespace="web", *, backup="www", target=None, **spec) -> dict:
    """A raw Restore of StatefulSet/db unless ``target`` says otherwise."""
    body = {
        "backup": backup,
        "target": target
        if target is not None
        else {"workload": {"kind": "StatefulSet", "name": "db"}},
        **spec,
    }
    return {
        "apiVersion": "backup.appscode.com/v1beta1",
        "kind": "Restore",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


PVC = {"pvc": {"claimName": "data-copy"}}
DEPLOYMENT = {"workload": {"kind": "Deployment", "name": "www"}}


def errors_of(raw) -> list[str]:
    with pytest.raises(InvalidRestore) as info:
        parse_restore(raw)
    assert str(info.value).startswith(f"Restore {raw['metadata'].get('namespace', 'default')}/")
    return [str(e) for e in info.value.errors]


@functools.lru_cache(maxsize=1)
def _validator():
    from jsonschema import Draft7Validator

    crd = YAML(typ="safe", pure=True).load(RESTORE_CRD_PATH.read_text())
    schema = strip_x_kubernetes(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


# ---------------------------------------------------------------- valid Restores


def test_a_workload_restore_parses_with_defaults():
    r = parse_restore(restore())
    assert r == Restore(
        name="r1", namespace="web", backup="www", workload_kind="StatefulSet", workload_name="db"
    )
    assert r.target == "StatefulSet/db" and r.multi_host and not r.is_pvc
    assert r.source_host("db-0") == "db-0"
    with pytest.raises(AttributeError):
        r.name = "x"


def test_a_pvc_restore_with_every_field():
    r = parse_restore(
        restore(
            target=PVC,
            snapshot="9b7d03e1",
            hosts={"data-copy": "db-1"},
            include=["uploads", "conf/app.ini", ".hidden/x", "..dots"],
            exclude=["*.tmp", "cache/"],
            delete=True,
            verify=True,
            runID="second-try",
        )
    )
    assert r.is_pvc and r.target == "pvc/data-copy" and not r.multi_host
    assert r.snapshot == "9b7d03e1" and r.as_of is None
    assert r.source_host("data-copy") == "db-1"
    assert r.include == ("uploads", "conf/app.ini", ".hidden/x", "..dots")
    assert r.exclude == ("*.tmp", "cache/")
    assert (r.delete, r.verify, r.run_id) == (True, True, "second-try")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-31T23:00:00Z", datetime(2026, 1, 31, 23, tzinfo=UTC)),
        ("2026-01-31t23:00:00z", datetime(2026, 1, 31, 23, tzinfo=UTC)),
        (
            "2026-02-01T01:00:00+02:00",
            datetime(2026, 2, 1, 1, tzinfo=timezone(timedelta(hours=2))),
        ),
        (
            "2026-01-31T23:00:00.123456789Z",
            datetime(2026, 1, 31, 23, 0, 0, 123456, tzinfo=UTC),
        ),
    ],
)
def test_as_of_takes_rfc3339_with_a_zone(text, expected):
    assert parse_restore(restore(asOf=text)).as_of == expected
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    "text",
    ["2026-01-31T23:00:00", "2026-01-31", "yesterday", "2026-13-01T00:00:00Z", "", None, 17],
)
def test_what_is_no_rfc3339_time_is_none(text):
    assert times.parse_time(text) is None


def test_the_times_the_api_server_a_lease_and_restic_write_parse_alike():
    utc = datetime(2026, 1, 31, 23, 0, 0, tzinfo=UTC)
    assert times.parse_time("2026-01-31T23:00:00Z") == utc  # the API server, restik
    assert times.parse_time(" 2026-01-31t23:00:00z\n") == utc
    assert times.parse_time("2026-01-31T23:00:00.000001Z") == utc.replace(microsecond=1)  # Lease
    # restic: nanoseconds and the local zone
    assert times.parse_time("2026-02-01T01:00:00.5000009+02:00") == utc.replace(microsecond=500000)


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet", "ReplicationController"])
def test_a_snapshot_id_is_fine_for_single_host_workloads(kind):
    r = parse_restore(
        restore(target={"workload": {"kind": kind, "name": "www"}}, snapshot="a" * 64)
    )
    assert r.snapshot == "a" * 64 and not r.multi_host


# ---------------------------------------------------------------- one rule each
# id -> (raw, the exact errors, does the CRD schema reject it too?)
INVALID = {
    "backup-missing": (
        {**restore(), "spec": {"target": DEPLOYMENT}},
        ["spec.backup: required"],
        True,
    ),
    "backup-bad-name": (
        restore(backup="WWW"),
        ["spec.backup: 'WWW' is not a valid name"],
        True,
    ),
    "spec-missing": (
        {k: v for k, v in restore().items() if k != "spec"},
        ["spec: required"],
        True,
    ),
    "spec-unknown-field": (restore(when="now"), ["spec.when: unknown field"], False),
    "target-missing": (
        {**restore(), "spec": {"backup": "www"}},
        ["spec.target: required"],
        True,
    ),
    "target-both": (
        restore(target={**DEPLOYMENT, **PVC}),
        [
            "spec.target: give exactly one of workload: {kind, name} and pvc: {claimName} "
            "(both were given)"
        ],
        True,
    ),
    "target-neither": (
        restore(target={}),
        [
            "spec.target: give exactly one of workload: {kind, name} and pvc: {claimName} "
            "(neither was given)"
        ],
        True,
    ),
    "target-not-object": (
        restore(target="db"),
        ["spec.target: must be an object, got string"],
        True,
    ),
    "workload-kind-unknown": (
        restore(target={"workload": {"kind": "Job", "name": "x"}}),
        [
            "spec.target.workload.kind: 'Job' is not one of Deployment, StatefulSet, DaemonSet, "
            "ReplicaSet, ReplicationController"
        ],
        True,
    ),
    "workload-name-missing": (
        restore(target={"workload": {"kind": "Deployment"}}),
        ["spec.target.workload.name: required"],
        True,
    ),
    "workload-not-object": (
        restore(target={"workload": "Deployment/www"}),
        ["spec.target.workload: must be an object {kind, name}"],
        True,
    ),
    "pvc-claim-missing": (
        restore(target={"pvc": {}}),
        ["spec.target.pvc.claimName: required"],
        True,
    ),
    "pvc-claim-bad": (
        restore(target={"pvc": {"claimName": "Data_1"}}),
        ["spec.target.pvc.claimName: 'Data_1' is not a valid claim name"],
        True,
    ),
    "snapshot-not-hex": (
        restore(target=PVC, snapshot="latest"),
        [
            "spec.snapshot: 'latest' is not a snapshot id (8 to 64 lowercase hex digits, as "
            "`restik snapshots` shows them)"
        ],
        True,
    ),
    "snapshot-too-short": (
        restore(target=PVC, snapshot="9b7d"),
        [
            "spec.snapshot: '9b7d' is not a snapshot id (8 to 64 lowercase hex digits, as "
            "`restik snapshots` shows them)"
        ],
        True,
    ),
    "snapshot-multi-host": (
        restore(snapshot="9b7d03e1"),
        [
            "spec.snapshot: a StatefulSet has a snapshot per pod (host): choose by asOf, or "
            "restore one host's snapshot into a PVC"
        ],
        False,
    ),
    "snapshot-daemonset": (
        restore(target={"workload": {"kind": "DaemonSet", "name": "agent"}}, snapshot="9b7d03e1"),
        [
            "spec.snapshot: a DaemonSet has a snapshot per pod (host): choose by asOf, or "
            "restore one host's snapshot into a PVC"
        ],
        False,
    ),
    "snapshot-and-as-of": (
        restore(target=PVC, snapshot="9b7d03e1", asOf="2026-01-31T23:00:00Z"),
        ["spec: give snapshot or asOf, not both"],
        True,
    ),
    "as-of-no-zone": (
        restore(asOf="2026-01-31T23:00:00"),
        [
            "spec.asOf: '2026-01-31T23:00:00' is not an RFC 3339 time with a zone, e.g. "
            "2026-01-31T23:00:00Z"
        ],
        True,
    ),
    "as-of-date-only": (
        restore(asOf="2026-01-31"),
        ["spec.asOf: '2026-01-31' is not an RFC 3339 time with a zone, e.g. 2026-01-31T23:00:00Z"],
        True,
    ),
    "as-of-no-such-day": (
        restore(asOf="2026-02-31T00:00:00Z"),
        [
            "spec.asOf: '2026-02-31T00:00:00Z' is not an RFC 3339 time with a zone, e.g. "
            "2026-01-31T23:00:00Z"
        ],
        False,
    ),
    "as-of-number": (restore(asOf=20260131), ["spec.asOf: must be a string, got number"], True),
    "hosts-not-object": (
        restore(hosts=["db-0"]),
        ["spec.hosts: must be an object, got list"],
        True,
    ),
    "hosts-bad-source": (
        restore(hosts={"db-0": "db 0"}),
        ["spec.hosts.db-0: 'db 0' is not a host name (letters, digits, '-', '.', '_')"],
        True,
    ),
    "hosts-bad-target": (
        restore(hosts={"db/0": "db-0"}),
        ["spec.hosts.db/0: 'db/0' is not a host name (letters, digits, '-', '.', '_')"],
        False,
    ),
    "hosts-empty-source": (
        restore(hosts={"db-0": ""}),
        ["spec.hosts.db-0: must not be empty"],
        True,
    ),
    "include-absolute": (
        restore(include=["/etc/passwd"]),
        ["spec.include[0]: '/etc/passwd' must be relative to the Backup's path (no leading /)"],
        True,
    ),
    "include-dotdot": (
        restore(include=["ok", "a/../../etc"]),
        ["spec.include[1]: 'a/../../etc' must not contain '..'"],
        True,
    ),
    "exclude-dotdot-alone": (
        restore(exclude=[".."]),
        ["spec.exclude[0]: '..' must not contain '..'"],
        True,
    ),
    "exclude-empty-component": (
        restore(exclude=["a//b"]),
        ["spec.exclude[0]: 'a//b' is not a relative path (empty component)"],
        True,
    ),
    "include-not-string": (
        restore(include=["a", 5]),
        ["spec.include[1]: must be a string, got number"],
        True,
    ),
    "include-not-list": (
        restore(include="a"),
        ["spec.include: must be a list of strings, got string"],
        True,
    ),
    "delete-not-bool": (
        restore(delete="yes"),
        ["spec.delete: must be true or false, got string"],
        True,
    ),
    "verify-not-bool": (
        restore(verify=1),
        ["spec.verify: must be true or false, got number"],
        True,
    ),
    "run-id-bad": (restore(runID="Run 2"), ["spec.runID: 'Run 2' is not a valid run id"], True),
    "wrong-kind": ({**restore(), "kind": "Backup"}, ["kind: must be Restore"], False),
    "command-empty": (
        restore(command={"command": []}),
        ["spec.command.command: must not be empty (the first entry is the program to run)"],
        True,
    ),
    "command-without-argv": (restore(command={}), ["spec.command.command: required"], True),
    "command-bad-timeout": (
        restore(command={"command": ["psql"], "timeout": "soon"}),
        ["spec.command.timeout: invalid duration 'soon' (use e.g. 90s, 30m, 1h30m)"],
        True,
    ),
    # model only: the schema does not tie spec.command to the target and the file options
    "command-into-a-claim": (
        restore(target=PVC, command={"command": ["psql"]}),
        [
            "spec.target.pvc: a Restore with spec.command pipes the dump into a command in the "
            "application's pods: give target.workload (the pods that run the database), not a "
            "pvc"
        ],
        False,
    ),
    "command-with-file-options": (
        restore(command={"command": ["psql"]}, exclude=["x"], verify=True),
        [
            "spec.exclude: does not apply to spec.command: a dump is one stream restored whole, "
            "not files",
            "spec.verify: does not apply to spec.command: a dump is one stream restored whole, "
            "not files",
        ],
        False,
    ),
}
MODEL_ONLY = {k for k, v in INVALID.items() if not v[2]}


@pytest.mark.parametrize(("raw", "expected"), [v[:2] for v in INVALID.values()], ids=INVALID.keys())
def test_each_rule_names_its_field(raw, expected):
    assert errors_of(raw) == expected


def test_every_error_is_reported_at_once():
    raw = restore(backup="", target={"pvc": {}}, asOf="soon", include=["/x"], delete="no")
    assert [e.split(":")[0] for e in errors_of(raw)] == [
        "spec.backup",
        "spec.target.pvc.claimName",
        "spec.asOf",
        "spec.include[0]",
        "spec.delete",
    ]


# ---------------------------------------------------------------- CRD agreement

VALID = {
    "workload": restore(),
    "pvc-everything": restore(
        target=PVC,
        snapshot="9b7d03e1",
        hosts={"data-copy": "db-1"},
        include=["uploads", "conf/app.ini", ".hidden/x", "..dots", "./a"],
        exclude=["*.tmp", "cache/"],
        delete=True,
        verify=True,
        runID="second-try",
    ),
    "as-of": restore(asOf="2026-01-31T23:00:00.5+01:00"),
    "dump": restore(
        command={"command": ["psql", "-X", "-d", "postgres"], "container": "pg", "timeout": "30m"},
        asOf="2026-01-31T23:00:00Z",
    ),
}


@pytest.mark.parametrize("raw", VALID.values(), ids=VALID.keys())
def test_schema_and_model_accept_the_valid_restores(raw):
    assert [e.message for e in _validator().iter_errors(raw)] == []
    parse_restore(raw)


@pytest.mark.parametrize(
    ("raw", "schema_rejects"), [(v[0], v[2]) for v in INVALID.values()], ids=INVALID.keys()
)
def test_schema_agrees_with_the_model_on_invalid_restores(raw, schema_rejects):
    schema_errors = list(_validator().iter_errors(raw))
    if schema_rejects:
        assert schema_errors, "the CRD schema should reject this Restore too"
    else:
        assert schema_errors == [], [e.message for e in schema_errors]


def test_crd_names_columns_and_status():
    crd = YAML(typ="safe", pure=True).load(RESTORE_CRD_PATH.read_text())
    assert crd["metadata"]["name"] == "restores.backup.appscode.com"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == "Restore"
    assert crd["spec"]["names"]["shortNames"] == ["rst"]
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1beta1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Backup", "Target", "Phase", "Snapshot", "Age"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert "x-kubernetes-preserve-unknown-fields" not in spec


def test_the_emulator_serves_restores_with_the_printer_columns(emulator, tmp_path):
    """Through the API (the emulator validates against the CRD's schema, as the API server
    does): a valid Restore is stored and listed with its columns, a bad one is refused."""
    from reconciler.resources import restore_crd_manifest

    emulator.create(restore_crd_manifest())
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}})
    raw = copy.deepcopy(VALID["workload"])
    raw["status"] = {"phase": "Running", "target": "StatefulSet/db", "snapshot": "3 hosts"}
    emulator.create(raw)
    kubeconfig = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "rst", "-n", "web"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()
    assert out[0].split() == ["NAME", "BACKUP", "TARGET", "PHASE", "SNAPSHOT", "AGE"]
    assert out[1].split()[:6] == ["r1", "www", "StatefulSet/db", "Running", "3", "hosts"]
    with pytest.raises(Exception, match=r"spec\.target"):
        emulator.create(restore(name="r2", target={}))
