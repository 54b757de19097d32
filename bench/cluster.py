"""A synthetic cluster for the controller benchmarks: Backups and labeled workloads of every kind.

One Backup per ten workloads, ten Backups per namespace, the five workload kinds in turn;
each workload looks like a real one (probes, env, resources, two volumes), so a LIST item
is a few KiB as in a real cluster.
"""

from __future__ import annotations

from reconciler.api.constants import API_VERSION, CONFIG_LABEL, WORKLOAD_KINDS
from reconciler.resources import crd_manifest

KINDS = tuple(WORKLOAD_KINDS)  # Deployment, StatefulSet, DaemonSet, ReplicaSet, RC
WORKLOADS_PER_BACKUP = 10
BACKUPS_PER_NAMESPACE = 10


def namespace(i: int) -> str:
    return f"team-{i:03d}"


def backup(name: str, ns: str) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": "Backup",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "schedule": "0 */30 * * * *",
            "backupSource": {"volumeName": "data", "path": "/var/lib/app"},
            "destination": {
                "repositorySecretName": f"{name}-restic",
                "repository": f"s3:http://minio.backup:9000/backups/{ns}/{name}",
            },
            "tags": ["bench", ns],
            "excludes": ["*.tmp", "cache/"],
            "retentionPolicy": {"keepLastSnapshots": 7, "keepDailySnapshots": 14, "prune": True},
        },
    }


def workload(kind: str, name: str, ns: str, label: str | None) -> dict:
    api_version = WORKLOAD_KINDS[kind][0]
    labels = {"app": name, "tier": "backend"}
    meta: dict = {"name": name, "namespace": ns, "labels": dict(labels)}
    if label is not None:
        meta["labels"][CONFIG_LABEL] = label
    container = {
        "name": "app",
        "image": f"registry.example.com/{ns}/{name}:1.4.2",
        "args": ["--config=/etc/app/config.yaml", "--listen=:8080"],
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "env": [
            {"name": "APP_ENV", "value": "production"},
            {"name": "APP_NAME", "value": name},
            {"name": "LOG_LEVEL", "value": "info"},
            {
                "name": "POD_NAME",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
            },
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
        },
        "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/app"},
            {"name": "config", "mountPath": "/etc/app", "readOnly": True},
        ],
    }
    pod_spec = {
        "containers": [container],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": f"{name}-data"}},
            {"name": "config", "configMap": {"name": f"{name}-config"}},
        ],
    }
    template = {"metadata": {"labels": dict(labels)}, "spec": pod_spec}
    if kind == "ReplicationController":
        spec: dict = {"replicas": 1, "selector": dict(labels), "template": template}
    else:
        spec = {"selector": {"matchLabels": dict(labels)}, "template": template}
        if kind != "DaemonSet":
            spec["replicas"] = 1
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": spec}


def build(workloads: int) -> tuple[list[dict], list[dict]]:
    """(backups, workloads) for a cluster of ``workloads`` labeled workloads."""
    backups, objs = [], []
    n_backups = max(1, workloads // WORKLOADS_PER_BACKUP)
    for b in range(n_backups):
        ns = namespace(b // BACKUPS_PER_NAMESPACE)
        name = f"b{b:04d}"
        backups.append(backup(name, ns))
        for w in range(WORKLOADS_PER_BACKUP):
            i = b * WORKLOADS_PER_BACKUP + w
            if i >= workloads:
                break
            objs.append(workload(KINDS[i % len(KINDS)], f"w{i:05d}", ns, name))
    return backups, objs


def namespaces(backups: list[dict]) -> list[str]:
    return sorted({b["metadata"]["namespace"] for b in backups})


def populate(emu, workloads: int, unlabeled: int = 0, injected: bool = True) -> dict:
    """Create the CRD, namespaces, Backups and workloads in the emulator.

    ``injected``: create the workloads with their sidecars already rendered (as `restik
    inject` would at build time), so setting up 10,000 of them costs no PATCH each.
    ``unlabeled``: extra workloads per kind without the label (for the reaction benchmark).
    """
    from reconciler.api.backup import parse_backup
    from reconciler.controller.plan import plan
    from reconciler.controller.render import Renderer

    emu.create(crd_manifest())
    backups, objs = build(workloads)
    for ns in namespaces(backups):
        emu.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for b in backups:
        emu.create(b)
    if injected:
        with fast_yaml():
            result = plan([parse_backup(b) for b in backups], objs, Renderer())
        after = {(c.ref.kind, c.ref.namespace, c.ref.name): c.after for c in result.changes}
        objs = [
            dict(after.get((o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]), o))
            for o in objs
        ]
    for o in objs:
        emu.create(o)
    spare = []
    ns0 = namespace(0)
    for i in range(unlabeled):
        for kind in KINDS:
            obj = workload(kind, f"spare-{kind.lower()}-{i}", ns0, None)
            emu.create(obj)
            spare.append((kind, obj["metadata"]["name"], "b0000"))
    return {"backups": len(backups), "workloads": len(objs), "spare": spare, "namespace": ns0}


class fast_yaml:
    """Render with libyaml while setting up a cluster, then restore restik's own loader.

    Only the benchmark's set-up renders with it; the controller under measurement always
    renders with its own loader, and its first cycle patches any workload whose hash would
    differ, so a difference cannot go unnoticed (writes_steady, planned).
    """

    def __enter__(self):
        from reconciler.controller import render

        self.render, self.saved = render, render._yaml
        try:
            import yaml

            class _Loader:
                @staticmethod
                def load(text):
                    return yaml.load(text, Loader=yaml.CSafeLoader)

            render._yaml = _Loader()
        except (ImportError, AttributeError):
            pass
        return self

    def __exit__(self, *exc):
        self.render._yaml = self.saved


def labeled(i: int) -> tuple[str, str, str]:
    """(kind, name, namespace) of the i-th labeled workload that build() makes."""
    return (
        KINDS[i % len(KINDS)],
        f"w{i:05d}",
        namespace(i // (WORKLOADS_PER_BACKUP * BACKUPS_PER_NAMESPACE)),
    )
