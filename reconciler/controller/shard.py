"""Shards of `restik run`: which namespaces one controller of N reconciles, and a client that
shows it only those (filtered after each cluster-wide LIST and watch)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache


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


@dataclass
class ShardKube:
    """The controller's client, seen through one shard: LISTs (paged or not) and watches keep
    only the shard's objects; every other call goes to ``kube`` unchanged. The API server
    still sends every object of a cluster-wide LIST (it cannot select by a namespace's hash):
    each shard decodes all of them and plans and writes only its own."""

    kube: object
    shard: Shard
    dropped: int = field(default=0)  # objects of other shards seen (for tests and stats)

    def __getattr__(self, name):
        return getattr(self.kube, name)

    def _keep(self, items: list[dict]) -> list[dict]:
        kept = [i for i in items if self.shard.owns_object(i)]
        self.dropped += len(items) - len(kept)
        return kept

    def list(self, *args, **kwargs) -> dict:
        listing = self.kube.list(*args, **kwargs)
        if isinstance(listing, dict) and isinstance(listing.get("items"), list):
            listing["items"] = self._keep(listing["items"])
        return listing

    def list_pages(self, *args, **kwargs) -> Iterator[tuple[str, list[dict]]]:
        for rv, items in self.kube.list_pages(*args, **kwargs):
            yield rv, self._keep(items)

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
