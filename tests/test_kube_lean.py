"""reconciler/kube/lean.py, restore-run's stdlib API client: the configurations it reads (and
the ones it leaves to the full client), and its calls against the emulator over HTTP, with
the emulator's faults (retried as reconciler.kube.client retries them)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from reconciler.kube.errors import ApiError
from reconciler.kube.lean import LeanKube, Unsupported, from_service_account, load_config
from reconciler.kube.resource import EVENTS
from reconciler.resources import crd_manifest, restore_crd_manifest
from sidecar.restore_status import RestoreStatus

NS = "web"


def write_yaml_kubeconfig(path, user: dict, server="https://10.0.0.1:6443", **cluster) -> None:
    lines = [
        "apiVersion: v1",
        "kind: Config",
        "current-context: c",
        "contexts:",
        "- name: c",
        "  context: {cluster: k, user: u, namespace: team}",
        "clusters:",
        "- name: k",
        "  cluster:",
        f"    server: {server}",
        *(f"    {k}: {json.dumps(v)}" for k, v in cluster.items()),
        "users:",
        "- name: u",
        f"  user: {json.dumps(user)}",
    ]
    path.write_text("\n".join(lines) + "\n")


def test_a_yaml_kubeconfig_with_a_token_file_relative_to_it(tmp_path):
    (tmp_path / "tok").write_text("secret-token\n")
    write_yaml_kubeconfig(
        tmp_path / "config", {"tokenFile": "tok"}, **{"insecure-skip-tls-verify": True}
    )
    config = load_config(str(tmp_path / "config"), {})
    assert (config.server, config.namespace, config.token) == (
        "https://10.0.0.1:6443",
        "team",
        "secret-token",
    )
    assert config.insecure and config.ca_file is None
    # $KUBECONFIG when there is no --kubeconfig
    assert load_config(None, {"KUBECONFIG": str(tmp_path / "config")}) == config


@pytest.mark.parametrize(
    "user",
    [
        {"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1"}},
        {"auth-provider": {"name": "gcp"}},
        {"username": "admin", "password": "pw"},
    ],
)
def test_what_needs_the_full_client_is_unsupported(tmp_path, user):
    write_yaml_kubeconfig(tmp_path / "config", user)
    with pytest.raises(Unsupported):
        LeanKube.connect(str(tmp_path / "config"), {})


def test_a_missing_kubeconfig_or_service_account_is_unsupported(tmp_path):
    with pytest.raises(Unsupported):
        LeanKube.connect(str(tmp_path / "nothing"), {})
    with pytest.raises(Unsupported):
        from_service_account(tmp_path, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"})


def test_the_in_cluster_service_account(tmp_path):
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "namespace").write_text("web\n")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    config = from_service_account(tmp_path, env)
    assert (config.server, config.token, config.namespace) == (
        "https://[fd00::1]:443",
        "sa-token",
        "web",
    )
    assert config.ca_file == str(tmp_path / "ca.crt")


def test_reads_and_writes_through_the_emulators_faults(emulator, tmp_path):
    emulator.create(crd_manifest())
    emulator.create(restore_crd_manifest())
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    emulator.create({
        "apiVersion": "backup.appscode.com/v1beta1", "kind": "Restore",
        "metadata": {"name": "r1", "namespace": NS},
        "spec": {"backup": "www", "target": {"pvc": {"claimName": "copy"}}},
    })  # fmt: skip
    kube = LeanKube.connect(str(emulator.write_kubeconfig(tmp_path / "kubeconfig")), {})
    try:
        assert kube.default_namespace == "default"
        status = RestoreStatus(kube, NS, "r1", "pod-0", lambda: datetime(2026, 1, 1, tzinfo=UTC))
        emulator.fail_rate = 0.3
        emulator.rng.seed(3)
        for i in range(12):  # read-modify-writes: 409s (injected) are read again
            status.update(lambda st, i=i: {"message": f"step {i}"})
            assert kube.get_or_none("/api/v1/namespaces/web/configmaps/none") is None
        raw = kube.get(status.path)
        status.event(raw, "RestoreStarted", "host copy: restoring")
        emulator.fail_rate = 0.0
        faults = {r.fault for r in emulator.requests if r.fault}
        assert {"500", "503", "429", "drop"} & faults  # retried, not raised
        assert emulator.get("backup.appscode.com/v1beta1", "restores", "r1", NS)["status"] == {
            "message": "step 11"
        }
        events = [e["reason"] for e in emulator.list("v1", "events", NS)]
        assert "RestoreStarted" in events
        with pytest.raises(ApiError) as err:
            kube.create(EVENTS.path(NS), {"not": "an event"})
        assert err.value.status == 422 or err.value.status == 400
    finally:
        emulator.fail_rate = 0.0
        kube.close()
