"""The Backup resource: parse a raw object once into a frozen model, collecting every error."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from reconciler.api.check import CheckSpec, parse_check
from reconciler.api.constants import API_VERSION, KIND, METRICS_PORT
from reconciler.api.destination import (
    parse_destination,
    repository_credentials,  # noqa: F401 - part of this module's interface
)
from reconciler.api.fields import DNS_SUBDOMAIN, Collector, FieldError, InvalidObject, type_name
from reconciler.api.hooks import (
    HookSpec,
    parse_hooks,
    wants_exec,  # noqa: F401 - part of this module's interface (the RoleBinding's exec grant)
)
from reconciler.api.resources import DEFAULT_RESOURCES, parse_resources
from reconciler.api.retention import Retention, parse_retention
from reconciler.api.schedule import Schedule, ScheduleError, parse_schedule
from reconciler.api.source import CommandSource, check_source_path, parse_source

MAX_ID = 2**31 - 1  # the largest uid/gid Kubernetes accepts
SPEC_FIELDS = {
    "schedule",
    "backupSource",
    "destination",
    "tags",
    "excludes",
    "retentionPolicy",
    "paused",
    "resources",
    "metricsPort",
    "securityContext",
    "metrics",
    "hooks",
    "check",
}
SOURCE_FIELDS = {"volumeName", "path", "command"}
SECURITY_FIELDS = {"runAsUser", "runAsGroup"}


class InvalidBackup(InvalidObject):
    """A Backup that failed validation; ``errors`` names every bad field."""

    kind = "Backup"


@dataclass(frozen=True)
class Backup:
    name: str
    namespace: str
    schedule: Schedule
    source_volume: str | None  # None with a command source
    source_path: str | None
    secret_name: str
    repository: str | None = None
    destination_volume: Mapping | None = None
    destination_path: str | None = None
    tags: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    retention: Retention | None = None
    paused: bool = False
    resources: Mapping = field(default_factory=lambda: json.loads(json.dumps(DEFAULT_RESOURCES)))
    metrics_port: int = METRICS_PORT
    metrics_enabled: bool = True  # spec.metrics.enabled: false renders no metrics port
    run_as_user: int | None = None  # spec.securityContext: overrides the app's user
    run_as_group: int | None = None
    uid: str | None = None
    generation: int | None = None
    source_command: CommandSource | None = None  # spec.backupSource.command
    pre_backup: HookSpec | None = None  # spec.hooks
    post_backup: HookSpec | None = None
    check: CheckSpec | None = None  # spec.check: `restic check` on its own schedule

    @property
    def snapshot_path(self) -> str:
        """The path restic records in this Backup's snapshots."""
        if self.source_command is not None:
            return "/" + self.source_command.filename
        return self.source_path

    @property
    def is_local(self) -> bool:
        """True when the repository lives on a volume the controller mounts into the pod."""
        return self.destination_volume is not None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @cached_property
    def render_key(self) -> str:
        """Everything the pod template depends on, as canonical JSON (a cache key)."""
        fields = {
            "name": self.name,
            "namespace": self.namespace,
            "volume": self.source_volume,
            "path": self.source_path,
            "secret": self.secret_name,
            "destination_volume": self.destination_volume,
            "resources": self.resources,
            "metrics_port": self.metrics_port,
            "metrics": self.metrics_enabled,
            "run_as": [self.run_as_user, self.run_as_group],
        }
        return json.dumps(fields, sort_keys=True, default=str)


def backup_ref(raw: Mapping) -> tuple[str, str]:
    """(namespace, name) of a raw Backup, tolerating a broken metadata block."""
    meta = raw.get("metadata") if isinstance(raw, Mapping) else None
    meta = meta if isinstance(meta, Mapping) else {}
    ns = meta.get("namespace") or "default"
    name = meta.get("name") or "<unnamed>"
    return (str(ns), str(name))


