"""Each rule of the Backup model, one failing input each, with the exact field path and message
a user reads in `restik diff` or the Backup's Ready condition; and what the parsed values
become (the retention policy as restic forget's arguments, resources, names, defaults)."""

from __future__ import annotations

import json

import pytest

from reconciler.api.backup import (
    DEFAULT_RESOURCES,
    Backup,
    InvalidBackup,
    Retention,
    backup_ref,
    parse_backup,
    wants_exec,
)
from reconciler.api.fields import MAX_LIST, MAX_STRING
from reconciler.api.hooks import HookSpec, exec_containers
from reconciler.api.source import CommandSource
from sidecar.restic import Context, render_forget
from tests.factories import backup

CTX = Context(host="pod-0", cache_dir="/restik/cache")


def errors_of(raw) -> list[str]:
    """Every error of an invalid Backup as printed: "path: message"."""
    with pytest.raises(InvalidBackup) as info:
        parse_backup(raw)
    return [str(e) for e in info.value.errors]


# ---------------------------------------------------------------- limits


@pytest.mark.parametrize("field", ["tags", "excludes"])
def test_a_list_of_more_than_max_entries_is_refused(field):
    assert getattr(parse_backup(backup(**{field: ["x"] * MAX_LIST})), field) == ("x",) * MAX_LIST
    assert errors_of(backup(**{field: ["x"] * (MAX_LIST + 1)})) == [
        f"spec.{field}: too many entries (257, at most 256)"
    ]


@pytest.mark.parametrize("field", ["keepTags", "retainTags"])
def test_retention_tag_lists_have_the_same_limit(field):
    ok = parse_backup(backup(retentionPolicy={field: ["t"] * MAX_LIST}))
    assert len(ok.retention.keep_tags or ok.retention.retain_tags) == MAX_LIST
    assert errors_of(backup(retentionPolicy={field: ["t"] * (MAX_LIST + 1)})) == [
        f"spec.retentionPolicy.{field}: too many entries (257, at most 256)"
    ]


def test_a_string_over_4096_characters_is_refused():
    fits = "/" + "d" * (MAX_STRING - 1)
    assert parse_backup(backup(path=fits)).source_path == fits
    assert errors_of(backup(path=fits + "d")) == [
        "spec.backupSource.path: too long (4097 characters, at most 4096)"
    ]
    assert errors_of(backup(excludes=["*" * 5000])) == [
        "spec.excludes[0]: too long (5000 characters, at most 4096)"
    ]


def test_metadata_name_longer_than_200_is_refused_by_restik():
    # restik derives longer names from it (restik-sidecar-<name>, leases): 200 leaves room.
    assert parse_backup(backup(name="a" * 200)).name == "a" * 200
    assert errors_of(backup(name="a" * 201)) == [
        "metadata.name: too long for restik (at most 200 characters)"
    ]
    assert errors_of(backup(name="a" * 254)) == [
        "metadata.name: name too long (254 characters, at most 253)",
        "metadata.name: too long for restik (at most 200 characters)",
    ]


def test_name_length_limits_of_volumes_and_secrets():
    assert parse_backup(backup(volume_name="v" * 63)).source_volume == "v" * 63
    assert errors_of(backup(volume_name="v" * 64)) == [
        "spec.backupSource.volumeName: volume name too long (64 characters, at most 63)"
    ]
    assert parse_backup(backup(secret="s" * 253)).secret_name == "s" * 253
    assert errors_of(backup(secret="s" * 254)) == [
        "spec.destination.repositorySecretName: Secret name too long (254 characters, at most 253)"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "must be between 0 and 1000000"),
        (1_000_001, "must be between 0 and 1000000"),
        ("7", "must be an integer, got string"),
        (7.0, "must be an integer, got number"),
        (True, "must be an integer, got boolean"),
        ([7], "must be an integer, got list"),
        ({"n": 7}, "must be an integer, got object"),
    ],
)
def test_a_snapshot_count_is_an_integer_from_0_to_a_million(value, message):
    for key in ("keepLastSnapshots", "keepYearlySnapshots"):
        assert errors_of(backup(retentionPolicy={key: value})) == [
            f"spec.retentionPolicy.{key}: {message}"
        ]


def test_snapshot_count_bounds_are_accepted():
    policy = {"keepLastSnapshots": 0, "keepDailySnapshots": 1_000_000}
    assert parse_backup(backup(retentionPolicy=policy)).retention == Retention(
        last=0, daily=1_000_000
    )


