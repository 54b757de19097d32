"""The cycle benchmarks' baseline: the controller's LISTs and nothing else, in a clean process.

    python bench/bare_lists.py KUBECONFIG LISTS_JSON

Reads one line per pass on stdin, answers with the pass's seconds on stdout. It uses the
controller's own client (reconciler.kube.Kube: pykube-ng, requests, the retry policy) and
keeps every answer until the pass ends, as observe() does; but it runs in its own process,
so its garbage collections walk only its own objects, not the controller's caches.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.kube import Kube


def bare_pass(kube: Kube, lists: list) -> int:
    answers = [kube.request("GET", path, params=query or None) for path, query in lists]
    return sum(len(a.get("items") or []) for a in answers)


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
