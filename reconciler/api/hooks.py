"""``spec.hooks`` of the Backup: commands run in a container of the pod before and after the
backup (freeze/unfreeze, flush), and the parts they share with ``spec.backupSource.command``
(argv, container, timeout). Both run through the pod's ``exec`` subresource, so a Backup
that uses them needs that permission (``wants_exec``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.api.constants import SIDECAR_NAME
from reconciler.api.duration import parse_duration
from reconciler.api.fields import (
    DNS_LABEL,
    MAX_LIST,
    MAX_STRING,
    Collector,
    FieldError,
    type_name,
)

FAIL, CONTINUE = "Fail", "Continue"
ON_ERROR = (FAIL, CONTINUE)
HOOK_TIMEOUT = 300.0  # seconds a hook may run unless it says otherwise (5m)
MAX_TIMEOUT = 86400.0  # a day: longer is a hung command, not a slow one
HOOK_NAMES = ("preBackup", "postBackup")
HOOKS_FIELDS = set(HOOK_NAMES)
HOOK_FIELDS = {"command", "container", "timeout", "onError"}


@dataclass(frozen=True)
class HookSpec:
    """``spec.hooks.preBackup`` / ``postBackup``. ``container`` None: the first container of
    the pod that mounts the source volume (with a command source: the command's container)."""

    command: tuple[str, ...]
    container: str | None = None
    timeout: float = HOOK_TIMEOUT
    on_error: str = FAIL


def parse_command(c: Collector, value: object, path: str) -> tuple[str, ...]:
    """An argv: a non-empty list of strings whose first entry names the program. Arguments
    may hold line breaks (``sh -c`` scripts) and may be empty, but never NUL."""
    if value is None:
        c.add(path, "required")
        return ()
    if not isinstance(value, list):
        c.add(path, f"must be a list of strings, got {type_name(value)}")
        return ()
    if not value:
        c.add(path, "must not be empty (the first entry is the program to run)")
        return ()
    if len(value) > MAX_LIST:
        c.add(path, f"too many entries ({len(value)}, at most {MAX_LIST})")
        return ()
    ok = True
    for i, arg in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(arg, str):
            c.add(where, f"must be a string, got {type_name(arg)}")
        elif len(arg) > MAX_STRING:
            c.add(where, f"too long ({len(arg)} characters, at most {MAX_STRING})")
        elif "\x00" in arg:
            c.add(where, "must not contain NUL")
        elif i == 0 and not arg.strip():
            c.add(where, "must name the program to run")
        else:
            continue
        ok = False
    return tuple(value) if ok else ()


def parse_timeout(c: Collector, value: object, path: str) -> float | None:
    """A Go-style duration ("90s", "5m", "1h30m"), above zero and at most a day."""
    if value is None:
        return None
    if not isinstance(value, str):
        c.add(path, f"must be a duration such as 5m or 90s, got {type_name(value)}")
        return None
    try:
        seconds = parse_duration(value).total_seconds()
    except ValueError as exc:
        c.add(path, str(exc))
        return None
    if seconds <= 0:
        c.add(path, f"{value!r} must be longer than 0s")
        return None
    if seconds > MAX_TIMEOUT:
        c.add(path, f"{value!r} is longer than 24h")
        return None
    return seconds


def parse_container(c: Collector, value: object, path: str) -> str | None:
    name = c.string(value, path, pattern=DNS_LABEL, what="container name")
    if name == SIDECAR_NAME:
        c.add(path, f"{SIDECAR_NAME} is restik's sidecar; name the application's container")
        return None
    return name


def parse_hook(c: Collector, value: object, path: str) -> HookSpec | None:
    hook = c.mapping(value, path, HOOK_FIELDS)
    if value is None or not isinstance(value, Mapping):
        return None
    command = parse_command(c, hook.get("command"), f"{path}.command")
    container = parse_container(c, hook.get("container"), f"{path}.container")
    timeout = parse_timeout(c, hook.get("timeout"), f"{path}.timeout")
    on_error = hook.get("onError", FAIL)
    if on_error not in ON_ERROR:
        c.add(f"{path}.onError", f"{on_error!r} must be one of {', '.join(ON_ERROR)}")
    if not command:
        return None
    return HookSpec(
        command=command,
        container=container,
        timeout=HOOK_TIMEOUT if timeout is None else timeout,
        on_error=on_error if on_error in ON_ERROR else FAIL,
    )


def parse_hooks(c: Collector, value: object) -> tuple[HookSpec | None, HookSpec | None]:
    """(preBackup, postBackup) of ``spec.hooks``."""
    hooks = c.mapping(value, "spec.hooks", HOOKS_FIELDS)
    return tuple(parse_hook(c, hooks.get(name), f"spec.hooks.{name}") for name in HOOK_NAMES)


def wants_exec(backup_raw: object) -> bool:
    """Whether a (raw) Backup runs commands in its pods: hooks or a command source. Its
    sidecars then need ``pods/exec``; read tolerantly, a broken Backup counts by what it
    declares (it runs nothing until it is fixed, and the grant follows the fix)."""
    spec = backup_raw.get("spec") if isinstance(backup_raw, Mapping) else None
    if not isinstance(spec, Mapping):
        return False
    hooks = spec.get("hooks")
    if isinstance(hooks, Mapping) and any(hooks.get(name) for name in HOOK_NAMES):
        return True
    source = spec.get("backupSource")
    return isinstance(source, Mapping) and source.get("command") is not None


def runs_commands(backup) -> bool:
    """Whether a parsed Backup runs anything through pods/exec."""
    return bool(backup.source_command or backup.pre_backup or backup.post_backup)


def template_spec(obj: Mapping) -> Mapping:
    """A workload's pod template spec, or {} when it is malformed (reported elsewhere)."""
    spec = obj.get("spec") if isinstance(obj, Mapping) else None
    template = spec.get("template") if isinstance(spec, Mapping) else None
    pod_spec = template.get("spec") if isinstance(template, Mapping) else None
    return pod_spec if isinstance(pod_spec, Mapping) else {}


def _app_containers(pod_spec: Mapping) -> list[Mapping]:
    """The containers a command can run in: the regular ones and restartable init containers
    (native sidecars), which run alongside; never restik's own."""
    found = []
    for key in ("containers", "initContainers"):
        for container in pod_spec.get(key) or ():
            if not isinstance(container, Mapping) or container.get("name") == SIDECAR_NAME:
                continue
            if key == "initContainers" and container.get("restartPolicy") != "Always":
                continue
            found.append(container)
    return found


def _mounts(container: Mapping, volume: str) -> bool:
    return any(
        isinstance(m, Mapping) and m.get("name") == volume
        for m in container.get("volumeMounts") or ()
    )


def exec_containers(backup, pod_spec: Mapping, where: str) -> tuple[dict, list[FieldError]]:
    """The container each command of ``backup`` runs in, by its name in the spec ("command",
    "preBackup", "postBackup"), for a pod (template) spec; and the errors for those that
    have none. Defaults: the command's, the first container that mounts the source volume
    (hooks), the first container (command). ``where``: the pod or workload, for messages."""
    containers = _app_containers(pod_spec if isinstance(pod_spec, Mapping) else {})
    names = [str(c.get("name")) for c in containers]
    listed = ", ".join(names) or "none"
    chosen: dict[str, str] = {}
    errors: list[FieldError] = []
    wanted = []
    command = backup.source_command
    if command is not None:
        wanted.append(("command", "spec.backupSource.command.container", command.container))
    for name, hook in zip(HOOK_NAMES, (backup.pre_backup, backup.post_backup), strict=True):
        if hook is not None:
            wanted.append((name, f"spec.hooks.{name}.container", hook.container))
    for key, path, named in wanted:
        if named is not None:
            if named in names:
                chosen[key] = named
            else:
                errors.append(FieldError(path, f"{where} has no container {named!r} "
                                         f"(its containers: {listed})"))  # fmt: skip
            continue
        if command is not None:
            default = chosen.get("command") or (names[0] if names else None)
            why = "it has no containers"
        else:
            volume = backup.source_volume
            default = next((str(c.get("name")) for c in containers if _mounts(c, volume)), None)
            why = f"none of its containers ({listed}) mounts volume {volume!r}; name one"
        if default is None:
            errors.append(FieldError(path, f"no container of {where} to run in: {why}"))
        else:
            chosen[key] = default
    return chosen, errors