# ---------------------------------------------------------------- text rules


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/data\x00", "spec.backupSource.path: must not contain NUL or line breaks"),
        ("/data\r", "spec.backupSource.path: must not contain NUL or line breaks"),
        ("/data\nx", "spec.backupSource.path: must not contain NUL or line breaks"),
        ("data", "spec.backupSource.path: 'data' must be an absolute path"),
        ("/data/../etc", "spec.backupSource.path: '/data/../etc' must not contain '..'"),
        ("/data/..", "spec.backupSource.path: '/data/..' must not contain '..'"),
        ("/restik", "spec.backupSource.path: /restik is reserved for restik"),
        ("/restik/repo", "spec.backupSource.path: /restik is reserved for restik"),
        ("/", "spec.backupSource.path: must not be /"),
        ("", "spec.backupSource.path: must not be empty"),
        (7, "spec.backupSource.path: must be a string, got number"),
        (None, "spec.backupSource.path: required"),
    ],
)
def test_source_path_rules(path, message):
    assert errors_of(backup(path=path)) == [message]


@pytest.mark.parametrize("path", ["/restikdata", "/srv/restik", "/data/..old", "/a/b/"])
def test_source_paths_that_only_look_reserved_are_fine(path):
    assert parse_backup(backup(path=path)).source_path == path


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Data", "'Data' is not a valid volume name"),
        ("-data", "'-data' is not a valid volume name"),
        ("data-", "'data-' is not a valid volume name"),
        ("da.ta", "'da.ta' is not a valid volume name"),
        ("restik-cache", "volumes named restik-* belong to restik"),
        ("", "must not be empty"),
    ],
)
def test_source_volume_name_rules(name, message):
    assert errors_of(backup(volume_name=name)) == [f"spec.backupSource.volumeName: {message}"]


@pytest.mark.parametrize("name", ["d", "0", "my-data-1", "restik"])
def test_source_volume_names_that_are_fine(name):
    assert parse_backup(backup(volume_name=name)).source_volume == name


@pytest.mark.parametrize(
    ("repository", "message"),
    [
        ("-o=x", "must not start with '-'"),
        ("ftp://host/repo", "'ftp://host/repo' is not a restic repository (use an absolute path "
         "or one of s3:, rest:, sftp:, b2:, gs:, azure:, swift:, rclone:, local:)"),
        ("repo", "'repo' is not a restic repository"),
        (None, "required"),
        (["s3:x"], "must be a string, got list"),
    ],
)  # fmt: skip
def test_repository_rules(repository, message):
    raw = backup()
    raw["spec"]["destination"] = {"repositorySecretName": "s", "repository": repository}
    [error] = errors_of(raw)
    assert error.startswith(f"spec.destination.repository: {message}")


@pytest.mark.parametrize("tag", ["a,b", ","])
def test_tags_must_not_contain_commas(tag):
    assert errors_of(backup(tags=["ok", tag])) == ["spec.tags[1]: must not contain any of ','"]
    assert errors_of(backup(retentionPolicy={"keepTags": [tag]})) == [
        "spec.retentionPolicy.keepTags[0]: must not contain any of ','"
    ]
    assert errors_of(backup(retentionPolicy={"retainTags": [tag]})) == [
        "spec.retentionPolicy.retainTags[0]: must not contain any of ','"
    ]


def test_excludes_may_contain_commas():
    assert parse_backup(backup(excludes=["*.{jpg,png}"])).excludes == ("*.{jpg,png}",)


# ---------------------------------------------------------------- the destination volume


PVC = {"persistentVolumeClaim": {"claimName": "backups"}}
ONLY_PVC = (
    "spec.destination.volume: must be a persistentVolumeClaim ({}): restik mounts no other volume"
)


