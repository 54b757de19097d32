"""Supply chain: the image installs a hash-pinned lock that matches setup.cfg, and the
Kubernetes client takes no API settings from PYKUBE_* variables."""

from __future__ import annotations

import configparser
import os
import re
from pathlib import Path

import pytest

from reconciler.kube import client as kube

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s*\\?$")
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)$")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def install_requires() -> dict[str, str]:
    """setup.cfg's install_requires: canonical name -> version specifier."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    out = {}
    for line in cfg["options"]["install_requires"].strip().splitlines():
        match = REQUIREMENT.match(line)
        assert match, f"setup.cfg install_requires: cannot read {line!r}"
        out[canonical(match.group(1))] = match.group(2).strip()
    return out


def locked() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock: canonical name -> (version, hashes)."""
    out: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in LOCK.read_text().splitlines():
        pin = PIN.match(line)
        if pin:
            current = canonical(pin.group(1))
            out[current] = (pin.group(2), [])
        elif line.strip().startswith("--hash=") and current is not None:
            out[current][1].append(line.strip().removeprefix("--hash=").rstrip(" \\"))
        elif line.strip() and not line.lstrip().startswith("#"):
            current = None
    return out


def test_every_install_requires_is_pinned_with_hashes():
    from packaging.specifiers import SpecifierSet

    pins = locked()
    for name, spec in install_requires().items():
        assert name in pins, f"{name} (setup.cfg) is not in requirements.lock: run `make lock`"
        version, hashes = pins[name]
        assert version in SpecifierSet(spec), f"{name}=={version} does not satisfy {spec!r}"
        assert hashes, f"{name} has no --hash in requirements.lock"
        assert all(h.startswith("sha256:") and len(h) == 7 + 64 for h in hashes), name


def test_every_locked_package_has_hashes():
    for name, (_, hashes) in locked().items():
        assert hashes, f"{name} has no --hash in requirements.lock"


def test_pykube_ng_is_replaced_by_its_maintained_fork():
    assert "new-pykube" in install_requires()
    assert "pykube-ng" not in install_requires()
    assert "pykube-ng" not in locked()


def test_dockerfile_installs_the_lock_with_hashes_only():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY requirements.lock" in dockerfile
    install = re.search(r"pip install [^\n]*-r requirements.lock", dockerfile)
    assert install and "--require-hashes" in install.group(0)
    assert "--only-binary=:all:" in install.group(0)
    # the project itself goes in without pulling anything the lock does not pin
    assert "pip install --no-cache-dir --no-deps --no-build-isolation ." in dockerfile
    assert "!requirements.lock" in (ROOT / ".dockerignore").read_text().splitlines()


# --------------------------------------------------------------------------- PYKUBE_*


@pytest.fixture
def in_cluster(tmp_path, monkeypatch):
    """An in-cluster service account directory and no kubeconfig anywhere."""
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("the-pods-token")
    (sa / "namespace").write_text("web")
    (sa / "ca.crt").write_text("")
    monkeypatch.setattr(kube, "SERVICE_ACCOUNT_DIR", sa)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    return sa


def test_pykube_host_override_cannot_redirect_the_token(in_cluster, monkeypatch, caplog):
    """pykube sends the in-cluster token to PYKUBE_KUBERNETES_SERVICE_HOST when it is set;
    restik drops the variable and talks to the real API server."""
    monkeypatch.setenv("PYKUBE_KUBERNETES_SERVICE_HOST", "attacker.example")
    monkeypatch.setenv("PYKUBE_KUBERNETES_SERVICE_PORT", "8443")
    config = kube.load_config(None)
    assert config.cluster["server"] == "https://10.96.0.1:443"
    assert config.user["token"] == "the-pods-token"
    assert not [k for k in os.environ if k.startswith("PYKUBE_")]
    assert "PYKUBE_KUBERNETES_SERVICE_HOST" in caplog.text
    assert "attacker.example" not in caplog.text  # names only, never values


def test_pykube_ca_override_is_dropped_before_any_request(in_cluster, monkeypatch):
    """PYKUBE_SSL_CERTIFICATE_AUTHORITY would replace the CA that verifies the API server
    at every request; it is gone once restik has connected."""
    monkeypatch.setenv("PYKUBE_SSL_CERTIFICATE_AUTHORITY", "/tmp/attacker-ca.crt")
    client = kube.Kube.connect(None)
    assert "PYKUBE_SSL_CERTIFICATE_AUTHORITY" not in os.environ
    assert client.client.config.cluster["certificate-authority"].filename() == str(
        in_cluster / "ca.crt"
    )


def test_base_image_is_one_argument_that_can_carry_a_digest():
    dockerfile = (ROOT / "Dockerfile").read_text()
    froms = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert froms == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    first_from = dockerfile.index("\nFROM ")
    assert "\nARG BASE_IMAGE=debian:trixie-slim\n" in dockerfile[:first_from]
    assert "BASE_IMAGE=docker.io/library/debian:trixie-slim@sha256:" in dockerfile
