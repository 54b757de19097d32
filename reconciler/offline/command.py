"""`restik diff` / `restik inject` from the command line."""

from __future__ import annotations

import argparse
import io
import sys

from reconciler.api.constants import EXIT_ERROR
from reconciler.controller.render import DEFAULT_IMAGE, Renderer
from reconciler.offline import krm
from reconciler.offline.diff import run_diff
from reconciler.offline.inject import run_inject
from reconciler.offline.manifests import ManifestError, parse_source


def _renderer(image: str | None):
    return Renderer(image=image or DEFAULT_IMAGE)


def run(args: argparse.Namespace) -> int:
    """`restik diff` and `restik inject` (also a kustomize KRM function on stdin)."""
    command = args.command
    files = args.files
    if not files:
        if command == "inject" and not sys.stdin.isatty():
            files = ["-"]
        else:
            print(f"restik {command}: -f FILE|DIR|- is required", file=sys.stderr)
            return EXIT_ERROR
    if command == "inject" and files == ["-"]:
        # kustomize's exec functions send a ResourceList; a plain stream is just manifests.
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
        return run_inject(["-"], _renderer(args.image), stdin=io.StringIO(text))
    if command == "diff":
        return run_diff(files, _renderer(args.image), strict=args.strict)
    return run_inject(files, _renderer(args.image))
