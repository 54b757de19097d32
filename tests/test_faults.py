"""The controller under API faults: it converges, and never damages a workload on the way."""

from __future__ import annotations

import copy

import pytest

from reconciler.api.constants import CONFIG_LABEL, SIDECAR_NAME, VOLUME_PREFIX, WORKLOAD_KINDS
from reconciler.controller.cycle import Controller
from reconciler.controller.options import Settings
from reconciler.kube.client import Kube
from reconciler.resources import crd_manifest
from tests.factories.cluster import NS, backup, finish, restik, wait_for, workload

KINDS = list(WORKLOAD_KINDS)


def api_of(kind):
    return WORKLOAD_KINDS[kind][0]


def all_workloads(emu):
    out = {}
    for kind in KINDS:
        for obj in emu.list(api_of(kind), kind, NS):
            out[(kind, obj["metadata"]["name"])] = obj
    return out


def check_invariants(objs, originals):
    """No double sidecar, no lost user container/volume, no restik volume without sidecar."""
    for key, obj in objs.items():
        pod = obj["spec"]["template"]["spec"]
        names = [c["name"] for c in pod["containers"]]
        assert names.count(SIDECAR_NAME) <= 1, key
        user = [c for c in pod["containers"] if c["name"] != SIDECAR_NAME]
        orig_pod = originals[key]["spec"]["template"]["spec"]
        assert user == orig_pod["containers"], key
        user_volumes = [
            v for v in pod.get("volumes", []) if not v["name"].startswith(VOLUME_PREFIX)
        ]
        assert user_volumes == orig_pod.get("volumes", []), key
        owned = [v for v in pod.get("volumes", []) if v["name"].startswith(VOLUME_PREFIX)]
        if owned:
            assert SIDECAR_NAME in names, key


@pytest.mark.slow
def test_converges_under_faults_and_unlabel_restores_everything(emulator, kubeconfig):
    emulator.create(crd_manifest())
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    for b in ("a", "b", "c", "d"):
        emulator.create(backup(name=b))
    for i in range(45):
        kind = KINDS[i % len(KINDS)]
        emulator.create(workload(kind, name=f"w{i}", label="abcd"[i % 4], sa=f"sa{i % 3}"))
    originals = copy.deepcopy(all_workloads(emulator))

    emulator.fail_rate = 0.2
    emulator.rng.seed(7)
    controller = Controller(Kube.connect(str(kubeconfig)), Settings(max_restarts=50))
    faults_seen = 0
    for _ in range(8):
        try:
            controller.cycle()
        except Exception as exc:  # a whole-cycle failure (e.g. a LIST that kept failing)
            assert type(exc).__name__ == "ApiError", exc
        faults_seen += sum(1 for r in emulator.requests if r.fault)
        emulator.clear_requests()
        check_invariants(all_workloads(emulator), originals)
    assert faults_seen > 10

    emulator.fail_rate = 0.0
    dry = Controller(Kube.connect(str(kubeconfig)), Settings(dry_run=True))
    assert dry.cycle().planned == 0  # converged within 8 faulty cycles
    objs = all_workloads(emulator)
    assert all(
        SIDECAR_NAME in [c["name"] for c in o["spec"]["template"]["spec"]["containers"]]
        for o in objs.values()
    )

    for obj in objs.values():
        del obj["metadata"]["labels"][CONFIG_LABEL]
        emulator.update(obj)
    emulator.fail_rate = 0.2
    for _ in range(8):
        try:
            controller.cycle()
        except Exception as exc:
            assert type(exc).__name__ == "ApiError", exc
        check_invariants(all_workloads(emulator), originals)
    emulator.fail_rate = 0.0
    controller.cycle()
    for key, obj in all_workloads(emulator).items():
        assert obj["spec"]["template"] == originals[key]["spec"]["template"], key


def test_retry_policy_honours_retry_after():
    import tenacity

    from reconciler.kube.client import ApiError, _wait

    state = tenacity.RetryCallState(None, None, (), {})
    state.attempt_number = 1
    fut = tenacity.Future(1)
    fut.set_exception(ApiError(429, "TooManyRequests", "slow down", retry_after=3))
    state.outcome = fut
    assert _wait(state) == 3
    fut = tenacity.Future(1)
    fut.set_exception(ApiError(503, "ServiceUnavailable", "x"))
    state.outcome = fut
    assert 0 < _wait(state) <= 0.2
    assert ApiError(0, "ConnectionError", "x").retryable
    assert not ApiError(409, "Conflict", "x").retryable
    assert not ApiError(422, "Invalid", "x").retryable


@pytest.mark.slow
def test_kill_9_between_two_patches_then_a_clean_convergence(emulator, kubeconfig):
    import signal

    emulator.create(crd_manifest())
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    emulator.create(backup())
    for i in range(10):
        emulator.create(workload(KINDS[i % len(KINDS)], name=f"w{i}"))
    originals = copy.deepcopy(all_workloads(emulator))
    emulator.write_delay = 0.3
    proc = restik("run", "--once", "--kubeconfig", str(kubeconfig))
    try:
        patched = lambda: [r for r in emulator.requests if r.method == "PATCH" and r.status == 200]  # noqa: E731
        wait_for(lambda: len(patched()) >= 2, timeout=30)
        proc.send_signal(signal.SIGKILL)
    finally:
        finish(proc)
    assert proc.returncode == -signal.SIGKILL
    done = [r for r in emulator.requests if r.method == "PATCH" and r.status == 200]
    assert 2 <= len(done) < 10  # killed mid-cycle
    check_invariants(all_workloads(emulator), originals)

    emulator.write_delay = 0.0
    controller = Controller(Kube.connect(str(kubeconfig)), Settings(max_restarts=50))
    controller.cycle()
    check_invariants(all_workloads(emulator), originals)
    assert Controller(Kube.connect(str(kubeconfig)), Settings(dry_run=True)).cycle().planned == 0
    emulator.clear_requests()
    controller.cycle()
    assert [r for r in emulator.writes() if r.resource != "pods"] == []