@pytest.mark.parametrize(
    ("volume", "error"),
    [
        (
            {"name": "Repo", **PVC},
            "spec.destination.volume.name: 'Repo' is not a valid volume name",
        ),
        (
            {"name": "r" * 64, **PVC},
            "spec.destination.volume.name: volume name too long (64 characters, at most 63)",
        ),
        (
            {"name": 5, **PVC},
            "spec.destination.volume.name: must be a string, got number",
        ),
        ("backups", "spec.destination.volume: must be an object, got string"),
        (
            {"persistentVolumeClaim": "backups"},
            "spec.destination.volume.persistentVolumeClaim: must be an object, got string",
        ),
        (
            {"persistentVolumeClaim": {}},
            "spec.destination.volume.persistentVolumeClaim.claimName: required",
        ),
        (
            {"persistentVolumeClaim": {"claimName": "Big"}},
            "spec.destination.volume.persistentVolumeClaim.claimName: 'Big' is not a valid "
            "claim name",
        ),
        (
            {"persistentVolumeClaim": {"claimName": "b", "readOnly": "no"}},
            "spec.destination.volume.persistentVolumeClaim.readOnly: "
            "must be true or false, got string",
        ),
        (
            {"persistentVolumeClaim": {"claimName": "b", "dataSource": {}}},
            "spec.destination.volume.persistentVolumeClaim.dataSource: unknown field",
        ),
        ({}, ONLY_PVC.format("got none")),
        # Issue 13 item 3: a node's or a network's filesystem, mounted read-write into
        # workloads the Backup's author may not edit.
        ({"hostPath": {"path": "/"}}, ONLY_PVC.format("got hostPath")),
        ({"nfs": {"server": "n", "path": "/"}}, ONLY_PVC.format("got nfs")),
        ({"csi": {"driver": "x"}}, ONLY_PVC.format("got csi")),
        ({"emptyDir": {}}, ONLY_PVC.format("got emptyDir")),
        ({"nfs": {"server": "n"}, **PVC}, ONLY_PVC.format("got nfs, persistentVolumeClaim")),
    ],
)
def test_destination_volume_rules(volume, error):
    assert errors_of(backup(volume=volume)) == [error]


def test_destination_volume_is_kept_as_plain_data():
    volume = {"name": "repo", "persistentVolumeClaim": {"claimName": "backups", "readOnly": False}}
    b = parse_backup(backup(volume=volume))
    assert b.destination_volume == volume
    assert type(b.destination_volume) is dict
    assert b.is_local and b.destination_path == "/repo"


def test_destination_path_rules():
    assert errors_of(backup(dest_path="/repo/../x")) == [
        "spec.destination.path: '/repo/../x' must not contain '..'"
    ]
    assert errors_of(backup(dest_path=None)) == ["spec.destination.path: required"]


# ---------------------------------------------------------------- resources


@pytest.mark.parametrize(
    "name",
    ["bad name", "", "c" * 254, "cpu:", "ünicode"],
    ids=["space", "empty", "too-long", "colon", "unicode"],
)
def test_an_invalid_resource_name_is_refused(name):
    assert errors_of(backup(resources={"limits": {"cpu": "1", name: "1"}})) == [
        f"spec.resources.limits.{name}: is not a valid resource name"
    ]


@pytest.mark.parametrize("name", ["cpu", "memory", "ephemeral-storage"])
def test_resource_names_that_are_fine(name):
    # the given request replaces its default, the other defaults stay (issue 12 item 4)
    quantity = "1" if name == "cpu" else "40Mi"
    resources = parse_backup(backup(resources={"requests": {name: quantity}})).resources
    assert resources["requests"][name] == quantity


@pytest.mark.parametrize("name", ["nvidia.com/gpu", "hugepages-2Mi", "c" * 253])
def test_other_resources_are_refused(name):
    """Issue 13 item 7: a Backup must not claim special devices for workloads it injects."""
    assert errors_of(backup(resources={"requests": {name: "1"}})) == [
        f"spec.resources.requests.{name}: only cpu, memory, ephemeral-storage may be set for "
        "the sidecar"
    ]


@pytest.mark.parametrize(
    ("name", "quantity", "bounds"),
    [
        ("cpu", "900", "from 1m to 8"),
        ("cpu", "9", "from 1m to 8"),
        ("cpu", "0", "from 1m to 8"),
        ("memory", "65Gi", "from 32Mi to 64Gi"),
        ("memory", "1Mi", "from 32Mi to 64Gi"),
        ("ephemeral-storage", "2Ti", "from 1Mi to 1Ti"),
    ],
)
def test_resources_beyond_their_bounds_are_refused(name, quantity, bounds):
    assert errors_of(backup(resources={"limits": {name: quantity}})) == [
        f"spec.resources.limits.{name}: {quantity!r} is out of bounds ({bounds})"
    ]


AT_BOUNDS = [("cpu", "8"), ("cpu", "1m"), ("memory", "64Gi"), ("memory", "32Mi"),
             ("ephemeral-storage", "1Ti")]  # fmt: skip


