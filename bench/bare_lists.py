"""The cycle benchmarks' baseline: the controller's LISTs and nothing else, in a clean process.

    python bench/bare_lists.py KUBECONFIG LISTS_JSON

Reads one line per pass on stdin, answers with the pass's seconds on stdout. It uses the
controller's own client (reconciler.kube.client.Kube: new-pykube, requests, the retry policy),
decodes each answer and drops it: the least any controller built on that client must do.
It runs in its own process, so its garbage collections walk only its own objects.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.kube.client import Kube


def bare_pass(kube: Kube, lists: list) -> int:
    """Each LIST fetched and decoded, its items counted, the answer dropped."""
    items = 0
    for path, query in lists:
        items += len(kube.request("GET", path, params=query or None).get("items") or [])
    return items


def main(argv: list[str]) -> int:
    kube = Kube.connect(argv[0])
    lists = json.loads(argv[1])
    for _ in sys.stdin:
        t = time.perf_counter()
        items = bare_pass(kube, lists)
        seconds = time.perf_counter() - t
        sys.stdout.write(f"{seconds} {items}\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
