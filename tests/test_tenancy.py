"""Issue 13 (multi-tenant safety): what a tenant's objects or a backed-up pod can make restik do."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import pytest

from reconciler.api.backup import InvalidBackup, parse_backup
from reconciler.api.constants import CONFIG_LABEL, SECRET_ENV, SIDECAR_NAME
from reconciler.controller.cycle import Controller
from reconciler.controller.loop import Loop
from reconciler.controller.options import Settings
from reconciler.controller.reconcilers.rbac import desired_role, desired_rolebinding
from reconciler.controller.render import Renderer
from reconciler.kube.client import Kube
from sidecar.environment import scrub
from sidecar.runner import Runner, redact, redact_url, restic_env, secret_values
from tests.factories import RESTIC, base_env, make_backup, needs_restic, write_tree
from tests.factories import backup as backup_object
from tests.factories.cluster import BACKUP_API, NS, backup, containers, get, workload
from tests.factories.kustomize import _built, find, rights

FORGED = [
    "Deployment/../../tenant-v/deployments/other",
    "Deployment/app/status?watch=true",
    "Secret/www-restic",
    "Deployment/UPPER",
    "Deployment/",
]


def in_namespace(obj: dict, namespace: str) -> dict:
    obj["metadata"]["namespace"] = namespace
    return obj


def forge_status(emu, entries: list[str], name: str = "www") -> None:
    """What any pod bound to the sidecar role could write: backups/status of its Backup."""
    obj = emu.get(BACKUP_API, "Backup", name, NS)
    obj["status"] = {**(obj.get("status") or {}), "workloads": entries}
    emu.update(obj, subresource="status")


def test_forged_status_workloads_are_never_requested(cluster, kubeconfig):
    """Item 1: status.workloads is tenant-writable; the controller never builds a request from
    it, so a traversal reaches nothing and a query string breaks no cycle."""
    cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant-v"}})
    cluster.create(in_namespace(backup("tv"), "tenant-v"))
    cluster.create(in_namespace(workload(name="other", label="tv"), "tenant-v"))
    cluster.create(backup())
    cluster.create(workload())
    controller = Controller(Kube.connect(str(kubeconfig)), Settings())
    controller.cycle()
    forge_status(cluster, FORGED)
    cluster.create(workload(name="second"))  # another workload: the cycle must still act
    cluster.clear_requests()
    stats = controller.cycle()
    assert stats.errors == 0
    assert stats.patched == 1
    for request in cluster.requests:
        assert "%2F" not in request.path and "%3F" not in request.path, request.path
        assert "UPPER" not in request.path and "secrets" not in request.path
    other = cluster.get("apps/v1", "Deployment", "other", "tenant-v")
    assert containers(other) == ["app", SIDECAR_NAME]
    assert containers(get(cluster, "Deployment", "second")) == ["app", SIDECAR_NAME]
    # The controller writes status.workloads from what it selected, not from what it read.
    assert get(cluster, "Backup")["status"]["workloads"] == ["Deployment/second", "Deployment/www"]


def test_a_leader_again_looks_for_orphans_like_after_a_start(cluster, kubeconfig):
    """Item 1: without status.workloads, a replica that was leader before must not trust its
    memory: another leader may have injected workloads meanwhile. Regaining leadership makes
    the next cycle list every workload unselected (restik's hash annotation marks its own)."""
    cluster.create(backup())
    original = cluster.create(workload())
    settings = Settings()
    ours = Controller(Kube.connect(str(kubeconfig)), settings)
    runner = Loop(ours, settings)
    ours.cycle()
    runner._leadership(False)
    other = cluster.create(workload(name="later"))
    Controller(Kube.connect(str(kubeconfig)), settings).cycle()  # the other leader injects
    for name in ("www", "later"):
        obj = get(cluster, "Deployment", name)
        del obj["metadata"]["labels"][CONFIG_LABEL]
        cluster.update(obj)
    runner._leadership(True)
    assert ours.cycle().patched == 2
    assert get(cluster, "Deployment")["spec"]["template"] == original["spec"]["template"]
    assert get(cluster, "Deployment", "later")["spec"]["template"] == other["spec"]["template"]


@needs_restic
def test_a_directory_listing_never_reaches_an_event(tmp_path, job_for):
    """Item 3: the repository directory is not empty and has no config: the run fails without
    `restic init`, and its message (the Event, the status) counts entries, never names them."""
    src = write_tree(tmp_path / "src", {"a.txt": b"one\n"})
    repo = write_tree(tmp_path / "repo", {"payroll-2026.xlsx": b"x", "hr/notes.txt": b"y"})
    out = job_for(make_backup(str(src), str(repo))).run()
    assert not out.success and not (repo / "config").exists()
    assert "not empty (2 entries)" in out.message
    assert "payroll" not in out.message and "hr," not in out.message


# ---------------------------------------------------------------- item 2: the sidecar's rights


def may(granted: set[tuple], group: str, resource: str, verb: str, name: str | None) -> bool:
    return (group, resource, verb, None) in granted or (group, resource, verb, name) in granted


def test_the_sidecars_role_is_limited_to_its_backups_own_objects():
    """Item 2: what a pod bound to Backup www's sidecar role may do to Backup other's
    objects (forge its status, renew its Leases) and to other Leases of the namespace."""
    raw = backup()
    raw["metadata"]["uid"] = "u-1"
    role = desired_role(raw, ["Deployment/www", "StatefulSet/db"])
    granted = rights(role)
    lease = "coordination.k8s.io", "leases"
    status = "backup.appscode.com", "backups/status"
    assert may(granted, *status, "patch", "www")
    assert not may(granted, *status, "patch", "other")
    for verb in ("get", "list", "watch"):
        assert may(granted, "backup.appscode.com", "backups", verb, "www")
        assert not may(granted, "backup.appscode.com", "backups", verb, "other")
    for name in ("restik-www-www", "restik-www-www-prune", "restik-www-db", "restik-www-db-prune"):
        assert may(granted, *lease, "get", name) and may(granted, *lease, "update", name)
    for name in ("restik-other-www", "app-leader", "restik-controller"):
        assert not may(granted, *lease, "update", name) and not may(granted, *lease, "get", name)
    assert may(granted, *lease, "create", None)  # RBAC cannot limit create by name
    assert unnamed(granted) == {
        ("backup.appscode.com", "backups", "get"),
        ("backup.appscode.com", "backups", "list"),
        ("backup.appscode.com", "backups", "watch"),
        ("backup.appscode.com", "backups/status", "patch"),
        ("", "events", "create"),
        ("", "pods", "get"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "get"),
        ("coordination.k8s.io", "leases", "update"),
    }
    binding = desired_rolebinding(raw, ["app"])
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "restik-sidecar-www",
    }
    assert role["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def unnamed(granted: set[tuple]) -> set[tuple]:
    return {(g, r, v) for g, r, v, _ in granted}


def test_the_controller_holds_every_right_it_grants(tmp_path):
    """RBAC's escalation check: the controller may write the sidecar's Role only if it holds
    each of its rights itself (it has no `escalate`, and `bind` only on the restore roles), in
    both installs; pods/exec included, for a Backup with hooks."""
    raw = backup()
    raw["spec"]["hooks"] = {"preBackup": {"command": ["sync"]}}
    role = rights(desired_role(raw, ["Deployment/www"]))
    assert ("", "pods/exec", "create", None) in role
    cluster = rights(find(_built("install"), "ClusterRole", "restik-controller"))
    namespaced = rights(find(_built("namespaced"), "Role", "restik-controller"))
    for granted in (cluster, namespaced):
        assert {r for r in role if not may(granted, *r)} == set()
        assert not {v for _, _, v, _ in granted} & {"escalate"}
        binds = {(g, r, n) for g, r, v, n in granted if v == "bind"}
        assert binds == {
            ("rbac.authorization.k8s.io", "clusterroles", role)
            for role in ("restik-restore", "restik-restore-exec")
        }


def test_roles_follow_the_workloads_and_go_with_them(cluster, kubeconfig):
    """The controller keeps the Role's Lease names to the labeled workloads, binds it (a Role,
    not a ClusterRole) and deletes both when no workload is left."""
    cluster.create(backup())
    cluster.create(workload(sa="app"))
    controller = Controller(Kube.connect(str(kubeconfig)), Settings())
    controller.cycle()
    rbac = "rbac.authorization.k8s.io/v1"
    role = cluster.get(rbac, "roles", "restik-sidecar-www", NS)
    [leases] = [r["resourceNames"] for r in role["rules"] if r.get("verbs") == ["get", "update"]]
    assert leases == ["restik-www-www", "restik-www-www-prune"]
    cluster.create(workload("StatefulSet", name="db", sa="app"))
    controller.cycle()
    role = cluster.get(rbac, "roles", "restik-sidecar-www", NS)
    [leases] = [r["resourceNames"] for r in role["rules"] if r.get("verbs") == ["get", "update"]]
    assert leases == [
        "restik-www-db",
        "restik-www-db-prune",
        "restik-www-www",
        "restik-www-www-prune",
    ]
    rb = cluster.get(rbac, "rolebindings", "restik-sidecar-www", NS)
    assert rb["roleRef"]["kind"] == "Role" and rb["roleRef"]["name"] == "restik-sidecar-www"
    cluster.clear_requests()
    controller.cycle()
    assert [r for r in cluster.writes() if r.resource != "backups"] == []  # in sync: no write
    for kind, name in (("Deployment", "www"), ("StatefulSet", "db")):
        obj = get(cluster, kind, name)
        del obj["metadata"]["labels"][CONFIG_LABEL]
        cluster.update(obj)
    controller.cycle()
    assert cluster.get(rbac, "roles", "restik-sidecar-www", NS) is None
    assert cluster.get(rbac, "rolebindings", "restik-sidecar-www", NS) is None


def test_binding_the_default_service_account_is_warned_once(cluster, kubeconfig, caplog):
    caplog.set_level(logging.INFO, "restik.controller")
    cluster.create(backup())
    cluster.create(workload(sa="app"))
    controller = Controller(Kube.connect(str(kubeconfig)), Settings())
    controller.cycle()
    assert cluster.list("v1", "events", NS) == []
    cluster.create(workload(name="plain"))  # no serviceAccountName: default
    controller.cycle()
    controller.cycle()
    [event] = cluster.list("v1", "events", NS)
    assert (event["type"], event["reason"]) == ("Warning", "DefaultServiceAccount")
    assert event["involvedObject"]["name"] == "www"
    assert "ServiceAccount default" in event["message"]
    assert sum("ServiceAccount default" in r.getMessage() for r in caplog.records) == 1


def _pod(name: str, owner: str | None = None) -> dict:
    meta: dict = {"name": name, "namespace": "default"}
    if owner:
        ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{owner}-5d8f",
               "uid": f"u-{owner}", "controller": True}  # fmt: skip
        meta["ownerReferences"] = [ref]
        meta["labels"] = {"pod-template-hash": "5d8f"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"containers": [{"name": "app", "image": "x"}]}}  # fmt: skip


