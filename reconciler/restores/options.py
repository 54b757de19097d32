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


def add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument(
        "--to",
        required=True,
        metavar="KIND/NAME|pvc/NAME",
        help="the target: a workload (in place, e.g. StatefulSet/db) or pvc/CLAIM",
    )
    parser.add_argument("--name", help="the Restore's name (default: <backup>-<time>)")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--as-of", metavar="RFC3339", help="the newest snapshot at or before")
    when.add_argument("--snapshot", metavar="ID", help="one snapshot id (single-host targets)")
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="TARGET=SOURCE",
        help="map a target host to a source host (repeatable)",
    )
    parser.add_argument("--include", action="append", default=[], metavar="PATH")
    parser.add_argument("--exclude", action="append", default=[], metavar="PATH")
    parser.add_argument("--delete", action="store_true", help="remove files not in the snapshot")
    parser.add_argument("--verify", action="store_true", help="read the restored files back")
    parser.add_argument(
        "--command",
        dest="restore_command",  # args.command is the subcommand's name (reconciler/cli.py)
        metavar="'PROGRAM ARGS'",
        help="a Backup of a command's output (a dump): pipe it into this command in the "
        "target's pods (spec.command), e.g. 'psql -X -d postgres'; split into words as a "
        "shell would, no shell runs it",
    )
    parser.add_argument(
        "--container", help="with --command: the container it runs in (spec.command.container)"
    )
    parser.add_argument(
        "--command-timeout",
        metavar="DURATION",
        help="with --command: how long one pod's restore may take (default 1h)",
    )
    parser.add_argument(
        "-o", "--output", choices=("yaml", "json"), default="yaml", help="manifest format"
    )
    parser.add_argument(
        "--apply", action="store_true", help="create the Restore instead of printing it"
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="with --apply: show progress until it ends (exit 0 Succeeded, 1 Failed)",
    )
    parser.add_argument("--timeout", default="6h", help="with --wait: give up after (exit 2)")
