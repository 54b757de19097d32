"""Builders for raw Backups and workloads shared by the pure-core tests."""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path

from ruamel.yaml import YAML

from reconciler.api.constants import CONFIG_LABEL, WORKLOAD_KINDS

REPO = Path(__file__).resolve().parent.parent
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
