"""The rendered pod template as a cluster would judge it: the whole injected workload is a
valid object for the Kubernetes API (kubernetes-validate, strict), and the sidecar passes
Pod Security `restricted` whatever the pod's own securityContext says."""

from __future__ import annotations

import kubernetes_validate
import pytest

from reconciler.api.backup import parse_backup
from reconciler.api.constants import SECRET_ENV, SIDECAR_NAME, VOLUME_PREFIX
from reconciler.controller.plan import plan
from reconciler.controller.render import Renderer
from tests.factories import KINDS, backup, workload

K8S_VERSION = "1.37"

# Pod Security Standards, "restricted" profile: the volume types it allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod_spec: dict, container: dict) -> list[str]:
    """What Pod Security `restricted` (plus baseline's container checks) rejects in
    ``container`` of ``pod_spec``, with the pod-level inheritance the admission applies."""
    pod_sc = pod_spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    out = []

    def inherited(key):
        return sc[key] if key in sc else pod_sc.get(key)

    if sc.get("privileged"):
        out.append("privileged")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append("allowPrivilegeEscalation != false")
    if inherited("runAsNonRoot") is not True:
        out.append("runAsNonRoot != true")
    if inherited("runAsUser") == 0:
        out.append("runAsUser = 0")
    seccomp = (inherited("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        out.append(f"seccompProfile.type = {seccomp}")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        out.append("capabilities.drop lacks ALL")
    if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
        out.append(f"capabilities.add = {caps['add']}")
    if any(p.get("hostPort") for p in container.get("ports") or []):
        out.append("hostPort")
    if sc.get("procMount", "Default") != "Default":
        out.append("procMount")
    return out


def restik_volume_violations(pod_spec: dict) -> list[str]:
    out = []
    for volume in pod_spec.get("volumes") or []:
        if not volume["name"].startswith(VOLUME_PREFIX):
            continue
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {volume['name']}: {sorted(kinds)}")
    return out


def injected(obj: dict, raw_backup: dict | None = None) -> dict:
    result = plan([parse_backup(raw_backup or backup())], [obj], Renderer())
    assert not result.problems, result.problems
    (change,) = result.changes
    return change.after


def sidecar(obj: dict) -> dict:
    (container,) = [
        c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == SIDECAR_NAME
    ]
    return container


# The pod's own securityContext, from none to hostile to the sidecar's settings.
POD_CONTEXTS = {
    "none": None,
    "empty": {},
    "run-as-root-allowed": {"runAsNonRoot": False},
    "seccomp-unconfined": {"seccompProfile": {"type": "Unconfined"}},
    "restricted-pod": {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "fs-group": {"fsGroup": 2000, "supplementalGroups": [3000]},
}
DESTINATIONS = {
    "local-pvc": backup(),
    "remote": backup(repository="s3:http://minio:9000/b"),
    "tuned": backup(
        repository="/mnt/repo",
        resources={"limits": {"memory": "2Gi"}, "requests": {"ephemeral-storage": "1Gi"}},
        metricsPort=9100,
        securityContext={"runAsUser": 4242, "runAsGroup": 0},
    ),
}


@pytest.mark.parametrize("raw_backup", DESTINATIONS.values(), ids=DESTINATIONS.keys())
@pytest.mark.parametrize("pod_context", POD_CONTEXTS.values(), ids=POD_CONTEXTS.keys())
@pytest.mark.parametrize("kind", KINDS)
def test_injected_workload_is_valid_and_the_sidecar_restricted(kind, pod_context, raw_backup):
    obj = workload(kind)
    if pod_context is not None:
        obj["spec"]["template"]["spec"]["securityContext"] = pod_context
    after = injected(obj, raw_backup)
    try:
        kubernetes_validate.validate(after, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{kind}: {str(exc).splitlines()[0]}")
    pod_spec = after["spec"]["template"]["spec"]
    assert restricted_violations(pod_spec, sidecar(after)) == []
    assert restik_volume_violations(pod_spec) == []
    # the pod's own settings are left as they were
    assert pod_spec.get("securityContext") == pod_context


def test_the_checker_catches_each_rule():
    """restricted_violations is what the tests above rely on: it must see every breach."""
    good = sidecar(injected(workload()))
    pod: dict = {}
    assert restricted_violations(pod, good) == []
    breaches = {
        "allowPrivilegeEscalation": ("allowPrivilegeEscalation", True),
        "runAsNonRoot": ("runAsNonRoot", False),
        "runAsUser": ("runAsUser", 0),
        "seccompProfile": ("seccompProfile", {"type": "Unconfined"}),
        "capabilities.drop": ("capabilities", {"drop": ["NET_RAW"]}),
        "capabilities.add": ("capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
        "privileged": ("privileged", True),
    }
    for what, (key, value) in breaches.items():
        bad = {**good, "securityContext": {**good["securityContext"], key: value}}
        assert restricted_violations(pod, bad), what
    bare = {k: v for k, v in good.items() if k != "securityContext"}
    assert len(restricted_violations(pod, bare)) == 4


def test_sidecar_has_requests_and_limits_for_a_quota():
    resources = sidecar(injected(workload()))["resources"]
    for section in ("requests", "limits"):
        assert set(resources[section]) >= {"cpu", "memory"}, section


def secret_references(node):
    """Every secretKeyRef / secretRef / secret volume anywhere under ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("secretKeyRef", "secretRef", "secret"):
                yield value
            yield from secret_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from secret_references(item)


@pytest.mark.parametrize("raw_backup", DESTINATIONS.values(), ids=DESTINATIONS.keys())
def test_a_missing_secret_never_keeps_the_pod_from_starting(raw_backup):
    """The kubelet does not start a pod whose container needs a missing Secret or key
    (CreateContainerConfigError) unless the reference is optional."""
    after = injected(workload(), raw_backup)
    refs = list(secret_references(sidecar(after)))
    assert len(refs) == 1 + len(SECRET_ENV)  # RESTIC_PASSWORD and restic's backend variables
    assert all(ref["optional"] is True for ref in refs), refs
    restik_volumes = [
        v for v in after["spec"]["template"]["spec"]["volumes"] if v["name"].startswith("restik-")
    ]
    assert list(secret_references(restik_volumes)) == []
