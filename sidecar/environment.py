"""The sidecar's environment: what came from the repository Secret, what restic gets, and
the scrub of everything else at start (issue 13 items 5 and 8)."""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from reconciler.api.constants import SECRET_ENV

PASSWORD_ENV = "RESTIC_PASSWORD"  # noqa: S105 - a variable name
# Every variable whose value comes from the repository Secret (the template's references).
FROM_SECRET = frozenset({PASSWORD_ENV, *SECRET_ENV})
# What restic (and the rclone or ssh it may start) runs with: the Secret's variables, restik's
# cache and scratch directories, and the basics of a process. Never the rest of ours.
FOR_RESTIC = FROM_SECRET | {
    # a cluster's egress proxy (set on the pod by a platform's admission webhook, never
    # from the Secret): restic and the API client must keep using it
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "PATH",
    "HOME",
    "TZ",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "RESTIC_CACHE_DIR",
    "RESTIC_REPOSITORY",
}
# What the sidecar process keeps: the above, what the template sets from the downward API,
# the in-cluster API address, a kubeconfig, and restik's own options (RESTIK_*, set by the
# template or whoever starts `restik watch`; they were read as the defaults of the options
# before the scrub, and restic never sees them).
KEPT = FOR_RESTIC | {
    "POD_NAME",
    "POD_NAMESPACE",
    "NODE_NAME",
    "HOSTNAME",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "KUBECONFIG",
    # where the sidecar writes the Backup's repository for `kubectl exec ... restic` (the
    # template sets it; sidecar.shell.publish_repository reads it from this process's
    # environment). Not for restik's own restic, which gets --repo: runner.restic_env.
    "RESTIC_REPOSITORY_FILE",
}
# Names worth a warning when found: they change what restic, the dynamic loader or Python
# run, or where restik sends its token. The rest (e.g. the service links Kubernetes adds,
# FOO_SERVICE_HOST) goes quietly.
DANGEROUS_PREFIXES = ("RESTIC_", "RCLONE_", "LD_", "PYTHON", "PYKUBE_", "GODEBUG", "SSL_")


def scrub(environ: MutableMapping[str, str] = os.environ) -> tuple[list[str], list[str]]:
    """Remove from ``environ`` every variable the sidecar does not know; (names worth a
    warning, the other names) removed. Values are never returned or logged."""
    removed = sorted(k for k in environ if k not in KEPT and not k.startswith("RESTIK_"))
    for name in removed:
        del environ[name]
    loud = [n for n in removed if n.startswith(DANGEROUS_PREFIXES)]
    return loud, [n for n in removed if n not in loud]


def restic_environment(base: MutableMapping[str, str] | dict) -> dict[str, str]:
    """Only the variables restic may see, whatever else ``base`` holds."""
    return {k: v for k, v in base.items() if k in FOR_RESTIC}
