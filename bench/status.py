"""`restik status` at 1,000 Backups against a bare paged LIST of the same Backups.

    python bench/status.py [--backups 1000] [--reps 15]

1,000 Backups (10 namespaces, each with a full status: conditions, workloads and 10
recentRuns) are created in the emulator, their paged LIST answers are recorded and
replayed byte for byte from a separate process (bench/replay.py), so the server's work is
in neither side. Then, interleaved and alternating which goes first, median of --reps:

- bare: the same paged LIST through the same client (reconciler.kube.client.Kube), each page
  decoded and dropped: the least any `status` command must do;
- status: what `restik status -A` does after connecting: the LIST, a summary of every
  Backup (schedule, next run, overdue check, runs in 24 h, snapshots) and the table,
  with its schedule caches emptied first.

Twice: with Backups sharing 20 schedules (a fleet's usual shape, where the croniter
answers are shared) and with every Backup on its own schedule (the worst case). Also the
wall time of the CLI itself (`restik status -A`, a new process: imports included), once
per rep. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from replay import ReplayProcess, record  # noqa: E402

from reconciler.api.constants import API_VERSION  # noqa: E402
from reconciler.api.schedule import parse_schedule  # noqa: E402
from reconciler.kube.client import Kube  # noqa: E402
from reconciler.overview import show, summary  # noqa: E402
from reconciler.resources import crd_manifest  # noqa: E402
from tests.emulator import Emulator  # noqa: E402

NAMESPACES = 10


def say(text: str) -> None:
    print(text, flush=True)


def schedules(count: int, distinct: bool) -> list[str]:
    if distinct:  # every Backup daily at its own minute
        return [f"{i % 60} {(i // 60) % 24} * * *" for i in range(count)]
    pool = ["*/15 * * * *", "0 * * * *", "@daily", "0 2 * * *", "30 3 * * 1-5", "@every 6h"]
    pool += [f"{m} */4 * * *" for m in range(0, 56, 4)]
    return [pool[i % len(pool)] for i in range(count)]


def fmt(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def backup(i: int, schedule: str, now: datetime) -> dict:
    ns = f"team-{i % NAMESPACES}"
    parsed = parse_schedule(schedule)
    # runs at the schedule's own fire times before now, newest first
    times, t = [], now - timedelta(days=3)
    while len(times) < 40:
        t = parsed.next_after(t)
        if t > now:
            break
        times.append(t)
    times = times[-10:][::-1]
    runs = [
        {
            "number": 100 - k,
            "result": "Failed" if (i + k) % 7 == 0 else "Success",
            "time": fmt(rt),
            "duration": "12.5s",
            "host": f"www-{i}-{k % 2}",
            "snapshotID": f"{i:08x}{k:08x}" * 4,
            "message": "snapshot saved: 10 new, 2 changed, 5000 unmodified files, 1.2 MiB added",
        }
        for k, rt in enumerate(times)
    ]
    success = next((r["time"] for r in runs if r["result"] == "Success"), None)
    status = {
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "1"}],
        "workloads": [f"Deployment/www-{i}"],
        "backupCount": 100,
        "recentRuns": runs,
        "lastBackupTime": runs[0]["time"] if runs else None,
        "lastSuccessfulBackupTime": success,
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "Backup",
        "metadata": {"name": f"www-{i}", "namespace": ns},
        "spec": {
            "schedule": schedule,
            "backupSource": {"volumeName": "data", "path": "/data"},
            "destination": {"repositorySecretName": "restic", "repository": "s3:http://s3/b"},
        },
        "status": {k: v for k, v in status.items() if v is not None},
    }


def build(count: int, distinct: bool, recording: Path) -> tuple[int, int]:
    """The recorded LIST: (bytes, pages)."""
    emu = Emulator()
    emu.start()
    try:
        crd = copy.deepcopy(crd_manifest())
        for version in crd["spec"]["versions"]:
            props = version["schema"]["openAPIV3Schema"]["properties"]
            props["status"]["x-kubernetes-preserve-unknown-fields"] = True
        emu.create(crd)
        for n in range(NAMESPACES):
            emu.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"team-{n}"}})
        now = datetime.now(UTC)
        for i, schedule in enumerate(schedules(count, distinct)):
            emu.create(backup(i, schedule, now))
        with tempfile.TemporaryDirectory() as tmp:
            kube = Kube.connect(str(emu.write_kubeconfig(Path(tmp) / "kubeconfig")))
            emu.clear_requests()
            show.list_backups(kube, None)
        lists = [(r.path, dict(r.query)) for r in emu.requests]
        return record(emu.url, lists, str(recording)), len(lists)
    finally:
        emu.stop()


def bare(kube: Kube) -> int:
    path = "/apis/backup.appscode.com/v1beta1/backups"
    return sum(len(page) for _, page in kube.list_pages(path, None, summary.PAGE_SIZE))


def status(kube: Kube) -> int:
    for cache in (
        summary._iterator,
        summary._cron_next,
        summary._interval,
        summary._parse_time,
    ):
        cache.cache_clear()
    now = datetime.now(UTC)
    items = show.list_backups(kube, None)
    rows = sorted((summary.summarize(i, now) for i in items), key=lambda r: (r.namespace, r.name))
    out = io.StringIO()
    out.write(show.render_table(rows, now, all_namespaces=True, colour=False))
    return len(rows)


def timed(fn, *args) -> tuple[float, int]:
    t = time.perf_counter()
    n = fn(*args)
    return time.perf_counter() - t, n


def measure(count: int, distinct: bool, reps: int, tmp: Path) -> dict:
    recording = tmp / f"status-{'distinct' if distinct else 'shared'}.pickle"
    size, pages = build(count, distinct, recording)
    replay = ReplayProcess(str(recording))
    try:
        kubeconfig = replay.write_kubeconfig(str(tmp / "replay.kubeconfig"))
        kube = Kube.connect(kubeconfig)
        bare_s, status_s, cli_s = [], [], []
        for rep in range(reps + 1):  # the first pair warms up, untimed
            order = [("bare", bare), ("status", status)]
            if rep % 2:
                order.reverse()
            got = {}
            for name, fn in order:
                got[name] = timed(fn, kube)
            assert got["bare"][1] == got["status"][1] == count, got
            t = time.perf_counter()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "reconciler.cli",
                    "status",
                    "-A",
                    "--kubeconfig",
                    kubeconfig,
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            cli = time.perf_counter() - t
            assert proc.stdout.count("\n") >= count, proc.stderr
            if rep:
                bare_s.append(got["bare"][0])
                status_s.append(got["status"][0])
                cli_s.append(cli)
    finally:
        replay.stop()
    ratios = [s / b for s, b in zip(status_s, bare_s, strict=True)]
    return {
        "schedules": "distinct" if distinct else "shared",
        "backups": count,
        "list_bytes": size,
        "list_pages": pages,
        "bare_s_median": round(statistics.median(bare_s), 4),
        "status_s_median": round(statistics.median(status_s), 4),
        "ratio_median": round(statistics.median(ratios), 2),
        "cli_s_median": round(statistics.median(cli_s), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backups", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="restik-bench-status-") as tmp:
        for distinct in (False, True):
            r = measure(args.backups, distinct, args.reps, Path(tmp))
            results[r["schedules"]] = r
            say(
                f"{r['backups']} Backups, {r['schedules']} schedules: status "
                f"{r['status_s_median'] * 1000:.0f} ms vs bare LIST "
                f"{r['bare_s_median'] * 1000:.0f} ms = {r['ratio_median']}x; "
                f"CLI (new process) {r['cli_s_median']:.2f} s; LIST pages "
                f"{r['list_pages']}, {r['list_bytes'] / 1e6:.1f} MB"
            )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
