"""Shards of `restik run`: which namespaces one controller of N reconciles, and a client that
shows it only those (filtered after each cluster-wide LIST and watch)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache

from reconciler.kube.client import continued
from reconciler.kube.resource import BACKUPS, ROLEBINDINGS, WORKLOADS, Resource


@lru_cache(maxsize=65_536)
def shard_of(namespace: str, shards: int) -> int:
    """The shard of a namespace: SHA-256 of its name, first 8 bytes, mod ``shards``. Stable
    across processes, machines and Python versions (never Python's salted hash())."""
    digest = hashlib.sha256(namespace.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shards


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 ≤ index < count). Everything of one namespace (its
    Backups, workloads, RoleBindings, pods) is in one shard; cluster-scoped objects (the CRD)
    are in every shard."""

    count: int = 1
    index: int = 0

    def __post_init__(self):
        if self.count < 1:
            raise ValueError(f"--shards: must be at least 1, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"--shard-index: {self.index} is not a shard of {self.count} "
                f"(0 to {self.count - 1})"
            )

    @property
    def sharded(self) -> bool:
        return self.count > 1

    def owns(self, namespace: str | None) -> bool:
        return not namespace or self.count == 1 or shard_of(namespace, self.count) == self.index

    def owns_object(self, obj: dict) -> bool:
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        return self.owns((meta or {}).get("namespace") if isinstance(meta, dict) else None)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


NAMESPACES = Resource("v1", "namespaces", "Namespace")
# The cluster-wide collections the cycle LISTs, by path: with per_namespace, read instead as
# one LIST per namespace of the shard.
COLLECTIONS = {r.path(): r for r in (BACKUPS, ROLEBINDINGS, *WORKLOADS.values())}
NAMESPACES_TTL = 5.0  # seconds one LIST of namespaces serves (the LISTs of one cycle)


@dataclass
class ShardKube:
    """The controller's client, seen through one shard: LISTs (paged or not) and watches keep
    only the shard's objects; every other call goes to ``kube`` unchanged.

    The API server cannot select by a namespace's hash, so a cluster-wide LIST sends every
    object to every shard, which decodes all of them and plans and writes only its own.
    With ``per_namespace`` a cluster-wide LIST of the cycle (Backups, workloads,
    RoleBindings) is read as one LIST per namespace of the shard instead (the namespaces
    from one LIST of namespaces every NAMESPACES_TTL): each shard then reads only its own
    objects, at the price of one request per namespace and kind. Watches stay cluster-wide
    (a handful of streams), filtered as they arrive."""

    kube: object
    shard: Shard
    per_namespace: bool = False
    dropped: int = field(default=0)  # objects of other shards seen (for tests and stats)
    clock: object = field(default=time.monotonic, repr=False)
    _namespaces: tuple = field(default=(-1.0, ()), repr=False)

    def __getattr__(self, name):
        return getattr(self.kube, name)

    def _keep(self, items: Iterable[dict]) -> list[dict]:
        """The shard's items; ``items`` may be a lazy page (kube.client.ListItems): each is
        decoded, kept or dropped in turn, never all at once."""
        kept = []
        for i in items:
            if self.shard.owns_object(i):
                kept.append(i)
            else:
                self.dropped += 1
        return kept

    def list(self, *args, **kwargs) -> dict:
        listing = self.kube.list(*args, **kwargs)
        if isinstance(listing, dict) and isinstance(listing.get("items"), list):
            listing["items"] = self._keep(listing["items"])
        return listing

    def list_pages(
        self, path: str, label_selector: str | None = None, limit: int = 500
    ) -> Iterator[tuple[str, list[dict]]]:
        res = COLLECTIONS.get(path) if self.per_namespace else None
        namespaces = self.own_namespaces() if res is not None else ()
        if not namespaces:
            for rv, items in self.kube.list_pages(path, label_selector, limit):
                yield rv, self._keep(items)
            return
        # The first LIST's resourceVersion is the oldest: a watch that resumes from it
        # misses nothing of the later ones (it may see a change twice, which is harmless).
        # Each namespace's first page is asked for while the previous namespace is being
        # planned: with a request per namespace and kind, the round trips (the API server's
        # work and the network) would otherwise add up to most of the shard's cycle.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="restik-list") as ahead:
            paths = [res.path(ns) for ns in namespaces]
            pending = ahead.submit(self.kube.list, paths[0], label_selector, limit)
            for i, path in enumerate(paths):
                listing = pending.result()
                if i + 1 < len(paths):
                    pending = ahead.submit(self.kube.list, paths[i + 1], label_selector, limit)
                yield from continued(self.kube, path, label_selector, limit, listing)

    def expire_namespaces(self) -> None:
        """The next per-namespace LIST lists the namespaces first (as every cycle does when
        cycles are further apart than NAMESPACES_TTL)."""
        self._namespaces = (-1.0, ())

    def own_namespaces(self) -> tuple[str, ...]:
        """The names of the shard's namespaces, sorted; one LIST of namespaces per TTL."""
        at, names = self._namespaces
        now = self.clock()
        if at < 0 or now - at > NAMESPACES_TTL:
            names = tuple(
                sorted(
                    n
                    for page in self.kube.list_pages(NAMESPACES.path())
                    for n in (o["metadata"]["name"] for o in page[1])
                    if self.shard.owns(n)
                )
            )
            self._namespaces = (now, names)
        return names

    def watch(self, *args, **kwargs) -> Iterator[dict]:
        for event in self.kube.watch(*args, **kwargs):
            obj = event.get("object")
            if event.get("type") in ("ADDED", "MODIFIED", "DELETED") and isinstance(obj, dict):
                if not self.shard.owns_object(obj):
                    # Another shard's: only its resourceVersion, so the watch resumes past it.
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": rv}}}
                    continue
            yield event
