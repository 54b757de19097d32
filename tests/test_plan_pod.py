"""The planner and the pod a sidecar joins: a metrics port another container takes is a
problem, not an injection; the sidecar's own service-account token; the sidecar runs as
the user of the container whose volume it backs up."""

from __future__ import annotations

import copy

import pytest

from reconciler.api.backup import parse_backup
from reconciler.api.constants import HASH_ANNOTATION, SIDECAR_NAME, TOKEN_MOUNT, TOKEN_VOLUME
from reconciler.controller.plan import INJECT, UPDATE, plan
from reconciler.controller.pod import AppUser, PortClash, app_user, metrics_port_clash
from reconciler.controller.podtemplate import inject
from reconciler.controller.render import Renderer
from tests.factories import KINDS, backup, run_cli, workload

RENDERER = Renderer()


def run(raw_backup, obj):
    return plan([parse_backup(raw_backup)], [obj], RENDERER)


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def sidecar(obj):
    (container,) = [c for c in pod_spec(obj)["containers"] if c["name"] == SIDECAR_NAME]
    return container


def with_port(obj, port, *, container="app", init=None):
    out = copy.deepcopy(obj)
    entry = {"name": container, "image": "x", "ports": [{"containerPort": port}]}
    if init is None:
        pod_spec(out)["containers"].append(entry)
    else:
        if init:
            entry["restartPolicy"] = init
        pod_spec(out).setdefault("initContainers", []).append(entry)
    return out


# ---------------------------------------------------------------- the metrics port


@pytest.mark.parametrize("kind", KINDS)
def test_a_taken_metrics_port_is_a_problem_and_nothing_is_injected(kind):
    obj = with_port(workload(kind), 9464, container="exporter")
    before = copy.deepcopy(obj)
    result = run(backup(), obj)
    assert result.changes == []
    [problem] = result.problems
    assert problem.backup == "www" and problem.severity == "error"
    assert problem.message == (
        f"spec.metricsPort: port 9464 is already used by container 'exporter' of {kind}/app;"
        " set spec.metricsPort to a free port"
    )
    assert obj == before


@pytest.mark.parametrize("kind", KINDS)
def test_another_metrics_port_avoids_the_clash(kind):
    obj = with_port(workload(kind), 9464, container="exporter")
    result = run(backup(metricsPort=9465), obj)
    assert result.problems == []
    [change] = result.changes
    assert change.action == INJECT
    container = sidecar(change.after)
    assert container["ports"] == [
        {"name": "restik-metrics", "containerPort": 9465, "protocol": "TCP"}
    ]
    assert container["args"][container["args"].index("--metrics-port") + 1] == "9465"


def test_the_metrics_port_is_in_the_hash():
    b1, b2 = parse_backup(backup()), parse_backup(backup(metricsPort=9465))
    assert RENDERER.config_hash(b1, "Deployment", "app") != RENDERER.config_hash(
        b2, "Deployment", "app"
    )


def test_a_clash_on_an_injected_workload_keeps_its_sidecar():
    """A port added to the app after injection: reported, and the sidecar is left alone,
    even though the hash (which covers only what restik renders) still matches."""
    b = parse_backup(backup())
    obj = inject(workload(), RENDERER.render(b, "Deployment", "app"))
    assert run(backup(), obj).problems == []
    clashing = with_port(obj, 9464, container="late")
    result = run(backup(), clashing)
    assert result.changes == []
    [problem] = result.problems
    assert "'late'" in problem.message
    assert "Deployment/app" in {str(r) for r in result.injected}


@pytest.mark.parametrize(
    ("init", "clash"),
    [(False, None), ("Always", PortClash("side", 9464))],
    ids=["plain-init-container-has-exited", "restartable-init-container-runs-alongside"],
)
def test_init_containers_clash_only_when_they_keep_running(init, clash):
    obj = with_port(workload(), 9464, container="side", init=init)
    assert metrics_port_clash(obj, 9464) == clash


