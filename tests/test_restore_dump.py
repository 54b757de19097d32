"""A Restore of a command-source Backup (a dump): ``spec.command`` on the Restore, the
planner's Job that execs into the workload's Ready pods (never its pod template), the
ClusterRole restik-restore-exec bound only then, and end to end: the emulator as a cluster,
real restic, a real PostgreSQL 15 in "the database's container" (the emulator runs an
exec'd command as a local process, as the kubelet would in the container), the Job's
`restik restore-run --into-pods` run as the kubelet would run it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from ruamel.yaml import YAML

from reconciler.api.backup import parse_backup
from reconciler.api.restore import InvalidRestore, parse_restore
from reconciler.controller.cycle import Controller
from reconciler.controller.dumptargets import dump_targets
from reconciler.controller.options import Settings
from reconciler.controller.reconcilers.restores import plan_restore
from reconciler.kube.client import Kube
from reconciler.resources import crd_manifest, restore_crd_manifest
from sidecar.job import Job, Pod
from sidecar.restic import Context
from sidecar.runner import Runner
from tests.emulator import Emulator
from tests.execpods import exec_client
from tests.factories import (
    PASSWORD,
    REPO,
    RESTIC,
    backup,
    base_env,
    copy_template,
    needs_restic,
    restore_object,
)
from tests.postgres import Postgres, started

NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
API = "backup.appscode.com/v1beta1"
NS = "data"
REMOTE = "s3:https://s3.example.com/backups/pg"
PSQL = ["psql", "-X", "-q", "-d", "postgres"]
SOURCE = {"command": ["pg_dumpall"], "filename": "pg_dumpall.sql", "container": "postgres"}


def dump_backup(raw: dict | None = None) -> dict:
    raw = raw or backup(path="/unused")
    raw["spec"]["backupSource"] = {"command": dict(SOURCE)}
    raw["spec"]["destination"] = {"repositorySecretName": "www-restic", "repository": REMOTE}
    return raw


def restore(name="r1", *, kind="StatefulSet", target=None, status=None, **spec) -> dict:
    return restore_object(name, target=target, status=status, workload="pg", kind=kind, **spec)


def workload(kind="StatefulSet", replicas=2) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": "pg", "namespace": "web", "resourceVersion": "7"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "pg"}},
            "template": {
                "metadata": {"labels": {"app": "pg"}},
                "spec": {"containers": [{"name": "postgres", "image": "postgres:15"}]},
            },
        },
    }


def pod(name: str, ready: bool = True) -> dict:
    return {
        "metadata": {"name": name, "namespace": "web", "labels": {"app": "pg"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "postgres"}]},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def plan(raw, backup_raw=None, **kw):
    parsed = parse_backup(backup_raw or dump_backup())
    return plan_restore(raw, parsed, image="restik:test", now=NOW, **kw)


# ---------------------------------------------------------------- the model


def test_spec_command_is_parsed_with_its_defaults():
    parsed = parse_restore(restore(command={"command": ["psql", "-X"]}))
    assert parsed.command.command == ("psql", "-X")
    assert parsed.command.container is None and parsed.command.timeout == 3600.0
    parsed = parse_restore(
        restore(command={"command": ["psql"], "container": "db", "timeout": "10m"})
    )
    assert (parsed.command.container, parsed.command.timeout) == ("db", 600.0)


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        ({"command": {}}, "spec.command.command", "required"),
        ({"command": {"command": []}}, "spec.command.command", "must not be empty"),
        ({"command": ["psql"]}, "spec.command", "must be an object with command"),
        ({"command": {"command": ["psql"], "container": "restik"}}, "spec.command.container",
         "restik's sidecar"),
        ({"command": {"command": ["psql"], "timeout": "0s"}}, "spec.command.timeout", "longer"),
        ({"command": {"command": ["psql"], "shell": True}}, "spec.command.shell", "unknown"),
        ({"command": {"command": ["psql"]}, "include": ["a"]}, "spec.include", "a dump is one"),
        ({"command": {"command": ["psql"]}, "delete": True}, "spec.delete", "not files"),
        ({"command": {"command": ["psql"]}, "verify": True}, "spec.verify", "not files"),
        ({"command": {"command": ["psql"]}, "target": {"pvc": {"claimName": "c"}}},
         "spec.target.pvc", "give target.workload"),
    ],
)  # fmt: skip
def test_a_bad_spec_command_is_invalid_naming_the_field(spec, field, says):
    with pytest.raises(InvalidRestore) as caught:
        parse_restore(restore(**spec))
    [error] = [e for e in caught.value.errors if e.path == field]
    assert says in error.message
    acts = plan(restore(**spec), workload=workload(), pods=[pod("pg-0"), pod("pg-1")])
    assert acts.status["phase"] == "Invalid" and field in acts.status["message"]
    assert acts.job is None and acts.workload is None


# ---------------------------------------------------------------- the planner


def test_a_volume_backup_refuses_spec_command():
    acts = plan(
        restore(command={"command": ["psql"]}),
        backup(path="/var/lib/db"),
        workload=workload(),
        pods=[pod("pg-0"), pod("pg-1")],
    )
    assert acts.status["phase"] == "Invalid"
    assert acts.status["message"].startswith("Restore web/r1: spec.command: Backup web/www ")
    assert "backs up volume 'data' at /var/lib/db" in acts.status["message"]
    assert acts.job is None and acts.rolebinding is None and acts.exec_rolebinding is None


def test_it_waits_for_every_ordinal_of_a_statefulset_to_be_ready():
    raw = restore(command={"command": PSQL})
    acts = plan(raw, workload=workload(replicas=3), pods=[pod("pg-0"), pod("pg-1", ready=False)])
    assert acts.status == {
        "target": "StatefulSet/pg",
        "phase": "Pending",
        "message": "waiting for the pods of StatefulSet/pg to be Ready to receive the "
        "dump: pg-1, pg-2",
    }
    assert acts.job is None and acts.workload is None and acts.rolebinding is None
    acts = plan(restore(kind="Deployment", command={"command": PSQL}),
                workload=workload("Deployment"), pods=[pod("pg-abc", ready=False)])  # fmt: skip
    assert acts.status["message"] == (
        "waiting for a Ready pod of Deployment/pg to receive the dump"
    )
    assert acts.job is None


def test_ready_pods_get_a_job_that_execs_and_the_template_is_left_alone():
    raw = restore(command={"command": PSQL})
    acts = plan(raw, workload=workload(), pods=[pod("pg-0"), pod("pg-1")])
    assert acts.workload is None  # the application keeps running: it receives the dump
    job = acts.job
    assert job["metadata"]["name"] == "restik-restore-r1"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert job["spec"]["backoffLimit"] == 0
    spec = job["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert container["args"] == [
        "restore-run", "--restore", "r1", "--workload", "StatefulSet/pg",
        "--into-pods", "app=pg",
        f"--repository={REMOTE}", "--source-path=/pg_dumpall.sql",
    ]  # fmt: skip
    assert [m["name"] for m in container["volumeMounts"]] == [
        "restik-restore-cache",
        "restik-restore-token",
    ]
    assert [v["name"] for v in spec["volumes"]] == ["restik-restore-cache", "restik-restore-token"]
    security = container["securityContext"]
    assert security["runAsUser"] == 65532 and security["runAsNonRoot"] is True
    assert acts.rolebinding["roleRef"]["name"] == "restik-restore"
    assert acts.exec_rolebinding["metadata"]["name"] == "restik-restore-exec:r1"
    assert acts.exec_rolebinding["roleRef"]["name"] == "restik-restore-exec"
    assert acts.exec_rolebinding["subjects"] == [
        {"kind": "ServiceAccount", "name": "default", "namespace": "web"}
    ]
    assert acts.status["message"] == (
        "Job restik-restore-r1 pipes the dump into `psql -X -q -d postgres` in the pods of "
        "StatefulSet/pg"
    )


def test_the_jobs_user_follows_the_repository():
    """Remote: a non-root user (it writes only restic's cache); a repository on a volume:
    the Backup's securityContext user, else root (restic locks there), as the PVC Job."""
    pods = [pod("pg-0"), pod("pg-1")]
    local = dump_backup(backup(path="/unused"))
    local["spec"]["destination"] = {
        "repositorySecretName": "www-restic",
        "volume": {"name": "repo", "persistentVolumeClaim": {"claimName": "backups"}},
        "path": "/repo",
    }
    acts = plan(restore(command={"command": PSQL}), local, workload=workload(), pods=pods)
    [container] = acts.job["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["runAsUser"] == 0
    assert "restik-restore-repo" in [m["name"] for m in container["volumeMounts"]]
    local["spec"]["securityContext"] = {"runAsUser": 999, "runAsGroup": 999}
    acts = plan(restore(command={"command": PSQL}), local, workload=workload(), pods=pods)
    [container] = acts.job["spec"]["template"]["spec"]["containers"]
    assert (
        container["securityContext"]["runAsUser"],
        container["securityContext"]["runAsGroup"],
    ) == (999, 999)


def test_exec_bindings_never_share_a_name_with_a_restores_own():
    """RoleBinding names: Restore exec-x's own binding is not Restore x's exec binding."""
    pods = [pod("pg-0"), pod("pg-1")]
    x = plan(restore("x", command={"command": PSQL}), workload=workload(), pods=pods)
    exec_x = plan(restore("exec-x", command={"command": PSQL}), workload=workload(), pods=pods)
    names = [
        b["metadata"]["name"]
        for acts in (x, exec_x)
        for b in (acts.rolebinding, acts.exec_rolebinding)
    ]
    assert names == ["restik-restore-x", "restik-restore-exec:x",
                     "restik-restore-exec-x", "restik-restore-exec:exec-x"]  # fmt: skip


def test_a_volume_restore_never_gets_exec():
    acts = plan(restore(), backup(path="/var/lib/db"), workload=workload())
    assert acts.rolebinding["roleRef"]["name"] == "restik-restore"
    assert acts.exec_rolebinding is None
    acts = plan(
        restore(target={"pvc": {"claimName": "copy"}}),
        backup(path="/var/lib/db"),
        claim={"metadata": {}},
    )
    assert acts.job is not None and acts.exec_rolebinding is None


def test_a_failed_job_fails_the_dump_restore():
    job = {"metadata": {"name": "restik-restore-r1"}, "status": {"failed": 1}}
    raw = restore(command={"command": PSQL}, status={"phase": "Running"})
    acts = plan(raw, workload=workload(), pods=[pod("pg-0"), pod("pg-1")], job=job)
    assert acts.status["phase"] == "Failed"
    assert (
        acts.status["message"]
        == "Job restik-restore-r1 failed (PodFailed): 1 pod(s) of the Job failed"
    )
    assert acts.job is None and acts.events[0][0] == "RestoreFailed"


def test_the_targets_per_kind():
    ended = pod("pg-9")
    ended["status"]["phase"] = "Failed"
    going = pod("pg-2")
    going["metadata"]["deletionTimestamp"] = "2026-01-31T12:00:00Z"
    pods = [pod("pg-1", ready=False), pod("pg-0"), ended, going, pod("pgx-0")]
    sts = dump_targets("StatefulSet", "pg", pods)
    assert [(t.pod, t.host, t.ready) for t in sts] == [
        ("pg-0", "pg-0", True), ("pg-1", "pg-1", False)]  # fmt: skip
    # the replicas of a Deployment share one database: one Ready pod, the workload's host
    deploy = dump_targets("Deployment", "pg", [pod("pg-b"), pod("pg-a", ready=False), pod("pg-c")])
    assert [(t.pod, t.host) for t in deploy] == [("pg-b", "pg")]
    assert dump_targets("Deployment", "pg", [pod("pg-a", ready=False)]) == []
    nodes = [pod("pg-x"), pod("pg-y")]
    nodes[1]["spec"]["nodeName"] = "node-0"
    assert [(t.pod, t.host) for t in dump_targets("DaemonSet", "pg", nodes)] == [
        ("pg-y", "node-0"), ("pg-x", "node-1")]  # fmt: skip


# ---------------------------------------------------------------- end to end


def role_rules() -> dict[str, set[tuple[str, str, str]]]:
    """The installed restore ClusterRoles as (apiGroup, resource, verb) sets."""
    text = (REPO / "kustomize" / "base" / "rbac-restore.yaml").read_text()
    return {
        doc["metadata"]["name"]: {
            (group, resource, verb)
            for rule in doc["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
        for doc in YAML(typ="safe").load_all(text)
    }


@pytest.fixture
def database():
    yield from started()


class Site:
    """The emulator as a cluster with StatefulSet pg (pod pg-0 runs "the database"), the
    controller, a repository with restik's backups of the database's dump."""

    def __init__(self, emu: Emulator, tmp, db: Postgres):
        self.emu, self.tmp, self.db = emu, tmp, db
        self.kubeconfig = emu.write_kubeconfig(tmp / "kubeconfig")
        self.controller = Controller(Kube.connect(str(self.kubeconfig)), Settings())
        self.repo = copy_template(tmp / "repo")
        self.ran: set[str] = set()

    def backup_raw(self) -> dict:
        raw = dump_backup(backup(path="/unused", name="pg", namespace=NS))
        raw["spec"]["destination"] = {"repositorySecretName": "pg-restic",
                                      "repository": str(self.repo)}  # fmt: skip
        return raw

    def back_up(self, name: str = "pg-0") -> None:
        """restik's backup run in pod ``name`` (sidecar/job.py): pg_dumpall into restic."""
        live = self.emu.get("v1", "pods", name, NS)
        runner = Runner(base_env(PASSWORD, TMPDIR=str(self.tmp)), stop_timeout=20)
        ctx = Context(host=name, cache_dir=str(self.tmp / "cache"), restic=RESTIC)
        target = Pod(NS, name, live["spec"], exec_client(self.emu, self.tmp))
        backup_ = parse_backup(self.backup_raw())
        outcome = Job(backup_, ctx, runner, pod=target, workload=("StatefulSet", "pg")).run()
        assert outcome.success, outcome.message

    def apply_restore(self, name: str, command: list[str], **extra) -> None:
        target = {"workload": {"kind": "StatefulSet", "name": "pg"}}
        spec = {"backup": "pg", "command": {"command": command}, "target": target, **extra}
        meta = {"name": name, "namespace": NS}
        self.emu.create({"apiVersion": API, "kind": "Restore", "metadata": meta, "spec": spec})

    def cycle(self) -> None:
        self.controller.cycle()
        self.emu.settle(30)

    def run_job(self, name: str, password: str = PASSWORD) -> subprocess.CompletedProcess:
        """Play the kubelet: the Job's container, its arguments, as a process."""
        job = self.emu.get("batch/v1", "jobs", f"restik-restore-{name}", NS)
        [container] = job["spec"]["template"]["spec"]["containers"]
        cache = str(self.tmp / f"cache-{name}")
        env = base_env(password, POD_NAME=f"restik-restore-{name}-x1", POD_NAMESPACE=NS,
                       RESTIC_CACHE_DIR=cache, PYTHONPATH=str(REPO))  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "reconciler.cli", *container["args"], "--kubeconfig",
             str(self.kubeconfig), "--restic", RESTIC],
            env=env, capture_output=True, text=True, timeout=300, cwd=REPO,
        )  # fmt: skip
        assert PASSWORD not in proc.stdout + proc.stderr
        return proc

    def restore(self, name: str) -> dict:
        return self.emu.get(API, "restores", name, NS)

    def events(self, name: str) -> list[dict]:
        return [e for e in self.emu.list("v1", "events", NS)
                if e["involvedObject"].get("name") == name
                and e["involvedObject"].get("kind") == "Restore"]  # fmt: skip


@contextlib.contextmanager
def make_site(tmp_path, databases: list[Postgres]) -> Iterator[Site]:
    """StatefulSet pg with a pod per database: pod pg-<i>'s container postgres runs
    databases[i] (the emulator's exec runs commands with its settings)."""
    sts = workload(replicas=len(databases))
    sts["metadata"] = {"name": "pg", "namespace": NS}
    sts["spec"]["serviceName"] = "pg"
    secret = {"name": "pg-restic", "namespace": NS}
    objects = (
        crd_manifest(),
        restore_crd_manifest(),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": secret,
            "stringData": {"password": PASSWORD},
        },
        sts,
    )
    with Emulator(cluster=True, ready_delay=0.05) as emu:
        for obj in objects:
            emu.create(obj)
        emu.settle(30)
        for i, db in enumerate(databases):
            emu.exec_env[(NS, f"pg-{i}", "postgres")] = {
                "env": db.env, "cwd": str(db.dir), "user": db.user, "group": db.user,
            }  # fmt: skip
        s = Site(emu, tmp_path, databases[0])
        s.emu.create(s.backup_raw())
        yield s


@pytest.fixture
def site(tmp_path, database):
    with make_site(tmp_path, [database]) as s:
        yield s


@pytest.fixture
def database1():
    yield from started()


@pytest.mark.slow
@needs_restic
def test_a_dumped_database_comes_back_through_the_restore_job(site):
    db = site.db
    db.psql("CREATE DATABASE shop")
    db.psql(
        "CREATE TABLE orders (id bigint PRIMARY KEY, note text);"
        "INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 20000) g;",
        "shop",
    )
    site.back_up()
    db.psql("DROP DATABASE shop")  # the accident
    template = site.emu.get("apps/v1", "statefulsets", "pg", NS)["spec"]["template"]

    site.apply_restore("r1", PSQL)
    site.cycle()
    rbac = "rbac.authorization.k8s.io/v1"
    bindings = {b["metadata"]["name"]: b["roleRef"]["name"]
                for b in site.emu.list(rbac, "rolebindings", NS)}  # fmt: skip
    assert bindings == {
        "restik-restore-r1": "restik-restore",
        "restik-restore-exec:r1": "restik-restore-exec",
    }
    assert site.restore("r1")["status"]["phase"] == "Pending"
    site.emu.clear_requests()
    proc = site.run_job("r1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # every call of the Job's executor is one its two ClusterRoles allow, exec included
    roles = role_rules()
    used = {(r.group, "/".join(filter(None, (r.resource, r.subresource))), r.verb)
            for r in site.emu.requests if r.verb}  # fmt: skip
    assert used <= roles["restik-restore"] | roles["restik-restore-exec"]
    assert {("", "pods", "list"), ("", "pods/exec", "get")} <= used - roles["restik-restore"]

    rows = db.psql("SELECT count(*), min(id), max(id), count(DISTINCT note) FROM orders", "shop")
    assert rows == "20000|1|20000|20000"
    status = site.restore("r1")["status"]
    assert status["phase"] == "Succeeded", status
    [entry] = status["hosts"]
    assert (entry["host"], entry["sourceHost"], entry["pod"], entry["phase"]) == (
        "pg-0", "pg-0", "pg-0", "Succeeded")  # fmt: skip
    assert entry["bytesRestored"] > 20000 * 33 and entry["duration"].endswith(
        "s"
    )  # each row: md5 + id
    assert status["snapshot"] == "1 hosts" and status["message"] == "restored 1 hosts: pg-0"
    reasons = [e["reason"] for e in site.events("r1")]
    assert sorted(reasons) == ["RestoreStarted", "RestoreSucceeded"]
    [started] = [e for e in site.events("r1") if e["reason"] == "RestoreStarted"]
    assert "into `psql -X -q -d postgres` in pg-0/postgres" in started["message"]
    # the application's pod template never changed: the database kept running
    assert site.emu.get("apps/v1", "statefulsets", "pg", NS)["spec"]["template"] == template
    site.cycle()  # finished: nothing more happens
    assert site.restore("r1")["status"]["phase"] == "Succeeded"


@pytest.mark.slow
@needs_restic
def test_a_failing_restore_command_fails_the_restore_with_its_reason(site):
    site.db.psql("CREATE DATABASE shop")
    site.back_up()
    site.apply_restore("r2", ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", "nosuchdb"])
    site.cycle()
    proc = site.run_job("r2")
    assert proc.returncode == 1
    status = site.restore("r2")["status"]
    assert status["phase"] == "Failed"
    assert status["message"].startswith("host pg-0: the restore command failed: ")
    assert 'database "nosuchdb" does not exist' in status["message"]
    [failed] = [c for c in status["conditions"] if c["type"] == "Failed"]
    assert (failed["status"], failed["reason"]) == ("True", "CommandFailed")
    [event] = [e for e in site.events("r2") if e["reason"] == "RestoreFailed"]
    assert event["type"] == "Warning" and "nosuchdb" in event["message"]

    # no snapshot at or before asOf: Failed, saying what exists; the command never ran
    site.apply_restore("r3", ["sh", "-c", f"touch {site.tmp}/ran"], asOf="2000-01-01T00:00:00Z")
    site.cycle()
    assert site.run_job("r3").returncode == 1
    status = site.restore("r3")["status"]
    assert status["phase"] == "Failed" and not (site.tmp / "ran").exists()
    assert "host pg-0 has no snapshot at or before 2000-01-01T00:00:00Z" in status["message"]
    assert "snapshots of /pg_dumpall.sql: pg-0: " in status["message"]
    # a restic that cannot open the repository: Failed with restic's reason
    site.apply_restore("r4", PSQL)
    site.cycle()
    assert site.run_job("r4", password="not-the-password").returncode == 1
    status = site.restore("r4")["status"]
    [failed] = [c for c in status["conditions"] if c["type"] == "Failed"]
    assert (status["phase"], failed["reason"]) == ("Failed", "WrongPassword")
    assert "wrong password" in status["message"]


@pytest.mark.slow
@needs_restic
def test_each_ordinal_gets_its_own_hosts_dump_back(tmp_path, database, database1):
    """A StatefulSet of two databases: each pod's snapshot goes into that pod, none into
    the other; the Restore succeeds once both did (one Job restores every host)."""
    databases = [database, database1]
    for i, db in enumerate(databases):
        db.psql("CREATE DATABASE shop")
        db.psql(
            "CREATE TABLE orders (id bigint PRIMARY KEY, shard int);"
            f"INSERT INTO orders SELECT g, {i} FROM generate_series(1, {1000 * (i + 1)}) g;",
            "shop",
        )
    with make_site(tmp_path, databases) as site:
        for i, db in enumerate(databases):
            site.back_up(f"pg-{i}")
            db.psql("DROP DATABASE shop")
        site.apply_restore("r1", PSQL)
        site.cycle()
        proc = site.run_job("r1")
        assert proc.returncode == 0, proc.stderr[-3000:]
        for i, db in enumerate(databases):
            got = db.psql("SELECT count(*), min(shard), max(shard) FROM orders", "shop")
            assert got == f"{1000 * (i + 1)}|{i}|{i}"
        status = site.restore("r1")["status"]
        assert status["phase"] == "Succeeded", status
        assert status["message"] == "restored 2 hosts: pg-0, pg-1"
        assert [(h["host"], h["pod"], h["phase"]) for h in status["hosts"]] == [
            ("pg-0", "pg-0", "Succeeded"), ("pg-1", "pg-1", "Succeeded")]  # fmt: skip
        reasons = sorted(e["reason"] for e in site.events("r1"))
        assert reasons == ["RestoreStarted"] * 2 + ["RestoreSucceeded"] * 2
