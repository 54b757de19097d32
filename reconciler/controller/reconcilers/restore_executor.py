"""The restore executor in a pod (pure): the init container / Job container restik-restore
rendered from templates/restore.yaml.j2 with restik's volumes, and its injection into (and
removal from) a workload's pod template under restik's restore annotation."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping, MutableMapping

from reconciler.api.backup import Backup
from reconciler.api.constants import (
    CACHE_MOUNT,
    REPO_MOUNT,
    RESTORE_CONTAINER,
    SECRET_ENV,
    SECRET_PASSWORD_KEY,
    TOKEN_MOUNT,
)
from reconciler.api.restore import Restore
from reconciler.controller.pod import AppUser
from reconciler.controller.podtemplate import WorkloadError, pod_template
from reconciler.controller.render import _environment, _repo_volume, _to_data

# On the pod template: which Restore's init container is there, and the hash of what was
# rendered ("<restore>/<hash>"); restik owns restik-restore only where this is set.
RESTORE_ANNOTATION = "backup.appscode.com/restore"
RESTORE_VOLUME_PREFIX = "restik-restore-"
CACHE_VOLUME = "restik-restore-cache"
TOKEN_VOLUME = "restik-restore-token"  # noqa: S105 - a volume name
REPO_VOLUME = "restik-restore-repo"


# --- rendering -----------------------------------------------------------------------------


def render_executor(
    image: str,
    restore: Restore,
    backup: Backup,
    *,
    target: str,
    target_volume: str,
    user: AppUser,
    workload_ref: str | None,
    into_pods: str | None = None,
) -> tuple[dict, tuple[dict, ...]]:
    """The executor container and restik's volumes for it (names restik-restore-*).
    ``into_pods``: the label selector of the pods a dump Restore execs into (then there is
    no target volume: ``target`` and ``target_volume`` are None)."""
    env = _environment()
    run_as_user = user.user if user.user else 0
    run_as_group = user.group if user.user and user.group is not None else 0
    values = {
        "container_name": RESTORE_CONTAINER,
        "image": image,
        "restore_name": restore.name,
        "workload_ref": workload_ref,
        "into_pods": into_pods,
        "target": target,
        "repository": executor_repository(backup),
        "target_volume": target_volume,
        "backup": backup,
        "run_as_user": run_as_user,
        "run_as_group": run_as_group,
        "repo_volume": REPO_VOLUME,
        "repo_mount": REPO_MOUNT,
        "cache_volume": CACHE_VOLUME,
        "cache_mount": CACHE_MOUNT,
        "token_volume": TOKEN_VOLUME,
        "token_mount": TOKEN_MOUNT,
        "password_key": SECRET_PASSWORD_KEY,
        "secret_env": SECRET_ENV,
    }
    container = _to_data(env.get_template("restore.yaml.j2").render(values))
    repo = _repo_volume(backup)
    if repo is not None:
        repo["name"] = REPO_VOLUME
    volumes = tuple(
        _to_data(env.get_template("volumes.yaml.j2").render({**values, "repo_volume_source": repo}))
    )
    return container, volumes


def executor_repository(backup: Backup) -> str:
    """The repository restic opens in the executor's pod (sidecar.restic.repository_of):
    the given one, or the destination volume's mount + path."""
    if backup.repository:
        return backup.repository
    return REPO_MOUNT + (backup.destination_path or "/").rstrip("/")


def executor_hash(container: Mapping, volumes: Iterable[Mapping]) -> str:
    blob = json.dumps(
        {"container": container, "volumes": list(volumes)}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- the pod template ------------------------------------------------------------------------


def restore_mark(obj: Mapping) -> str | None:
    """The pod template's restore annotation ("<restore>/<hash>"), if restik set it."""
    try:
        value = (obj["spec"]["template"].get("metadata") or {}).get("annotations") or {}
    except (KeyError, TypeError, AttributeError):
        return None
    mark = value.get(RESTORE_ANNOTATION) if isinstance(value, Mapping) else None
    return mark if isinstance(mark, str) else None


def inject_restore(obj: Mapping, container: dict, volumes: Iterable[dict], mark: str) -> dict:
    """A copy of ``obj`` with the init container first (before the application's own init
    containers) and its volumes; a user's init container named restik-restore, or a volume
    of restik-restore-*'s names without restik's annotation, is a WorkloadError."""
    out = copy.deepcopy(obj)
    template = pod_template(out)
    pod_spec = template["spec"]
    ours = restore_mark(out) is not None
    inits = pod_spec.get("initContainers") or []
    if not isinstance(inits, list):
        raise WorkloadError("spec.template.spec.initContainers: must be a list")
    names = [v["name"] for v in volumes]
    for i, c in enumerate(inits):
        if isinstance(c, Mapping) and c.get("name") == RESTORE_CONTAINER and not ours:
            raise WorkloadError(
                f"spec.template.spec.initContainers[{i}].name: an init container named "
                f"{RESTORE_CONTAINER!r} that restik did not add; rename it"
            )
    for i, v in enumerate(pod_spec.get("volumes") or ()):
        if v.get("name") in names and not ours:
            raise WorkloadError(
                f"spec.template.spec.volumes[{i}].name: a volume named {v['name']!r} that "
                "restik did not add; rename it"
            )
    kept = [c for c in inits if not (ours and c.get("name") == RESTORE_CONTAINER)]
    pod_spec["initContainers"] = [copy.deepcopy(container), *kept]
    own = [v for v in pod_spec.get("volumes") or () if not (ours and _restore_volume(v))]
    pod_spec["volumes"] = [*own, *(copy.deepcopy(v) for v in volumes)]
    meta = template.setdefault("metadata", {}) if template.get("metadata") is not None else None
    if meta is None:
        meta = template["metadata"] = {}
    meta.setdefault("annotations", {})
    if meta["annotations"] is None:
        meta["annotations"] = {}
    meta["annotations"][RESTORE_ANNOTATION] = mark
    return out


def remove_restore(obj: Mapping) -> dict:
    """A copy of ``obj`` without what inject_restore added (only where restik's annotation
    says it is restik's); empty lists and maps restik made go again."""
    out = copy.deepcopy(obj)
    if restore_mark(out) is None:
        return out
    template = pod_template(out)
    pod_spec = template["spec"]
    inits = [c for c in pod_spec.get("initContainers") or () if c.get("name") != RESTORE_CONTAINER]
    if inits:
        pod_spec["initContainers"] = inits
    else:
        pod_spec.pop("initContainers", None)
    volumes = [v for v in pod_spec.get("volumes") or () if not _restore_volume(v)]
    if volumes:
        pod_spec["volumes"] = volumes
    else:
        pod_spec.pop("volumes", None)
    meta: MutableMapping = template["metadata"]
    meta["annotations"].pop(RESTORE_ANNOTATION, None)
    if not meta["annotations"]:
        del meta["annotations"]
    if not meta:
        del template["metadata"]
    return out


def _restore_volume(volume: Mapping) -> bool:
    name = volume.get("name")
    return isinstance(name, str) and name.startswith(RESTORE_VOLUME_PREFIX)