@pytest.mark.parametrize(("name", "quantity"), AT_BOUNDS)
def test_resources_at_their_bounds_are_fine(name, quantity):
    assert (
        parse_backup(backup(resources={"limits": {name: quantity}})).resources["limits"][name]
        == quantity
    )


@pytest.mark.parametrize(
    ("quantity", "stored"),
    [
        ("500m", "500m"),
        ("1.5", "1.5"),
        (".5", ".5"),
        ("5.", "5."),
        ("+1", "+1"),
        ("1e0", "1e0"),
        ("2E-2", "2E-2"),
        (1, "1"),
        (0.5, "0.5"),
    ],
)
def test_quantities_are_stored_as_strings(quantity, stored):
    # cpu: every one of these is within its bounds (1m to 8)
    b = parse_backup(backup(resources={"limits": {"cpu": quantity}}))
    assert b.resources["limits"]["cpu"] == stored


@pytest.mark.parametrize(
    ("quantity", "message"),
    [
        ("1.5.5", "'1.5.5' is not a valid quantity"),
        ("Gi", "'Gi' is not a valid quantity"),
        ("1 Gi", "'1 Gi' is not a valid quantity"),
        ("1Gb", "'1Gb' is not a valid quantity"),
        (None, "must be a quantity, got null"),
        (False, "must be a quantity, got boolean"),
        ({"v": 1}, "must be a quantity, got object"),
    ],
)
def test_invalid_quantities_are_refused(quantity, message):
    assert errors_of(backup(resources={"requests": {"cpu": quantity}})) == [
        f"spec.resources.requests.cpu: {message}"
    ]


def test_resources_have_limits_and_requests_only():
    assert errors_of(backup(resources={"claims": [], "limits": "x"})) == [
        "spec.resources.claims: unknown field",
        "spec.resources.limits: must be an object, got string",
    ]
    assert parse_backup(backup(resources={"limits": None})).resources == DEFAULT_RESOURCES
    assert parse_backup(backup()).resources == DEFAULT_RESOURCES


# ---------------------------------------------------------------- retention as restic forget


def test_every_retention_field_reaches_restic_forget():
    policy = {
        "keepLastSnapshots": 1,
        "keepHourlySnapshots": 2,
        "keepDailySnapshots": 3,
        "keepWeeklySnapshots": 4,
        "keepMonthlySnapshots": 5,
        "keepYearlySnapshots": 6,
        "keepTags": ["keep", "golden"],
        "retainHostname": "www-0",
        "retainTags": ["prod"],
        "prune": True,
    }
    b = parse_backup(backup(retentionPolicy=policy))
    assert b.retention == Retention(
        last=1,
        hourly=2,
        daily=3,
        weekly=4,
        monthly=5,
        yearly=6,
        keep_tags=("keep", "golden"),
        retain_hostname="www-0",
        retain_tags=("prod",),
        prune=True,
    )
    assert render_forget(b, CTX)[3:] == [
        "forget",
        "--host=www-0",
        "--tag=prod",
        "--keep-last=1",
        "--keep-hourly=2",
        "--keep-daily=3",
        "--keep-weekly=4",
        "--keep-monthly=5",
        "--keep-yearly=6",
        "--keep-tag=keep",
        "--keep-tag=golden",
        "--prune",
    ]


def test_keep_tags_alone_is_a_policy_that_keeps_snapshots():
    b = parse_backup(backup(retentionPolicy={"keepTags": ["golden"]}))
    assert b.retention == Retention(keep_tags=("golden",))
    assert render_forget(b, CTX)[3:] == ["forget", "--host=pod-0", "--keep-tag=golden"]


def test_a_policy_without_a_hostname_forgets_this_pods_snapshots():
    b = parse_backup(backup(retentionPolicy={"keepLastSnapshots": 2, "retainTags": []}))
    assert b.retention == Retention(last=2)
    assert render_forget(b, CTX)[3:] == ["forget", "--host=pod-0", "--keep-last=2"]


@pytest.mark.parametrize(
    ("policy", "error"),
    [
        ({"retainHostname": 5}, "spec.retentionPolicy.retainHostname: must be a string, got "
         "number"),
        ({"retainHostname": "a\nb"}, "spec.retentionPolicy.retainHostname: must not contain NUL or "
         "line breaks"),
        ({"prune": 1}, "spec.retentionPolicy.prune: must be true or false, got number"),
        ({"keepTags": "golden"}, "spec.retentionPolicy.keepTags: must be a list of strings, got "
         "string"),
        ({"keepWeekly": 1}, "spec.retentionPolicy.keepWeekly: unknown field"),
        ("daily", "spec.retentionPolicy: must be an object, got string"),
    ],
)  # fmt: skip
def test_retention_rules(policy, error):
    assert errors_of(backup(retentionPolicy=policy)) == [error]


