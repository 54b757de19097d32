"""Builders for raw Backups and workloads shared by the pure-core tests."""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from reconciler import cli
from reconciler.api.backup import InvalidBackup, parse_backup
from reconciler.api.constants import CONFIG_LABEL, WORKLOAD_KINDS

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CRD_PATH = REPO / "kustomize" / "crd.yaml"

KINDS = tuple(WORKLOAD_KINDS)


def hypothesis_profiles():
    """Register the `ci` (1000 examples) and `dev` profiles; load `ci` when $CI is set."""
    from hypothesis import HealthCheck, settings

    common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
    settings.register_profile("ci", max_examples=1000, **common)
    settings.register_profile("dev", max_examples=200, **common)
    settings.load_profile("ci" if os.environ.get("CI") else "dev")


def backup(
    name: str = "www",
    namespace: str = "web",
    *,
    schedule: object = "@hourly",
    volume_name: object = "data",
    path: object = "/data",
    secret: object = "www-restic",
    repository: object = None,
    volume: object = None,
    dest_path: object = "/repo",
    **spec_extra,
) -> dict:
    """A raw Backup; local (PVC ``backups``) unless ``repository`` is given."""
    destination: dict = {"repositorySecretName": secret}
    if repository is not None:
        destination["repository"] = repository
    else:
        destination["volume"] = (
            volume if volume is not None else {"persistentVolumeClaim": {"claimName": "backups"}}
        )
        destination["path"] = dest_path
    spec = {
        "schedule": schedule,
        "backupSource": {"volumeName": volume_name, "path": path},
        "destination": destination,
        **spec_extra,
    }
    return {
        "apiVersion": "backup.appscode.com/v1beta1",
        "kind": "Backup",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def parsed(*raws: dict) -> list:
    """Each raw Backup parsed: a Backup, or the InvalidBackup it raised."""
    out = []
    for raw in raws:
        try:
            out.append(parse_backup(raw))
        except InvalidBackup as exc:
            out.append(exc)
    return out


def workload(
    kind: str = "Deployment",
    name: str = "app",
    namespace: str = "web",
    *,
    label: str | None = "www",
    volumes: list | None = None,
    claim_templates: list[str] | None = None,
    containers: list | None = None,
    annotations: dict | None = None,
) -> dict:
    """A workload of ``kind`` with a pod template; ``volumes=None`` gives one volume ``data``."""
    if volumes is None:
        volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    if containers is None:
        containers = [
            {
                "name": "app",
                "image": "nginx:1.27",
                "volumeMounts": [{"name": v["name"], "mountPath": "/srv"} for v in volumes[:1]],
            }
        ]
    meta: dict = {"name": name, "namespace": namespace, "labels": {"app": name}}
    if label is not None:
        meta["labels"][CONFIG_LABEL] = label
    tmeta: dict = {"labels": {"app": name}}
    if annotations is not None:
        tmeta["annotations"] = annotations
    pod_spec: dict = {"containers": containers}
    if volumes:
        pod_spec["volumes"] = volumes
    spec: dict = {"template": {"metadata": tmeta, "spec": pod_spec}}
    if kind != "ReplicationController":
        spec["selector"] = {"matchLabels": {"app": name}}
    else:
        spec["selector"] = {"app": name}
    if kind == "StatefulSet":
        spec["serviceName"] = name
        if claim_templates:
            spec["volumeClaimTemplates"] = [
                {
                    "metadata": {"name": c},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
                for c in claim_templates
            ]
    api_version = WORKLOAD_KINDS[kind][0]
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": spec}


def strip_x_kubernetes(node):
    """The schema without x-kubernetes-* extensions, for a plain JSON Schema validator."""
    if isinstance(node, dict):
        return {
            k: strip_x_kubernetes(v) for k, v in node.items() if not k.startswith("x-kubernetes-")
        }
    if isinstance(node, list):
        return [strip_x_kubernetes(v) for v in node]
    return node


@functools.lru_cache(maxsize=1)
def _crd_schema() -> dict:
    crd = YAML(typ="safe", pure=True).load(CRD_PATH.read_text())
    return strip_x_kubernetes(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def crd_schema() -> dict:
    return copy.deepcopy(_crd_schema())


@functools.lru_cache(maxsize=1)
def crd_validator():
    from jsonschema import Draft7Validator

    schema = _crd_schema()
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def load_all(path: Path) -> list:
    """Every non-empty document of a YAML file (or a YAML string) as plain data."""
    text = path.read_text() if isinstance(path, Path) else path
    return [d for d in YAML(typ="safe", pure=True).load_all(text) if d is not None]


def example_objects() -> list[tuple[str, dict]]:
    """(where, object) for every manifest under examples/, skipping what `restik` skips."""
    return copy.deepcopy(_example_objects())


@functools.lru_cache(maxsize=1)
def _example_objects() -> list[tuple[str, dict]]:
    # Parsed once per process: several test modules build their tables from the examples.
    from reconciler.offline.manifests import KUSTOMIZE_FILES, MANIFEST_SUFFIXES

    out = []
    files = (
        f
        for f in EXAMPLES.rglob("*")
        if f.is_file() and f.suffix in MANIFEST_SUFFIXES and f.name not in KUSTOMIZE_FILES
    )
    for f in sorted(files):
        for doc in load_all(f):
            out.append((f"{f.relative_to(REPO)}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


# --- restic, repositories, processes (was tests/test_sidecar_support.py) ---

PASSWORD = "s3cr3t-Pa55w0rd-for-tests"  # grep-able: must never leak into args/logs/Events
# $RESTIK_TEST_RESTIC: test with another restic binary (e.g. the image's 0.18).
RESTIC = os.environ.get("RESTIK_TEST_RESTIC") or shutil.which("restic")

needs_restic = pytest.mark.skipif(RESTIC is None, reason="restic is not installed")


def base_env(password: str | None = PASSWORD, **extra: str) -> dict[str, str]:
    """A sidecar's environment; ``password=None``: no RESTIC_PASSWORD (a missing Secret)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
    }
    if password is not None:
        env["RESTIC_PASSWORD"] = password
    env.update(extra)
    return env


def restic(repo: str, *args: str, env: dict | None = None, check: bool = True, cache=None):
    """Run restic directly (the test's own view of the repository)."""
    cmd = [RESTIC, f"--repo={repo}", "--no-cache" if cache is None else f"--cache-dir={cache}"]
    proc = subprocess.run(
        [*cmd, *args],
        env=env or base_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"restic {args} failed ({proc.returncode}): {proc.stderr}")
    return proc


@functools.cache
def _template_repo() -> Path:
    """One initialised repository per test session (restic init costs ~3 s of KDF)."""
    root = Path(tempfile.mkdtemp(prefix="restik-template-"))
    atexit.register(shutil.rmtree, root, True)
    restic(str(root / "repo"), "init")
    return root / "repo"


def copy_template(dest: Path) -> Path:
    shutil.copytree(_template_repo(), dest)
    return dest


def make_backup(
    source: str,
    repository: str,
    *,
    name: str = "www",
    namespace: str = "default",
    schedule: str = "@every 2s",
    **spec,
):
    raw = backup_object(source, repository, name=name, namespace=namespace, schedule=schedule)
    raw["spec"].update(spec)
    return parse_backup(raw)


def backup_object(
    source: str,
    repository: str,
    *,
    name: str = "www",
    namespace: str = "default",
    schedule: str = "@every 2s",
    secret: str = "www-restic",
) -> dict:
    return {
        "apiVersion": "backup.appscode.com/v1beta1",
        "kind": "Backup",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedule": schedule,
            "backupSource": {"volumeName": "data", "path": source},
            "destination": {"repositorySecretName": secret, "repository": repository},
        },
    }


def restore_object(
    name: str = "r1",
    *,
    namespace: str = "web",
    target: dict | None = None,
    status: dict | None = None,
    workload: str = "app",
    kind: str = "StatefulSet",
    resource_version: str | None = None,
    **spec,
) -> dict:
    """A Restore of Backup "www" (uid u-1), by default in place into StatefulSet ``app``;
    ``spec`` adds fields to its spec."""
    meta = {"name": name, "namespace": namespace, "uid": "u-1"}
    if resource_version is not None:
        meta["resourceVersion"] = resource_version
    raw = {
        "apiVersion": "backup.appscode.com/v1beta1",
        "kind": "Restore",
        "metadata": meta,
        "spec": {
            "backup": "www",
            "target": target or {"workload": {"kind": kind, "name": workload}},
            **spec,
        },
    }
    if status is not None:
        raw["status"] = status
    return raw


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def server(cmd: list[str], port: int, log: Path):
    """A test server on 127.0.0.1, always stopped at the end."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_port(port, proc)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- `restik watch` processes ---

WATCH_NS = "default"  # the namespace of the sidecar tests


class Sidecar:
    """A `restik watch` process; its log is kept for assertions."""

    def __init__(
        self,
        tmp: Path,
        kubeconfig: Path | None,
        args: list[str],
        env: dict,
        name: str,
        metrics_port: int | None = None,
    ):
        """``kubeconfig=None``: no --kubeconfig (the in-cluster service account)."""
        self.log_path = tmp / f"{name}.log"
        self.metrics_port = metrics_port or free_port()
        cmd = [
            sys.executable,
            "-m",
            "sidecar.main",
            *(["--kubeconfig", str(kubeconfig)] if kubeconfig else []),
            "--metrics-port",
            str(self.metrics_port),
            "--metrics-address",
            "127.0.0.1",
            "--restic",
            RESTIC,
            "--resync",
            "5s",
            # every restic of a test is bounded (a test's own args come later and win)
            "--run-timeout",
            "300s",
            "--backend-timeout",
            "30s",
            "--log-level",
            "debug",
            *args,
        ]
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=self.log_file, stderr=subprocess.STDOUT
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except OSError:
            return 0, ""

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log_file.close()


def statefulset_pod(name: str, owner: str = "db", namespace: str = WATCH_NS) -> dict:
    """A pod of StatefulSet ``owner`` (its controller ownerReference), as a sidecar reads it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": owner},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": owner,
                 "uid": f"u-{owner}", "controller": True},
            ],
        },
        "spec": {"containers": [{"name": "app", "image": "x"}], "nodeName": "node-a"},
    }  # fmt: skip


def wait_for(cond, timeout, sidecars=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    logs = "\n\n".join(sc.log[-4000:] for sc in sidecars)
    raise AssertionError(f"timed out after {timeout}s; sidecar logs:\n{logs}")


def run_cli(args, stdin_text=None):
    """`restik ARGS` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin
    if stdin_text is not None:
        sys.stdin = io.StringIO(stdin_text)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(args)
    finally:
        sys.stdin = old
    return code, out.getvalue(), err.getvalue()
