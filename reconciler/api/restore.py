"""The Restore resource: parse a raw object once into a frozen model, collecting every error."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from reconciler.api.constants import (
    API_VERSION,
    PER_POD_HOST_KINDS,
    RESTORE_KIND,
    WORKLOAD_KINDS,
)
from reconciler.api.fields import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    MAX_LIST,
    Collector,
    FieldError,
    InvalidObject,
    type_name,
)
from reconciler.api.hooks import parse_command, parse_container, parse_timeout
from reconciler.api.times import parse_time

SPEC_FIELDS = {
    "backup",
    "target",
    "snapshot",
    "asOf",
    "hosts",
    "include",
    "exclude",
    "delete",
    "verify",
    "runID",
    "command",
}
COMMAND_FIELDS = {"command", "container", "timeout"}
DEFAULT_COMMAND_TIMEOUT = 3600.0  # spec.command.timeout when not given: 1h
TARGET_FIELDS = {"workload", "pvc"}
WORKLOAD_FIELDS = {"kind", "name"}
PVC_FIELDS = {"claimName"}

# A restic snapshot id or a unique prefix of one (restic prints 8 characters).
SNAPSHOT_ID = re.compile(r"^[0-9a-f]{8,64}$")
# A path relative to the Backup's source path: no leading "/", no ".." component, no empty
# component. RE2-compatible (no lookahead), so the CRD's schema carries the same pattern.
_COMPONENT = r"([^/.\n\r][^/\n\r]*|\.|\.[^/.\n\r][^/\n\r]*|\.\.[^/\n\r]+)"
RELATIVE_PATH = re.compile(rf"^{_COMPONENT}(/{_COMPONENT})*/?$")
# A restic host name as the sidecar makes them (pod, node or workload names), kept simple.
HOST = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9._]{0,251}[A-Za-z0-9])?$")

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Invalid")
FINISHED = frozenset({"Succeeded", "Failed"})


class InvalidRestore(InvalidObject):
    """A Restore that failed validation; ``errors`` names every bad field."""

    kind = "Restore"


@dataclass(frozen=True)
class RestoreCommand:
    """``spec.command``: the command in the target's container whose stdin gets the dump of
    a command-source Backup's snapshot (`restic dump` piped into `psql`). ``container``
    None: the Backup's backupSource.command.container, else the pod's first container."""

    command: tuple[str, ...]
    container: str | None = None
    timeout: float = DEFAULT_COMMAND_TIMEOUT


@dataclass(frozen=True)
class Restore:
    name: str
    namespace: str
    backup: str
    workload_kind: str | None = None  # target.workload (in place) ...
    workload_name: str | None = None
    claim_name: str | None = None  # ... or target.pvc (a Job restores into the claim)
    snapshot: str | None = None
    as_of: datetime | None = None
    hosts: Mapping[str, str] = field(default_factory=dict)  # target host -> source host
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    delete: bool = False
    verify: bool = False
    run_id: str | None = None
    uid: str | None = None
    generation: int | None = None
    command: RestoreCommand | None = None  # spec.command: restore a dump through pods/exec

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def is_pvc(self) -> bool:
        return self.claim_name is not None

    @property
    def target(self) -> str:
        """ "StatefulSet/db" or "pvc/data-restored": what status.target and the table show."""
        if self.claim_name is not None:
            return f"pvc/{self.claim_name}"
        return f"{self.workload_kind}/{self.workload_name}"

    @property
    def multi_host(self) -> bool:
        """Whether each pod restores its own host's snapshot (StatefulSet, DaemonSet)."""
        return self.workload_kind in PER_POD_HOST_KINDS

    def source_host(self, host: str) -> str:
        """The host whose snapshots restore into ``host`` (spec.hosts maps renamed ones)."""
        return self.hosts.get(host, host)


def restore_ref(raw: Mapping) -> tuple[str, str]:
    """(namespace, name) of a raw Restore, tolerating a broken metadata block."""
    meta = raw.get("metadata") if isinstance(raw, Mapping) else None
    meta = meta if isinstance(meta, Mapping) else {}
    return (str(meta.get("namespace") or "default"), str(meta.get("name") or "<unnamed>"))