def test_no_policy_and_a_null_policy_mean_nothing_is_forgotten():
    for raw in (backup(), backup(retentionPolicy=None)):
        b = parse_backup(raw)
        assert b.retention is None
        assert render_forget(b, CTX) is None


# ---------------------------------------------------------------- identity and defaults


def test_a_backup_without_a_namespace_is_in_default():
    raw = backup()
    del raw["metadata"]["namespace"]
    b = parse_backup(raw)
    assert (b.namespace, b.name, b.key) == ("default", "www", ("default", "www"))
    raw["metadata"]["namespace"] = ""
    assert parse_backup(raw).key == ("default", "www")


@pytest.mark.parametrize(
    ("raw", "ref"),
    [
        (backup(), ("web", "www")),
        ({"metadata": {"name": "www"}}, ("default", "www")),
        ({"metadata": {"namespace": "web"}}, ("web", "<unnamed>")),
        ({"metadata": "broken"}, ("default", "<unnamed>")),
        ({}, ("default", "<unnamed>")),
        ("not an object", ("default", "<unnamed>")),
    ],
)
def test_backup_ref_names_even_a_broken_backup(raw, ref):
    assert backup_ref(raw) == ref


def test_an_invalid_backup_names_itself_and_every_error_in_its_message():
    raw = backup(schedule="never", paused="yes")
    del raw["metadata"]["namespace"]
    with pytest.raises(InvalidBackup) as info:
        parse_backup(raw)
    assert (info.value.namespace, info.value.name) == ("default", "www")
    assert str(info.value) == (
        "Backup default/www: spec.schedule: invalid cron expression 'never': expected 5 fields "
        "(minute first) or 6 fields (seconds first), got 1; "
        "spec.paused: must be true or false, got string"
    )


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        (["www"], "metadata: must be an object, got list"),
        ({"name": None}, "metadata.name: required"),
        ({"name": "www", "namespace": "web", "generation": "2"}, None),
    ],
)
def test_metadata_rules(metadata, error):
    raw = backup()
    raw["metadata"] = metadata
    if error is None:
        b = parse_backup(raw)
        assert b.generation is None and b.uid is None
    else:
        assert error in errors_of(raw)


def test_uid_and_generation_are_kept_for_the_status():
    raw = backup()
    raw["metadata"].update(uid="1234", generation=7)
    b = parse_backup(raw)
    assert (b.uid, b.generation) == ("1234", 7)


def test_api_version_and_kind_may_be_left_out_but_not_be_wrong():
    raw = backup()
    del raw["apiVersion"], raw["kind"]
    assert isinstance(parse_backup(raw), Backup)
    raw["apiVersion"] = "backup.appscode.com/v1"
    assert errors_of(raw) == ["apiVersion: must be backup.appscode.com/v1beta1"]
    raw["apiVersion"], raw["kind"] = "backup.appscode.com/v1beta1", "Restore"
    assert errors_of(raw) == ["kind: must be Backup"]


# ---------------------------------------------------------------- spec structure


def test_null_sections_are_present_but_empty():
    raw = backup()
    raw["spec"]["backupSource"] = None
    assert errors_of(raw) == [
        "spec.backupSource.volumeName: required",
        "spec.backupSource.path: required",
    ]
    raw = backup()
    raw["spec"]["destination"] = None
    assert errors_of(raw) == [
        "spec.destination.repositorySecretName: required",
        "spec.destination: give either volume+path or repository (neither was given)",
    ]


def test_an_empty_source_still_needs_its_fields():
    raw = backup()
    raw["spec"]["backupSource"] = {}
    assert errors_of(raw) == [
        "spec.backupSource.volumeName: required",
        "spec.backupSource.path: required",
    ]


def test_unknown_fields_are_named_wherever_they_are():
    raw = backup(retentionPolicy={"keepLast": 1})
    raw["spec"]["destination"]["region"] = "eu"
    raw["spec"]["backupSource"]["readOnly"] = True
    assert errors_of(raw) == [
        "spec.backupSource.readOnly: unknown field",
        "spec.destination.region: unknown field",
        "spec.retentionPolicy.keepLast: unknown field",
    ]