def test_the_sidecars_own_port_is_no_clash():
    b = parse_backup(backup())
    obj = inject(workload(), RENDERER.render(b, "Deployment", "app"))
    assert metrics_port_clash(obj, 9464) is None
    assert run(backup(), obj).changes == []


@pytest.mark.parametrize(
    "broken",
    [
        {"spec": None},
        {"spec": {"template": {"spec": {"containers": "x"}}}},
        {"spec": {"template": {"spec": {"containers": [{"ports": "x"}]}}}},
        {"spec": {"template": {"spec": {"containers": [{"ports": [7]}]}}}},
    ],
)
def test_clash_check_never_raises_on_malformed_pods(broken):
    assert metrics_port_clash(broken, 9464) is None


# ---------------------------------------------------------------- the token


@pytest.mark.parametrize("automount", [None, True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_sidecar_mounts_its_own_token(kind, automount):
    """With automountServiceAccountToken: false on the pod (or its service account) the
    sidecar would have no token and no way to reach the API; it projects its own, which
    automount then leaves alone (it skips containers that mount that path)."""
    obj = workload(kind)
    if automount is not None:
        pod_spec(obj)["automountServiceAccountToken"] = automount
    [change] = run(backup(), obj).changes
    spec = pod_spec(change.after)
    assert spec.get("automountServiceAccountToken") == automount  # the user's, untouched
    (volume,) = [v for v in spec["volumes"] if v["name"] == TOKEN_VOLUME]
    sources = volume["projected"]["sources"]
    assert [next(iter(s)) for s in sources] == ["serviceAccountToken", "configMap", "downwardAPI"]
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
    mounts = [m for m in sidecar(change.after)["volumeMounts"] if m["mountPath"] == TOKEN_MOUNT]
    assert mounts == [{"name": TOKEN_VOLUME, "mountPath": TOKEN_MOUNT, "readOnly": True}]
    app = spec["containers"][0]
    assert all(m["name"] != TOKEN_VOLUME for m in app.get("volumeMounts", []))


def test_offline_diff_exits_2_naming_the_container_and_port(tmp_path):
    import json

    obj = with_port(workload(), 9464, container="exporter")
    path = tmp_path / "app.json"
    path.write_text(json.dumps({"kind": "List", "apiVersion": "v1", "items": [backup(), obj]}))
    code, _, err = run_cli(["diff", "-f", str(path)])
    assert code == 2
    assert "port 9464 is already used by container 'exporter'" in err


# ---------------------------------------------------------------- who the sidecar runs as


def with_users(obj, container=None, pod=None, *, mounts=True):
    out = copy.deepcopy(obj)
    spec = pod_spec(out)
    if pod is not None:
        spec["securityContext"] = pod
    app = spec["containers"][0]
    if container is not None:
        app["securityContext"] = container
    if not mounts:
        app.pop("volumeMounts", None)
    return out


# (container securityContext, pod securityContext, spec.securityContext) -> sidecar's
USERS = {
    "nothing-known": (None, None, None, (65532, 65532)),
    "container": ({"runAsUser": 999, "runAsGroup": 998}, None, None, (999, 998)),
    "pod": (None, {"runAsUser": 70, "runAsGroup": 70, "fsGroup": 70}, None, (70, 70)),
    "container-over-pod": ({"runAsUser": 999}, {"runAsUser": 1, "runAsGroup": 2}, None, (999, 2)),
    "user-only": ({"runAsUser": 999}, None, None, (999, 65532)),
    "group-only": ({"runAsGroup": 0}, None, None, (65532, 0)),
    "app-as-root": ({"runAsUser": 0, "runAsGroup": 0}, None, None, (65532, 0)),
    "backup-overrides": ({"runAsUser": 999, "runAsGroup": 999}, None, {"runAsUser": 5}, (5, 999)),
    "backup-overrides-both": (None, None, {"runAsUser": 5, "runAsGroup": 6}, (5, 6)),
    "not-numbers": ({"runAsUser": "999", "runAsGroup": True}, None, None, (65532, 65532)),
}


@pytest.mark.parametrize(("container", "pod", "override", "expected"), USERS.values(), ids=USERS)
@pytest.mark.parametrize("kind", KINDS)
def test_sidecar_runs_as_the_user_of_the_app(kind, container, pod, override, expected):
    obj = with_users(workload(kind), container, pod)
    raw = backup(securityContext=override) if override else backup()
    [change] = run(raw, obj).changes
    sc = sidecar(change.after)["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"]) == expected
    assert sc["runAsNonRoot"] is True
    # the pod's own settings (fsGroup included) are left alone
    assert pod_spec(change.after).get("securityContext") == pod
    # and the result is stable: planning the injected workload again changes nothing
    assert run(raw, change.after).changes == []


def test_the_user_comes_from_the_container_that_mounts_the_source():
    obj = workload()
    pod_spec(obj)["containers"] = [
        {"name": "other", "image": "x", "securityContext": {"runAsUser": 1}},
        {
            "name": "db",
            "image": "pg",
            "securityContext": {"runAsUser": 999, "runAsGroup": 999},
            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql"}],
        },
    ]
    assert app_user(obj, "data") == AppUser(999, 999)
    assert app_user(obj, "other-volume") == AppUser(None, None)


def test_an_init_container_counts_when_no_container_mounts_the_source():
    obj = with_users(workload(), mounts=False)
    pod_spec(obj)["initContainers"] = [
        {
            "name": "seed",
            "image": "x",
            "securityContext": {"runAsUser": 33},
            "volumeMounts": [{"name": "data", "mountPath": "/d"}],
        }
    ]
    assert app_user(obj, "data") == AppUser(33, None)


def test_a_statefulset_claim_template_mount_counts():
    obj = workload("StatefulSet", volumes=[], claim_templates=["pgdata"])
    pod_spec(obj)["containers"] = [
        {
            "name": "pg",
            "image": "pg",
            "securityContext": {"runAsUser": 999},
            "volumeMounts": [{"name": "pgdata", "mountPath": "/var/lib/postgresql"}],
        }
    ]
    assert app_user(obj, "pgdata") == AppUser(999, None)


def test_restiks_own_sidecar_never_counts():
    b = parse_backup(backup(securityContext={"runAsUser": 4242}))
    obj = inject(workload(), RENDERER.render(b, "Deployment", "app"))
    assert app_user(obj, "data") == AppUser(None, None)


@pytest.mark.parametrize(
    "broken",
    [
        {},
        {"spec": {"template": {"spec": {"containers": None, "securityContext": "x"}}}},
        {"spec": {"template": {"spec": {"containers": [{"volumeMounts": "data"}]}}}},
        {
            "spec": {
                "template": {
                    "spec": {
                        "securityContext": [],
                        "containers": [{"volumeMounts": [{"name": "data"}]}],
                    }
                }
            }
        },
    ],
)
def test_app_user_never_raises_on_malformed_pods(broken):
    assert app_user(broken, "data") == AppUser(None, None)


def test_a_changed_app_user_updates_the_sidecar():
    """The user is rendered per workload: the hash must follow it (the renderer renders once
    per Backup and user, and fills in the workload by string replacement)."""
    first = run(backup(), with_users(workload(), {"runAsUser": 999})).changes[0].after
    moved = with_users(first, {"runAsUser": 1000})
    [change] = run(backup(), moved).changes
    assert change.action == UPDATE
    assert sidecar(change.after)["securityContext"]["runAsUser"] == 1000
    assert annotation(change.after) != annotation(first)
    assert run(backup(), change.after).changes == []


def test_hashes_stay_correct_when_users_interleave():
    """One Renderer, many workloads of one Backup with different users, in any order: each
    hash equals a fresh rendering's."""
    b = parse_backup(backup())
    shared = Renderer()
    users = [AppUser(999, 999), AppUser(None, None), AppUser(1000, None), AppUser(999, 999)]
    for i, app in enumerate(users * 2):
        name = f"w{i % 3}"
        fresh = Renderer().render(b, "Deployment", name, app)
        assert shared.config_hash(b, "Deployment", name, app) == fresh.config_hash
        assert shared.render(b, "Deployment", name, app) == fresh


def test_offline_diff_shows_the_sidecar_user(tmp_path):
    from ruamel.yaml import YAML

    obj = with_users(workload(), {"runAsUser": 999, "runAsGroup": 999})
    path = tmp_path / "app.yaml"
    with path.open("w") as f:
        YAML(typ="safe", pure=True).dump_all([backup(), obj], f)
    code, out, _ = run_cli(["diff", "-f", str(path)])
    assert code == 1
    added = {line[1:].strip() for line in out.splitlines() if line.startswith("+ ")}
    assert {"runAsUser: 999", "runAsGroup: 999"} <= added


def annotation(obj):
    return obj["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION]


# ---------------------------------------------------------------- hooks and command sources


def dump_backup(**command):
    raw = backup()
    raw["spec"]["backupSource"] = {"command": {"command": ["pg_dumpall"], "filename": "all.sql",
                                               **command}}  # fmt: skip
    return raw


@pytest.mark.parametrize("kind", KINDS)
def test_a_command_source_needs_no_volume_and_mounts_none(kind):
    obj = workload(kind, volumes=[], containers=[{"name": "postgres", "image": "postgres:15"}])
    result = run(dump_backup(), obj)
    assert result.problems == []
    [change] = result.changes
    assert change.action == INJECT
    mounts = [m["name"] for m in sidecar(change.after)["volumeMounts"]]
    assert mounts == ["restik-repo", "restik-cache", TOKEN_VOLUME]
    assert run(dump_backup(), change.after).changes == []  # in sync: nothing more to do


def test_a_volume_source_renders_as_before_hooks_and_all():
    """Hooks are read by the sidecar at run time: they change neither the pod template
    nor its hash (no rollout when a hook changes)."""
    plain = run(backup(), workload()).changes[0].after
    hooks = {"preBackup": {"command": ["sync"]}, "postBackup": {"command": ["true"]}}
    hooked = run(backup(hooks=hooks), workload()).changes[0].after
    assert hooked == plain
    assert run(backup(hooks=hooks), plain).changes == []


def test_a_hook_in_a_container_the_pod_lacks_is_a_problem_with_the_names_it_has():
    hooks = {"preBackup": {"command": ["sync"], "container": "mysql"}}
    result = run(backup(hooks=hooks), workload())
    [problem] = result.problems
    assert problem.severity == "error" and problem.backup == "www"
    assert problem.message == (
        "spec.hooks.preBackup.container: Deployment/app has no container 'mysql' "
        "(its containers: app)"
    )
    # reported, and the sidecar still goes in: its runs fail with the same reason
    assert [c.action for c in result.changes] == [INJECT]
    again = run(backup(hooks=hooks), result.changes[0].after)
    assert again.changes == [] and [p.message for p in again.problems] == [problem.message]


def test_a_command_in_a_missing_container_names_the_containers_there_are():
    obj = workload(volumes=[], containers=[{"name": "db", "image": "x"},
                                           {"name": "metrics", "image": "y"}])  # fmt: skip
    result = run(dump_backup(container="postgres"), obj)
    assert [p.message for p in result.problems] == [
        "spec.backupSource.command.container: Deployment/app has no container 'postgres' "
        "(its containers: db, metrics)"
    ]


def test_a_hook_without_a_container_needs_one_that_mounts_the_source_volume():
    obj = workload(containers=[{"name": "app", "image": "x"}])  # mounts nothing
    result = run(backup(hooks={"postBackup": {"command": ["true"]}}), obj)
    assert [p.message for p in result.problems] == [
        "spec.hooks.postBackup.container: no container of Deployment/app to run in: none of "
        "its containers (app) mounts volume 'data'; name one"
    ]
