"""The planner and the pod a sidecar joins: a metrics port another container takes is a
problem, not an injection; the sidecar's own service-account token."""

from __future__ import annotations

import copy

import pytest

from reconciler.backup import parse_backup
from reconciler.constants import SIDECAR_NAME, TOKEN_MOUNT, TOKEN_VOLUME
from reconciler.plan import INJECT, plan
from reconciler.pod import PortClash, metrics_port_clash
from reconciler.render import Renderer
from reconciler.workload import inject
from tests.factories import KINDS, backup, workload

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

    from tests.test_gitops import run_cli

    obj = with_port(workload(), 9464, container="exporter")
    path = tmp_path / "app.json"
    path.write_text(json.dumps({"kind": "List", "apiVersion": "v1", "items": [backup(), obj]}))
    code, _, err = run_cli(["diff", "-f", str(path)])
    assert code == 2
    assert "port 9464 is already used by container 'exporter'" in err