@pytest.mark.parametrize(
    ("value", "kind"),
    [(1.5, "number"), (7, "number"), (True, "boolean"), ([], "list"), ({}, "object"),
     ((1, 2), "tuple")],
)  # fmt: skip
def test_type_errors_name_the_type_found(value, kind):
    assert errors_of(backup(tags=["a", value])) == [f"spec.tags[1]: must be a string, got {kind}"]
    if not isinstance(value, list):
        assert errors_of(backup(tags=value)) == [
            f"spec.tags: must be a list of strings, got {kind}"
        ]


def test_a_null_list_entry_is_missing():
    assert errors_of(backup(tags=["a", None])) == ["spec.tags[1]: required"]
    assert parse_backup(backup(tags=None)).tags == ()


def test_paused_is_a_boolean():
    assert parse_backup(backup(paused=True)).paused is True
    assert parse_backup(backup(paused=False)).paused is False
    assert parse_backup(backup(paused=None)).paused is False
    assert errors_of(backup(paused="true")) == ["spec.paused: must be true or false, got string"]


def test_parsed_parts_cannot_be_changed():
    b = parse_backup(backup(retentionPolicy={"keepLastSnapshots": 1}))
    with pytest.raises(AttributeError):
        b.retention.last = 0
    with pytest.raises(InvalidBackup) as info:
        parse_backup(backup(paused="x"))
    [error] = info.value.errors
    with pytest.raises(AttributeError):
        error.message = "fine"
    assert hash(error) == hash(type(error)(error.path, error.message))


def test_every_bad_entry_of_a_list_is_reported():
    assert errors_of(backup(tags=[7, "a,b", None, "ok", ""])) == [
        "spec.tags[0]: must be a string, got number",
        "spec.tags[1]: must not contain any of ','",
        "spec.tags[2]: required",
        "spec.tags[4]: must not be empty",
    ]


def test_every_bad_resource_entry_is_reported():
    resources = {
        "limits": {"bad name": "1", "cpu": True, "memory": "lots", "x y": "1", "cpu2": "1"},
        "requests": {"cpu": "much", "memory": []},
    }
    assert errors_of(backup(resources=resources)) == [
        "spec.resources.limits.bad name: is not a valid resource name",
        "spec.resources.limits.cpu: must be a quantity, got boolean",
        "spec.resources.limits.memory: 'lots' is not a valid quantity",
        "spec.resources.limits.x y: is not a valid resource name",
        "spec.resources.limits.cpu2: only cpu, memory, ephemeral-storage may be set for the "
        "sidecar",
        "spec.resources.requests.cpu: 'much' is not a valid quantity",
        "spec.resources.requests.memory: must be a quantity, got list",
    ]


def test_a_backup_as_the_api_server_sends_it():
    # Decoded from JSON: no string is the same object as a literal in restik's code.
    raw = backup(volume={"name": "repo", "persistentVolumeClaim": {"claimName": "nas"}})
    b = parse_backup(json.loads(json.dumps(raw)))
    assert b.destination_volume == {"name": "repo", "persistentVolumeClaim": {"claimName": "nas"}}
    assert b.destination_path == "/repo"


def test_the_destination_volume_is_a_plain_copy_of_what_was_read():
    # restik diff reads files with ruamel.yaml's round-trip types (comments attached).
    from ruamel.yaml import YAML

    raw = YAML().load(
        "metadata: {name: www, namespace: web}\n"
        "spec:\n"
        "  schedule: '@hourly'\n"
        "  backupSource: {volumeName: data, path: /data}\n"
        "  destination:\n"
        "    repositorySecretName: s\n"
        "    path: /repo\n"
        "    volume:\n"
        "      persistentVolumeClaim: {claimName: nas}  # the NAS\n"
    )
    b = parse_backup(raw)
    assert type(b.destination_volume) is dict
    assert type(b.destination_volume["persistentVolumeClaim"]) is dict
    raw["spec"]["destination"]["volume"]["persistentVolumeClaim"]["claimName"] = "changed"
    assert b.destination_volume == {"persistentVolumeClaim": {"claimName": "nas"}}


# ---------------------------------------------------------------- consistent backups


PLAIN_NAME = "must be a plain file name (no '/', not '.' or '..')"
NOT_RESTIK = "restik is restik's sidecar; name the application's container"
BAD_DURATION = "(use e.g. 90s, 30m, 1h30m)"


