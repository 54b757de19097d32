"""The `restik` command line: run, watch, diff, inject, status."""

from __future__ import annotations

import argparse
import sys

from reconciler import __version__
from reconciler.api.constants import EXIT_ERROR
from reconciler.logs import env_default


def add_offline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        dest="files",
        metavar="FILE|DIR|-",
        help="manifests to read: a file, a directory (recursively) or - for stdin",
    )
    parser.add_argument(
        "--image",
        default=env_default("SIDECAR_IMAGE"),
        help="sidecar image (RESTIK_SIDECAR_IMAGE); must match the controller's for no drift",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="restik",
        description="Back up the volumes of Kubernetes workloads with restic, declared in git.",
    )
    parser.add_argument("--version", action="version", version=f"restik {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="the controller: keep sidecars in line with Backups")
    _add_run_arguments(run)

    watch = sub.add_parser("watch", help="the sidecar: run restic on a Backup's schedule")
    _add_watch_arguments(watch)

    diff = sub.add_parser(
        "diff", help="offline: show planned changes to manifests (exit 0 none, 1 changes, 2 error)"
    )
    add_offline_arguments(diff)
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
    from reconciler.overview.options import add_arguments as add_status_arguments

    add_status_arguments(status)
    return parser


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    from reconciler.controller.options import add_arguments

    add_arguments(parser)


def _add_watch_arguments(parser: argparse.ArgumentParser) -> None:
    from sidecar.options import add_arguments

    add_arguments(parser)


def _renderer(image: str | None):
    from reconciler.controller.render import DEFAULT_IMAGE, Renderer

    return Renderer(image=image or DEFAULT_IMAGE)


def _offline(args: argparse.Namespace, command: str) -> int:
    from reconciler.offline.diff import run_diff
    from reconciler.offline.inject import run_inject

    files = args.files
    if not files:
        if command == "inject" and not sys.stdin.isatty():
            files = ["-"]
        else:
            print(f"restik {command}: -f FILE|DIR|- is required", file=sys.stderr)
            return EXIT_ERROR
    if command == "inject" and files == ["-"]:
        # kustomize's exec functions send a ResourceList; a plain stream is just manifests.
        from reconciler.offline import krm
        from reconciler.offline.manifests import ManifestError, parse_source

        text = sys.stdin.read()
        try:
            source = parse_source("<stdin>", text)
        except ManifestError as exc:
            print(f"restik: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        if len(source.documents) == 1 and krm.is_resource_list(source.documents[0].data):
            return krm.run_function(
                text, lambda image: _renderer(args.image or image), sys.stdout, sys.stderr
            )
        import io

        return run_inject(["-"], _renderer(args.image), stdin=io.StringIO(text))
    run = run_diff if command == "diff" else run_inject
    return run(files, _renderer(args.image))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("diff", "inject"):
        return _offline(args, args.command)
    if args.command == "run":
        from reconciler.controller.loop import main as run_main

        return run_main(args)
    if args.command == "status":
        from reconciler.overview.show import run as status_run

        return status_run(args)
    if args.command == "watch":
        from sidecar.main import run as watch_run

        return watch_run(args)
    parser.print_help()
    return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
