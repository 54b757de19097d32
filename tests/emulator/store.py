"""The thread-safe in-memory object store: metadata, resourceVersions, watch history, GC."""

from __future__ import annotations

import base64
import copy
import json
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import errors, rules
from .patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from .policy import CURRENT_USER, Attributes
from .resources import BUILTINS, ResourceType, crd_resource_types

Matcher = Callable[[dict[str, Any]], bool]
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_SYSTEM_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Entry:
    """A stored object and its serialisations (the object is never mutated once stored)."""

    __slots__ = ("body", "full", "obj")

    def __init__(self, obj: dict[str, Any]):
        self.obj = obj
        # built-in LIST items carry no kind/apiVersion, like the real server's
        self.body = _dumps({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})
        head = _dumps({"kind": obj["kind"], "apiVersion": obj["apiVersion"]})
        self.full = head[:-1] + "," + self.body[1:]

    @property
    def namespace(self) -> str:
        return self.obj["metadata"].get("namespace", "")

    @property
    def name(self) -> str:
        return self.obj["metadata"]["name"]

    def json(self, rt: ResourceType) -> str:
        if self.obj["apiVersion"] == rt.api_version:
            return self.full
        return _dumps({**self.obj, "apiVersion": rt.api_version})

    def item_json(self, rt: ResourceType) -> str:
        return self.body if rt.builtin else self.json(rt)

    def copy(self) -> dict[str, Any]:
        return json.loads(self.full)


@dataclass
class Event:
    rv: int
    key: tuple[str, str]
    type: str  # ADDED, MODIFIED, DELETED
    entry: Entry
    prev: Entry | None


