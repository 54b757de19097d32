"""The Restore planner (pure): Pending while the Backup or target is missing, the init
container in and out of a workload's pod template (ownership by annotation, beside the
sidecar), the Job of a PVC target refused while a pod mounts the claim, completion of a
multi-host Restore; and the controller applying it on the emulator (converged: no writes)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest

from reconciler.api.backup import parse_backup
from reconciler.api.constants import RESTORE_CONTAINER
from reconciler.api.restore import parse_restore
from reconciler.controller.pod import AppUser
from reconciler.controller.podtemplate import inject, remove
from reconciler.controller.reconcilers.restores import (
    RESTORE_ANNOTATION,
    inject_restore,
    plan_restore,
    remove_restore,
    render_executor,
    restore_mark,
)
from reconciler.controller.render import Renderer
from sidecar.restic import repository_of
from tests.factories import backup, restore_object, workload
from tests.factories.cluster import writes

NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
IMAGE = "restik:test"
BACKUP = parse_backup(backup(path="/var/lib/db"))


def restore(name="r1", *, target=None, status=None, **spec) -> dict:
    return restore_object(name, target=target, status=status, **spec)


def sts(replicas=3, **kw):
    obj = workload("StatefulSet", label=None, **kw)
    obj["spec"]["replicas"] = replicas
    obj["metadata"]["resourceVersion"] = "7"
    return obj


def plan(raw, backup_=BACKUP, **kw):
    return plan_restore(raw, backup_, image=IMAGE, now=NOW, **kw)


# ---------------------------------------------------------------- Pending, Invalid


def test_a_missing_backup_is_pending_not_failed():
    acts = plan(restore(), None, workload=sts())
    assert acts.status == {
        "target": "StatefulSet/app",
        "phase": "Pending",
        "message": "Backup web/www not found",
    }
    assert acts.workload is None and acts.job is None and acts.phase == "Pending"


def test_a_missing_workload_or_claim_is_pending():
    assert plan(restore()).status["message"] == "StatefulSet/app not found in namespace web"
    acts = plan(restore(target={"pvc": {"claimName": "copy"}}))
    assert acts.status["message"] == "PersistentVolumeClaim web/copy not found"


def test_an_invalid_restore_is_invalid_with_every_field():
    acts = plan(restore(include=["/abs"], snapshot="zz"), workload=sts())
    assert acts.status["phase"] == "Invalid"
    assert acts.status["message"].startswith("Restore web/r1: spec.snapshot: ")
    assert "spec.include[0]" in acts.status["message"]
    assert acts.workload is None


def test_a_command_source_backup_needs_the_restores_command():
    """Its snapshots are a dump (stdin), not the files of a volume: without spec.command
    (tests/test_restore_dump.py) Invalid, naming the field and how to fill it, no init
    container, no Job; re-evaluated each cycle (not finished)."""
    raw_backup = backup(path="/var/lib/db")
    raw_backup["spec"]["backupSource"] = {
        "command": {"command": ["pg_dumpall"], "filename": "all.sql"}
    }
    dump = parse_backup(raw_backup)
    for target in (None, {"pvc": {"claimName": "copy"}}):
        acts = plan(restore(target=target), dump, workload=sts(), claim={"metadata": {}})
        assert acts.status["phase"] == "Invalid"
        assert "spec.backupSource.command" in acts.status["message"]
        assert "spec.command: required" in acts.status["message"]
        assert acts.workload is None and acts.job is None


def test_nothing_is_written_when_the_status_says_it_already():
    raw = restore()
    first = plan(raw, None, workload=sts())
    raw["status"] = first.status
    assert plan(raw, None, workload=sts()).status is None


# ---------------------------------------------------------------- in place


def test_the_init_container_goes_first_with_its_own_volumes():
    db = {
        "name": "db",
        "image": "pg",
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/db"}],
        "securityContext": {"runAsUser": 999, "runAsGroup": 999},
    }
    acts = plan(restore(), workload=sts(containers=[db]))
    ref, before, after = acts.workload
    assert str(ref) == "StatefulSet/app" and before["metadata"]["resourceVersion"] == "7"
    pod = after["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    assert init["name"] == RESTORE_CONTAINER and init["image"] == IMAGE
    assert init["args"] == [
        *("restore-run", "--restore", "r1", "--workload", "StatefulSet/app"),
        *("--target", "/var/lib/db"),
        # where the executor's early snapshot listing looks: as the sidecar's restic would
        f"--repository={repository_of(BACKUP)}",
        f"--source-path={BACKUP.source_path}",
    ]
    assert repository_of(BACKUP) == "/restik/repo/repo"
    assert {"name": "data", "mountPath": "/var/lib/db"} in init["volumeMounts"]
    assert init["securityContext"]["runAsUser"] == 999  # the application's own user
    assert init["securityContext"]["runAsNonRoot"] is True
    repo_mount = next(m for m in init["volumeMounts"] if m["name"] == "restik-restore-repo")
    assert "readOnly" not in repo_mount  # restic restore locks the repository
    assert {v["name"] for v in pod["volumes"]} == {
        "data",
        "restik-restore-cache",
        "restik-restore-token",
        "restik-restore-repo",
    }
    mark = after["spec"]["template"]["metadata"]["annotations"][RESTORE_ANNOTATION]
    assert mark.startswith("r1/")
    assert acts.status["phase"] == "Pending"
    assert acts.status["message"].startswith(
        "init container restik-restore added to StatefulSet/app"
    )
    assert acts.rolebinding["roleRef"]["name"] == "restik-restore"
    # the next cycle sees it in place: no change
    again = plan(restore(status=acts.status), workload=after)
    assert again.workload is None and again.status is None


def test_a_root_application_gets_a_root_restore_that_keeps_owners():
    container, _ = render_executor(
        IMAGE, parse_restore(restore()), BACKUP, target="/d", target_volume="data",
        user=AppUser(0, 0), workload_ref="StatefulSet/app",
    )  # fmt: skip
    security = container["securityContext"]
    assert security["runAsUser"] == 0 and "runAsNonRoot" not in security
    assert security["allowPrivilegeEscalation"] is False and "capabilities" not in security


def test_finished_restores_take_the_init_container_out_again():
    acts = plan(restore(), workload=sts())
    after = acts.workload[2]
    done = restore(status={"phase": "Succeeded", "target": "StatefulSet/app"})
    out = plan(done, workload=after)
    assert out.workload[2] == sts()  # exactly the original template
    assert out.status is None and out.phase == "Succeeded"
    assert plan(done, workload=sts()).workload is None  # gone: nothing to do
    # another Restore's init container is not this one's to remove
    assert plan(restore("r2", status={"phase": "Failed"}), workload=after).workload is None


def test_a_new_run_id_injects_again():
    done = restore(runID="b", status={"phase": "Succeeded", "runID": "a"})
    assert plan(done, workload=sts()).workload is not None


def test_a_users_own_restik_restore_init_container_is_reported():
    obj = sts()
    obj["spec"]["template"]["spec"]["initContainers"] = [{"name": "restik-restore", "image": "x"}]
    acts = plan(restore(), workload=obj)
    assert acts.workload is None
    [(reason, message)] = acts.events
    assert reason == "WorkloadMisconfigured"
    assert (
        "spec.template.spec.initContainers[0].name: an init container named 'restik-restore'"
        in message
    )
    blocked = next(c for c in acts.status["conditions"] if c["type"] == "Blocked")
    assert (blocked["status"], blocked["reason"]) == ("True", "WorkloadMisconfigured")
    # the same problem again: no second Event
    assert plan(restore(status=acts.status), workload=obj).events == []


@pytest.mark.parametrize(
    "kind", ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController"]
)
def test_restore_and_sidecar_share_a_template_and_leave_each_other_alone(kind):
    renderer = Renderer(image=IMAGE)
    original = workload(kind)
    with_sidecar = inject(original, renderer.render(BACKUP, kind, "app"))
    container, volumes = render_executor(
        IMAGE, parse_restore(restore()), BACKUP, target="/var/lib/db", target_volume="data",
        user=AppUser(), workload_ref=f"{kind}/app",
    )  # fmt: skip
    both = inject_restore(with_sidecar, container, volumes, "r1/abc")
    assert inject_restore(both, container, volumes, "r1/abc") == both  # idempotent
    assert remove_restore(both) == with_sidecar
    assert remove(both) == inject_restore(original, container, volumes, "r1/abc")
    assert remove_restore(remove(both)) == original
    assert restore_mark(remove(both)) == "r1/abc"


# ---------------------------------------------------------------- into a PVC

CLAIM = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {"name": "copy", "namespace": "web"},
}


def pod(name, claim="copy", phase="Running", labels=None):
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]},
        "status": {"phase": phase},
    }


def test_a_claim_in_use_is_refused_with_a_condition_and_one_event():
    raw = restore(target={"pvc": {"claimName": "copy"}})
    acts = plan(
        raw,
        claim=CLAIM,
        pods=[pod("app-0"), pod("other", claim="x"), pod("old", phase="Succeeded")],
    )
    assert acts.job is None
    message = (
        "PersistentVolumeClaim web/copy is in use by pod app-0: restik does not restore into a "
        "mounted volume; stop them (scale to 0) and the restore starts"
    )
    assert acts.events == [("ClaimInUse", message)]
    assert acts.status["phase"] == "Pending" and acts.status["message"] == message
    again = plan(
        restore(target={"pvc": {"claimName": "copy"}}, status=acts.status),
        claim=CLAIM,
        pods=[pod("app-0")],
    )
    assert again.events == [] and again.status is None
    freed = plan(
        restore(target={"pvc": {"claimName": "copy"}}, status=acts.status), claim=CLAIM, pods=[]
    )
    assert freed.job is not None
    blocked = next(c for c in freed.status["conditions"] if c["type"] == "Blocked")
    assert blocked["status"] == "False"


def test_the_job_mounts_the_claim_and_runs_once_as_root():
    acts = plan(restore(target={"pvc": {"claimName": "copy"}}), claim=CLAIM, pods=[])
    job = acts.job
    assert job["metadata"]["name"] == "restik-restore-r1"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["ttlSecondsAfterFinished"] == 3600
    pod_spec = spec["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    [container] = pod_spec["containers"]
    assert container["args"] == [
        *("restore-run", "--restore", "r1", "--target", "/restik/target"),
        *("--repository=/restik/repo/repo", "--source-path=/var/lib/db"),
    ]
    assert container["securityContext"]["runAsUser"] == 0
    assert pod_spec["volumes"][0] == {
        "name": "restik-restore-target",
        "persistentVolumeClaim": {"claimName": "copy"},
    }
    assert acts.status["message"] == "Job restik-restore-r1 restores into the claim"
    # the Job exists: nothing more (the executor reports)
    assert (
        plan(
            restore(target={"pvc": {"claimName": "copy"}}, status=acts.status), claim=CLAIM, job=job
        ).job
        is None
    )


# ---------------------------------------------------------------- multi-host completion


def entry(host, phase="Succeeded", run=None):
    e = {"host": host, "phase": phase}
    if run:
        e["runID"] = run
    return e


def test_a_statefulset_restore_succeeds_when_every_ordinal_did():
    acts = plan(restore(), workload=sts())
    after = acts.workload[2]
    running = {
        "phase": "Running",
        "target": "StatefulSet/app",
        "hosts": [entry("app-0"), entry("app-1")],
    }
    assert plan(restore(status=running), workload=after).status is None
    running["hosts"].append(entry("app-2", "Running"))
    assert plan(restore(status=running), workload=after).status is None
    running["hosts"][2] = entry("app-2")
    done = plan(restore(status=running), workload=after)
    assert done.status == {
        "phase": "Succeeded",
        "completionTime": "2026-01-31T12:00:00Z",
        "snapshot": "3 hosts",
        "message": "restored 3 hosts: app-0, app-1, app-2",
    }
    # entries of another run do not count
    stale = copy.deepcopy(running)
    assert plan(restore(runID="x", status=stale), workload=after).status is None


# ---------------------------------------------------------------- the controller applies it


def test_the_controller_adds_and_removes_the_init_container(cluster, kubeconfig):
    from reconciler.controller.cycle import Controller
    from reconciler.controller.metrics import ControllerMetrics
    from reconciler.controller.options import Settings
    from reconciler.kube.client import Kube

    metrics = ControllerMetrics()
    c = Controller(Kube.connect(str(kubeconfig)), Settings(), metrics=metrics)
    cluster.create(backup(path="/var/lib/db"))
    cluster.create(workload("StatefulSet", label=None))
    cluster.create(restore())
    c.cycle()
    obj = cluster.get("apps/v1", "statefulsets", "app", "web")
    inits = obj["spec"]["template"]["spec"]["initContainers"]
    assert [i["name"] for i in inits] == [RESTORE_CONTAINER]
    rb = cluster.get("rbac.authorization.k8s.io/v1", "rolebindings", "restik-restore-r1", "web")
    assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "default", "namespace": "web"}]
    status = cluster.get("backup.appscode.com/v1beta1", "restores", "r1", "web")["status"]
    assert status["phase"] == "Pending" and status["target"] == "StatefulSet/app"
    cluster.clear_requests()
    c.cycle()
    assert writes(cluster) == []  # converged
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    assert 'restik_restore_phase{namespace="web",phase="Pending",restore="r1"} 1.0' in text
    raw = cluster.get("backup.appscode.com/v1beta1", "restores", "r1", "web")
    raw["status"] = {**raw["status"], "phase": "Failed"}
    cluster.update(raw, "status")
    c.cycle()
    obj = cluster.get("apps/v1", "statefulsets", "app", "web")
    assert "initContainers" not in obj["spec"]["template"]["spec"]
    assert RESTORE_ANNOTATION not in (obj["spec"]["template"]["metadata"].get("annotations") or {})
    text = generate_latest(metrics.registry).decode()
    assert 'restik_restore_phase{namespace="web",phase="Failed",restore="r1"} 1.0' in text
    cluster.clear_requests()
    c.cycle()
    assert writes(cluster) == []
    cluster.delete("backup.appscode.com/v1beta1", "restores", "r1", "web")
    c.cycle()
    assert "restik_restore_phase{" not in generate_latest(metrics.registry).decode()


def test_the_controller_creates_the_job_once_the_claim_is_free(cluster, kubeconfig):
    from reconciler.controller.cycle import Controller
    from reconciler.controller.options import Settings
    from reconciler.kube.client import Kube

    c = Controller(Kube.connect(str(kubeconfig)), Settings())
    cluster.create(backup(path="/var/lib/db"))
    storage = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    cluster.create({**CLAIM, "spec": storage})
    user = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app-0", "namespace": "web"},
        "spec": {
            "containers": [{"name": "a", "image": "x"}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "copy"}}],
        },
    }
    cluster.create(user)
    cluster.create(restore(target={"pvc": {"claimName": "copy"}}))
    c.cycle()
    assert cluster.list("batch/v1", "jobs", "web") == []
    events = [
        e for e in cluster.list("v1", "events", "web") if e["involvedObject"]["kind"] == "Restore"
    ]
    assert [(e["reason"], e["type"]) for e in events] == [("ClaimInUse", "Warning")]
    cluster.delete("v1", "pods", "app-0", "web")
    c.cycle()
    [job] = cluster.list("batch/v1", "jobs", "web")
    assert job["metadata"]["name"] == "restik-restore-r1"
    c.cycle()
    assert len(cluster.list("batch/v1", "jobs", "web")) == 1


# ---------------------------------------------------------------- restik inject / diff


OFFLINE = """\
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: app
  namespace: web
  labels: {backup.appscode.com/config: www}