def command_source(**command) -> dict:
    """A raw Backup whose source is a command (``command`` fields replace the defaults)."""
    raw = backup()
    raw["spec"]["backupSource"] = {
        "command": {"command": ["pg_dumpall"], "filename": "pg_dumpall.sql", **command}
    }
    return raw


def test_a_command_source_parses_with_its_defaults():
    parsed = parse_backup(command_source())
    assert (parsed.source_volume, parsed.source_path) == (None, None)
    assert parsed.source_command == CommandSource(("pg_dumpall",), "pg_dumpall.sql")
    assert parsed.snapshot_path == "/pg_dumpall.sql"
    given = command_source(container="postgres", timeout="1h30m", command=["sh", "-c", "a\nb"])
    assert parse_backup(given).source_command == CommandSource(
        ("sh", "-c", "a\nb"), "pg_dumpall.sql", "postgres", 5400.0
    )
    assert parse_backup(backup()).snapshot_path == "/data"


def test_hooks_parse_with_their_defaults():
    parsed = parse_backup(backup(hooks={"preBackup": {"command": ["fsfreeze", "-f", "/data"]}}))
    assert parsed.pre_backup == HookSpec(("fsfreeze", "-f", "/data"), None, 300.0, "Fail")
    assert parsed.post_backup is None
    hooks = {"postBackup": {"command": ["x"], "container": "db", "timeout": "90s",
                            "onError": "Continue"}, "preBackup": None}  # fmt: skip
    parsed = parse_backup(backup(hooks=hooks))
    assert parsed.pre_backup is None
    assert parsed.post_backup == HookSpec(("x",), "db", 90.0, "Continue")


