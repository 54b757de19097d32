"""Pods sharing one repository (issue 12 item 8): the pods of a StatefulSet all fire on the
same cron; `forget`/`prune` take restic's exclusive lock, so only the designated pod (the
holder of the Lease `restik-<backup>-<workload>-prune`) runs them, for every pod's host,
and lock waits are retried instead of failing a run."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter

import pytest

from sidecar.restic import has_retry_lock, parse_version
from tests.factories import RESTIC, needs_restic, restic, wait_for
from tests.factories import WATCH_NS as NS

pytestmark = [needs_restic, pytest.mark.slow]

PODS = ("db-0", "db-1", "db-2")
RUNS = 20


def _pod(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NS,
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u-db",
                 "controller": True},
            ],
        },
        "spec": {"containers": [{"name": "app", "image": "x"}], "nodeName": "node-a"},
    }  # fmt: skip


def _forgets(log: str) -> list[str]:
    return [line for line in log.splitlines() if re.search(r"running \S+ .* forget ", line)]


def test_three_pods_on_one_repository_never_fail_each_other(world):
    world.backup(
        schedule="*/2 * * * * *",  # every 2 seconds, on the second: all pods fire together
        retentionPolicy={"keepLastSnapshots": 2, "prune": True},
    )
    for name in PODS:
        world.emu.create(_pod(name))
    started = time.monotonic()
    sidecars = {
        name: world.sidecar("--lease-duration", "30s", "--lock-wait", "60s", pod=name)
        for name in PODS
    }

    def runs_per_pod() -> Counter:
        return Counter(e["source"]["host"] for e in world.events())

    wait_for(lambda: min(runs_per_pod()[p] for p in PODS) >= RUNS, 240, sidecars.values())
    elapsed = time.monotonic() - started
    events = world.events()  # before SIGTERM: a run it interrupts is Failed, rightly
    lease = world.emu.get("coordination.k8s.io/v1", "leases", "restik-www-db-prune", NS)
    designated = lease["spec"]["holderIdentity"]  # before SIGTERM releases it
    for sc in sidecars.values():
        assert sc.terminate() == 0
    failed = [(e["source"]["host"], e["message"]) for e in events if e["reason"] != "Success"]
    assert failed == []
    assert designated in PODS
    assert lease["spec"]["leaseTransitions"] == 0  # one designated pod all along
    version = parse_version(subprocess.run([RESTIC, "version"], capture_output=True,
                                           text=True, timeout=30).stdout)  # fmt: skip
    native = has_retry_lock(version)
    for name, sc in sidecars.items():
        forgets = _forgets(sc.log)
        if name == designated:
            assert forgets and all("--prune" in f for f in forgets)
            assert all(f"--host={p}" in forgets[-1] for p in PODS)  # for every pod's host
        else:
            assert forgets == [], f"{name} ran forget: {forgets[:1]}"
        backups = [line for line in sc.log.splitlines() if re.search(r"running .* backup ", line)]
        assert backups and all(("--retry-lock=20s" in b) is native for b in backups)
    # retention applied to every host by the one pod: a handful left, not 60+
    snaps = json.loads(restic(str(world.repo), "snapshots", "--json").stdout)
    per_host = Counter(s["hostname"] for s in snaps)
    assert set(per_host) == set(PODS)
    assert all(n <= 2 + 3 for n in per_host.values()), per_host
    # a run interrupted by SIGTERM may leave its lock (removed by the next run in a pod);
    # `unlock` removes only stale ones, and a restic still finishing gets a few seconds
    deadline = time.monotonic() + 30
    while True:
        restic(str(world.repo), "unlock")
        proc = restic(str(world.repo), "check", check=False)
        if proc.returncode == 0 or time.monotonic() > deadline:
            break
        assert "locked" in proc.stderr, proc.stderr
        time.sleep(1)
    assert proc.returncode == 0, proc.stderr
    print(f"{len(events)} runs of 3 pods in {elapsed:.1f}s; restic {version}")
