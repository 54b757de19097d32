"""``spec.destination`` of the Backup: a restic repository URL or a PersistentVolumeClaim
(with a path inside it), and the Secret with the repository's password and credentials."""

from __future__ import annotations

import re
from collections.abc import Mapping

from reconciler.api.fields import DNS_LABEL, DNS_SUBDOMAIN, Collector, plain

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
DESTINATION_FIELDS = {"repositorySecretName", "volume", "path", "repository"}


def parse_destination(c: Collector, spec: Mapping, has_spec: bool) -> tuple:
    """(Secret name, repository, volume, path) of ``spec.destination``: exactly one of a
    repository and a volume+path."""
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
    return secret, repository, dest_volume, dest_path


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
