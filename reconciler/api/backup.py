"""The Backup resource: parse a raw object once into a frozen model, collecting every error."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from reconciler.api.constants import API_VERSION, KIND, METRICS_PORT
from reconciler.api.fields import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    QUANTITY,
    Collector,
    FieldError,
    parse_quantity,
    plain,
    type_name,
)
from reconciler.api.hooks import (
    HookSpec,
    parse_hooks,
    wants_exec,  # noqa: F401 - part of this module's interface (the RoleBinding's exec grant)
)
from reconciler.api.schedule import Schedule, ScheduleError, parse_schedule
from reconciler.api.source import CommandSource, parse_source

REPOSITORY_SCHEMES = (
    "s3:",
    "rest:",
    "sftp:",
    "b2:",
    "gs:",
    "azure:",
    "swift:",
    "rclone:",
    "local:",
)
PVC = "persistentVolumeClaim"
MAX_ID = 2**31 - 1  # the largest uid/gid Kubernetes accepts
KEEP_FIELDS = {
    "keepLastSnapshots": "last",
    "keepHourlySnapshots": "hourly",
    "keepDailySnapshots": "daily",
    "keepWeeklySnapshots": "weekly",
    "keepMonthlySnapshots": "monthly",
    "keepYearlySnapshots": "yearly",
}
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
}
RETENTION_FIELDS = {*KEEP_FIELDS, "keepTags", "retainHostname", "retainTags", "prune"}
SOURCE_FIELDS = {"volumeName", "path", "command"}
DESTINATION_FIELDS = {"repositorySecretName", "volume", "path", "repository"}
SECURITY_FIELDS = {"runAsUser", "runAsGroup"}

# The sidecar's resources unless spec.resources says otherwise (per field, see
# _parse_resources). Requests: the idle sidecar uses ~35 MiB and next to no CPU, so
# scheduling reserves little on every backed-up pod. Limits: a ResourceQuota on
# limits.cpu/limits.memory rejects a container without them, so both are set. One CPU
# lets restic hash and compress at a useful speed without starving the application;
# 512 MiB holds restic's index for repositories of a few hundred GB (restic's memory
# grows with the index, larger repositories need spec.resources.limits.memory).
DEFAULT_RESOURCES = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}


class InvalidBackup(ValueError):
    """A Backup that failed validation; ``errors`` names every bad field."""

    def __init__(self, namespace: str, name: str, errors: list[FieldError]):
        self.namespace = namespace
        self.name = name
        self.errors = tuple(errors)
        super().__init__(f"Backup {namespace}/{name}: " + "; ".join(map(str, errors)))


@dataclass(frozen=True)
class Retention:
    """restic forget's --keep-* flags; a None count is not passed."""

    last: int | None = None
    hourly: int | None = None
    daily: int | None = None
    weekly: int | None = None
    monthly: int | None = None
    yearly: int | None = None
    keep_tags: tuple[str, ...] = ()
    retain_hostname: str | None = None
    retain_tags: tuple[str, ...] = ()
    prune: bool = False

    @property
    def keeps_anything(self) -> bool:
        counts = (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly)
        return any(c for c in counts) or bool(self.keep_tags)


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
        _check_source_path(c, source_path)
    pre_backup, post_backup = parse_hooks(c, spec.get("hooks"))

    dest = c.mapping(spec.get("destination"), "spec.destination", DESTINATION_FIELDS)
    if has_spec and "destination" not in spec:
        c.add("spec.destination", "required")
    secret = c.string(
        dest.get("repositorySecretName"),
        "spec.destination.repositorySecretName",
        required="destination" in spec,
        pattern=DNS_SUBDOMAIN,
        what="Secret name",
    )
    repository = dest_volume = dest_path = None
    has_local = "volume" in dest or "path" in dest
    has_remote = "repository" in dest
    if "destination" in spec and has_local == has_remote:
        c.add(
            "spec.destination",
            "give either volume+path or repository"
            + (" (both were given)" if has_local else " (neither was given)"),
        )
    elif has_remote:
        repository = _parse_repository(c, dest.get("repository"))
    elif has_local:
        dest_volume = _parse_volume(c, dest.get("volume"))
        dest_path = c.abs_path(dest.get("path"), "spec.destination.path")

    tags = c.strings(spec.get("tags"), "spec.tags", forbid=",")
    excludes = c.strings(spec.get("excludes"), "spec.excludes")
    retention = None
    if spec.get("retentionPolicy") is not None:
        retention = _parse_retention(c, spec.get("retentionPolicy"))
    paused = c.boolean(spec.get("paused"), "spec.paused")
    resources = _parse_resources(c, spec.get("resources"))
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
    )