def _lease(holder: str, seconds: int) -> dict:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "restik-www-www", "namespace": "default"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds,
                 "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("holder", "seconds", "pods", "renew", "expected"),
    [
        ("www-b", 10**8, ["www-b"], False, "for 100000000s, longer than the 3s"),
        (
            "intruder",
            3,
            ["intruder:other"],
            False,
            "held by pod intruder, which is not a pod of Deployment/www",
        ),
        ("ghost", 3, [], True, "renewed by 'ghost', which is no pod of namespace default"),
    ],
    ids=["huge-duration", "pod-of-another-workload", "renewed-by-no-pod"],
)
def test_an_implausible_lease_is_a_failed_run(world, holder, seconds, pods, renew, expected):
    """Item 2: whatever else is bound to the sidecar's Role (the application shares its
    ServiceAccount) takes the Lease: the sidecar reports a Failed run with the reason instead
    of waiting silently (a huge duration used to stop every run with an INFO line)."""
    world.emu.create(_pod("www-a", "www"))
    for spec in pods:
        name, _, owner = spec.partition(":")
        world.emu.create(_pod(name, owner or "www"))
    world.emu.create(_lease(holder, seconds))
    world.backup(schedule="@every 1s")
    stop = threading.Event()
    renewer = None
    if renew:  # someone who is no pod keeps the Lease fresh

        def keep() -> None:
            while not stop.wait(0.5):
                lease = world.emu.get("coordination.k8s.io/v1", "leases", "restik-www-www",
                                      "default")  # fmt: skip
                lease["spec"]["renewTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                world.emu.update(lease)

        renewer = threading.Thread(target=keep, daemon=True)
        renewer.start()
    try:
        sc = world.sidecar("--workload", "Deployment/www", "--lease-duration", "3s", pod="www-a")
        [event, *_] = world.wait_events(1, timeout=30)
        assert (event["type"], event["reason"]) == ("Warning", "Failed")
        assert expected in event["message"], event["message"]
        assert all(e["reason"] == "Failed" for e in world.events()), sc.log  # restic never ran
    finally:
        stop.set()
        if renewer is not None:
            renewer.join()


@pytest.mark.slow
def test_a_holder_that_is_a_pod_of_the_workload_is_trusted(world):
    """The other side: another replica's Lease is waited for, quietly, and taken over once
    it runs out (its pod is gone, nobody renews)."""
    world.emu.create(_pod("www-a", "www"))
    world.emu.create(_pod("www-b", "www"))
    world.emu.create(_lease("www-b", 3))
    world.backup(schedule="@every 1s")
    sc = world.sidecar("--workload", "Deployment/www", "--lease-duration", "3s", pod="www-a")
    [event, *_] = world.wait_events(1, timeout=40)
    assert event["reason"] != "Failed", event["message"]
    assert "took over Lease" in sc.log


# ---------------------------------------------------------------- item 5: env from the Secret


def test_only_restics_backend_variables_are_taken_from_the_secret():
    """Item 5: the sidecar references the Secret key by key (restic's backend variables and
    `password`), never envFrom: a key RESTIC_PASSWORD_COMMAND, LD_PRELOAD, PYKUBE_* or
    RESTIK_RESTIC in the Secret becomes nothing."""
    rendered = Renderer().render(parse_backup(backup()), "Deployment", "www")
    container = rendered.container
    assert "envFrom" not in container
    keys = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert keys == {"RESTIC_PASSWORD": "password", **{n: n for n in SECRET_ENV}}
    for name in SECRET_ENV:
        assert not name.startswith(("LD_", "PYTHON", "PYKUBE_", "RESTIK_", "RCLONE_"))
        assert name != "RESTIC_PASSWORD_COMMAND" and not name.endswith("_FILE")
    assert {"AZURE_ACCOUNT_SAS", "RESTIC_REST_PASSWORD", "AWS_SECRET_ACCESS_KEY"} <= set(keys)


def test_the_sidecar_scrubs_its_environment_and_restic_sees_only_its_own():
    environ = {
        "PATH": "/usr/bin",
        "HOME": "/home/restik",
        "POD_NAME": "www-0",
        "RESTIC_PASSWORD": "pw-1234",
        "AWS_ACCESS_KEY_ID": "AKIA1234",
        "RESTIC_PASSWORD_COMMAND": "sh -c 'curl evil'",
        "LD_PRELOAD": "/x.so",
        "PYKUBE_KUBERNETES_SERVICE_HOST": "evil",
        "PYTHONPATH": "/tmp",
        "RCLONE_PASSWORD_COMMAND": "sh",
        "WWW_SERVICE_HOST": "10.0.0.1",
        "RESTIK_LOG_FORMAT": "json",
        "HTTPS_PROXY": "http://proxy.corp:3128",
    }
    loud, quiet = scrub(environ)
    assert loud == ["LD_PRELOAD", "PYKUBE_KUBERNETES_SERVICE_HOST", "PYTHONPATH",
                    "RCLONE_PASSWORD_COMMAND", "RESTIC_PASSWORD_COMMAND"]  # fmt: skip
    assert quiet == ["WWW_SERVICE_HOST"]
    assert set(environ) == {"PATH", "HOME", "POD_NAME", "RESTIC_PASSWORD", "AWS_ACCESS_KEY_ID",
                            "RESTIK_LOG_FORMAT", "HTTPS_PROXY"}  # fmt: skip
    child = restic_env({**environ, "LD_PRELOAD": "/x.so", "RESTIK_RESTIC": "/bin/sh"}, "/c")
    assert set(child) == {"PATH", "HOME", "RESTIC_PASSWORD", "AWS_ACCESS_KEY_ID", "TMPDIR",
                          "RESTIC_CACHE_DIR", "HTTPS_PROXY"}  # fmt: skip


@needs_restic
@pytest.mark.slow
def test_a_password_command_in_the_environment_never_runs(world, tmp_path):
    """Item 5 with real restic: RESTIC_PASSWORD_COMMAND (as a Secret key once became) would
    make restic run a command beside the password. The run succeeds with RESTIC_PASSWORD and
    the command never runs; the log names the variable, never its value."""
    marker = tmp_path / "ran"
    command = f"sh -c 'touch {marker}; echo wrong-password'"
    world.backup(schedule="@every 1s")
    sc = world.sidecar(RESTIC_PASSWORD_COMMAND=command, LD_PRELOAD="")
    [event, *_] = world.wait_events(1)
    assert event["reason"] == "Success", event["message"]
    assert not marker.exists()
    assert sc.terminate() == 0
    assert "RESTIC_PASSWORD_COMMAND" in sc.log and "wrong-password" not in sc.log


# ---------------------------------------------------------------- item 8: secrets in text


@pytest.mark.parametrize(
    ("repository", "instead"),
    [
        (
            "rest:https://admin:pw@backup.example/www",
            "RESTIC_REST_USERNAME and RESTIC_REST_PASSWORD",
        ),
        ("rest:https://admin:p/w@backup.example/www", "RESTIC_REST_USERNAME"),
        ("rest:https://admin:p@ss@backup.example/www", "RESTIC_REST_USERNAME"),
        ("s3:https://AKIA:s3cr3t@minio.example/bucket", "AWS_ACCESS_KEY_ID and AWS_SECRET"),
        ("sftp://admin:s3cr3t@host//srv/repo", "an SSH key"),
        ("rclone::s3,access_key_id=AKIA,secret_access_key=s3cr3t:bucket", "env_auth"),
    ],
)
def test_credentials_in_the_repository_url_are_refused_without_repeating_them(repository, instead):
    """Item 8: the URL was copied verbatim into the Ready condition and a Warning Event."""
    with pytest.raises(InvalidBackup) as info:
        parse_backup(backup_object(repository=repository))
    [error] = info.value.errors
    assert error.path == "spec.destination.repository"
    assert "must not contain credentials" in error.message and instead in error.message
    for secret in ("pw", "p/w", "p@ss", "s3cr3t"):
        assert f":{secret}@" not in str(info.value) and f"={secret}" not in str(info.value)


@pytest.mark.parametrize(
    "repository",
    ["rest:https://backup.example:8000/www", "sftp:admin@host:/srv/repo",
     "sftp://admin@host:22//srv/repo", "rclone:nas:backups/www", "s3:s3.amazonaws.com/b/www"],
)  # fmt: skip
def test_urls_without_credentials_are_accepted(repository):
    assert parse_backup(backup_object(repository=repository)).repository == repository


def test_every_value_from_the_secret_is_redacted_whatever_its_name():
    """Item 8: redaction went by variable name and missed AZURE_ACCOUNT_SAS, an access key
    id, a user name; now every variable the template takes from the Secret counts."""
    env = {
        "AZURE_ACCOUNT_SAS": "sv=2024-01-01&sig=QUJD",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "RESTIC_REST_USERNAME": "backup-bot",
        "PATH": "/usr/bin",
    }
    text = "failed for sv=2024-01-01&sig=QUJD as backup-bot with AKIAEXAMPLE on /usr/bin"
    assert redact(text, secret_values(env)) == (
        "failed for [REDACTED] as [REDACTED] with [REDACTED] on /usr/bin"
    )
    assert redact_url("rest:https://admin:p/w@ss@host/www: no such repo") == (
        "rest:https://admin:***@host/www: no such repo"
    )


@needs_restic
def test_a_secret_value_in_restics_output_is_redacted(tmp_path):
    """With real restic: its error names a location that holds a value the Secret gave under
    a name redaction by name never knew (AZURE_ACCOUNT_SAS): stderr, and so every Event and
    log line made from it, shows [REDACTED]."""
    value = "sig-QUJDRA-sas-token"
    runner = Runner(restic_env(base_env(AZURE_ACCOUNT_SAS=value), str(tmp_path / "cache")))
    result = runner.run([RESTIC, f"--repo={tmp_path / value}", "--no-cache", "snapshots"])
    assert not result.ok
    assert value not in result.stderr and "[REDACTED]" in result.stderr, result.stderr


# ---------------------------------------------------------------- item 6: the sidecar's own dirs


@pytest.mark.parametrize(
    ("path", "shadowed"),
    [
        ("/opt/restik/bin", "/opt"),
        ("/opt", "/opt"),
        ("/usr/lib/python3", "/usr"),
        ("/home/restik/.local", "/home"),
        ("/var/run/secrets", "/var/run"),
        ("/var", "/var/run"),
        ("/etc/", "/etc"),
    ],
)
def test_a_source_over_the_sidecars_own_directories_is_refused(path, shadowed):
    """Item 6: the application's files there would run inside the sidecar, beside the
    password (/opt/restik/bin, Python's user site in /home/restik/.local) or replace its
    token (/var/run/secrets)."""
    with pytest.raises(InvalidBackup) as info:
        parse_backup(backup(path=path))
    [error] = info.value.errors
    assert error.path == "spec.backupSource.path"
    assert f"would cover the sidecar's own {shadowed}" in error.message


@pytest.mark.parametrize(
    "path", ["/data", "/var/www", "/var/lib/postgresql/data", "/srv", "/mnt/x", "/optional"]
)
def test_a_source_elsewhere_is_fine(path):
    assert parse_backup(backup(path=path)).source_path == path


# ---------------------------------------------------------------- item 9: shared process namespace


def test_a_pod_sharing_its_process_namespace_gets_no_sidecar(cluster, kubeconfig):
    """Item 9: with shareProcessNamespace every container reads the sidecar's environment (the
    password) from /proc. restik refuses to inject and says so on the Backup (Ready=False, a
    Warning Event); a sidecar injected before stays as it is, and the other workloads go on."""
    shared = workload(name="shared", sa="app")
    shared["spec"]["template"]["spec"]["shareProcessNamespace"] = True
    cluster.create(backup())
    cluster.create(shared)
    cluster.create(workload(sa="app"))
    controller = Controller(Kube.connect(str(kubeconfig)), Settings())
    controller.cycle()
    assert containers(get(cluster, "Deployment", "shared")) == ["app"]
    assert containers(get(cluster, "Deployment")) == ["app", SIDECAR_NAME]
    [ready] = get(cluster, "Backup")["status"]["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "WorkloadMisconfigured")
    assert "shareProcessNamespace is true" in ready["message"]
    [event] = cluster.list("v1", "events", NS)
    assert event["type"] == "Warning" and "shareProcessNamespace" in event["message"]
    obj = get(cluster, "Deployment")  # the injected one starts sharing: left as it is
    obj["spec"]["template"]["spec"]["shareProcessNamespace"] = True
    cluster.update(obj)
    controller.cycle()
    assert containers(get(cluster, "Deployment")) == ["app", SIDECAR_NAME]


# ---------------------------------------------------------------- item 10: metrics off


def test_metrics_can_be_turned_off_per_backup():
    """Item 10: spec.metrics.enabled false: no port (the NetworkPolicy has nothing to open),
    the sidecar serves nothing (--metrics-port 0), so no liveness probe either."""
    on = Renderer().render(parse_backup(backup()), "Deployment", "www")
    off = Renderer().render(parse_backup(backup(metrics={"enabled": False})), "Deployment", "www")
    assert on.container["ports"] and on.container["livenessProbe"]
    assert "ports" not in off.container and "livenessProbe" not in off.container
    args = off.container["args"]
    assert args[args.index("--metrics-port") + 1] == "0"
    assert on.config_hash != off.config_hash  # turning it off updates the workloads
    with pytest.raises(InvalidBackup) as info:
        parse_backup(backup(metrics={"enabled": "no", "port": 1}))
    assert [str(e) for e in info.value.errors] == [
        "spec.metrics.port: unknown field",
        "spec.metrics.enabled: must be true or false, got string",
    ]


def test_metrics_off_skips_the_port_clash_check():
    from reconciler.controller.plan import plan

    taken = workload()
    taken["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 9464}]
    result = plan([parse_backup(backup(metrics={"enabled": False}))], [taken], Renderer())
    assert result.problems == [] and [c.action for c in result.changes] == ["inject"]


def test_restik_restore_takes_only_restics_variables_from_the_secret():
    """Item 5 for the user's side too: `restik restore`/`snapshots` read the Secret with the
    user's kubeconfig and hand restic only its backend variables and the password."""
    import base64

    from reconciler.restores.secret import secret_env

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    data = {"password": "pw", "AWS_ACCESS_KEY_ID": "a", "RESTIC_PASSWORD_COMMAND": "sh -c x",
            "LD_PRELOAD": "/tmp/x.so", "PYKUBE_KUBERNETES_SERVICE_HOST": "evil"}  # fmt: skip
    env = secret_env({"data": {k: b64(v) for k, v in data.items()}}, parse_backup(backup()))
    assert env == {"RESTIC_PASSWORD": "pw", "AWS_ACCESS_KEY_ID": "a"}


def test_the_scrub_keeps_the_repository_file_for_kubectl_exec_but_restic_never_gets_it(
    tmp_path,
):
    """RESTIC_REPOSITORY_FILE names where the sidecar writes the repository for `kubectl exec
    ... restic` (sidecar.shell.publish_repository reads it from the sidecar's environment):
    the scrub keeps it, and restik's own restic (given --repo) runs without it."""
    from sidecar.runner import restic_env

    environ = {"RESTIC_REPOSITORY_FILE": "/restik/cache/repository", "RESTIC_REPOSITORY": "",
               "RESTIC_PASSWORD": "pw", "LD_PRELOAD": "/x.so", "TMPDIR": str(tmp_path)}  # fmt: skip
    loud, _ = scrub(environ)
    assert loud == ["LD_PRELOAD"]
    assert environ["RESTIC_REPOSITORY_FILE"] == "/restik/cache/repository"
    env = restic_env(environ, str(tmp_path))
    assert "RESTIC_REPOSITORY_FILE" not in env
    assert (env["RESTIC_PASSWORD"], env["RESTIC_REPOSITORY"]) == ("pw", "")
