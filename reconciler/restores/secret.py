"""A Backup's repository access from the user's side: its Secret read with the user's own
kubeconfig (the controller never reads Secrets), turned into restic's environment."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from reconciler.api.backup import Backup
from reconciler.api.constants import SECRET_ENV, SECRET_PASSWORD_KEY
from reconciler.kube.client import ApiError, Kube
from reconciler.kube.resource import Resource

SECRETS = Resource("v1", "secrets", "Secret")
WANTED = frozenset({SECRET_PASSWORD_KEY, *SECRET_ENV})


class AccessError(Exception):
    """The repository cannot be reached from here; the message says why and what to do."""


def secret_env(secret: Mapping, backup: Backup) -> dict[str, str]:
    """restic's backend variables of the Secret (SECRET_ENV), `password` as RESTIC_PASSWORD,
    the way the sidecar gets them (one secretKeyRef each): any other key, such as
    RESTIC_PASSWORD_COMMAND, never reaches the restic run here."""
    data = secret.get("data") or {}
    env = {}
    for key, value in data.items():
        if key not in WANTED or not isinstance(value, str):
            continue
        env[str(key)] = base64.b64decode(value).decode("utf-8", "replace")
    password = env.pop(SECRET_PASSWORD_KEY, None)
    if not password:
        raise AccessError(
            f"Secret {backup.namespace}/{backup.secret_name} has no key 'password' "
            "(spec.destination.repositorySecretName)"
        )
    env["RESTIC_PASSWORD"] = password
    return env


def repository_env(kube: Kube, backup: Backup) -> dict[str, str]:
    """restic's environment for the Backup's repository, from its Secret."""
    if backup.is_local:
        raise AccessError(
            f"Backup {backup.namespace}/{backup.name} keeps its repository on a volume "
            "(spec.destination.volume): it is reachable only from a pod that mounts it, e.g. "
            "kubectl exec into a backed-up pod's restik container and run restic there"
        )
    try:
        secret = kube.get(SECRETS.path(backup.namespace, backup.secret_name))
    except ApiError as exc:
        if exc.not_found:
            raise AccessError(
                f"Secret {backup.namespace}/{backup.secret_name} not found "
                "(spec.destination.repositorySecretName)"
            ) from None
        raise AccessError(
            f"cannot read Secret {backup.namespace}/{backup.secret_name}: {exc}"
        ) from None
    return secret_env(secret, backup)
