"""`restik restore BACKUP --to ...`: the Restore manifest to commit, or (--apply --wait)
created and followed until it ends."""

from __future__ import annotations

import argparse
import io
import json
import shlex
import sys
import time
from datetime import UTC, datetime

from ruamel.yaml import YAML

from reconciler.api.constants import (
    API_VERSION,
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_OK,
    RESTORE_KIND,
    WORKLOAD_KINDS,
)
from reconciler.api.duration import parse_duration
from reconciler.api.restore import FINISHED, InvalidRestore, parse_restore
from reconciler.kube.client import ApiError, Kube
from reconciler.kube.resource import RESTORES

POLL = 1.0
_KINDS = {k.lower(): k for k in WORKLOAD_KINDS} | {"deploy": "Deployment", "sts": "StatefulSet",
                                                  "ds": "DaemonSet", "rs": "ReplicaSet",
                                                  "rc": "ReplicationController"}  # fmt: skip


def parse_target(text: str) -> dict:
    """``StatefulSet/db`` (kubectl's short names too) or ``pvc/claim`` as spec.target."""
    kind, sep, name = text.partition("/")
    if not sep or not kind or not name:
        raise ValueError(f"--to must be KIND/NAME or pvc/NAME, got {text!r}")
    if kind.lower() in ("pvc", "persistentvolumeclaim"):
        return {"pvc": {"claimName": name}}
    if kind.lower() not in _KINDS:
        raise ValueError(
            f"--to: {kind!r} is not a workload kind ({', '.join(WORKLOAD_KINDS)}) or pvc"
        )
    return {"workload": {"kind": _KINDS[kind.lower()], "name": name}}


def build_manifest(args: argparse.Namespace, namespace: str, now: datetime) -> dict:
    """The Restore the arguments describe; checked by the same model as the controller's."""
    spec: dict = {"backup": args.backup, "target": parse_target(args.to)}
    if args.as_of:
        spec["asOf"] = args.as_of
    if args.snapshot:
        spec["snapshot"] = args.snapshot
    hosts = {}
    for item in args.host:
        target, sep, source = item.partition("=")
        if not sep:
            raise ValueError(f"--host must be TARGET=SOURCE, got {item!r}")
        hosts[target] = source
    if hosts:
        spec["hosts"] = hosts
    if args.include:
        spec["include"] = list(args.include)
    if args.exclude:
        spec["exclude"] = list(args.exclude)
    if args.delete:
        spec["delete"] = True
    if args.verify:
        spec["verify"] = True
    command = _command(args)
    if command:
        spec["command"] = command
    name = args.name or f"{args.backup}-{now.strftime('%Y%m%d-%H%M%S')}"
    raw = {
        "apiVersion": API_VERSION,
        "kind": RESTORE_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    parse_restore(raw)  # InvalidRestore names every bad field
    return raw


def _command(args: argparse.Namespace) -> dict | None:
    """spec.command from --command (split as a shell would), --container, --command-timeout."""
    if args.restore_command is None:
        if args.container or args.command_timeout:
            raise ValueError("--container and --command-timeout go with --command")
        return None
    try:
        argv = shlex.split(args.restore_command)
    except ValueError as exc:
        raise ValueError(f"--command: {exc}") from None
    command: dict = {"command": argv}
    if args.container:
        command["container"] = args.container
    if args.command_timeout:
        command["timeout"] = args.command_timeout
    return command


def render(raw: dict, output: str) -> str:
    if output == "json":
        return json.dumps(raw, indent=2) + "\n"
    buf = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(raw, buf)
    return buf.getvalue()


def progress_line(status: dict) -> str:
    hosts = status.get("hosts") or []
    parts = []
    for h in hosts:
        pct = h.get("percent")
        parts.append(
            f"{h.get('host')} {h.get('phase')}" + (f" {pct:.0f}%" if pct is not None else "")
        )
    return f"{status.get('phase') or 'Pending'}: " + (
        ", ".join(parts) or status.get("message") or ""
    )


def run(args: argparse.Namespace, out=None, err=None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    kube = None
    try:
        if args.apply or not args.namespace:
            kube = Kube.connect(args.kubeconfig) if args.apply else _maybe_kube(args)
        namespace = args.namespace or (kube.default_namespace if kube else None) or "default"
        raw = build_manifest(args, namespace, datetime.now(UTC))
    except (ValueError, InvalidRestore) as exc:
        print(f"restik restore: {exc}", file=err)
        return EXIT_ERROR
    except Exception as exc:
        print(f"restik restore: {exc}", file=err)
        return EXIT_ERROR
    if not args.apply:
        out.write(render(raw, args.output))
        return EXIT_OK
    name = raw["metadata"]["name"]
    try:
        kube.create(RESTORES.path(namespace), raw)
    except ApiError as exc:
        print(f"restik restore: cannot create Restore {namespace}/{name}: {exc}", file=err)
        return EXIT_ERROR
    print(f"Restore {namespace}/{name} created", file=out)
    if not args.wait:
        return EXIT_OK
    deadline = time.monotonic() + parse_duration(args.timeout).total_seconds()
    last = None
    while time.monotonic() < deadline:
        try:
            status = (kube.get(RESTORES.path(namespace, name)).get("status")) or {}
        except ApiError as exc:
            if exc.not_found:
                print(f"restik restore: Restore {namespace}/{name} was deleted", file=err)
                return EXIT_ERROR
            status = {}
        line = progress_line(status)
        if line != last:
            print(line, file=err)
            last = line
        if status.get("phase") in FINISHED:
            print(f"{status['phase']}: {status.get('message', '')}", file=out)
            return EXIT_OK if status["phase"] == "Succeeded" else EXIT_CHANGES
        time.sleep(POLL)
    print(f"restik restore: Restore {namespace}/{name} did not end within {args.timeout}", file=err)
    return EXIT_ERROR


def _maybe_kube(args):
    """The kubeconfig only for its namespace: printing a manifest needs no API."""
    try:
        return Kube.connect(args.kubeconfig)
    except Exception:
        return None
