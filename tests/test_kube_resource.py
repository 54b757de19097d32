"""reconciler.kube.resource: the one place that turns a kind and a name into a request path."""

from __future__ import annotations

import pytest

from reconciler.api.constants import WORKLOAD_KINDS
from reconciler.kube.resource import BACKUPS, EVENTS, LEASES, PODS, WORKLOADS, Resource


def test_core_and_group_paths():
    assert PODS.path() == "/api/v1/pods"
    assert PODS.path("web") == "/api/v1/namespaces/web/pods"
    assert PODS.path("web", "app-0", "eviction") == "/api/v1/namespaces/web/pods/app-0/eviction"
    assert BACKUPS.path("web", "www", "status") == (
        "/apis/backup.appscode.com/v1beta1/namespaces/web/backups/www/status"
    )
    assert LEASES.path("ns", "l") == "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l"
    assert EVENTS.path("ns") == "/api/v1/namespaces/ns/events"


def test_every_workload_kind_has_its_resource():
    assert set(WORKLOADS) == set(WORKLOAD_KINDS)
    for kind, (api_version, plural) in WORKLOAD_KINDS.items():
        assert WORKLOADS[kind] == Resource(api_version, plural, kind)
    assert WORKLOADS["Deployment"].path("web", "app") == (
        "/apis/apps/v1/namespaces/web/deployments/app"
    )


@pytest.mark.parametrize(
    ("namespace", "name", "expected"),
    [
        ("web", "a/../../secrets", "/api/v1/namespaces/web/pods/a%2F..%2F..%2Fsecrets"),
        ("a/b", "x", "/api/v1/namespaces/a%2Fb/pods/x"),
        ("web", "x?watch=1", "/api/v1/namespaces/web/pods/x%3Fwatch%3D1"),
        ("web", "app.v1-0", "/api/v1/namespaces/web/pods/app.v1-0"),
    ],
)
def test_every_segment_is_quoted(namespace, name, expected):
    assert PODS.path(namespace, name) == expected
