"""Shards of `restik run`: which namespaces one controller of N reconciles, and a client that
shows it only those (filtered after each LIST and watch, whatever the server sent)."""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlencode

from reconciler.controller.options import SHARD_LISTS
from reconciler.kube.client import ApiError, continued
from reconciler.kube.resource import BACKUPS, RESTORES, ROLEBINDINGS, ROLES, WORKLOADS, Resource

log = logging.getLogger("restik.controller")


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
# The cluster-wide collections the cycle LISTs, by path: with lists="namespace", read instead
# as one LIST per namespace of the shard.
COLLECTIONS = {r.path(): r for r in (BACKUPS, ROLEBINDINGS, *WORKLOADS.values())}
# With lists="exclude", these cluster-wide LISTs (paged or not) carry a fieldSelector that
# leaves out the other shards' namespaces.
EXCLUDABLE = frozenset({*COLLECTIONS, ROLES.path(), RESTORES.path()})
NAMESPACES_TTL = 5.0  # seconds one LIST of namespaces serves (the LISTs of one cycle)
# The longest fieldSelector (URL-encoded, "fieldSelector=" included) lists="exclude" sends:
# 32 KiB, ~35 bytes per excluded namespace (`team-123`), so ~900 namespaces of the other
# shards (~1,400 in all with 3 shards). kube-apiserver takes 1 MiB of request line and
# headers (Go's http.DefaultMaxHeaderBytes) and an in-cluster controller reaches it through
# kube-proxy (TCP), but an HTTP proxy in front of it may take less (nginx and Apache 8 KiB
# of request line by default): when the server answers 414 (URI Too Long) or 431 (Request
# Header Fields Too Large), the shard lowers its own limit below what was refused and reads
# per namespace from then on. Beyond the limit, too, it reads per namespace (the Roles and
# Restores, few and small: cluster-wide, filtered).
EXCLUDE_MAX_QUERY = 32 * 1024
TOO_LONG = (414, 431)


def query_bytes(selector: str) -> int:
    """The bytes a fieldSelector adds to a request's query string (URL-encoded)."""
    return len(urlencode({"fieldSelector": selector}))


def exclusion(namespaces) -> str:
    """The fieldSelector that leaves out ``namespaces``: its requirements are ANDed. There is
    no way to say the opposite (the shard's own namespaces): field selectors know only =, ==
    and !=, no `in`, and two = on one field match nothing."""
    return ",".join(f"metadata.namespace!={ns}" for ns in namespaces)


