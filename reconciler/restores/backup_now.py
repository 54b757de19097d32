"""`restik backup-now BACKUP [--wait]`: ask the Backup's sidecars for a run now (a trigger
annotation) and, with --wait, follow it to its Event."""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from datetime import UTC, datetime

from reconciler.api.constants import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, TRIGGER_ANNOTATION
from reconciler.api.duration import parse_duration
from reconciler.kube.client import ApiError, Kube
from reconciler.kube.events import rfc3339
from reconciler.kube.resource import BACKUPS, EVENTS

POLL = 1.0


def new_trigger(now: datetime) -> str:
    """A value no earlier trigger had: the time and a random part."""
    return f"{rfc3339(now)}-{secrets.token_hex(3)}"


def trigger_patch(value: str) -> dict:
    return {"metadata": {"annotations": {TRIGGER_ANNOTATION: value}}}


def served_run(status: dict, value: str) -> int | None:
    """The run number that served trigger ``value``, once a sidecar recorded it."""
    if status.get("lastTrigger") != value:
        return None
    run = status.get("lastTriggerRun")
    return run if isinstance(run, int) else None


def run(args: argparse.Namespace, out=None, err=None) -> int:
    """0: triggered (--wait: the run succeeded); 1: the run failed; 2: an error or timeout."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        timeout = parse_duration(args.timeout).total_seconds()
        kube = Kube.connect(args.kubeconfig)
        namespace = args.namespace or kube.default_namespace or "default"
        path = BACKUPS.path(namespace, args.backup)
        value = new_trigger(datetime.now(UTC))
        kube.merge_patch(path, trigger_patch(value))
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
    deadline = time.monotonic() + timeout
    run_number = None
    while time.monotonic() < deadline:
        try:
            status = kube.get(path).get("status") or {}
            run_number = run_number or served_run(status, value)
            if run_number is not None:
                name = f"{args.backup}-{run_number}"
                event = kube.get_or_none(EVENTS.path(namespace, name))
                if event is not None:
                    print(f"{name}: {event.get('reason')}: {event.get('message')}", file=out)
                    return EXIT_OK if event.get("reason") == "Success" else EXIT_CHANGES
        except ApiError as exc:
            if exc.not_found:
                print(f"restik backup-now: Backup {namespace}/{args.backup} was deleted", file=err)
                return EXIT_ERROR
            if not exc.retryable:
                print(f"restik backup-now: {exc}", file=err)
                return EXIT_ERROR
        time.sleep(POLL)
    print(
        f"restik backup-now: no run of Backup {namespace}/{args.backup} answered the request "
        f"within {args.timeout} (is a sidecar running, the Backup not paused?)",
        file=err,
    )
    return EXIT_ERROR
