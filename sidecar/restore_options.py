"""Options of `restik restore-run` (the Restore executor in an init container or a Job) and
the Settings they make: stdlib only, like every command's options module."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from reconciler.api.duration import parse_duration
from reconciler.logs import add_logging_arguments, env_default


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
    add_logging_arguments(parser)
    parser.add_argument(
        "--restore",
        default=env_default("RESTORE"),
        required=not env_default("RESTORE"),
        help="name of the Restore to run ($RESTIK_RESTORE)",
    )
    parser.add_argument(
        "--namespace",
        default=env_default("NAMESPACE"),
        help="namespace of the Restore (default: $POD_NAMESPACE, the kubeconfig context's)",
    )
    parser.add_argument(
        "--target",
        default=env_default("RESTORE_TARGET"),
        metavar="DIR",
        help="where the volume to restore into is mounted (default: the Backup's "
        "backupSource.path, as in the workload's own pods)",
    )
    parser.add_argument(
        "--workload",
        default=env_default("WORKLOAD"),
        metavar="KIND/NAME",
        help="the workload this pod belongs to (decides the restic host, as for the sidecar)",
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
    parser.add_argument("--kubeconfig", default=env_default("KUBECONFIG"), help="kubeconfig file")
    parser.add_argument(
        "--restic", default=env_default("RESTIC", "restic"), help="the restic binary"
    )
    parser.add_argument(
        "--cache-dir",
        default=env_default("CACHE_DIR"),
        help="restic cache and scratch directory (default: $RESTIC_CACHE_DIR or a temporary one)",
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
    parser.add_argument(
        "--progress-interval",
        default=env_default("PROGRESS_INTERVAL", "10s"),
        help="write progress into the Restore's status at most this often (default 10s)",
    )
    parser.add_argument(
        "--wait-interval",
        default=env_default("WAIT_INTERVAL", "10s"),
        help="while the Backup is missing or another replica restores, look again this "
        "often (default 10s)",
    )
    parser.add_argument(
        "--lease-duration",
        default=env_default("LEASE_DURATION", "30s"),
        help="Lease of the replica that restores a shared volume (default 30s)",
    )


def settings_from_args(args: argparse.Namespace) -> RestoreSettings:
    workload = None
    if args.workload:
        kind, sep, name = args.workload.partition("/")
        if not sep or not kind or not name:
            raise ValueError(f"--workload must be KIND/NAME, got {args.workload!r}")
        workload = (kind, name)
    if args.target is not None and not args.target.startswith("/"):
        raise ValueError(f"--target must be an absolute path, got {args.target!r}")
    return RestoreSettings(
        restore=args.restore,
        namespace=args.namespace,
        target=args.target,
        workload=workload,
        host=args.host,
        kubeconfig=args.kubeconfig,
        restic=args.restic,
        cache_dir=args.cache_dir,
        progress_interval=max(0.0, parse_duration(args.progress_interval).total_seconds()),
        wait_interval=max(0.1, parse_duration(args.wait_interval).total_seconds()),
        lease_duration=max(2.0, parse_duration(args.lease_duration).total_seconds()),
        log_level=args.log_level,
        log_format=args.log_format,
        into_pods=args.into_pods,
    )
