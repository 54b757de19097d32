"""Which watch events can change the plan: a fingerprint of what the planner reads of a
workload, and a bounded memory of the last fingerprint seen per object."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping

from reconciler.api.constants import CONFIG_LABEL
from reconciler.controller.podtemplate import controller_owner

# Relevance of one workload event (see Relevance.classify)
IRRELEVANT = "irrelevant"
RELEVANT = "relevant"
UNKNOWN = "unknown"  # never seen since the start: the planner decides on the event's object


def fingerprint(obj: Mapping) -> int:
    """A 64-bit hash of everything of a workload that the planner (and the restart decision)
    reads: its kind, the config label, its controller owner, the pod template (restik's hash
    annotation is in it), the StatefulSet's volumeClaimTemplates and the update strategy.

    Not in it, on purpose: status (readiness, observedGeneration), spec.replicas (a scale
    bumps metadata.generation but changes no template), other labels and annotations of the
    workload, resourceVersion, managedFields. Two objects with the same fingerprint plan the
    same."""
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    labels = meta.get("labels")
    label = labels.get(CONFIG_LABEL) if isinstance(labels, Mapping) else None
    spec = obj.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    strategy = spec.get("updateStrategy")
    what = [
        obj.get("kind"),
        label,
        controller_owner(obj),
        strategy.get("type") if isinstance(strategy, Mapping) else None,
        spec.get("template"),
        spec.get("volumeClaimTemplates"),
    ]
    text = json.dumps(what, sort_keys=True, separators=(",", ":"), default=str)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Relevance:
    """The last fingerprint seen per workload key, at most ``limit`` of them (least recently
    seen dropped first). Not thread-safe: the loop calls it under its own lock."""

    def __init__(self, limit: int = 20_000):
        self.limit = limit
        self._seen: OrderedDict[tuple, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def classify(self, key: tuple, obj: Mapping) -> str:
        """IRRELEVANT when ``obj`` plans as the last version seen of ``key`` did, RELEVANT when
        it may plan differently, UNKNOWN when ``key`` was not seen since the start (or was
        forgotten). Remembers ``obj``'s fingerprint either way."""
        fp = fingerprint(obj)
        last = self._seen.get(key)
        self.remember(key, fp)
        if last is None:
            return UNKNOWN
        return IRRELEVANT if last == fp else RELEVANT

    def remember(self, key: tuple, fp: int) -> None:
        self._seen[key] = fp
        self._seen.move_to_end(key)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)

    def forget(self, key: tuple) -> None:
        self._seen.pop(key, None)

    def clear(self) -> None:
        self._seen.clear()
