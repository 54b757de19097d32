"""`restik inject`: the manifests with sidecars added or removed, as the controller would."""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.api.constants import EXIT_ERROR, EXIT_OK
from reconciler.controller.render import Renderer
from reconciler.offline.diff import OfflineResult, report, run_offline
from reconciler.offline.manifests import Source, dump_stream


def apply_replacements(sources: list[Source], replacements: dict[int, Mapping]) -> None:
    for source in sources:
        for doc in source.documents:
            data = doc.data
            if id(data) in replacements:
                doc.data = replacements[id(data)]
            elif data.get("kind") == "List" and isinstance(data.get("items"), list):
                items = data["items"]
                for i, item in enumerate(items):
                    if id(item) in replacements:
                        items[i] = replacements[id(item)]


def run_inject(paths: list[str], renderer: Renderer, stdout=None, stderr=None, stdin=None) -> int:
    """Write the manifests with sidecars added or removed; on any error write nothing."""
    return run_offline(paths, renderer, _write_injected, stdout, stderr, stdin)


def _write_injected(sources: list[Source], result: OfflineResult, stdout, stderr) -> int:
    report(result.warnings, "warning", stderr)
    if result.errors:
        report(result.errors, "error", stderr)
        return EXIT_ERROR
    apply_replacements(sources, result.replacements)
    stdout.write(dump_stream(sources))
    return EXIT_OK
