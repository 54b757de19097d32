"""Options of `restik snapshots`, `restik backup-now` and `restik restore`: stdlib only (the
CLI builds every command's parser)."""

from __future__ import annotations

import argparse

from reconciler.logs import env_default


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("backup", metavar="BACKUP", help="name of the Backup")
    parser.add_argument(
        "-n",
        "--namespace",
        default=env_default("NAMESPACE"),
        help="namespace of the Backup (default: the kubeconfig context's, else 'default')",
    )
    parser.add_argument(
        "--kubeconfig",
        default=env_default("KUBECONFIG"),
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)",
    )


def add_snapshots_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--host", help="only the snapshots of this host")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--restic", default=env_default("RESTIC", "restic"), help="the restic binary"
    )


def add_backup_now_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument(
        "--wait",
        action="store_true",
        help="follow until the run's Event; exit 0 when it succeeded, 1 when it failed",
    )
    parser.add_argument(
        "--timeout",
        default="30m",
        help="with --wait: give up after this long (default 30m; exit 2)",
    )