def parse_restore(raw: Mapping) -> Restore:
    """Parse a raw Restore object; raise InvalidRestore listing every bad field."""
    namespace, name = restore_ref(raw)
    c = Collector()
    if not isinstance(raw, Mapping):
        raise InvalidRestore(namespace, name, [FieldError("", "must be an object")])
    if raw.get("apiVersion") not in (None, API_VERSION):
        c.add("apiVersion", f"must be {API_VERSION}")
    if raw.get("kind") not in (None, RESTORE_KIND):
        c.add("kind", f"must be {RESTORE_KIND}")
    meta = c.mapping(raw.get("metadata"), "metadata")
    c.string(meta.get("name"), "metadata.name", required=True, pattern=DNS_SUBDOMAIN, what="name")
    if "spec" not in raw:
        c.add("spec", "required")
    spec = c.mapping(raw.get("spec"), "spec", SPEC_FIELDS)
    has_spec = isinstance(raw.get("spec"), Mapping)

    backup = c.string(
        spec.get("backup"), "spec.backup", required=has_spec, pattern=DNS_SUBDOMAIN, what="name"
    )
    kind = wname = claim = None
    target = c.mapping(spec.get("target"), "spec.target", TARGET_FIELDS)
    if has_spec and "target" not in spec:
        c.add("spec.target", "required")
    elif "target" in spec and isinstance(spec.get("target"), Mapping):
        given = [k for k in ("workload", "pvc") if k in target]
        if len(given) != 1:
            c.add(
                "spec.target",
                "give exactly one of workload: {kind, name} and pvc: {claimName}"
                + (" (both were given)" if given else " (neither was given)"),
            )
        elif given == ["workload"]:
            kind, wname = _parse_workload(c, target.get("workload"))
        else:
            claim = _parse_pvc(c, target.get("pvc"))

    snapshot = as_of = None
    if "snapshot" in spec and "asOf" in spec:
        c.add("spec", "give snapshot or asOf, not both")
    if spec.get("snapshot") is not None:
        text = c.string(spec.get("snapshot"), "spec.snapshot", required=True)
        if text is not None and not SNAPSHOT_ID.match(text):
            c.add(
                "spec.snapshot",
                f"{text!r} is not a snapshot id (8 to 64 lowercase hex digits, "
                "as `restik snapshots` shows them)",
            )
        elif text is not None:
            snapshot = text
        if text is not None and kind in PER_POD_HOST_KINDS:
            c.add(
                "spec.snapshot",
                f"a {kind} has a snapshot per pod (host): choose by asOf, or restore one "
                "host's snapshot into a PVC",
            )
    if spec.get("asOf") is not None:
        text = c.string(spec.get("asOf"), "spec.asOf", required=True)
        if text is not None:
            as_of = parse_time(text)
            if as_of is None:
                c.add(
                    "spec.asOf",
                    f"{text!r} is not an RFC 3339 time with a zone, e.g. 2026-01-31T23:00:00Z",
                )
    hosts = _parse_hosts(c, spec.get("hosts"))
    include = _parse_paths(c, spec.get("include"), "spec.include")
    exclude = _parse_paths(c, spec.get("exclude"), "spec.exclude")
    delete = c.boolean(spec.get("delete"), "spec.delete")
    verify = c.boolean(spec.get("verify"), "spec.verify")
    run_id = c.string(spec.get("runID"), "spec.runID", pattern=DNS_LABEL, what="run id")
    command = None
    if "command" in spec:
        command = _parse_command(c, spec, claim)

    generation = meta.get("generation")
    if c.errors:
        raise InvalidRestore(namespace, name, c.errors)
    return Restore(
        name=name,
        namespace=namespace,
        backup=backup,
        workload_kind=kind,
        workload_name=wname,
        claim_name=claim,
        snapshot=snapshot,
        as_of=as_of,
        hosts=hosts,
        include=include,
        exclude=exclude,
        delete=delete,
        verify=verify,
        run_id=run_id,
        command=command,
        uid=meta.get("uid") if isinstance(meta.get("uid"), str) else None,
        generation=generation if isinstance(generation, int) else None,
    )


