"""Options of `restik restore-run` (the Restore executor in an init container or a Job) and
the Settings they make: stdlib only, like every command's options module."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from reconciler.api.duration import parse_duration
from reconciler.logs import env_default
from sidecar.options import add_durations, add_shared_arguments, shared_settings


@dataclass(frozen=True)
class RestoreSettings:
    restore: str
    namespace: str | None
    target: str | None  # the directory the volume is mounted at (default: the Backup's path)
    workload: tuple[str, str] | None
    host: str | None
    kubeconfig: str | None
    restic: str
    cache_dir: str | None
    progress_interval: float
    wait_interval: float
    lease_duration: float
    log_level: str
    log_format: str
    into_pods: str | None = None  # a dump Restore's Job: the target pods' label selector


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_shared_arguments(
        parser,
        "Restore",
        "the Restore's target workload",
        "30s",
        "Lease of the replica that restores a shared volume",
    )
    parser.add_argument(
        "--restore",
        default=env_default("RESTORE"),
        required=not env_default("RESTORE"),
        help="name of the Restore to run ($RESTIK_RESTORE)",
    )
    parser.add_argument(
        "--target",
        default=env_default("RESTORE_TARGET"),
        metavar="DIR",
        help="where the volume to restore into is mounted (default: the Backup's "
        "backupSource.path, as in the workload's own pods)",
    )
    parser.add_argument(
        "--into-pods",
        default=None,
        metavar="SELECTOR",
        help="a dump Restore's Job: pipe `restic dump` into the Restore's spec.command in "
        "the pods of this label selector (sidecar/restore_dump.py) instead of restoring files",
    )
    parser.add_argument(
        "--host",
        default=env_default("RESTORE_HOST"),
        help="the target host (default: from --workload and the pod, or the PVC's name)",
    )
    parser.add_argument(
        "--repository",
        default=None,
        help="the Backup's repository as the controller rendered it: the snapshot listing "
        "starts with it at once (used only if the Backup still says so)",
    )
    parser.add_argument(
        "--source-path",
        default=None,
        help="the Backup's backupSource.path as the controller rendered it (with --repository)",
    )
    add_durations(
        parser,
        [
            (
                "--progress-interval",
                "10s",
                "write progress into the Restore's status at most this often",
            ),
            (
                "--wait-interval",
                "10s",
                "while the Backup is missing or another replica restores, look again this often",
            ),
        ],
    )


def settings_from_args(args: argparse.Namespace) -> RestoreSettings:
    if args.target is not None and not args.target.startswith("/"):
        raise ValueError(f"--target must be an absolute path, got {args.target!r}")
    return RestoreSettings(
        **shared_settings(args),
        restore=args.restore,
        target=args.target,
        host=args.host,
        progress_interval=max(0.0, parse_duration(args.progress_interval).total_seconds()),
        wait_interval=max(0.1, parse_duration(args.wait_interval).total_seconds()),
        into_pods=args.into_pods,
    )
