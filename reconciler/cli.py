"""The `restik` command line: run, watch, diff, inject, status."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from reconciler import __version__
from reconciler.api.constants import EXIT_ERROR
from reconciler.logs import env_default

# command -> "module:function" taking the parsed arguments, returning the exit code
COMMANDS = {
    "run": "reconciler.controller.loop:main",
    "watch": "sidecar.main:run",
    "status": "reconciler.overview.show:run",
    "diff": "reconciler.offline.command:run",
    "inject": "reconciler.offline.command:run",
    "restore-run": "sidecar.restore_start:run",
    "snapshots": "reconciler.restores.snapshots:run",
    "backup-now": "reconciler.restores.backup_now:run",
    "restore": "reconciler.restores.restore_cmd:run",
}


def add_offline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        dest="files",
        metavar="FILE|DIR|-",
        help="manifests to read: a file, a directory (recursively) or - for stdin "
        "(required; may repeat)",
    )
    parser.add_argument(
        "--image",
        default=env_default("SIDECAR_IMAGE"),
        help=f"sidecar image (RESTIK_SIDECAR_IMAGE, default restik:{__version__}); must match "
        "the controller's for no drift",
    )


# `restik restore-run` is a short-lived process whose start and end are part of every
# restore's time (bench/restore.py): its parser alone (not every command's options), and no
# interpreter teardown once it is done (see main).
QUICK_COMMANDS = {"restore-run"}


def _top_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(
        prog="restik",
        description="Back up the volumes of Kubernetes workloads with restic, declared in git.",
    )
    parser.add_argument("--version", action="version", version=f"restik {__version__}")
    return parser, parser.add_subparsers(dest="command", metavar="COMMAND")


def _add_restore_run(sub: argparse._SubParsersAction) -> None:
    from sidecar.restore_options import add_arguments as add_restore_run_arguments

    restore_run = sub.add_parser(
        "restore-run",
        help="run one Restore for this pod's host, once (the restik-restore init container "
        "and the restore Job; exit 0 restored, 1 failed)",
    )
    add_restore_run_arguments(restore_run)


def build_parser() -> argparse.ArgumentParser:
    from reconciler.controller.options import add_arguments as add_run_arguments
    from reconciler.overview.options import add_arguments as add_status_arguments
    from reconciler.restores.options import (
        add_backup_now_arguments,
        add_restore_arguments,
        add_snapshots_arguments,
    )
    from sidecar.options import add_arguments as add_watch_arguments

    parser, sub = _top_parser()

    run = sub.add_parser("run", help="the controller: keep sidecars in line with Backups")
    add_run_arguments(run)

    watch = sub.add_parser("watch", help="the sidecar: run restic on a Backup's schedule")
    add_watch_arguments(watch)

    diff = sub.add_parser(
        "diff", help="offline: show planned changes to manifests (exit 0 none, 1 changes, 2 error)"
    )
    add_offline_arguments(diff)
    diff.add_argument(
        "--strict",
        action="store_true",
        help="treat warnings (e.g. a label naming a Backup that is not among the inputs) as "
        "errors: exit 2",
    )
    inject = sub.add_parser(
        "inject",
        help="offline: print the manifests with sidecars added/removed; "
        "also a kustomize KRM function (ResourceList on stdin)",
    )
    add_offline_arguments(inject)

    status = sub.add_parser(
        "status",
        help="every Backup's health in one table (exit 0 all healthy, 1 some not, 2 error)",
    )
    add_status_arguments(status)

    _add_restore_run(sub)

    snapshots = sub.add_parser(
        "snapshots",
        help="the snapshots of a Backup's repository (your kubeconfig, the Backup's Secret)",
    )
    add_snapshots_arguments(snapshots)
    backup_now = sub.add_parser(
        "backup-now",
        help="ask a Backup's sidecars for a backup now (--wait: exit 0 success, 1 failed)",
    )
    add_backup_now_arguments(backup_now)
    restore = sub.add_parser(
        "restore",
        help="print a Restore manifest to commit, or --apply --wait it (exit 0 Succeeded, "
        "1 Failed)",
    )
    add_restore_arguments(restore)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The exit code. With ``argv`` None (the process's own command line), a quick command
    ends the process itself once done: logs and output flushed, no interpreter teardown
    (freeing every loaded module's objects costs ~0.1 s, measured on `restore-run`)."""
    words = sys.argv[1:] if argv is None else argv
    if words[:1] and words[0] in QUICK_COMMANDS:
        parser, sub = _top_parser()
        _add_restore_run(sub)
    else:
        parser = build_parser()
    args = parser.parse_args(argv)
    if args.command not in COMMANDS:
        parser.print_help()
        return EXIT_ERROR
    module, _, function = COMMANDS[args.command].partition(":")
    # Each command loads its own code only when it runs: `restik watch` must not load the
    # controller's (tests/test_sidecar_imports.py), so the module is imported by name here.
    code = getattr(importlib.import_module(module), function)(args)
    if argv is None and args.command in QUICK_COMMANDS:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