def parse_backup(raw: Mapping) -> Backup:
    """Parse a raw Backup object; raise InvalidBackup listing every bad field."""
    namespace, name = backup_ref(raw)
    c = Collector()
    if not isinstance(raw, Mapping):
        raise InvalidBackup(namespace, name, [FieldError("", "must be an object")])
    if raw.get("apiVersion") not in (None, API_VERSION):
        c.add("apiVersion", f"must be {API_VERSION}")
    if raw.get("kind") not in (None, KIND):
        c.add("kind", f"must be {KIND}")
    meta = c.mapping(raw.get("metadata"), "metadata")
    c.string(meta.get("name"), "metadata.name", required=True, pattern=DNS_SUBDOMAIN, what="name")
    if isinstance(meta.get("name"), str) and len(meta["name"]) > 200:
        c.add("metadata.name", "too long for restik (at most 200 characters)")
    spec = c.mapping(raw.get("spec"), "spec", SPEC_FIELDS)
    has_spec = isinstance(raw.get("spec"), Mapping)
    if "spec" not in raw:
        c.add("spec", "required")

    schedule = None
    if "schedule" not in spec:
        c.add("spec.schedule", "required")
    else:
        try:
            schedule = parse_schedule(spec["schedule"])
        except ScheduleError as exc:
            c.add("spec.schedule", str(exc))

    source = c.mapping(spec.get("backupSource"), "spec.backupSource", SOURCE_FIELDS)
    if has_spec and "backupSource" not in spec:
        c.add("spec.backupSource", "required")
    source_volume, source_path, source_command = parse_source(c, source, "backupSource" in spec)
    if source_path and source_path != "/":
        check_source_path(c, source_path)
    pre_backup, post_backup = parse_hooks(c, spec.get("hooks"))
    check = parse_check(c, spec.get("check"))

    secret, repository, dest_volume, dest_path = parse_destination(c, spec, has_spec)

    tags = c.strings(spec.get("tags"), "spec.tags", forbid=",")
    excludes = c.strings(spec.get("excludes"), "spec.excludes")
    retention = None
    if spec.get("retentionPolicy") is not None:
        retention = parse_retention(c, spec.get("retentionPolicy"))
    paused = c.boolean(spec.get("paused"), "spec.paused")
    resources = parse_resources(c, spec.get("resources"))
    metrics_port = _parse_port(c, spec.get("metricsPort"), "spec.metricsPort")
    metrics = c.mapping(spec.get("metrics"), "spec.metrics", {"enabled"})
    metrics_enabled = True
    if "enabled" in metrics:
        metrics_enabled = c.boolean(metrics["enabled"], "spec.metrics.enabled")
    security = c.mapping(spec.get("securityContext"), "spec.securityContext", SECURITY_FIELDS)
    run_as_user = _parse_id(c, security.get("runAsUser"), "spec.securityContext.runAsUser", 1)
    run_as_group = _parse_id(c, security.get("runAsGroup"), "spec.securityContext.runAsGroup", 0)

    status_meta = meta if isinstance(meta, Mapping) else {}
    generation = status_meta.get("generation")
    if c.errors:
        raise InvalidBackup(namespace, name, c.errors)
    return Backup(
        name=name,
        namespace=namespace,
        schedule=schedule,
        source_volume=source_volume,
        source_path=source_path,
        secret_name=secret,
        repository=repository,
        destination_volume=dest_volume,
        destination_path=dest_path,
        tags=tags,
        excludes=excludes,
        retention=retention,
        paused=paused,
        resources=resources,
        metrics_port=metrics_port,
        metrics_enabled=metrics_enabled,
        run_as_user=run_as_user,
        run_as_group=run_as_group,
        uid=status_meta.get("uid"),
        generation=generation if isinstance(generation, int) else None,
        source_command=source_command,
        pre_backup=pre_backup,
        post_backup=post_backup,
        check=check,
    )


def _parse_port(c: Collector, value: object, path: str) -> int:
    if value is None:
        return METRICS_PORT
    if isinstance(value, bool) or not isinstance(value, int):
        c.add(path, f"must be an integer, got {type_name(value)}")
        return METRICS_PORT
    if not 1024 <= value <= 65535:
        c.add(path, f"{value} must be between 1024 and 65535 (the sidecar has no privileges)")
        return METRICS_PORT
    return value


def _parse_id(c: Collector, value: object, path: str, lowest: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        c.add(path, f"must be an integer, got {type_name(value)}")
        return None
    if not lowest <= value <= MAX_ID:
        why = " (the sidecar never runs as root)" if lowest else ""
        c.add(path, f"{value} must be between {lowest} and {MAX_ID}{why}")
        return None
    return value
