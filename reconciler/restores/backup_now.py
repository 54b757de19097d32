"""`restik backup-now BACKUP [--wait]`: ask the Backup's sidecars for a run now (a trigger
annotation) and, with --wait, follow it until every host of the Backup's workloads (each
pod of a StatefulSet, each node of a DaemonSet, one replica of the other kinds) served it."""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from datetime import UTC, datetime

from reconciler.api.constants import (
    CONFIG_LABEL,
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_OK,
    TRIGGER_ANNOTATION,
    WORKLOAD_KINDS,
)
from reconciler.api.duration import parse_duration
from reconciler.api.hosts import per_pod_hosts, replicas
from reconciler.kube.client import ApiError, Kube
from reconciler.kube.events import rfc3339
from reconciler.kube.resource import BACKUPS, EVENTS, PODS, workload

POLL = 1.0


def new_trigger(now: datetime) -> str:
    """A value no earlier trigger had: the time and a random part."""
    return f"{rfc3339(now)}-{secrets.token_hex(3)}"


def trigger_patch(value: str) -> dict:
    return {"metadata": {"annotations": {TRIGGER_ANNOTATION: value}}}


def served_by(status: dict, value: str) -> dict[str, dict]:
    """Per host, the entry of status.triggers that says it served trigger ``value``."""
    triggers = status.get("triggers")
    return {
        host: entry
        for host, entry in (triggers.items() if isinstance(triggers, dict) else ())
        if isinstance(entry, dict) and entry.get("trigger") == value
        and isinstance(entry.get("run"), int)
    }  # fmt: skip


def _owned(obj: dict) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(r, dict) and r.get("controller") is True for r in refs)


def workload_hosts(workloads: list[dict], pods: list[dict]) -> tuple[list[str], list[str]]:
    """(the snapshot hosts that serve a backup-now request, notes on workloads none of whose
    pods can). As the sidecar names hosts: a StatefulSet's pods by ordinal, a DaemonSet's by
    the node of each of its pods, one host per workload of the other kinds (one replica,
    the Lease holder, backs up). Workloads owned by another one (a Deployment's ReplicaSet)
    are the owner's."""
    hosts: set[str] = set()
    notes: list[str] = []
    for obj in workloads:
        if _owned(obj):
            continue
        kind, name = obj.get("kind"), (obj.get("metadata") or {}).get("name")
        if kind == "DaemonSet":
            own = [
                p
                for p in pods
                if any(r.get("kind") == "DaemonSet" and r.get("name") == name
                       for r in (p.get("metadata") or {}).get("ownerReferences") or [])
            ]  # fmt: skip
            nodes = per_pod_hosts(obj, own) or set()
            hosts |= nodes
            if not nodes:
                notes.append(f"DaemonSet/{name} has no scheduled pods")
        elif replicas(obj) < 1:
            notes.append(f"{kind}/{name} has 0 replicas")
        else:
            hosts |= per_pod_hosts(obj, pods) or {name}
    return sorted(hosts), notes


def expected_hosts(kube: Kube, namespace: str, backup: str) -> tuple[list[str], list[str]]:
    """The hosts of the workloads labeled with the Backup (see workload_hosts)."""
    selector = f"{CONFIG_LABEL}={backup}"
    workloads, unlisted = [], []
    for kind in WORKLOAD_KINDS:
        try:
            items = kube.list(workload(kind).path(namespace), label_selector=selector)
        except ApiError as exc:
            if exc.retryable or exc.status == 401:
                raise
            unlisted.append(f"cannot list {kind}s ({exc.status}): not waiting for their pods")
            continue
        workloads += [{**item, "kind": kind} for item in items.get("items") or []]
    pods = []
    if any(w["kind"] == "DaemonSet" for w in workloads):
        pods = kube.list(PODS.path(namespace)).get("items") or []
    hosts, notes = workload_hosts(workloads, pods)
    return hosts, unlisted + notes


def run(args: argparse.Namespace, out=None, err=None) -> int:
    """0: triggered (--wait: every host's run succeeded); 1: a run failed; 2: an error or
    timeout."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        timeout = parse_duration(args.timeout).total_seconds()
        kube = Kube.connect(args.kubeconfig)
        namespace = args.namespace or kube.default_namespace or "default"
        path = BACKUPS.path(namespace, args.backup)
        value = new_trigger(datetime.now(UTC))
        kube.merge_patch(path, trigger_patch(value))
        hosts, notes = expected_hosts(kube, namespace, args.backup) if args.wait else ([], [])
    except ApiError as exc:
        what = "not found" if exc.not_found else str(exc)
        print(f"restik backup-now: Backup {args.namespace or ''}/{args.backup}: {what}", file=err)
        return EXIT_ERROR
    except Exception as exc:
        print(f"restik backup-now: {exc}", file=err)
        return EXIT_ERROR
    print(
        f"Backup {namespace}/{args.backup}: backup requested ({TRIGGER_ANNOTATION}={value})",
        file=out,
    )
    if not args.wait:
        return EXIT_OK
    for note in notes:
        print(f"restik backup-now: {note}: no run expected from it", file=err)
    if hosts:
        print(f"waiting for {len(hosts)} host(s): {', '.join(hosts)}", file=out)
    deadline = time.monotonic() + timeout
    served: dict[str, dict] = {}
    while time.monotonic() < deadline:
        try:
            served = served_by(kube.get(path).get("status") or {}, value)
            if served and all(h in served for h in hosts):
                return _results(kube, namespace, args.backup, served, hosts, out, err)
        except ApiError as exc:
            if exc.not_found:
                print(f"restik backup-now: Backup {namespace}/{args.backup} was deleted", file=err)
                return EXIT_ERROR
            if not exc.retryable:
                print(f"restik backup-now: {exc}", file=err)
                return EXIT_ERROR
        time.sleep(POLL)
    missing = [h for h in hosts if h not in served]
    which = f" from host(s) {', '.join(missing)}" if missing else ""
    print(
        f"restik backup-now: no run{which} of Backup {namespace}/{args.backup} answered the "
        f"request within {args.timeout} (is a sidecar running, the Backup not paused?)",
        file=err,
    )
    return EXIT_ERROR


def _results(kube, namespace, backup, served, hosts, out, err) -> int:
    """Print each host's run (its Event, while the API keeps it); 0 if all succeeded."""
    failed = []
    for host in hosts or sorted(served):
        entry = served[host]
        name = f"{backup}-{entry['run']}"
        event = kube.get_or_none(EVENTS.path(namespace, name)) or {}
        reason = event.get("reason") or entry.get("result")
        message = event.get("message") or "(its Event has expired)"
        print(f"{name}: {reason}: {message} (host {host})", file=out)
        if entry.get("result") != "Success":
            failed.append(host)
    if failed:
        print(f"restik backup-now: the run failed on host(s) {', '.join(failed)}", file=err)
        return EXIT_CHANGES
    return EXIT_OK
