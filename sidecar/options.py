"""Options of `restik watch` and the Settings they make: stdlib only (the CLI builds this
parser for every command; importing it must not load the sidecar's or controller's code)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import timedelta

from reconciler.api.duration import parse_duration
from reconciler.logs import add_logging_arguments, env_default


@dataclass(frozen=True)
class Settings:
    backup: str
    namespace: str | None
    workload: tuple[str, str] | None
    kubeconfig: str | None
    metrics_port: int
    metrics_address: str
    restic: str
    lock_stale_after: timedelta
    lock_wait: float
    resync: float
    stop_timeout: float
    run_timeout: float
    backend_timeout: float
    lease_duration: float
    cache_dir: str | None
    log_level: str
    log_format: str


def add_shared_arguments(
    parser: argparse.ArgumentParser, of: str, workload_from: str, lease_default: str,
    lease_help: str,
) -> None:  # fmt: skip
    """The options `restik watch` and `restik restore-run` share (``of``: the object they
    run for): logging, where they run, restic and its cache, the Lease of a shared host."""
    add_logging_arguments(parser)
    parser.add_argument(
        "--namespace",
        default=env_default("NAMESPACE"),
        help=f"namespace of the {of} (default: $POD_NAMESPACE, the kubeconfig "
        "context's namespace, or 'default')",
    )
    parser.add_argument(
        "--workload",
        default=env_default("WORKLOAD"),
        metavar="KIND/NAME",
        help="the workload this pod belongs to, e.g. Deployment/www; decides the restic host "
        f"(default: $RESTIK_WORKLOAD, else {workload_from})",
    )
    parser.add_argument(
        "--kubeconfig",
        default=env_default("KUBECONFIG"),
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, "
        "or the in-cluster service account)",
    )
    parser.add_argument(
        "--restic",
        default=env_default("RESTIC", "restic"),
        help="the restic binary (default: restic on $PATH)",
    )
    parser.add_argument(
        "--cache-dir",
        default=env_default("CACHE_DIR"),
        help="restic cache and scratch directory (default: $RESTIC_CACHE_DIR, "
        "else a temporary directory)",
    )
    add_durations(parser, [("--lease-duration", lease_default, lease_help)])


def add_durations(parser: argparse.ArgumentParser, options) -> None:
    """Duration options (30s, 10m, 24h), each ``(flag, default, help)``, with their
    RESTIK_<FLAG> environment defaults."""
    for flag, default, text in options:
        env = flag.removeprefix("--").upper().replace("-", "_")
        parser.add_argument(
            flag, default=env_default(env, default), help=f"{text} (default {default})"
        )


def shared_settings(args: argparse.Namespace) -> dict:
    """The Settings fields of add_shared_arguments' options; ValueError names a bad one."""
    workload = None
    if args.workload:
        kind, sep, name = args.workload.partition("/")
        if not sep or not kind or not name:
            raise ValueError(f"--workload must be KIND/NAME, got {args.workload!r}")
        workload = (kind, name)
    return {
        "namespace": args.namespace,
        "workload": workload,
        "kubeconfig": args.kubeconfig,
        "restic": args.restic,
        "cache_dir": args.cache_dir,
        "lease_duration": max(2.0, parse_duration(args.lease_duration).total_seconds()),
        "log_level": args.log_level,
        "log_format": args.log_format,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `restik watch` (defaults from RESTIK_* environment variables)."""
    add_shared_arguments(
        parser, "Backup", "the pod's owner", "60s", "Lease duration for multi-replica workloads"
    )
    parser.add_argument(
        "--backup",
        default=env_default("BACKUP"),
        required=not env_default("BACKUP"),
        help="name of the Backup to follow (required unless $RESTIK_BACKUP is set)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(env_default("METRICS_PORT", "0")),
        help="serve /metrics and /healthz on this port, 0 = off (RESTIK_METRICS_PORT, default "
        "0; the injected sidecar gets spec.metricsPort, 9464 unless set)",
    )
    parser.add_argument(
        "--metrics-address",
        default=env_default("METRICS_ADDRESS", "0.0.0.0"),  # noqa: S104
        help="address to bind the metrics port to (default 0.0.0.0)",
    )
    add_durations(
        parser,
        [
            ("--lock-stale-after", "30m", "a repository lock older than this is stale"),
            (
                "--lock-wait",
                "10m",
                "how long a run waits for a repository locked by another run (a replica's "
                "prune) before it fails (restic >= 0.16: --retry-lock)",
            ),
            ("--resync", "60s", "re-read the Backup at least this often"),
            ("--stop-timeout", "20s", "on SIGTERM, how long restic may take to stop"),
            (
                "--run-timeout",
                "24h",
                "interrupt a restic command running longer than this, 0 = never",
            ),
            (
                "--backend-timeout",
                "5m",
                "interrupt a restic whose repository has answered no request for this long "
                "(restic 0.17+ retries each for 15 minutes), 0 = restic's own limit",
            ),
        ],
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings(
        **shared_settings(args),
        backup=args.backup,
        metrics_port=args.metrics_port,
        metrics_address=args.metrics_address,
        lock_stale_after=parse_duration(args.lock_stale_after),
        lock_wait=parse_duration(args.lock_wait).total_seconds(),
        resync=max(1.0, parse_duration(args.resync).total_seconds()),
        stop_timeout=parse_duration(args.stop_timeout).total_seconds(),
        run_timeout=parse_duration(args.run_timeout).total_seconds(),
        backend_timeout=parse_duration(args.backend_timeout).total_seconds(),
    )
