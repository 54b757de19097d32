"""`restik snapshots BACKUP`: the snapshots of a Backup's repository as a table or JSON,
read with the user's kubeconfig and the Backup's Secret."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from reconciler.api.backup import InvalidBackup, parse_backup
from reconciler.api.constants import EXIT_ERROR, EXIT_OK
from reconciler.kube.client import ApiError, Kube
from reconciler.kube.events import rfc3339
from reconciler.kube.resource import BACKUPS
from reconciler.restores.secret import AccessError, repository_env
from sidecar import restic
from sidecar.outcome import format_bytes
from sidecar.runner import redact, secret_values
from sidecar.snapshots import Snapshot, parse_snapshots


class CommandError(Exception):
    """What the user reads on stderr (exit 2)."""


def load_backup(kube: Kube, namespace: str, name: str):
    try:
        raw = kube.get(BACKUPS.path(namespace, name))
    except ApiError as exc:
        if exc.not_found:
            raise CommandError(f"Backup {namespace}/{name} not found") from None
        raise CommandError(f"cannot read Backup {namespace}/{name}: {exc}") from None
    try:
        return raw, parse_backup(raw)
    except InvalidBackup as exc:
        raise CommandError(str(exc)) from None


def list_snapshots(kube: Kube, backup, restic_bin: str, host: str | None) -> list[Snapshot]:
    """The snapshots of the Backup's path (one host's, with ``host``), oldest first."""
    try:
        env = {**os.environ, **repository_env(kube, backup)}
    except AccessError as exc:
        raise CommandError(str(exc)) from None
    cache = env.get("RESTIC_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "restik-cache")
    ctx = restic.Context(host=host or "", cache_dir=cache, restic=restic_bin)
    args = restic.render_source_snapshots(backup, ctx)
    if host:
        args.append(f"--host={host}")
    try:
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=600,
            errors="replace",
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise CommandError(f"cannot run {restic_bin}: {exc}") from None
    if proc.returncode != 0:
        stderr = redact(proc.stderr, secret_values(env))
        raise CommandError(
            f"restic snapshots failed: {restic.first_error_line(stderr, proc.returncode)}"
        )
    return parse_snapshots(proc.stdout)


def render_table(snapshots: list[Snapshot]) -> str:
    rows = [("ID", "TIME", "HOST", "TAGS", "SIZE")]
    for s in snapshots:
        size = format_bytes(s.size) if s.size is not None else "-"
        rows.append((s.short_id, rfc3339(s.time), s.host, ",".join(s.tags) or "-", size))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join(
        "   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() + "\n"
        for r in rows
    )


def render_json(snapshots: list[Snapshot]) -> str:
    items = [
        {
            "id": s.id,
            "shortID": s.short_id,
            "time": rfc3339(s.time),
            "host": s.host,
            "paths": list(s.paths),
            "tags": list(s.tags),
            "size": s.size,
        }
        for s in snapshots
    ]
    return json.dumps(items, indent=2) + "\n"


def run(args: argparse.Namespace, out=None, err=None) -> int:
    """`restik snapshots`: 0 listed (also when there are none), 2 an error."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        kube = Kube.connect(args.kubeconfig)
        namespace = args.namespace or kube.default_namespace or "default"
        _, backup = load_backup(kube, namespace, args.backup)
        snapshots = list_snapshots(kube, backup, args.restic, args.host)
    except CommandError as exc:
        print(f"restik snapshots: {exc}", file=err)
        return EXIT_ERROR
    except Exception as exc:  # a bad kubeconfig, no API
        print(f"restik snapshots: {exc}", file=err)
        return EXIT_ERROR
    if args.json:
        out.write(render_json(snapshots))
    elif not snapshots:
        who = f" of host {args.host}" if args.host else ""
        print(f"No snapshots{who} of {backup.source_path} in the repository.", file=err)
    else:
        out.write(render_table(snapshots))
    return EXIT_OK
