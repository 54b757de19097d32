"""Reading and editing a workload's pod template: inject and remove what restik owns."""

from __future__ import annotations

import copy
from collections.abc import Mapping, MutableMapping
from typing import NamedTuple

from reconciler.api.constants import (
    CONFIG_LABEL,
    HASH_ANNOTATION,
    SIDECAR_NAME,
    VOLUME_PREFIX,
    WORKLOAD_KINDS,
)
from reconciler.controller.render import Rendered


class WorkloadError(ValueError):
    """A workload object too broken to edit; the message names the field."""


class WorkloadRef(NamedTuple):
    """(kind, namespace, name): a tuple, so it hashes and compares fast at 10,000 workloads."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


def is_workload(obj: Mapping) -> bool:
    return isinstance(obj, Mapping) and obj.get("kind") in WORKLOAD_KINDS


def workload_ref(obj: Mapping) -> WorkloadRef:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise WorkloadError("metadata: must be an object")
    name, namespace = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str) or not name:
        raise WorkloadError("metadata.name: must be a non-empty string")
    if namespace is not None and not isinstance(namespace, str):
        raise WorkloadError("metadata.namespace: must be a string")
    return WorkloadRef(str(obj.get("kind")), namespace or "default", name)


def config_label(obj: Mapping) -> str | None:
    meta = obj.get("metadata")
    labels = (meta.get("labels") if isinstance(meta, dict) else None) or {}
    value = labels.get(CONFIG_LABEL) if isinstance(labels, dict) else None
    return value if isinstance(value, str) and value else None


def controller_owner(obj: Mapping) -> tuple[str, str] | None:
    """(kind, name) of the object's controller (``ownerReferences[]`` entry with
    ``controller: true``), e.g. the Deployment of a ReplicaSet; None when it has none."""
    meta = obj.get("metadata")
    refs = meta.get("ownerReferences") if isinstance(meta, dict) else None
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return str(ref.get("kind") or "?"), str(ref.get("name") or "?")
    return None


def pod_template(obj: Mapping) -> Mapping:
    """The pod template, or WorkloadError naming the missing field."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise WorkloadError("spec: required")
    template = spec.get("template")
    if not isinstance(template, dict):
        raise WorkloadError("spec.template: required")
    pod_spec = template.get("spec")
    if not isinstance(pod_spec, dict):
        raise WorkloadError("spec.template.spec: required")
    containers = pod_spec.get("containers")
    if not isinstance(containers, list) or not all(isinstance(c, dict) for c in containers):
        raise WorkloadError("spec.template.spec.containers: must be a list of containers")
    volumes = pod_spec.get("volumes")
    if volumes is not None and (
        not isinstance(volumes, list)
        or not all(isinstance(v, dict) and isinstance(v.get("name"), str) for v in volumes)
    ):
        raise WorkloadError("spec.template.spec.volumes: must be a list of named volumes")
    meta = template.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise WorkloadError("spec.template.metadata: must be an object")
    annotations = (meta or {}).get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        raise WorkloadError("spec.template.metadata.annotations: must be an object")
    return template


def current_hash(obj: Mapping, template: Mapping | None = None) -> str | None:
    """The config-hash annotation; ``template``: the already checked pod_template(obj)."""
    template = template if template is not None else pod_template(obj)
    meta = template.get("metadata") or {}
    return (meta.get("annotations") or {}).get(HASH_ANNOTATION)


def has_sidecar(obj: Mapping, template: Mapping | None = None) -> bool:
    """True if restik injected into this pod template: its hash annotation is there.

    Ownership is by what restik injected, never by name alone: without the annotation a
    container named ``restik`` or a volume ``restik-...`` is the user's."""
    template = template if template is not None else pod_template(obj)
    return current_hash(obj, template) is not None


def owned_volume_names(template: Mapping) -> set[str]:
    """restik's volumes in a checked pod template: with restik's hash annotation present, the
    ``restik-*`` volumes that no container but restik's mounts. A user's ``restik-config``
    that the app mounts, or any ``restik-*`` volume without the annotation, is the user's."""
    meta = template.get("metadata") or {}
    if HASH_ANNOTATION not in (meta.get("annotations") or {}):
        return set()
    pod_spec = template["spec"]
    others: set[str] = set()
    for group in ("containers", "initContainers", "ephemeralContainers"):
        items = pod_spec.get(group)
        for c in items if isinstance(items, list) else ():
            if not isinstance(c, Mapping):
                continue
            mounts = c.get("volumeMounts")
            names = (
                {m.get("name") for m in mounts if isinstance(m, Mapping)}
                if isinstance(mounts, list)
                else set()
            )
            if group != "containers" or c.get("name") != SIDECAR_NAME:
                others |= names
    return {
        v["name"] for v in pod_spec.get("volumes") or () if _prefixed(v) and v["name"] not in others
    }


def clashes(obj: Mapping, rendered: Rendered, template: Mapping | None = None) -> list[str]:
    """What stands in the way of injecting ``rendered``: the user's own container named
    ``restik`` or volume with a name restik renders, each as "field: problem"."""
    template = template if template is not None else pod_template(obj)
    pod_spec = template["spec"]
    out = []
    if not has_sidecar(obj, template):
        for i, c in enumerate(pod_spec["containers"]):
            if c.get("name") == SIDECAR_NAME:
                out.append(
                    f"spec.template.spec.containers[{i}].name: a container named "
                    f"{SIDECAR_NAME!r} that restik did not inject; rename it"
                )
    owned = owned_volume_names(template)
    wanted = {v["name"] for v in rendered.volumes}
    for i, v in enumerate(pod_spec.get("volumes") or ()):
        if v["name"] in wanted and v["name"] not in owned:
            out.append(
                f"spec.template.spec.volumes[{i}].name: a volume named {v['name']!r} that "
                "restik did not inject; rename it"
            )
    return out