class Store:
    def __init__(self, history_size: int = 10000):
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.rv = 1
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.objects: dict[tuple[str, str], dict[str, dict[str, Entry]]] = {}
        # One window of events per resource, as the API server keeps a watch cache per
        # resource: a busy kind (pods) does not push another kind's watchers out of theirs.
        self.history_size = history_size
        self.histories: dict[tuple[str, str], deque[Event]] = {}
        self.floors: dict[tuple[str, str], int] = {}  # events with rv > floor are kept
        self.owners: dict[str, set[tuple[tuple[str, str], str, str]]] = {}
        self.names = random.Random()  # generateName suffixes: not part of the fault seed
        self.stopped = False
        # Validating admission on create (Pod Security, ResourceQuota): each hook gets
        # (type, namespace, object) after defaulting and raises an ApiError to refuse.
        self.admission: list[Callable[[ResourceType, str, dict[str, Any]], None]] = []
        # ValidatingAdmissionPolicies (policy.py): on every create, update and delete, with
        # the requesting user; each hook raises an ApiError to refuse.
        self.validating: list[Callable[[Attributes], None]] = []
        for rt in BUILTINS:
            self.types[(rt.group, rt.version, rt.plural)] = rt
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(self.resolve("", "v1", "namespaces"), "", {"metadata": {"name": ns}})

    # -- types ----------------------------------------------------------------------------

    def resolve(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.types.get((group, version, plural))

    def find_type(self, api_version: str, kind_or_plural: str) -> ResourceType:
        group, _, version = api_version.rpartition("/")
        with self.lock:
            for rt in self.types.values():
                if rt.group == group and rt.version == version:
                    wanted = kind_or_plural.lower()
                    if wanted in (rt.kind.lower(), rt.plural, rt.singular, *rt.short_names):
                        return rt
        raise KeyError(f"no resource {kind_or_plural!r} in {api_version!r}")

    def group_versions(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for rt in self.types.values():
            if rt.version not in out.setdefault(rt.group, []):
                out[rt.group].append(rt.version)
        return out

    def refresh_crd_types(self) -> None:
        self.types = {k: v for k, v in self.types.items() if v.builtin}
        for entry in self._bucket(("apiextensions.k8s.io", "customresourcedefinitions")):
            for rt in crd_resource_types(entry.obj):
                self.types.setdefault((rt.group, rt.version, rt.plural), rt)

    # -- reading ---------------------------------------------------------------------------

    def _bucket(self, key: tuple[str, str], ns: str | None = None):
        by_ns = self.objects.get(key) or {}
        spaces = [ns] if ns is not None else sorted(by_ns)
        for space in spaces:
            names = by_ns.get(space) or {}
            for name in sorted(names):
                yield names[name]

    def lookup(self, rt: ResourceType, ns: str, name: str) -> Entry | None:
        return ((self.objects.get(rt.key) or {}).get(ns) or {}).get(name)

    def get(self, rt: ResourceType, ns: str, name: str) -> Entry:
        with self.lock:
            entry = self.lookup(rt, ns, name)
        if entry is None:
            raise errors.not_found(rt.group, rt.plural, name)
        return entry

    def list(
        self,
        rt: ResourceType,
        ns: str | None,
        match: Matcher | None = None,
        limit: int = 0,
        cont: str | None = None,
    ) -> tuple[list[Entry], int, str | None, int]:
        after = None
        if cont:
            try:
                after = tuple(json.loads(base64.b64decode(cont)))
            except (ValueError, TypeError):
                raise errors.bad_request("continue key is not valid") from None
        with self.lock:
            items = [
                e
                for e in self._bucket(rt.key, ns if rt.namespaced else None)
                if (match is None or match(e.obj))
                and (after is None or (e.namespace, e.name) > after)
            ]
            rv = self.rv
        token = None
        remaining = 0
        if limit and len(items) > limit:
            remaining = len(items) - limit
            items = items[:limit]
            last = items[-1]
            token = base64.b64encode(_dumps([last.namespace, last.name]).encode()).decode()
        return items, rv, token, remaining

    # -- writing ---------------------------------------------------------------------------

    def _commit(self, rt: ResourceType, obj: dict[str, Any], prev: Entry | None) -> Entry:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        entry = Entry(obj)
        ns, name = entry.namespace, entry.name
        self.objects.setdefault(rt.key, {}).setdefault(ns, {})[name] = entry
        self._index_owners(rt, prev, entry)
        self._record(Event(self.rv, rt.key, "MODIFIED" if prev else "ADDED", entry, prev))
        rt.hooks.after_commit(self)
        return entry

    def _record(self, event: Event) -> None:
        history = self.histories.get(event.key)
        if history is None:
            history = self.histories[event.key] = deque(maxlen=self.history_size)
        if len(history) == history.maxlen:
            self.floors[event.key] = history[0].rv
        history.append(event)
        self.cond.notify_all()

    def _index_owners(self, rt: ResourceType, prev: Entry | None, entry: Entry | None) -> None:
        for e, add in ((prev, False), (entry, True)):
            if e is None:
                continue
            ref = (rt.key, e.namespace, e.name)
            for owner in e.obj["metadata"].get("ownerReferences") or []:
                uid = owner.get("uid")
                if add:
                    self.owners.setdefault(uid, set()).add(ref)
                elif uid in self.owners:
                    self.owners[uid].discard(ref)

    def _prepare(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        """Defaulting and validation shared by create and update."""
        rt.hooks.defaults(obj)
        causes = rt.hooks.validate(rt, obj)
        if causes:
            raise errors.invalid(rt.group, rt.kind, obj["metadata"].get("name", ""), causes)

    def _check_body(self, rt: ResourceType, ns: str, obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise errors.bad_request("the object provided is not a JSON object")
        rules.check_types(obj)
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if kind and kind != rt.kind:
            raise errors.bad_request(
                f"the kind of the object ({kind}) does not match the kind on the URL ({rt.kind})"
            )
        if api_version and api_version.rpartition("/")[0] != rt.group:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rt.api_version})"
            )
        meta = obj.get("metadata") or {}
        body_ns = meta.get("namespace")
        if rt.namespaced and body_ns and ns and body_ns != ns:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        out = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": dict(meta)}
        out.update((k, v) for k, v in obj.items() if k not in ("kind", "apiVersion", "metadata"))
        if "status" in out:
            out["status"] = out.pop("status")
        if rt.namespaced:
            out["metadata"]["namespace"] = ns
        else:
            out["metadata"].pop("namespace", None)
        return out

    def create(
        self,
        rt: ResourceType,
        ns: str,
        body: Any,
        dry_run: bool = False,
        keep_status: bool = False,
    ) -> dict[str, Any]:
        obj = self._check_body(rt, ns, copy.deepcopy(body))
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        with self.lock:
            if rt.namespaced and self.lookup(self._ns_type(), "", ns) is None:
                raise errors.not_found("", "namespaces", ns)
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise errors.invalid(rt.group, rt.kind, "", [rules._required(
                        "metadata.name", "name or generateName is required")])  # fmt: skip
                for _ in range(100):
                    name = meta["generateName"] + "".join(self.names.choices(_NAME_CHARS, k=5))
                    if self.lookup(rt, ns, name) is None:
                        break
                meta["name"] = name
            causes = rt.hooks.validate_name(meta["name"])
            if causes:
                raise errors.invalid(rt.group, rt.kind, meta["name"], causes)
            if self.lookup(rt, ns, meta["name"]) is not None:
                raise errors.already_exists(rt.group, rt.plural, meta["name"])
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
                meta.pop(key, None)
            if rt.generation:
                meta["generation"] = 1
            else:
                meta.pop("generation", None)
            rt.hooks.on_create(obj)
            rt.hooks.initial_status(rt, obj, keep_status)
            self._prepare(rt, obj)
            for admit in self.admission:
                admit(rt, ns, obj)
            self._admit("CREATE", rt, ns, meta["name"], "", obj, None, dry_run)
            if dry_run:
                obj["metadata"]["resourceVersion"] = ""
                del obj["metadata"]["resourceVersion"]
                return obj
            return self._commit(rt, obj, None).copy()

    def _admit(
        self,
        operation: str,
        rt: ResourceType,
        ns: str,
        name: str,
        subresource: str,
        obj: dict[str, Any] | None,
        old: dict[str, Any] | None,
        dry_run: bool,
    ) -> None:
        if self.validating:
            request = Attributes(operation, rt, ns, name, subresource, obj, old, dry_run,
                                 CURRENT_USER.get())  # fmt: skip
            for admit in self.validating:
                admit(request)

    def _ns_type(self) -> ResourceType:
        return self.types[("", "v1", "namespaces")]

    def update(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        body: Any,
        subresource: str | None = None,
        dry_run: bool = False,
        _current: Entry | None = None,
    ) -> dict[str, Any]:
        new = self._check_body(rt, ns, copy.deepcopy(body))
        meta = new["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({name})"
            )
        meta["name"] = name
        with self.lock:
            old = self.lookup(rt, ns, name)
            if old is None:
                raise errors.not_found(rt.group, rt.plural, name)
            if _current is not None and old is not _current:
                raise errors.conflict(rt.group, rt.plural, name)
            rv = meta.get("resourceVersion")
            if rv:
                if rv != old.obj["metadata"]["resourceVersion"]:
                    raise errors.conflict(rt.group, rt.plural, name)
            elif not rt.unconditional_update:
                cause = rules._invalid(
                    "metadata.resourceVersion", "0x0", "must be specified for an update"
                )
                raise errors.invalid(rt.group, rt.kind, name, [cause])
            uid = meta.get("uid")
            if uid and uid != old.obj["metadata"]["uid"]:
                raise errors.conflict(
                    rt.group,
                    rt.plural,
                    name,
                    f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                    f"{old.obj['metadata']['uid']}",
                )
            current = old.copy()
            if subresource == "status":
                obj = copy.deepcopy(current)  # compared with current below: must not alias it
                if "status" in new:
                    obj["status"] = new["status"]
                else:
                    obj.pop("status", None)
            else:
                obj = new
                for key in _SYSTEM_META:
                    if key in current["metadata"]:
                        meta[key] = current["metadata"][key]
                    else:
                        meta.pop(key, None)
                if rt.status:
                    obj.pop("status", None)
                    if "status" in current:
                        obj["status"] = current["status"]
            obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            if "generation" in current["metadata"]:
                obj["metadata"]["generation"] = current["metadata"]["generation"]
            self._prepare(rt, obj)
            rt.hooks.on_update(obj, current, subresource, now())
            if rt.generation and self._spec_changed(rt, current, obj):
                obj["metadata"]["generation"] = current["metadata"].get("generation", 0) + 1
            self._admit("UPDATE", rt, ns, name, subresource or "", obj, current, dry_run)
            if obj == current:
                return current  # a no-op write: no new resourceVersion, no watch event
            if dry_run:
                return obj
            if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
                return self._delete_now(rt, old.namespace, name)
            return self._commit(rt, obj, old).copy()

    @staticmethod
    def _spec_changed(rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> bool:
        skip = {"metadata", "status"} if rt.status else {"metadata"}
        keys = (set(old) | set(new)) - skip
        return any(old.get(k) != new.get(k) for k in keys)

    def patch(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        content_type: str,
        patch: Any,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH]
        if rt.builtin:
            accepted.insert(2, STRATEGIC_PATCH)
        if content_type not in accepted or content_type == APPLY_PATCH:
            raise errors.unsupported_media_type(content_type, accepted)
        with self.lock:
            old = self.lookup(rt, ns, name)
            if old is None:
                raise errors.not_found(rt.group, rt.plural, name)
            current = old.copy()
            try:
                if content_type == JSON_PATCH:
                    patched = json_patch(current, patch)
                elif content_type == MERGE_PATCH:
                    if not isinstance(patch, dict):
                        raise errors.bad_request("merge patch must be a JSON object")
                    patched = merge_patch(current, patch)
                else:
                    patched = strategic_merge_patch(current, patch)
            except PatchError as exc:
                raise errors.invalid(
                    rt.group, rt.kind, name, [rules._invalid("patch", _dumps(patch), str(exc))]
                ) from None
            if not isinstance(patched, dict):
                raise errors.bad_request("the patched object is not a JSON object")
            meta = patched.get("metadata")
            if isinstance(meta, dict) and not meta.get("resourceVersion"):
                meta["resourceVersion"] = old.obj["metadata"]["resourceVersion"]
            return self.update(rt, ns, name, patched, subresource, dry_run, _current=old)

    def delete(
        self,
        rt: ResourceType,
        ns: str,
        name: str,
        dry_run: bool = False,
        propagation: str | None = None,
        preconditions: dict[str, Any] | None = None,
        admit: bool = True,
    ) -> tuple[dict[str, Any], bool]:
        """Returns (object, deleted now); objects with finalizers only get a deletionTimestamp.
        ``admit=False``: a delete the server makes itself (an eviction), which admission saw
        as the request that caused it."""
        with self.lock:
            old = self.lookup(rt, ns, name)
            if old is None:
                raise errors.not_found(rt.group, rt.plural, name)
            pre = preconditions or {}
            meta = old.obj["metadata"]
            if pre.get("uid") and pre["uid"] != meta["uid"]:
                raise errors.conflict(rt.group, rt.plural, name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, UID in object "
                    f"meta: {meta['uid']}")  # fmt: skip
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
                raise errors.conflict(rt.group, rt.plural, name,
                    f"Precondition failed: ResourceVersion in precondition: "
                    f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                    f"{meta['resourceVersion']}")  # fmt: skip
            if admit:
                self._admit("DELETE", rt, ns, name, "", None, old.copy(), dry_run)
            if meta.get("finalizers"):
                obj = old.copy()
                if not meta.get("deletionTimestamp"):
                    obj["metadata"]["deletionTimestamp"] = now()
                    obj["metadata"]["deletionGracePeriodSeconds"] = 0
                    if not dry_run:
                        return self._commit(rt, obj, old).copy(), False
                return obj, False
            if dry_run:
                return old.copy(), True
            return self._delete_now(rt, ns, name, propagation), True

    def _delete_now(
        self, rt: ResourceType, ns: str, name: str, propagation: str | None = None
    ) -> dict[str, Any]:
        old = self.objects[rt.key][ns].pop(name)
        self.rv += 1
        obj = old.copy()
        obj["metadata"]["resourceVersion"] = str(self.rv)
        entry = Entry(obj)
        self._index_owners(rt, old, None)
        self._record(Event(self.rv, rt.key, "DELETED", entry, old))
        rt.hooks.after_delete(self, obj)
        self._collect_garbage(obj["metadata"]["uid"], orphan=propagation == "Orphan")
        return entry.copy()

    def delete_namespace_contents(self, ns: str) -> None:
        """What the namespace controller does once a namespace is deleted (at once here)."""
        for key, by_ns in list(self.objects.items()):
            for child in list((by_ns.get(ns) or {}).values()):
                child_rt = self._type_for_key(key)
                if self.lookup(child_rt, ns, child.name) is child:
                    self._delete_now(child_rt, ns, child.name)

    def delete_custom_resources(self, key: tuple[str, str]) -> None:
        """A deleted CRD takes its objects and its served types with it."""
        for child in list(self._bucket(key)):
            self._delete_now(self._type_for_key(key), child.namespace, child.name)
        self.objects.pop(key, None)
        self.refresh_crd_types()

    def _type_for_key(self, key: tuple[str, str]) -> ResourceType:
        for rt in self.types.values():
            if rt.key == key:
                return rt
        raise KeyError(key)

    def _collect_garbage(self, owner_uid: str, orphan: bool) -> None:
        """The garbage collector, run synchronously: dependents go when their last owner goes."""
        for key, ns, name in sorted(self.owners.pop(owner_uid, set())):
            rt = self._type_for_key(key)
            dep = self.lookup(rt, ns, name)
            if dep is None:
                continue
            refs = dep.obj["metadata"].get("ownerReferences") or []
            others = [r for r in refs if r.get("uid") != owner_uid]
            alive = [r for r in others if r.get("uid") in self._live_uids(ns, r)]
            if orphan or alive:
                obj = dep.copy()
                if others:
                    obj["metadata"]["ownerReferences"] = others
                else:
                    obj["metadata"].pop("ownerReferences", None)
                self._commit(rt, obj, dep)
            elif dep.obj["metadata"].get("finalizers"):
                if not dep.obj["metadata"].get("deletionTimestamp"):
                    obj = dep.copy()
                    obj["metadata"]["deletionTimestamp"] = now()
                    obj["metadata"]["deletionGracePeriodSeconds"] = 0
                    self._commit(rt, obj, dep)
            else:
                self._delete_now(rt, ns, name)

    def _live_uids(self, ns: str, ref: dict[str, Any]) -> set[str]:
        group = ref.get("apiVersion", "").rpartition("/")[0]
        for rt in self.types.values():
            if rt.group == group and rt.kind == ref.get("kind"):
                entry = self.lookup(rt, ns if rt.namespaced else "", ref.get("name", ""))
                return {entry.obj["metadata"]["uid"]} if entry else set()
        return set()

    # -- writes by the emulated cluster (controllers, kubelet) ---------------------------------

    def mutate(self, rt: ResourceType, ns: str, name: str, change: Callable[[dict], Any]) -> bool:
        """Apply ``change`` to a copy of the object and store it as is (no validation, no
        generation bump: what a controller's status write or the scheduler's binding does).
        False when the object is gone or nothing changed."""
        with self.lock:
            old = self.lookup(rt, ns, name)
            if old is None:
                return False
            obj = old.copy()
            change(obj)
            if obj == old.obj:
                return False
            self._commit(rt, obj, old)
            return True

    def write_status(self, rt: ResourceType, ns: str, name: str, status: dict[str, Any]) -> bool:
        def change(obj: dict[str, Any]) -> None:
            obj["status"] = status

        return self.mutate(rt, ns, name, change)

    # -- watching ----------------------------------------------------------------------------

    def watch(
        self,
        rt: ResourceType,
        ns: str,
        match: Matcher | None,
        resource_version: str,
        deadline: float,
        name: str = "",
        bookmark_interval: float | None = None,
    ) -> Iterator[tuple[str, Any]]:
        """A watch as the watch cache serves it. Yields (ADDED|MODIFIED|DELETED, Entry),
        (BOOKMARK, resourceVersion) and, when the history no longer reaches back far enough,
        one (ERROR, ApiError 410 Expired) that ends it; ends at ``deadline`` or on stop.
        A bad resourceVersion raises at once (before the stream starts)."""

        def visible(entry: Entry | None) -> bool:
            if entry is None or (ns and entry.namespace != ns):
                return False
            if name and entry.name != name:
                return False
            return match is None or match(entry.obj)

        initial: list[Entry] = []
        with self.lock:
            if resource_version in ("", "0"):
                last = self.rv
                initial = [e for e in self._bucket(rt.key, ns or None) if visible(e)]
            else:
                try:
                    last = int(resource_version)
                except ValueError:
                    raise errors.bad_request(
                        f"invalid resource version: {resource_version}"
                    ) from None
        return self._stream(rt, visible, initial, last, deadline, bookmark_interval)

    def _stream(self, rt, visible, initial, last, deadline, bookmark_interval):
        for entry in initial:
            yield "ADDED", entry
        next_bookmark = time.monotonic() + (bookmark_interval or 0)
        while True:
            with self.cond:
                while not self.stopped and self._latest(rt.key) <= last:
                    until = deadline if bookmark_interval is None else min(deadline, next_bookmark)
                    if time.monotonic() >= until:
                        break
                    self.cond.wait(max(0.0, until - time.monotonic()))
                if self.stopped:
                    return
                try:
                    events = self.events_after(last, rt.key)
                except errors.ApiError as exc:
                    yield "ERROR", exc
                    return
                last = max(last, self.rv)
            for event in events:
                if event.key != rt.key:
                    continue
                now_in, was_in = visible(event.entry), visible(event.prev)
                if event.type == "DELETED":
                    kind = "DELETED" if was_in else None
                elif event.type == "ADDED" or not was_in:
                    kind = "ADDED" if now_in else None
                else:
                    kind = "MODIFIED" if now_in else "DELETED"
                if kind:
                    yield kind, event.entry
            if bookmark_interval is not None and time.monotonic() >= next_bookmark:
                yield "BOOKMARK", last
                next_bookmark = time.monotonic() + bookmark_interval
            if time.monotonic() >= deadline:
                return

    def _latest(self, key: tuple[str, str]) -> int:
        history = self.histories.get(key)
        return history[-1].rv if history else 0

    def events_after(self, rv: int, key: tuple[str, str]) -> list[Event]:
        """A resource's events newer than rv (caller holds the lock); raises 410 Expired
        when its window no longer reaches back that far."""
        floor = self.floors.get(key, 1)
        if rv < floor:
            raise errors.gone(f"too old resource version: {rv} ({floor + 1})")
        out = []
        for event in reversed(self.histories.get(key) or ()):
            if event.rv <= rv:
                break
            out.append(event)
        out.reverse()
        return out
