"""What `kubectl exec ... -c restik -- restic snapshots` finds: the repository file the
sidecar keeps current (the pod template points RESTIC_REPOSITORY_FILE at it)."""

from __future__ import annotations

import logging
import os
import tempfile

log = logging.getLogger(__name__)

REPOSITORY_FILE_ENV = "RESTIC_REPOSITORY_FILE"


def write_repository_file(path: str, repository: str) -> bool:
    """Write ``repository`` into ``path`` (atomically, readable by the sidecar's user only:
    a rest: URL may carry a password) unless it holds it already; True if written."""
    try:
        with open(path, encoding="utf-8") as f:
            if f.read().strip() == repository:
                return False
    except OSError:
        pass
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".repository-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(repository + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return True


def publish_repository(env: dict[str, str] | os._Environ, repository: str) -> None:
    """Keep $RESTIC_REPOSITORY_FILE (if the environment names one) holding ``repository``;
    a failure is logged, never fatal: it only concerns people exec'ing into the sidecar."""
    path = env.get(REPOSITORY_FILE_ENV)
    if not path:
        return
    try:
        if write_repository_file(path, repository):
            log.debug("wrote the repository into %s for `restic` in this container", path)
    except OSError as exc:
        log.warning("cannot write %s (for `kubectl exec ... restic`): %s", path, exc)
