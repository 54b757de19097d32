"""`restik diff` and `restik inject`: the planner run on manifest files instead of a cluster."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.api.backup import InvalidBackup, parse_backup
from reconciler.api.constants import API_VERSION, EXIT_CHANGES, EXIT_ERROR, EXIT_OK, KIND
from reconciler.controller.plan import Plan, plan
from reconciler.controller.podtemplate import WorkloadError, is_workload, workload_ref
from reconciler.controller.render import Renderer
from reconciler.offline.manifests import (
    ManifestError,
    Source,
    dump,
    iter_objects,
    object_label,
    parse_source,
    read_sources,
)
from reconciler.offline.restores import is_restore, plan_offline_restores


@dataclass
class OfflineResult:
    plan: Plan
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # id(original object) -> desired object
    replacements: dict[int, Mapping] = field(default_factory=dict)


def plan_objects(objects: list[tuple[str, Mapping]], renderer: Renderer) -> OfflineResult:
    """Plan over (where, object) pairs; errors name the file, the object and the field."""
    errors: list[str] = []
    seen: dict[tuple, str] = {}
    backups = []
    workloads = []
    restores: list[tuple[str, Mapping]] = []
    where_of: dict[int, str] = {}
    for where, obj in objects:
        meta = obj["metadata"]
        identity = (
            obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else "",
            obj["kind"],
            meta.get("namespace") or "default",
            meta["name"],
        )
        if identity in seen:
            errors.append(
                f"{where}: {object_label(obj)}: duplicate of the object in {seen[identity]}"
            )
            continue
        seen[identity] = where
        where_of[id(obj)] = where
        if obj["kind"] == KIND and obj["apiVersion"] == API_VERSION:
            try:
                backups.append(parse_backup(obj))
            except InvalidBackup as exc:
                errors.append(f"{where}: {exc}")
                backups.append(exc)
        elif is_workload(obj):
            workloads.append(obj)
        elif is_restore(obj):
            restores.append((where, obj))
    result = plan(backups, workloads, renderer, remove_when_missing=False)
    out = OfflineResult(result, errors)
    plan_offline_restores(
        restores, backups, workloads, result, renderer.image, out.errors, out.warnings
    )
    where_of_ref = {}
    for obj in workloads:
        try:
            where_of_ref[workload_ref(obj)] = where_of[id(obj)]
        except WorkloadError:
            continue
    for problem in result.problems:
        where = where_of_ref.get(problem.ref)
        message = f"{where}: {problem}" if where else str(problem)
        if problem.severity == "warning":
            out.warnings.append(message)
        else:
            out.errors.append(message)
    for change in result.changes:
        out.replacements[id(change.before)] = change.after
    return out


def load(paths: list[str], stdin=None) -> tuple[list[Source], list[tuple[str, Mapping]]]:
    sources = [parse_source(name, text) for name, text in read_sources(paths, stdin)]
    objects = [pair for s in sources for doc in s.documents for pair in iter_objects(doc)]
    return sources, objects


def diff_name(obj: Mapping) -> str:
    """kubectl diff's file name for an object: group.version.Kind.namespace.name."""
    api = obj.get("apiVersion", "").replace("/", ".")
    meta = obj.get("metadata") or {}
    parts = [api, obj.get("kind", ""), meta.get("namespace") or "", meta.get("name", "")]
    return ".".join(p for p in parts if p)


def render_diff(result: OfflineResult, indent=(2, 0)) -> str:
    chunks = []
    for change in sorted(result.plan.changes, key=lambda c: c.ref):
        name = diff_name(change.before)
        before = dump(change.before, indent).splitlines(keepends=True)
        after = dump(change.after, indent).splitlines(keepends=True)
        lines = difflib.unified_diff(before, after, f"a/{name}", f"b/{name}", n=3)
        chunks.append(f"diff -u -N a/{name} b/{name}\n" + "".join(lines))
    return "".join(chunks)


def report(messages: list[str], level: str, stream) -> None:
    for message in messages:
        print(f"restik: {level}: {message}", file=stream)


def load_and_plan(paths, renderer, stdin, stderr):
    """(sources, result), or None after reporting why the input cannot be used."""
    try:
        sources, objects = load(paths, stdin)
        return sources, plan_objects(objects, renderer)
    except ManifestError as exc:
        report([str(exc)], "error", stderr)
        return None


def run_offline(paths: list[str], renderer: Renderer, write, stdout=None, stderr=None, stdin=None):
    """Load and plan ``paths``, then ``write(sources, result, stdout, stderr)`` → exit code;
    EXIT_ERROR at once if the manifests cannot be read."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    loaded = load_and_plan(paths, renderer, stdin, stderr)
    if loaded is None:
        return EXIT_ERROR
    sources, result = loaded
    return write(sources, result, stdout, stderr)


def run_diff(
    paths: list[str], renderer: Renderer, stdout=None, stderr=None, stdin=None, strict=False
) -> int:
    """The planned changes as a unified diff; ``strict``: warnings fail too (exit 2, for CI)."""

    def write(sources: list[Source], result: OfflineResult, out, err) -> int:
        return _write_diff(sources, result, out, err, strict)

    return run_offline(paths, renderer, write, stdout, stderr, stdin)


def _write_diff(sources: list[Source], result: OfflineResult, stdout, stderr, strict) -> int:
    indent = sources[0].indent if sources else (2, 0)
    stdout.write(render_diff(result, indent))
    report(result.warnings, "warning", stderr)
    report(result.errors, "error", stderr)
    if result.errors or (strict and result.warnings):
        return EXIT_ERROR
    return EXIT_CHANGES if result.plan.changes else EXIT_OK
