"""``spec.backupSource`` of the Backup: a volume of the pod (``volumeName`` + ``path``) or a
command whose stdout is the backup (``command``: a database dump streamed into restic)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.api.constants import VOLUME_PREFIX
from reconciler.api.fields import DNS_LABEL, Collector, type_name
from reconciler.api.hooks import parse_command, parse_container, parse_timeout

RESERVED_MOUNT = "/restik"
MAX_FILENAME = 255  # bytes of a file name, as on most filesystems
COMMAND_FIELDS = {"command", "container", "filename", "timeout"}


@dataclass(frozen=True)
class CommandSource:
    """``spec.backupSource.command``: ``command``'s stdout is stored as ``filename`` at the
    root of each snapshot. ``container`` None: the pod's first container (not restik's);
    ``timeout`` None: the sidecar's --run-timeout."""

    command: tuple[str, ...]
    filename: str
    container: str | None = None
    timeout: float | None = None


def parse_source(c: Collector, source: Mapping, given: bool) -> tuple:
    """(volumeName, path, CommandSource) of ``spec.backupSource``: exactly one of a volume
    and a command. ``given``: the field is there (even null), so its parts are required."""
    if "command" not in source:
        return (*_parse_volume(c, source, given), None)
    if "volumeName" in source or "path" in source:
        c.add("spec.backupSource", "give either volumeName+path or command (both were given)")
    return (None, None, parse_command_source(c, source.get("command")))


def _parse_volume(c: Collector, source: Mapping, given: bool) -> tuple[str | None, str | None]:
    volume = c.string(
        source.get("volumeName"),
        "spec.backupSource.volumeName",
        required=bool(source) or given,
        pattern=DNS_LABEL,
        what="volume name",
    )
    if volume and volume.startswith(VOLUME_PREFIX):
        c.add("spec.backupSource.volumeName", f"volumes named {VOLUME_PREFIX}* belong to restik")
    path = c.abs_path(source.get("path"), "spec.backupSource.path", required=bool(source) or given)
    if path and (path == RESERVED_MOUNT or path.startswith(RESERVED_MOUNT + "/")):
        c.add("spec.backupSource.path", f"{RESERVED_MOUNT} is reserved for restik")
    if path == "/":
        c.add("spec.backupSource.path", "must not be /")
    return volume, path


def parse_filename(c: Collector, value: object, path: str) -> str | None:
    name = c.string(value, path, required=True)
    if name is None:
        return None
    if "/" in name or name in (".", ".."):
        c.add(path, f"{name!r} must be a plain file name (no '/', not '.' or '..')")
        return None
    if len(name.encode()) > MAX_FILENAME:
        c.add(path, f"too long ({len(name.encode())} bytes, at most {MAX_FILENAME})")
        return None
    return name


def parse_command_source(c: Collector, value: object) -> CommandSource | None:
    path = "spec.backupSource.command"
    if not isinstance(value, Mapping):
        message = "required: an object with command and filename"
        c.add(path, message if value is None else f"must be an object, got {type_name(value)}")
        return None
    source = c.mapping(value, path, COMMAND_FIELDS)
    command = parse_command(c, source.get("command"), f"{path}.command")
    container = parse_container(c, source.get("container"), f"{path}.container")
    filename = parse_filename(c, source.get("filename"), f"{path}.filename")
    timeout = parse_timeout(c, source.get("timeout"), f"{path}.timeout")
    if not command or filename is None:
        return None
    return CommandSource(command, filename, container, timeout)


# The sidecar image's own directories (Dockerfile: the venv in /opt/restik, the user's home
# /home/restik, the service-account token under /var/run/secrets): a source mounted on,
# under or above one of them would put the application's files where the sidecar runs code
# or reads its credentials from.
IMAGE_DIRS = (
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/opt",
    "/proc", "/root", "/run", "/sbin", "/sys", "/usr", "/var/run",
)  # fmt: skip


def check_source_path(c: Collector, path: str) -> None:
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
