"""Watch events between full cycles: which ones cost nothing, which reconcile one workload
(a GET and at most one PATCH), which ask for a full relist. Pure relevance tests, then the
exact requests of `restik run`'s loop against the emulator."""

from __future__ import annotations

import copy
import threading
import time

import pytest

from reconciler.api.backup import parse_backup
from reconciler.api.constants import CONFIG_LABEL, HASH_ANNOTATION, SIDECAR_NAME
from reconciler.controller.cycle import Controller
from reconciler.controller.loop import Loop
from reconciler.controller.options import Settings
from reconciler.controller.plan import BackupIndex, plan
from reconciler.controller.relevance import (
    IRRELEVANT,
    RELEVANT,
    UNKNOWN,
    Relevance,
    fingerprint,
)
from reconciler.controller.render import Renderer
from reconciler.controller.single import plans_change
from reconciler.kube.client import Kube
from tests.factories.cluster import (
    BACKUP_API,
    LISTS,
    NS,
    backup,
    containers,
    get,
    wait_for,
    workload,
)

# ------------------------------------------------------------------ pure: what is relevant


def injected(kind="Deployment", name="www"):
    """``workload(kind, name)`` with its sidecar, as restik would patch it."""
    result = plan([parse_backup(backup())], [workload(kind, name)], Renderer())
    (change,) = result.changes
    return copy.deepcopy(dict(change.after))


def changed(obj, edit):
    out = copy.deepcopy(obj)
    edit(out)
    return out


def _status(o):
    o["status"] = {"readyReplicas": 1, "observedGeneration": 7}


def _scale(o):
    o["spec"]["replicas"] = 5
    o["metadata"]["generation"] = 2


def _bookkeeping(o):
    o["metadata"].update(resourceVersion="999", managedFields=[{"manager": "kubectl"}])
    o["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{}"}


def _other_label(o):
    o["metadata"]["labels"]["team"] = "blue"


def _config_label(o):
    o["metadata"]["labels"][CONFIG_LABEL] = "other"


def _unlabel(o):
    del o["metadata"]["labels"][CONFIG_LABEL]


