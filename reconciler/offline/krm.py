"""`restik inject` as a kustomize KRM function: a ResourceList in, the same list out."""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.api.constants import EXIT_ERROR, EXIT_OK
from reconciler.controller.render import Renderer
from reconciler.offline.diff import plan_objects
from reconciler.offline.manifests import (
    Document,
    ManifestError,
    Source,
    dump,
    iter_objects,
    parse_source,
)

RESOURCE_LIST_VERSIONS = ("config.kubernetes.io/v1", "config.kubernetes.io/v1beta1")


def is_resource_list(data: object) -> bool:
    return (
        isinstance(data, Mapping)
        and data.get("kind") == "ResourceList"
        and data.get("apiVersion") in RESOURCE_LIST_VERSIONS
    )


def function_image(resource_list: Mapping) -> str | None:
    """The sidecar image from the functionConfig (a ConfigMap's data.image), if any."""
    config = resource_list.get("functionConfig")
    if not isinstance(config, Mapping):
        return None
    for section in ("data", "spec"):
        values = config.get(section)
        if isinstance(values, Mapping) and isinstance(values.get("image"), str):
            return values["image"]
    return None


def _result(message: str, severity: str, obj: Mapping | None = None, field: str | None = None):
    result = {"message": message, "severity": severity}
    if obj is not None:
        meta = obj.get("metadata") or {}
        ref = {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
        }
        if meta.get("namespace"):
            ref["namespace"] = meta["namespace"]
        result["resourceRef"] = ref
    if field:
        result["field"] = {"path": field}
    return result


def run_function(text: str, renderer_for, stdout, stderr) -> int:
    """Process one ResourceList; invalid Backups become error results and a non-zero exit."""
    try:
        source: Source = parse_source("<stdin>", text)
    except ManifestError as exc:
        print(f"restik: error: {exc}", file=stderr)
        return EXIT_ERROR
    if len(source.documents) != 1 or not is_resource_list(source.documents[0].data):
        print("restik: error: <stdin>: expected one ResourceList", file=stderr)
        return EXIT_ERROR
    rl = source.documents[0].data
    items = rl.get("items") or []
    if not isinstance(items, list):
        print("restik: error: <stdin>: ResourceList.items must be a list", file=stderr)
        return EXIT_ERROR
    results = []
    objects = []
    try:
        for i, item in enumerate(items):
            doc = Document("<stdin>", i, item)
            if not isinstance(item, Mapping):
                raise ManifestError(f"ResourceList items[{i}]: must be a mapping")
            objects.extend((f"items[{i}]", obj) for _, obj in iter_objects(doc))
    except ManifestError as exc:
        print(f"restik: error: {exc}", file=stderr)
        return EXIT_ERROR
    renderer: Renderer = renderer_for(function_image(rl))
    outcome = plan_objects(objects, renderer)
    for message in outcome.errors:
        results.append(_result(message, "error"))
    for message in outcome.warnings:
        results.append(_result(message, "warning"))
    for change in outcome.plan.changes:
        results.append(
            _result(
                f"{change.action} restik sidecar ({change.backup or 'no Backup'})",
                "info",
                change.after,
            )
        )
    if not outcome.errors:
        rl["items"] = [outcome.replacements.get(id(item), item) for item in items]
    rl["results"] = results
    stdout.write(dump(rl, source.indent))
    # kustomize drops a failed function's stdout (and its results): say it on stderr too
    for message in outcome.errors:
        print(f"restik: error: {message}", file=stderr)
    return EXIT_ERROR if outcome.errors else EXIT_OK