def volume_names(obj: Mapping, template: Mapping | None = None) -> set[str]:
    """Volumes a container of this workload can mount (claim templates for StatefulSets)."""
    pod_spec = (template if template is not None else pod_template(obj))["spec"]
    names = {v.get("name") for v in pod_spec.get("volumes") or ()}
    if obj.get("kind") == "StatefulSet":
        claims = obj["spec"].get("volumeClaimTemplates") or []
        if not isinstance(claims, list):
            raise WorkloadError("spec.volumeClaimTemplates: must be a list")
        for i, claim in enumerate(claims):
            meta = claim.get("metadata") if isinstance(claim, Mapping) else None
            name = meta.get("name") if isinstance(meta, dict) else None
            if not isinstance(name, str):
                raise WorkloadError(f"spec.volumeClaimTemplates[{i}].metadata.name: required")
            names.add(name)
    return names


def in_sync_fast(obj: Mapping, desired_hash: str, source_volume: str | None) -> bool:
    """The steady-state test without checking the whole object first: the hash matches, the
    sidecar is there and so is the source volume. Anything malformed on the way is "not in
    sync", and the full path (which reports it) takes over."""
    try:
        template = obj["spec"]["template"]
        if template["metadata"]["annotations"][HASH_ANNOTATION] != desired_hash:
            return False
        pod_spec = template["spec"]
        if not any(c["name"] == SIDECAR_NAME for c in pod_spec["containers"]):
            return False
        if source_volume is None:  # a command source needs no volume
            return True
        if any(v["name"] == source_volume for v in pod_spec.get("volumes") or ()):
            return True
        claims = obj["spec"].get("volumeClaimTemplates") if obj["kind"] == "StatefulSet" else None
        return any(c["metadata"]["name"] == source_volume for c in claims or ())
    except (KeyError, TypeError, AttributeError):
        return False


def inject(obj: Mapping, rendered: Rendered) -> Mapping:
    """A copy of ``obj`` with the sidecar, restik's volumes and the hash annotation set.

    The user's containers, volumes and annotations keep their order; restik's existing sidecar
    and volumes are replaced where they stand, new ones are appended. A user's container or
    volume in the way is a WorkloadError (see clashes()), never overwritten.
    """
    problems = clashes(obj, rendered)
    if problems:
        raise WorkloadError("; ".join(problems))
    out = copy.deepcopy(obj)
    template = pod_template(out)
    pod_spec = template["spec"]
    injected = has_sidecar(out, template)
    owned = owned_volume_names(template)
    _replace_or_append(
        pod_spec["containers"],
        [rendered.container],
        lambda c: injected and c.get("name") == SIDECAR_NAME,
    )
    if pod_spec.get("volumes") is None:
        pod_spec["volumes"] = []
    _replace_or_append(pod_spec["volumes"], list(rendered.volumes), lambda v: v["name"] in owned)
    if template.get("metadata") is None:
        template["metadata"] = {}
    meta = template["metadata"]
    if meta.get("annotations") is None:
        meta["annotations"] = {}
    meta["annotations"][HASH_ANNOTATION] = rendered.config_hash
    return out


def remove(obj: Mapping) -> Mapping:
    """A copy of ``obj`` without anything restik injected; empty containers restik made are
    dropped. A pod template whose only container is restik's is a WorkloadError: a pod needs
    a container, and that one is not restik's to delete."""
    out = copy.deepcopy(obj)
    template = pod_template(out)
    if not has_sidecar(out, template):
        return out
    pod_spec = template["spec"]
    owned = owned_volume_names(template)
    kept = [c for c in pod_spec["containers"] if c.get("name") != SIDECAR_NAME]
    if not kept:
        raise WorkloadError(
            "spec.template.spec.containers: restik's sidecar is the only container; "
            "removing it would leave none"
        )
    pod_spec["containers"][:] = kept
    if pod_spec.get("volumes") is not None:
        pod_spec["volumes"][:] = [v for v in pod_spec["volumes"] if v["name"] not in owned]
        if not pod_spec["volumes"]:
            del pod_spec["volumes"]
    meta = template.get("metadata")
    if isinstance(meta, MutableMapping):
        annotations = meta.get("annotations")
        if isinstance(annotations, MutableMapping):
            annotations.pop(HASH_ANNOTATION, None)
            if not annotations:
                del meta["annotations"]
        if not meta:
            del template["metadata"]
    return out


def _prefixed(volume: Mapping) -> bool:
    name = volume.get("name")
    return isinstance(name, str) and name.startswith(VOLUME_PREFIX)


def _replace_or_append(items: list, new: list[dict], owned) -> None:
    """Put ``new`` in place of the owned items: the first owned slot takes them, the rest go."""
    by_name = {item["name"]: item for item in new}
    kept = []
    placed = set()
    for item in items:
        if not owned(item):
            kept.append(item)
            continue
        name = item.get("name")
        if name in by_name and name not in placed:
            kept.append(copy.deepcopy(by_name[name]))
            placed.add(name)
    kept.extend(copy.deepcopy(item) for item in new if item["name"] not in placed)
    items[:] = kept