def _hash(o):
    o["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION] = "0" * 16


def _image(o):
    o["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"


def _strategy(o):
    o["spec"]["updateStrategy"] = {"type": "OnDelete"}


def _owner(o):
    o["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x", "uid": "1", "controller": True}
    ]


def _claims(o):
    o["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}}]


@pytest.mark.parametrize(
    "edit, same",
    [
        (_status, True),
        (_scale, True),
        (_bookkeeping, True),
        (_other_label, True),
        (_config_label, False),
        (_unlabel, False),
        (_hash, False),
        (_image, False),
        (_strategy, False),
        (_owner, False),
        (_claims, False),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else str(v),
)
def test_fingerprint_covers_what_the_planner_reads(edit, same):
    obj = injected()
    assert (fingerprint(changed(obj, edit)) == fingerprint(obj)) is same


def test_fingerprint_does_not_depend_on_key_order():
    obj = injected()
    reordered = copy.deepcopy(obj)
    reordered["spec"] = dict(reversed(list(reordered["spec"].items())))
    assert fingerprint(reordered) == fingerprint(obj)


def test_relevance_remembers_the_last_version_and_forgets_the_least_recent():
    memory = Relevance(limit=2)
    a, b, c = (("Deployment", NS, n) for n in "abc")
    obj = injected()
    assert memory.classify(a, obj) == UNKNOWN
    assert memory.classify(a, changed(obj, _status)) == IRRELEVANT
    assert memory.classify(a, changed(obj, _image)) == RELEVANT
    assert memory.classify(a, changed(obj, _image)) == IRRELEVANT  # the new version is kept
    memory.classify(b, obj)
    memory.classify(a, obj)  # a is now the most recent
    memory.classify(c, obj)  # over the limit: b goes
    assert len(memory) == 2
    assert memory.classify(b, obj) == UNKNOWN
    memory.forget(b)
    assert memory.classify(b, obj) == UNKNOWN


def test_plans_change_on_an_event_copy():
    index = BackupIndex.of([parse_backup(backup())])
    renderer = Renderer()
    assert not plans_change(index, changed(injected(), _scale), renderer)
    assert plans_change(index, workload(), renderer)  # labeled, no sidecar yet
    assert plans_change(index, changed(injected(), _unlabel), renderer)  # remove it
    assert not plans_change(index, workload(label=None), renderer)  # not ours


# ------------------------------------------------------------------ the loop, exact requests


class Running:
    """A Loop (interval 300 s: no full cycle on its own in a test) in a thread."""

    def __init__(self, kubeconfig, **settings):
        self.settings = Settings(interval=300.0, **settings)
        self.controller = Controller(Kube.connect(str(kubeconfig)), self.settings)
        self.loop = Loop(self.controller, self.settings)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.loop.request_stop()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def watching(cluster, count=6):
    wait_for(lambda: len([r for r in cluster.requests if r.verb == "watch"]) >= count)
    time.sleep(0.2)


def seen(cluster):
    """Every request but the long-lived watches, as (method, path)."""
    return [(r.method, r.path) for r in cluster.requests if r.verb != "watch"]


def quiet(seconds=0.6):
    time.sleep(seconds)


@pytest.fixture
def converged(cluster, kubeconfig):
    """A Backup, a labeled Deployment with its sidecar (patched by an earlier controller, so
    the loop under test never saw a version of it) and a labeled StatefulSet."""
    cluster.create(backup())
    cluster.create(workload())
    cluster.create(workload("StatefulSet"))
    Controller(Kube.connect(str(kubeconfig)), Settings()).cycle()
    assert SIDECAR_NAME in containers(get(cluster, "Deployment"))
    return cluster


def scale(cluster, kind, replicas):
    api = "v1" if kind == "ReplicationController" else "apps/v1"
    plural = kind.lower() + "s"
    cluster.patch(api, plural, "www", {"spec": {"replicas": replicas}}, NS)


def write_status(cluster, kind, n):
    obj = get(cluster, kind)
    obj["status"] = {"replicas": n, "readyReplicas": n, "observedGeneration": 1}
    cluster.update(obj, subresource="status")


def test_status_and_scale_events_cost_no_request(converged, kubeconfig):
    with Running(kubeconfig):
        watching(converged)
        converged.clear_requests()
        for n in range(3):  # never seen before (UNKNOWN), then known: both free
            write_status(converged, "Deployment", n)
            scale(converged, "Deployment", n + 2)
            write_status(converged, "StatefulSet", n)
            scale(converged, "StatefulSet", n + 2)
        obj = get(converged, "Deployment")
        obj["metadata"]["labels"]["team"] = "blue"  # a label restik does not read
        converged.update(obj)
        quiet()
        assert seen(converged) == []


def test_a_label_added_is_one_get_and_one_patch(converged, kubeconfig):
    converged.create(workload(name="api", label=None))
    with Running(kubeconfig):
        watching(converged)
        converged.clear_requests()
        obj = get(converged, "Deployment", "api")
        obj["metadata"]["labels"][CONFIG_LABEL] = "www"
        converged.update(obj)
        wait_for(lambda: SIDECAR_NAME in containers(get(converged, "Deployment", "api")))
        quiet()
        path = f"/apis/apps/v1/namespaces/{NS}/deployments/api"
        assert seen(converged) == [("GET", path), ("PATCH", path)]


def test_a_template_change_that_keeps_it_in_sync_is_one_get(converged, kubeconfig):
    with Running(kubeconfig):
        watching(converged)
        scale(converged, "Deployment", 3)  # seen once: its fingerprint is now known
        quiet(0.3)
        converged.clear_requests()
        obj = get(converged, "Deployment")
        obj["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
        converged.update(obj)
        quiet()
        path = f"/apis/apps/v1/namespaces/{NS}/deployments/www"
        assert seen(converged) == [("GET", path)]


def test_a_relabel_to_another_backup_is_one_get_and_one_patch(converged, kubeconfig):
    converged.create(backup("db"))
    with Running(kubeconfig):
        watching(converged)
        converged.clear_requests()
        before = get(converged, "StatefulSet")
        before["metadata"]["labels"][CONFIG_LABEL] = "db"
        converged.update(before)
        wait_for(lambda: get(converged, "StatefulSet")["metadata"]["generation"] > 2)
        quiet()
        path = f"/apis/apps/v1/namespaces/{NS}/statefulsets/www"
        assert seen(converged) == [("GET", path), ("PATCH", path)]
        after = get(converged, "StatefulSet")["spec"]["template"]["spec"]["containers"]
        sidecar = next(c for c in after if c["name"] == SIDECAR_NAME)
        assert "db" in " ".join(sidecar.get("args") or []) + str(sidecar.get("env"))


def test_backup_events_and_deletions_relist(converged, kubeconfig):
    with Running(kubeconfig):
        watching(converged)
        converged.clear_requests()
        converged.patch(BACKUP_API, "backups", "www", {"spec": {"schedule": "@daily"}}, NS)
        wait_for(lambda: len([r for r in converged.requests if r.verb == "list"]) >= 7)
        quiet(0.3)
        lists = [(r.method, r.path) for r in converged.requests if r.verb == "list"]
        assert lists == LISTS
        converged.clear_requests()
        time.sleep(1.0)  # full cycles are at least MIN_CYCLE_GAP apart
        converged.delete("apps/v1", "statefulsets", "www", NS)
        wait_for(lambda: len([r for r in converged.requests if r.verb == "list"]) >= 7)
        quiet(0.3)
        lists = [(r.method, r.path) for r in converged.requests if r.verb == "list"]
        assert lists == LISTS


def test_an_unlabeled_workload_loses_its_sidecar_through_the_relist(converged, kubeconfig):
    """Removing the label ends the label-selected watch's view of it (DELETED): a full cycle
    finds it through the Backup's status and removes the sidecar."""
    with Running(kubeconfig):
        watching(converged)
        obj = get(converged, "Deployment")
        del obj["metadata"]["labels"][CONFIG_LABEL]
        converged.update(obj)
        wait_for(lambda: SIDECAR_NAME not in containers(get(converged, "Deployment")))


def test_restiks_own_patch_is_remembered_not_reconciled_again(converged, kubeconfig):
    converged.create(workload(name="api", label=None))
    with Running(kubeconfig):
        watching(converged)
        obj = get(converged, "Deployment", "api")
        obj["metadata"]["labels"][CONFIG_LABEL] = "www"
        converged.update(obj)
        wait_for(lambda: SIDECAR_NAME in containers(get(converged, "Deployment", "api")))
        quiet(0.3)
        converged.clear_requests()
        write_status(converged, "Deployment", 1)  # after restik's PATCH: nothing to do
        quiet()
        assert seen(converged) == []