@dataclass
class ShardKube:
    """The controller's client, seen through one shard: LISTs (paged or not) and watches keep
    only the shard's objects; every other call goes to ``kube`` unchanged.

    The API server cannot select by a namespace's hash, so with ``lists="cluster"`` a
    cluster-wide LIST sends every object to every shard, which decodes all of them and plans
    and writes only its own. With ``lists="namespace"`` a cluster-wide LIST of the cycle
    (Backups, workloads, RoleBindings) is read as one LIST per namespace of the shard instead
    (the namespaces from one LIST of namespaces every NAMESPACES_TTL): each shard then reads
    only its own objects, at the price of one request per namespace and kind. With
    ``lists="exclude"`` the cycle's cluster-wide LISTs stay (as many requests as one
    controller) and ask the server to leave out the namespaces of the other shards
    (``fieldSelector=metadata.namespace!=a,...``, from the same LIST of namespaces); when
    that selector would be longer than EXCLUDE_MAX_QUERY, it reads per namespace. Whatever
    the mode, every item is checked against the shard's hash: a namespace created after the
    LIST of namespaces is in no exclusion, and its objects reach every shard, which keeps
    only its own. Watches stay cluster-wide (a handful of streams), filtered as they
    arrive; with lists="exclude" they carry the same fieldSelector as the LISTs."""

    kube: object
    shard: Shard
    lists: str = "cluster"
    dropped: int = field(default=0)  # objects of other shards seen (for tests and stats)
    clock: object = field(default=time.monotonic, repr=False)
    _namespaces: tuple = field(default=(-1.0, ()), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # watch threads
    max_query: int = field(default=-1)  # EXCLUDE_MAX_QUERY, or less once a server refused it

    def __post_init__(self):
        if self.lists not in SHARD_LISTS:
            raise ValueError(
                f"--shard-lists: {self.lists!r} is not one of {', '.join(SHARD_LISTS)}"
            )

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

    def list(self, path: str, *args, **kwargs) -> dict:
        listing = None
        if "field_selector" not in kwargs and (selector := self.excluding(path)):
            try:
                listing = self.kube.list(path, *args, **kwargs, field_selector=selector)
            except ApiError as exc:
                if not self._refused(exc, path, selector):
                    raise
        if listing is None:
            listing = self.kube.list(path, *args, **kwargs)
        if isinstance(listing, dict) and isinstance(listing.get("items"), list):
            listing["items"] = self._keep(listing["items"])
        return listing

    def excluding(self, path: str) -> str | None:
        """With lists="exclude", the fieldSelector of a LIST of ``path``: None for a path that
        is not one of the cycle's cluster-wide LISTs, or when it would be too long."""
        if self.lists != "exclude" or path not in EXCLUDABLE:
            return None
        others = self.namespaces(own=False)
        selector = exclusion(others)
        limit = EXCLUDE_MAX_QUERY if self.max_query < 0 else self.max_query
        if not others or query_bytes(selector) > limit:
            return None
        return selector

    def _refused(self, exc: ApiError, path: str, selector: str) -> bool:
        """Whether the server (or a proxy before it) refused a request for the length of its
        field selector; if so, no selector that long is sent again."""
        if exc.status not in TOO_LONG:
            return False
        size = query_bytes(selector)
        with self._lock:
            limit = EXCLUDE_MAX_QUERY if self.max_query < 0 else self.max_query
            self.max_query = min(limit, size - 1)
        log.warning(
            "shard %s: the API server refused a request for %s with a field selector of %d "
            "bytes (%d %s); reading without one from now on",
            self.shard, path, size, exc.status, exc.reason,
        )  # fmt: skip
        return True

    def list_pages(
        self, path: str, label_selector: str | None = None, limit: int = 500
    ) -> Iterator[tuple[str, list[dict]]]:
        selector = self.excluding(path)
        if selector:
            pages = self.kube.list_pages(path, label_selector, limit, field_selector=selector)
            sent = False
            try:
                for rv, items in pages:
                    sent = True
                    yield rv, self._keep(items)
                return
            except ApiError as exc:
                # A later page's continue token made it too long: the next LIST reads per
                # namespace, this one fails (its first pages are already planned).
                if not self._refused(exc, path, selector) or sent:
                    raise
        res = COLLECTIONS.get(path) if self.lists != "cluster" else None
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
        return self.namespaces(own=True)

    def namespaces(self, own: bool) -> tuple[str, ...]:
        """The names of the shard's namespaces (``own``) or of the other shards', sorted; one
        LIST of namespaces per TTL."""
        with self._lock:
            at, names = self._namespaces
            now = self.clock()
            if at < 0 or now - at > NAMESPACES_TTL:
                names = tuple(
                    sorted(
                        o["metadata"]["name"]
                        for page in self.kube.list_pages(NAMESPACES.path())
                        for o in page[1]
                    )
                )
                self._namespaces = (now, names)
        return tuple(n for n in names if self.shard.owns(n) == own)

    def watch(self, path: str, *args, params=None, **kwargs) -> Iterator[dict]:
        """The watch of ``path``, with lists="exclude" narrowed as its LIST is (the other
        shards' events are then not even sent), and filtered by the shard's hash."""
        events = None
        if not (params or {}).get("fieldSelector") and (selector := self.excluding(path)):
            narrowed = {**(params or {}), "fieldSelector": selector}
            events = self.kube.watch(path, *args, **kwargs, params=narrowed)
            try:
                first = next(events, None)  # the request is made here
            except ApiError as exc:
                if not self._refused(exc, path, selector):
                    raise
                events = None
            else:
                events = itertools.chain(() if first is None else (first,), events)
        if events is None:
            if params is not None:
                kwargs["params"] = params
            events = self.kube.watch(path, *args, **kwargs)
        for event in events:
            obj = event.get("object")
            if event.get("type") in ("ADDED", "MODIFIED", "DELETED") and isinstance(obj, dict):
                if not self.shard.owns_object(obj):
                    # Another shard's: only its resourceVersion, so the watch resumes past it.
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": rv}}}
                    continue
            yield event
