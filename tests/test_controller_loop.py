"""The long-running `restik run`: watches wake it, SIGTERM stops it, leases, metrics, CLI."""

from __future__ import annotations

import itertools
import json
import signal
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.api.constants import CONFIG_LABEL, SIDECAR_NAME
from reconciler.kube.client import Kube
from reconciler.kube.lease import LeaderElector
from reconciler.resources import crd_manifest
from tests.factories import free_port
from tests.factories.cluster import NS, backup, containers, finish, get, restik, wait_for, workload


@pytest.fixture
def cluster(emulator):
    emulator.create(crd_manifest())
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    return emulator


def test_once_and_dry_run_exit_codes(cluster, kubeconfig):
    cluster.create(backup())
    cluster.create(workload())
    dry = restik("run", "--once", "--dry-run", "--kubeconfig", str(kubeconfig))
    out, err = finish(dry)
    assert dry.returncode == 1, err
    assert "apps.v1.Deployment.web.www" in out
    assert cluster.writes() == []
    once = restik("run", "--once", "--kubeconfig", str(kubeconfig))
    _, err = finish(once)
    assert once.returncode == 0, err
    assert "backups=1 workloads=1 patched=1" in err
    dry = restik("run", "--once", "--dry-run", "--kubeconfig", str(kubeconfig))
    out, err = finish(dry)
    assert (dry.returncode, out) == (0, "")