def _parse_command(c: Collector, spec: Mapping, claim: str | None) -> RestoreCommand | None:
    """``spec.command``, and what a dump restore rules out: a PVC target (the command runs
    in the application's pod) and the file options (a dump is one stream, not files)."""
    path = "spec.command"
    value = spec.get("command")
    if not isinstance(value, Mapping):
        if value is None:
            c.add(path, "required: an object with command")
        else:
            c.add(path, f"must be an object with command, got {type_name(value)}")
        return None
    given = c.mapping(value, path, COMMAND_FIELDS)
    argv = parse_command(c, given.get("command"), f"{path}.command")
    container = parse_container(c, given.get("container"), f"{path}.container")
    timeout = parse_timeout(c, given.get("timeout"), f"{path}.timeout")
    if claim is not None:
        c.add(
            "spec.target.pvc",
            "a Restore with spec.command pipes the dump into a command in the application's "
            "pods: give target.workload (the pods that run the database), not a pvc",
        )
    for name in ("include", "exclude", "delete", "verify"):
        if spec.get(name) not in (None, False, []):
            c.add(
                f"spec.{name}",
                "does not apply to spec.command: a dump is one stream restored whole, not files",
            )
    if not argv:
        return None
    return RestoreCommand(argv, container, DEFAULT_COMMAND_TIMEOUT if timeout is None else timeout)


def _parse_workload(c: Collector, value: object) -> tuple[str | None, str | None]:
    path = "spec.target.workload"
    if not isinstance(value, Mapping):
        c.add(path, "must be an object {kind, name}")
        return None, None
    w = c.mapping(value, path, WORKLOAD_FIELDS)
    kind = c.string(w.get("kind"), f"{path}.kind", required=True)
    if kind is not None and kind not in WORKLOAD_KINDS:
        c.add(f"{path}.kind", f"{kind!r} is not one of {', '.join(WORKLOAD_KINDS)}")
        kind = None
    name = c.string(
        w.get("name"), f"{path}.name", required=True, pattern=DNS_SUBDOMAIN, what="name"
    )
    return kind, name


def _parse_pvc(c: Collector, value: object) -> str | None:
    path = "spec.target.pvc"
    if not isinstance(value, Mapping):
        c.add(path, "must be an object {claimName}")
        return None
    pvc = c.mapping(value, path, PVC_FIELDS)
    return c.string(
        pvc.get("claimName"),
        f"{path}.claimName",
        required=True,
        pattern=DNS_SUBDOMAIN,
        what="claim name",
    )


def _parse_hosts(c: Collector, value: object) -> dict[str, str]:
    path = "spec.hosts"
    hosts = c.mapping(value, path)
    if len(hosts) > MAX_LIST:
        c.add(path, f"too many entries ({len(hosts)}, at most {MAX_LIST})")
        return {}
    out = {}
    for target, source in hosts.items():
        where = f"{path}.{target}"
        if not isinstance(target, str) or not HOST.match(target):
            c.add(where, f"{target!r} is not a host name (letters, digits, '-', '.', '_')")
            continue
        text = c.string(source, where, required=True)
        if text is None:
            continue
        if not HOST.match(text):
            c.add(where, f"{text!r} is not a host name (letters, digits, '-', '.', '_')")
            continue
        out[target] = text
    return out


def _parse_paths(c: Collector, value: object, path: str) -> tuple[str, ...]:
    good = set(c.strings(value, path))
    out = []
    items = enumerate(value) if good and isinstance(value, list) else ()
    for i, text in items:
        if text not in good:
            continue  # reported by c.strings
        if text.startswith("/"):
            c.add(f"{path}[{i}]", f"{text!r} must be relative to the Backup's path (no leading /)")
        elif ".." in text.split("/"):
            c.add(f"{path}[{i}]", f"{text!r} must not contain '..'")
        elif not RELATIVE_PATH.match(text):
            c.add(f"{path}[{i}]", f"{text!r} is not a relative path (empty component)")
        else:
            out.append(text)
    return tuple(out)
