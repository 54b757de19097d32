"""`restik status`: list the Backups, summarize each, print a table or JSON."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import threading
from dataclasses import asdict
from datetime import UTC, datetime

from reconciler.api.constants import EXIT_CHANGES, EXIT_ERROR, EXIT_OK
from reconciler.kube.client import ApiError, Kube
from reconciler.kube.resource import BACKUPS
from reconciler.overview.summary import (
    CHECK_FAILED,
    CHECK_OVERDUE,
    FAILED,
    HEALTHY,
    NOT_READY,
    OK,
    OVERDUE,
    PAGE_SIZE,
    PAUSED,
    PENDING,
    Check,
    Row,
    Snapshot,
    Workload,
    age,
    parse_time,
    summarize,
)


def _workload_cell(workloads: list[Workload]) -> str:
    if not workloads:
        return "0"
    known = [w for w in workloads if w.current is not None]
    if not known:
        return str(len(workloads))
    return f"{sum(1 for w in known if w.current)}/{len(workloads)} rolled out"


def _snapshot_cell(snapshots: list[Snapshot]) -> str:
    if not snapshots:
        return "-"
    return ", ".join(
        f"{s.host}:{s.snapshotID[:8]}" if s.host else s.snapshotID[:8] for s in snapshots
    )


def _check_cell(check: Check | None, now: datetime) -> str:
    """The last `restic check`: its result and age; "never" before the first; "-" without
    spec.check."""
    if check is None:
        return "-"
    when = parse_time(check.lastCheckTime)
    if check.lastResult is None or when is None:
        return "never"
    return f"{check.lastResult} {age(now - when)} ago"


COLOURS = {OK: "32", PENDING: "36", PAUSED: "33", FAILED: "31", OVERDUE: "31", NOT_READY: "31",
           CHECK_FAILED: "31", CHECK_OVERDUE: "31"}  # fmt: skip


def render_table(rows: list[Row], now: datetime, all_namespaces: bool, colour: bool) -> str:
    header = ["NAME", "HEALTH", "WORKLOADS", "SCHEDULE", "LAST SUCCESS", "LAST RESULT"]
    header += ["NEXT RUN", "RUNS 24H", "FAILED 24H", "LAST CHECK", "NEWEST SNAPSHOT"]
    if all_namespaces:
        header.insert(0, "NAMESPACE")
    table = [header]
    for r in rows:
        success = parse_time(r.lastSuccessfulBackupTime)
        nxt = parse_time(r.nextRunTime)
        if r.paused:
            next_cell = "paused"
        elif nxt is None:
            next_cell = "-"
        elif nxt < now:
            next_cell = f"due {age(now - nxt)} ago"
        else:
            next_cell = f"in {age(nxt - now)}"
        runs = "-" if r.runs24h is None else f"{r.runs24h}{'' if r.runs24hComplete else '+'}"
        cells = [
            r.name,
            r.health,
            _workload_cell(r.workloads),
            r.schedule or "-",
            f"{age(now - success)} ago" if success else "never",
            r.lastResult or "-",
            next_cell,
            runs,
            "-" if r.failures24h is None else str(r.failures24h),
            _check_cell(r.check, now),
            _snapshot_cell(r.snapshots),
        ]
        if all_namespaces:
            cells.insert(0, r.namespace)
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    health_col = header.index("HEALTH")
    lines = []
    for n, cells in enumerate(table):
        padded = [c.ljust(w) for c, w in zip(cells, widths, strict=True)]
        if colour and n > 0:
            code = COLOURS.get(cells[health_col])
            if code:
                padded[health_col] = f"\033[{code}m{padded[health_col]}\033[0m"
        lines.append("   ".join(padded).rstrip())
    problems = [r for r in rows if r.health not in HEALTHY]
    if problems:
        lines.append("")
        for r in problems:
            name = f"{r.namespace}/{r.name}" if all_namespaces else r.name
            lines.append(f"{name}: {r.health}: {r.reason}")
            check = r.check
            if check is not None and check.health not in HEALTHY and check.health != r.health:
                lines.append(f"{name}: {check.health}: {check.reason}")  # besides the backups
    return "\n".join(lines) + "\n"


def render_json(rows: list[Row]) -> str:
    unhealthy = sum(1 for r in rows if r.health not in HEALTHY)
    doc = {
        "items": [asdict(r) for r in rows],
        "summary": {"backups": len(rows), "unhealthy": unhealthy},
    }
    return json.dumps(doc, indent=2) + "\n"


# --------------------------------------------------------------------------- the command


class Spinner:
    """A spinner on stderr while the LIST runs, only when stderr is a terminal."""

    def __init__(self, stream, text: str):
        self.stream, self.text = stream, text
        self.enabled = stream.isatty()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Spinner:
        if self.enabled:
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def _spin(self) -> None:
        for frame in itertools.cycle("|/-\\"):
            if self._stop.wait(0.1):
                break
            self.stream.write(f"\r{frame} {self.text}")
            self.stream.flush()

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.stream.write("\r" + " " * (len(self.text) + 2) + "\r")
            self.stream.flush()


def list_backups(kube, namespace: str | None) -> list[dict]:
    """Every Backup of ``namespace`` (None: all), one paged LIST."""

    path = BACKUPS.path(namespace)
    return [item for _, page in kube.list_pages(path, None, PAGE_SIZE) for item in page]


def run(args: argparse.Namespace, out=None, err=None, now: datetime | None = None) -> int:
    """`restik status`; the exit code: 0 every Backup healthy, 1 some not, 2 an error."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        kube = Kube.connect(args.kubeconfig)
    except Exception as exc:  # pykube raises several types for a bad kubeconfig
        print(f"restik status: cannot load the Kubernetes configuration: {exc}", file=err)
        return EXIT_ERROR
    namespace = None if args.all_namespaces else (args.namespace or kube.default_namespace)
    if not args.all_namespaces and not namespace:
        namespace = "default"
    try:
        with Spinner(err, "listing Backups"):
            items = list_backups(kube, namespace)
    except ApiError as exc:
        if exc.not_found:
            print(
                "restik status: the API server has no Backup resource (is the CRD "
                "backups.backup.appscode.com installed?)",
                file=err,
            )
        else:
            print(f"restik status: cannot list Backups: {exc}", file=err)
        return EXIT_ERROR
    now = now or datetime.now(UTC)
    rows = sorted((summarize(i, now) for i in items), key=lambda r: (r.namespace, r.name))
    if args.output == "json":
        out.write(render_json(rows))
    elif not rows:
        where = "any namespace" if args.all_namespaces else f"namespace {namespace}"
        print(f"No Backups found in {where}.", file=err)
    else:
        colour = out.isatty() and not os.environ.get("NO_COLOR")
        out.write(render_table(rows, now, args.all_namespaces, colour))
    return EXIT_CHANGES if any(r.health not in HEALTHY for r in rows) else EXIT_OK