def test_source_volume_and_command_are_exclusive():
    raw = command_source()
    raw["spec"]["backupSource"].update(volumeName="data", path="/data")
    assert errors_of(raw) == [
        "spec.backupSource: give either volumeName+path or command (both were given)"
    ]
    raw["spec"]["backupSource"] = {"command": None}
    assert errors_of(raw) == [
        "spec.backupSource.command: required: an object with command and filename"
    ]
    raw["spec"]["backupSource"] = {"command": "pg_dumpall"}
    assert errors_of(raw) == ["spec.backupSource.command: must be an object, got string"]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"command": []}, "command: must not be empty (the first entry is the program to run)"),
        ({"command": None}, "command: required"),
        ({"command": "pg_dumpall"}, "command: must be a list of strings, got string"),
        ({"command": ["pg_dump", 5]}, "command[1]: must be a string, got number"),
        ({"command": [""]}, "command[0]: must name the program to run"),
        ({"command": ["a\x00b"]}, "command[0]: must not contain NUL"),
        ({"command": ["x"] * (MAX_LIST + 1)}, "command: too many entries (257, at most 256)"),
        ({"command": ["x" * (MAX_STRING + 1)]}, "command[0]: too long (4097 characters, at "
                                                 "most 4096)"),
        ({"filename": None}, "filename: required"),
        ({"filename": ""}, "filename: must not be empty"),
        ({"filename": "db/dump.sql"}, f"filename: 'db/dump.sql' {PLAIN_NAME}"),
        ({"filename": ".."}, f"filename: '..' {PLAIN_NAME}"),
        ({"filename": "é" * 128}, "filename: too long (256 bytes, at most 255)"),
        ({"filename": "a\nb"}, "filename: must not contain NUL or line breaks"),
        ({"container": "Postgres"}, "container: 'Postgres' is not a valid container name"),
        ({"container": "restik"}, f"container: {NOT_RESTIK}"),
        ({"timeout": "soon"}, f"timeout: invalid duration 'soon' {BAD_DURATION}"),
        ({"timeout": 300}, "timeout: must be a duration such as 5m or 90s, got number"),
        ({"timeout": "0s"}, "timeout: '0s' must be longer than 0s"),
        ({"timeout": "25h"}, "timeout: '25h' is longer than 24h"),
        ({"user": "postgres"}, "user: unknown field"),
    ],
)  # fmt: skip
def test_command_source_rules(fields, error):
    assert errors_of(command_source(**fields)) == [f"spec.backupSource.command.{error}"]


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({}, "command: required"),
        ({"command": []}, "command: must not be empty (the first entry is the program to run)"),
        ({"command": ["sync"], "onError": "Ignore"},
         "onError: 'Ignore' must be one of Fail, Continue"),
        ({"command": ["sync"], "onError": "fail"}, "onError: 'fail' must be one of Fail, Continue"),
        ({"command": ["sync"], "timeout": "-5m"},
         f"timeout: invalid duration '-5m' {BAD_DURATION}"),
        ({"command": ["sync"], "timeout": "0"}, "timeout: '0' must be longer than 0s"),
        ({"command": ["sync"], "container": "restik"}, f"container: {NOT_RESTIK}"),
        ({"command": ["sync"], "filename": "x"}, "filename: unknown field"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("name", ["preBackup", "postBackup"])
def test_hook_rules(name, fields, error):
    assert errors_of(backup(hooks={name: fields})) == [f"spec.hooks.{name}.{error}"]


def test_hooks_is_an_object_of_two_hooks():
    assert errors_of(backup(hooks={"duringBackup": {"command": ["x"]}})) == [
        "spec.hooks.duringBackup: unknown field"
    ]
    assert errors_of(backup(hooks=["sync"])) == ["spec.hooks: must be an object, got list"]
    assert errors_of(backup(hooks={"preBackup": "sync"})) == [
        "spec.hooks.preBackup: must be an object, got string"
    ]
    assert parse_backup(backup(hooks=None)).pre_backup is None


@pytest.mark.parametrize(
    ("spec", "wanted"),
    [
        ({}, False),
        ({"hooks": None}, False),
        ({"hooks": {}}, False),
        ({"hooks": {"preBackup": None, "postBackup": None}}, False),
        ({"hooks": {"preBackup": {"command": ["sync"]}}}, True),
        ({"hooks": {"postBackup": {"command": ["sync"]}}}, True),
        ({"hooks": {"postBackup": {"command": []}}}, True),  # invalid, but asks for it
        ({"backupSource": {"volumeName": "data", "path": "/data"}}, False),
        ({"backupSource": {"command": {"command": ["pg_dumpall"]}}}, True),
        ({"hooks": "sync", "backupSource": ["x"]}, False),
    ],
)
def test_wants_exec_says_whether_the_sidecar_runs_commands_in_the_pod(spec, wanted):
    raw = backup()
    raw["spec"].pop("backupSource")
    raw["spec"].update(spec)
    assert wants_exec(raw) is wanted


@pytest.mark.parametrize("raw", [None, "x", {}, {"spec": None}, {"spec": []}])
def test_wants_exec_of_a_broken_object_is_false(raw):
    assert wants_exec(raw) is False


def pod(*containers, init=()):
    """A pod spec: ``containers`` as (name, [mounted volumes]), init containers likewise
    with their restartPolicy."""

    def entry(name, mounts, **extra):
        return {"name": name, "volumeMounts": [{"name": v} for v in mounts], **extra}

    return {
        "containers": [entry(n, m) for n, m in containers],
        "initContainers": [entry(n, m, restartPolicy=p) for n, m, p in init],
    }


def test_hooks_run_by_default_in_the_first_container_that_mounts_the_source_volume():
    hooks = {"preBackup": {"command": ["sync"]},
             "postBackup": {"command": ["sync"], "container": "app"}}  # fmt: skip
    hooked = parse_backup(backup(hooks=hooks))
    spec = pod(("restik", ["data"]), ("app", []), ("db", ["data"]), ("db2", ["data"]))
    assert exec_containers(hooked, spec, "pod p") == ({"preBackup": "db", "postBackup": "app"}, [])
    # a native sidecar (restartable init container) runs alongside; a plain one has exited
    spec = pod(("app", []), init=[("setup", ["data"], None), ("agent", ["data"], "Always")])
    assert exec_containers(hooked, spec, "pod p")[0]["preBackup"] == "agent"


def test_with_a_command_source_hooks_default_to_the_commands_container():
    raw = command_source(container="db")
    raw["spec"]["hooks"] = {"preBackup": {"command": ["sync"]}}
    spec = pod(("app", []), ("db", []))
    assert exec_containers(parse_backup(raw), spec, "pod p") == (
        {"command": "db", "preBackup": "db"}, [])  # fmt: skip
    assert exec_containers(parse_backup(command_source()), spec, "pod p")[0] == {"command": "app"}
    chosen, errors = exec_containers(parse_backup(command_source()), pod(("restik", [])), "pod p")
    assert chosen == {} and [str(e) for e in errors] == [
        "spec.backupSource.command.container: no container of pod p to run in: it has no containers"
    ]