def _parse_repository(c: Collector, value: object) -> str | None:
    path = "spec.destination.repository"
    text = c.string(value, path, required=True)
    if text is None:
        return None
    if text.startswith("-"):
        c.add(path, "must not start with '-'")
        return None
    credentials = repository_credentials(text)
    if credentials is not None:
        c.add(path, credentials)  # never the value: it would reach the status and Events
        return None
    if text.startswith("/") or text.startswith(REPOSITORY_SCHEMES):
        return text
    schemes = ", ".join(REPOSITORY_SCHEMES)
    c.add(path, f"{text!r} is not a restic repository (use an absolute path or one of {schemes})")
    return None


# Where each backend's credentials go instead of the repository URL.
CREDENTIAL_KEYS = {
    "rest:": "the Secret's keys RESTIC_REST_USERNAME and RESTIC_REST_PASSWORD",
    "s3:": "the Secret's keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    "sftp:": "an SSH key (restik passes no password to sftp)",
    "rclone:": "a named rclone remote with env_auth, and the backend's keys in the Secret "
    "(e.g. AWS_ACCESS_KEY_ID)",
}
_RCLONE_SECRET_PARAM = re.compile(r"[,:](\w*(key|secret|pass|token|auth)\w*)=", re.IGNORECASE)


def repository_credentials(text: str) -> str | None:
    """Why ``text`` carries credentials (the message never repeats them), or None.

    A URL's user information is everything between "://" and the last "@" (a password may
    hold "/" or "@"); a ":" in it means a password. rclone's on-the-fly remotes take
    credentials as parameters (``rclone::s3,secret_access_key=...:bucket``)."""
    scheme = next((s for s in CREDENTIAL_KEYS if text.startswith(s)), None)
    instead = CREDENTIAL_KEYS.get(scheme or "", "the repository Secret")
    _, sep, rest = text.partition("://")
    if sep and "@" in rest:
        userinfo = rest.rpartition("@")[0]
        user, colon, _ = userinfo.partition(":")
        if colon and "/" not in user:
            return (
                "must not contain credentials (user:password@ in the URL would be copied into "
                f"the status, Events and logs); use {instead} instead"
            )
    if scheme == "rclone:":
        found = _RCLONE_SECRET_PARAM.search(text)
        if found:
            return (
                f"must not contain credentials (rclone parameter {found.group(1)!r}); use "
                f"{instead} instead"
            )
    return None


def _parse_volume(c: Collector, value: object) -> Mapping | None:
    """A PersistentVolumeClaim, nothing else: whoever may create a Backup must not be able
    to mount a node's or a network's filesystem (hostPath, nfs, csi, ...) read-write into
    workloads they may not edit. The claim is a namespaced object its owner controls."""
    path = "spec.destination.volume"
    if value is None:
        c.add(path, "required with spec.destination.path")
        return None
    volume = c.mapping(value, path)
    if not isinstance(value, Mapping):
        return None
    if "name" in volume:
        c.string(volume["name"], f"{path}.name", pattern=DNS_LABEL, what="volume name")
    sources = sorted(str(k) for k in volume if k != "name")
    if sources != [PVC]:
        got = f"got {', '.join(sources)}" if sources else "got none"
        c.add(path, f"must be a persistentVolumeClaim ({got}): restik mounts no other volume")
        return None
    claim = c.mapping(volume[PVC], f"{path}.{PVC}", {"claimName", "readOnly"})
    if not isinstance(volume[PVC], Mapping):
        return None
    c.string(
        claim.get("claimName"),
        f"{path}.{PVC}.claimName",
        required=True,
        pattern=DNS_SUBDOMAIN,
        what="claim name",
    )
    if "readOnly" in claim:
        c.boolean(claim["readOnly"], f"{path}.{PVC}.readOnly")
    return plain(volume)