spec:
  serviceName: app
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
      - name: app   # the application
        image: nginx:1.27
        volumeMounts: [{name: data, mountPath: /srv}]
      volumes:
      - {name: data, persistentVolumeClaim: {claimName: data}}
"""


def _offline(tmp_path, *docs, command="inject"):
    import io

    from ruamel.yaml import YAML

    from reconciler.controller.render import Renderer
    from reconciler.offline.diff import run_diff
    from reconciler.offline.inject import run_inject

    path = tmp_path / "in.yaml"
    yaml = YAML()
    texts = [OFFLINE]
    for doc in docs:
        buf = io.StringIO()
        yaml.dump(doc, buf)
        texts.append(buf.getvalue())
    path.write_text("---\n".join(texts))
    out, err = io.StringIO(), io.StringIO()
    run = run_inject if command == "inject" else run_diff
    code = run([str(path)], Renderer(image=IMAGE), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_inject_renders_the_init_container_the_controller_expects(tmp_path):
    from tests.factories import load_all

    code, out, err = _offline(tmp_path, backup(), restore())
    assert (code, err) == (0, "")
    assert "- name: app   # the application" in out  # the user's file is kept as it was
    [sts_out, *_] = load_all(out)
    assert sts_out["spec"]["template"]["spec"]["initContainers"][0]["name"] == RESTORE_CONTAINER
    # the controller finds the same rendering in place: no patch
    acts = plan(restore(), workload=sts_out, backup_=parse_backup(backup()))
    assert acts.workload is None
    code, out, _ = _offline(tmp_path, backup(), restore(), command="diff")
    assert code == 1 and "+      - name: restik-restore" in out


def test_inject_reports_what_it_cannot_render(tmp_path):
    code, out, err = _offline(tmp_path, backup(), restore(target={"pvc": {"claimName": "c"}}))
    assert code == 0 and "a PVC target is restored by a Job the controller creates" in err
    code, _, err = _offline(
        tmp_path, backup(), restore(target={"workload": {"kind": "Deployment", "name": "x"}})
    )
    assert code == 0 and "Deployment/x is not among the inputs; left alone" in err
    code, out, err = _offline(tmp_path, backup(), restore(include=["/abs"]))
    assert code == 2 and out == "" and "spec.include[0]" in err
    # a dump Restore: a Job execs into the running pods, nothing to render; against a
    # volume Backup it is an error naming spec.command
    dump = backup()
    dump["spec"]["backupSource"] = {"command": {"command": ["pg_dumpall"], "filename": "a.sql"}}
    code, out, err = _offline(tmp_path, dump, restore(command={"command": ["psql"]}))
    assert code == 0 and "a dump (spec.command) is piped into the running pods by a Job" in err
    code, out, err = _offline(tmp_path, backup(), restore(command={"command": ["psql"]}))
    assert code == 2 and "Restore web/r1: spec.command: Backup web/www backs up volume" in err


def test_the_executor_takes_only_restics_variables_from_the_secret():
    """As the sidecar (issue 13 item 5): the Secret key by key, never envFrom, so a key
    RESTIC_PASSWORD_COMMAND or LD_PRELOAD in the Secret becomes nothing."""
    from reconciler.api.constants import SECRET_ENV

    init = plan(restore(), workload=sts()).workload[2]["spec"]["template"]["spec"]
    container = init["initContainers"][0]
    assert "envFrom" not in container
    keys = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert keys == {"RESTIC_PASSWORD": "password", **{n: n for n in SECRET_ENV}}