def test_unreachable_api_exits_2(tmp_path):
    cfg = tmp_path / "kc"
    port = free_port()
    cfg.write_text(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: x\n  cluster: {server: 'http://127.0.0.1:"
        f"{port}'}}\ncontexts:\n- name: x\n  context: {{cluster: x, user: x}}\n"
        "current-context: x\nusers:\n- name: x\n  user: {}\n"
    )
    proc = restik("run", "--once", "--kubeconfig", str(cfg))
    _, err = finish(proc)
    assert proc.returncode == 2
    assert "Traceback" not in err


def test_label_change_is_acted_on_within_a_second_and_sigterm_exits_0(cluster, kubeconfig):
    cluster.create(backup())
    cluster.create(workload(label=None))
    port = free_port()
    proc = restik(
        "run",
        "--interval",
        "5m",
        "--kubeconfig",
        str(kubeconfig),
        "--metrics-port",
        str(port),
        "--metrics-address",
        "127.0.0.1",
    )
    try:
        wait_for(
            lambda: any(r.method == "GET" and "rolebindings" in r.path for r in cluster.requests)
        )
        time.sleep(0.3)  # the watches start after the first cycle
        obj = get(cluster, "Deployment")
        obj["metadata"]["labels"][CONFIG_LABEL] = "www"
        started = time.monotonic()
        cluster.update(obj)
        wait_for(lambda: SIDECAR_NAME in containers(get(cluster, "Deployment")), timeout=5)
        reaction = time.monotonic() - started
        assert reaction < 2.0, reaction

        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status == 200
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b'restik_patches_total{action="inject"} 1.0' in metrics
        assert b"restik_cycle_duration_seconds_count" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = finish(proc)
    assert proc.returncode == 0, err
    assert "stopping after the current cycle" in err


def electors(kube, *names, duration=15):
    """Electors sharing one fake time ``t[0]`` (seconds); each node's wall clock runs with it,
    off by ``skew[name]`` seconds."""
    t = [1000.0]
    skew = dict.fromkeys(names, 0.0)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    out = [
        LeaderElector(
            kube,
            NS,
            "restik-controller",
            n,
            duration=duration,
            clock=lambda n=n: base + timedelta(seconds=t[0] + skew[n]),
            monotonic=lambda: t[0],
        )
        for n in names
    ]
    return t, skew, out


def test_lease_has_one_holder_and_a_standby_takes_over(cluster, kubeconfig):
    kube = Kube.connect(str(kubeconfig))
    t, _, (a, b) = electors(kube, "a", "b")
    assert a.try_acquire() is True
    assert b.try_acquire() is False
    t[0] += 10
    assert a.try_acquire() is True  # renewed
    t[0] += 10
    assert b.try_acquire() is False  # b saw the renewal 10 s ago (its own clock)
    t[0] += 16
    assert b.try_acquire() is True  # a stopped renewing: b takes over
    assert a.try_acquire() is False
    lease = cluster.get("coordination.k8s.io/v1", "leases", "restik-controller", NS)
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
    b.release()
    assert a.try_acquire() is True  # released: no need to wait for expiry


def test_lease_expiry_never_compares_the_holders_clock_with_ours(cluster, kubeconfig):
    """Issue 12 item 13: a holder whose clock runs an hour behind keeps renewing; a standby
    must not take over. A holder an hour ahead that stops renewing still loses the Lease
    after leaseDurationSeconds of the standby's own time."""
    kube = Kube.connect(str(kubeconfig))
    t, skew, (a, b) = electors(kube, "a", "b")
    skew["a"] = -3600
    assert a.try_acquire() is True
    for _ in range(5):
        t[0] += 5
        assert a.try_acquire() is True
        assert b.try_acquire() is False  # renewTime is an hour old, but it keeps changing
    b.release()
    a.release()
    t, skew, (c, d) = electors(kube, "c", "d")
    skew["c"] = 3600
    assert c.try_acquire() is True
    assert d.try_acquire() is False  # first sight of c's record
    t[0] += 14
    assert d.try_acquire() is False
    t[0] += 2
    assert d.try_acquire() is True  # 16 s unchanged, though renewTime is in our future


def test_the_leader_steps_down_when_it_cannot_renew_in_time(cluster, kubeconfig):
    kube = Kube.connect(str(kubeconfig))
    t, _, (a,) = electors(kube, "a")
    assert a.try_acquire() is True and a.is_leader()
    t[0] += 9
    assert a.is_leader()  # within renew_deadline (2/3 of 15 s)
    t[0] += 2
    assert not a.is_leader()  # no renewal for 11 s: stop writing before a standby may start
    assert a.try_acquire() is True and a.is_leader()


def test_two_replicas_only_the_leader_patches(cluster, kubeconfig):
    cluster.create(backup())
    cluster.create(workload())
    env = {"POD_NAMESPACE": NS}
    procs = []
    try:
        for name in ("one", "two"):
            procs.append(
                restik(
                    "run",
                    "--interval",
                    "1s",
                    "--leader-elect",
                    "--lease-namespace",
                    NS,
                    "--kubeconfig",
                    str(kubeconfig),
                    env={**env, "POD_NAME": name},
                )
            )
        wait_for(lambda: SIDECAR_NAME in containers(get(cluster, "Deployment")), timeout=15)
        time.sleep(2.5)
        lists = {
            r.user_agent
            for r in cluster.requests
            if r.resource == "deployments" and r.verb == "list"
        }
        assert lists  # someone reconciled
        holder = cluster.get("coordination.k8s.io/v1", "leases", "restik-controller", NS)
        assert holder["spec"]["holderIdentity"] in ("one", "two")
        patches = [
            r for r in cluster.requests if r.method == "PATCH" and r.resource == "deployments"
        ]
        assert len(patches) == 1
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            finish(p)
    assert all(p.returncode == 0 for p in procs)


def test_a_410_storm_costs_a_bounded_number_of_requests(cluster, kubeconfig, monkeypatch):
    """Issue 12 item 9: every watch is answered 410 Gone (as an ERROR event on the open
    watch, as the watch cache does; every other one as a 410 answer). The controller backs
    off (exponential, jittered), relists, and never re-watches at once."""
    from reconciler.controller.cycle import Controller
    from reconciler.controller.loop import Loop
    from reconciler.controller.options import Settings
    from tests.emulator import server
    from tests.emulator.errors import gone

    answered = []

    def always_gone(self, route, query, record):
        answered.append(query.get("resourceVersion"))
        if len(answered) % 2:
            raise gone("too old resource version")
        record(200)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        event = {"type": "ERROR", "object": gone("too old resource version").status()}
        self._chunk((json.dumps(event) + "\n").encode())
        self.wfile.write(b"0\r\n\r\n")

    monkeypatch.setattr(server._Handler, "_watch", always_gone)
    cluster.create(backup())
    cluster.create(workload())
    settings = Settings(interval=300.0)
    runner = Loop(Controller(Kube.connect(str(kubeconfig)), settings), settings)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        time.sleep(4.0)
    finally:
        runner.request_stop()
        thread.join(timeout=10)
    assert not thread.is_alive()
    watches = [r for r in cluster.requests if r.verb == "watch"]
    lists = [r for r in cluster.requests if r.verb == "list"]
    # 6 watched paths; backoffs 0.25-0.5 s, 0.5-1 s, 1-2 s, 2-4 s: at most 5 tries each in 4 s
    # (24 measured; re-watching at once made hundreds)
    assert len(watches) <= 6 * 5, len(watches)
    assert len(watches) >= 6 * 2  # it does keep trying
    # each 410 asks for a relist; cycles are at least 1 s apart (7 LISTs each; 28 measured)
    assert len(lists) <= 7 * 6, len(lists)
    # after a 410 the watch never resumes from the resourceVersion that was gone
    by_path: dict[str, list] = {}
    for r in watches:
        by_path.setdefault(r.path, []).append(r.query.get("resourceVersion"))
    for versions in by_path.values():
        assert all(a != b or a == "" for a, b in itertools.pairwise(versions)), versions


def test_watch_backoff_is_exponential_capped_and_jittered():
    from reconciler.controller.watches import WATCH_BACKOFF_CAP, watch_backoff

    assert [watch_backoff(n, rand=lambda: 1.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert [watch_backoff(n, rand=lambda: 0.0) for n in (1, 2)] == [0.25, 0.5]
    assert watch_backoff(40, rand=lambda: 1.0) == WATCH_BACKOFF_CAP


def test_a_replica_that_is_not_the_leader_does_not_watch(cluster, kubeconfig):
    """Issue 12 item 9: watches stop while not leader (at their next event at the latest)."""
    from reconciler.controller.cycle import Controller
    from reconciler.controller.loop import Loop
    from reconciler.controller.options import Settings

    cluster.create(backup())
    cluster.create(workload())
    settings = Settings(interval=300.0)
    runner = Loop(Controller(Kube.connect(str(kubeconfig)), settings), settings)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len([r for r in cluster.requests if r.verb == "watch"]) == 6)
        runner._leadership(False)
        time.sleep(0.3)
        woken = []

        class Counting(threading.Event):
            def set(self):
                woken.append(time.monotonic())
                super().set()

        runner.wake = Counting()
        cluster.clear_requests()
        for n in range(2):
            obj = get(cluster, "Deployment")
            obj["metadata"]["labels"]["touch"] = str(n)
            cluster.update(obj)  # the open watch sees it: it must stop, not wake the loop
            time.sleep(1.5)
        assert woken == []
        assert [r for r in cluster.requests if r.resource == "deployments"] == []
    finally:
        runner.request_stop()
        thread.join(timeout=10)