def _parse_retention(c: Collector, value: object) -> Retention:
    path = "spec.retentionPolicy"
    policy = c.mapping(value, path, RETENTION_FIELDS)
    counts = {attr: c.count(policy.get(key), f"{path}.{key}") for key, attr in KEEP_FIELDS.items()}
    return Retention(
        **counts,
        keep_tags=c.strings(policy.get("keepTags"), f"{path}.keepTags", forbid=","),
        retain_hostname=c.string(policy.get("retainHostname"), f"{path}.retainHostname"),
        retain_tags=c.strings(policy.get("retainTags"), f"{path}.retainTags", forbid=","),
        prune=c.boolean(policy.get("prune"), f"{path}.prune"),
    )


def _parse_resources(c: Collector, value: object) -> dict:
    """The sidecar's effective resources: DEFAULT_RESOURCES with each field the user gives
    replacing its default. A default never contradicts a user value: a request above the
    default limit raises that limit to the request, a limit below the default request
    lowers that request to the limit (as Kubernetes defaults a missing request to the
    limit). A user's own request above the user's own limit is an error."""
    path = "spec.resources"
    resources = c.mapping(value, path, {"limits", "requests"})
    given: dict = {"limits": {}, "requests": {}}
    for section in ("limits", "requests"):
        entries = c.mapping(resources.get(section), f"{path}.{section}")
        for rname, qty in entries.items():
            where = f"{path}.{section}.{rname}"
            if not isinstance(rname, str) or not re.match(r"^[A-Za-z0-9./_-]{1,253}$", rname):
                c.add(where, "is not a valid resource name")
                continue
            if rname not in RESOURCE_BOUNDS:
                c.add(where, f"only {', '.join(RESOURCE_BOUNDS)} may be set for the sidecar")
                continue
            if isinstance(qty, bool) or not isinstance(qty, str | int | float):
                c.add(where, f"must be a quantity, got {type_name(qty)}")
                continue
            if not QUANTITY.match(str(qty)):
                c.add(where, f"{qty!r} is not a valid quantity")
                continue
            if parse_quantity(str(qty)) < 0:
                c.add(where, f"{qty!r} must not be negative")
                continue
            low, high = RESOURCE_BOUNDS[rname]
            if not parse_quantity(low) <= parse_quantity(str(qty)) <= parse_quantity(high):
                c.add(where, f"{qty!r} is out of bounds (from {low} to {high})")
                continue
            given[section][rname] = qty if isinstance(qty, str) else str(qty)
    out = {section: {**DEFAULT_RESOURCES[section], **given[section]} for section in given}
    for rname in sorted(set(out["requests"]) & set(out["limits"])):
        request, limit = out["requests"][rname], out["limits"][rname]
        if parse_quantity(request) <= parse_quantity(limit):
            continue
        if rname in given["requests"] and rname in given["limits"]:
            c.add(
                f"{path}.requests.{rname}",
                f"{request} must not exceed limits.{rname} ({limit})",
            )
        elif rname in given["requests"]:
            out["limits"][rname] = request
        else:
            out["requests"][rname] = limit
    return out


# The sidecar image's own directories (Dockerfile: the venv in /opt/restik, the user's home
# /home/restik, the service-account token under /var/run/secrets): a source mounted on,
# under or above one of them would put the application's files where the sidecar runs code
# or reads its credentials from.
IMAGE_DIRS = (
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
    "/proc", "/root", "/run", "/sbin", "/sys", "/usr", "/var/run",
)  # fmt: skip


def _check_source_path(c: Collector, path: str) -> None:
    clean = path.rstrip("/") or "/"
    for image_dir in IMAGE_DIRS:
        if clean == image_dir or clean.startswith(image_dir + "/"):
            shadowed = image_dir
        elif image_dir.startswith(clean + "/"):
            shadowed = image_dir
        else:
            continue
        c.add(
            "spec.backupSource.path",
            f"{path} would cover the sidecar's own {shadowed} (its programs, libraries or "
            "credentials); mount the data elsewhere in the sidecar, e.g. /data",
        )
        return


# Bounds of spec.resources (README "Resources"): a sidecar needs no more to back up, and a
# Backup must not be a way to claim a node's capacity or special devices.
RESOURCE_BOUNDS = {
    "cpu": ("1m", "8"),
    "memory": ("32Mi", "64Gi"),
    "ephemeral-storage": ("1Mi", "1Ti"),
}


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
