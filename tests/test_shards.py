"""`restik run --shards N`: which namespaces a shard owns, its settings, and N shards that
start and stop against the emulator patching exactly what one controller would."""

from __future__ import annotations

import argparse
import collections
import signal
import time

import pytest

from reconciler.api.constants import CONFIG_LABEL, SIDECAR_NAME
from reconciler.controller.cycle import Controller
from reconciler.controller.options import Settings, add_arguments
from reconciler.controller.shard import Shard, ShardKube, shard_of
from reconciler.kube.client import Kube
from reconciler.kube.resource import BACKUPS, RESTORES, ROLES
from reconciler.resources import crd_manifest
from tests.emulator import Emulator
from tests.factories.cluster import backup, containers, finish, restik, wait_for, workload

# ------------------------------------------------------------------ pure


def test_shard_of_is_a_stable_hash_of_the_name():
    # SHA-256 of the name, first 8 bytes big-endian, mod N: the same in every process and
    # Python version (Python's hash() of a str is salted per process).
    assert [shard_of(n, 3) for n in ("web", "team-000", "ns-0", "ns-1")] == [0, 1, 0, 2]
    assert shard_of("web", 1) == 0
    spread = collections.Counter(shard_of(f"team-{i:03d}", 3) for i in range(300))
    assert set(spread) == {0, 1, 2} and min(spread.values()) > 70


def test_a_shard_owns_its_namespaces_and_every_cluster_scoped_object():
    shards = [Shard(3, i) for i in range(3)]
    for ns in ("web", "team-000", "ns-1", "kube-system"):
        assert [s.owns(ns) for s in shards].count(True) == 1
    assert all(s.owns(None) and s.owns("") for s in shards)  # the CRD
    assert Shard().owns("anything")
    with pytest.raises(ValueError, match="--shard-index: 3 is not a shard of 3"):
        Shard(3, 3)


def settings(*argv, env=None, monkeypatch=None):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return Settings.from_args(parser.parse_args(["--kubeconfig", "x", *argv]))


def test_shard_index_comes_from_the_option_or_the_statefulset_ordinal(monkeypatch):
    monkeypatch.delenv("RESTIK_SHARDS", raising=False)
    monkeypatch.delenv("RESTIK_SHARD_INDEX", raising=False)
    monkeypatch.setenv("POD_NAME", "restik-2")
    s = settings("--shards", "3")
    assert (s.shards, s.shard_index, s.lease_name) == (3, 2, "restik-controller-2")
    assert settings("--shards", "3", "--shard-index", "0").shard_index == 0
    monkeypatch.setenv("RESTIK_SHARDS", "4")
    monkeypatch.setenv("RESTIK_SHARD_INDEX", "3")
    assert (settings().shards, settings().shard_index) == (4, 3)
    monkeypatch.delenv("RESTIK_SHARDS")
    monkeypatch.delenv("RESTIK_SHARD_INDEX")
    one = settings()
    assert (one.shards, one.shard_index, one.lease_name) == (1, 0, "restik-controller")
    monkeypatch.setenv("POD_NAME", "restik-controller-7d9f")
    with pytest.raises(ValueError, match=r"--shard-index: not given.*'restik-controller-7d9f'"):
        settings("--shards", "3")
    monkeypatch.setenv("POD_NAME", "restik-5")
    with pytest.raises(ValueError, match="--shard-index: 5 is not a shard of --shards 3"):
        settings("--shards", "3")
    with pytest.raises(ValueError, match="--shards: must be at least 1"):
        settings("--shards", "0")
    assert settings().shard_lists == "cluster"
    assert settings("--shard-lists", "namespace").shard_lists == "namespace"


def test_run_without_a_shard_index_exits_2_with_the_reason(kubeconfig):
    proc = restik("run", "--once", "--shards", "3", "--kubeconfig", str(kubeconfig),
                  env={"POD_NAME": "restik-controller-abc"})  # fmt: skip
    _, err = finish(proc)
    assert proc.returncode == 2
    assert "--shard-index: not given" in err and "Traceback" not in err


# ------------------------------------------------------------------ shards together

NAMESPACES = [f"ns-{i}" for i in range(9)]
KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def populate(emu: Emulator) -> None:
    emu.create(crd_manifest())
    for ns in [*NAMESPACES, "restik-system"]:
        emu.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for ns in NAMESPACES:
        b = backup()
        b["metadata"]["namespace"] = ns
        emu.create(b)
        for i, kind in enumerate(KINDS):
            for name, label in ((f"w{i}", "www"), (f"late{i}", None)):
                obj = workload(kind, name, label)
                obj["metadata"]["namespace"] = ns
                emu.create(obj)


def label_late(emu: Emulator, namespaces) -> None:
    for ns in namespaces:
        for i, kind in enumerate(KINDS):
            obj = emu.get("apps/v1", kind, f"late{i}", ns)
            obj["metadata"]["labels"][CONFIG_LABEL] = "www"
            emu.update(obj)


def patched_paths(emu: Emulator) -> list[str]:
    return [
        r.path
        for r in emu.requests
        if r.method == "PATCH" and r.resource in ("deployments", "statefulsets", "daemonsets")
    ]


def injected(emu: Emulator, ns: str, name: str, kind: str) -> bool:
    return SIDECAR_NAME in containers(emu.get("apps/v1", kind, name, ns))


class ShardProcess:
    """`restik run --shards 3` for one shard, with leader election on its own Lease; its
    requests carry the user ``shard-<index>`` (a kubeconfig token of its own)."""

    def __init__(self, emu: Emulator, tmp_path, index: int, identity: str):
        self.index = index
        config = emu.write_kubeconfig(tmp_path / f"kc-{identity}", user=f"shard-{index}")
        self.proc = restik(
            "run", "--interval", "1s", "--shards", "3", "--shard-index", str(index),
            "--leader-elect", "--lease-namespace", "restik-system", "--kubeconfig", str(config),
            # every way of listing: shard 0 leaves out the others' namespaces with a field
            # selector, shard 1 keeps its share of cluster-wide LISTs, shard 2 reads its
            # namespaces one by one
            "--shard-lists", ("exclude", "cluster", "namespace")[index],
            env={"POD_NAME": identity},
        )  # fmt: skip

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        _, err = finish(self.proc)
        assert self.proc.returncode == 0, err
        return err


@pytest.mark.slow
def test_shards_together_patch_what_one_controller_would_while_they_start_and_stop(tmp_path):
    by_shard = {i: [ns for ns in NAMESPACES if shard_of(ns, 3) == i] for i in range(3)}
    assert all(by_shard.values())  # every shard has work

    # What one controller patches: the labeled workloads, then the late-labeled ones.
    with Emulator() as ref:
        populate(ref)
        one = Controller(Kube.connect(str(ref.write_kubeconfig(tmp_path / "ref"))), Settings())
        one.cycle()
        label_late(ref, NAMESPACES)
        one.cycle()
        expected = sorted(patched_paths(ref))
    assert len(expected) == 2 * len(KINDS) * len(NAMESPACES)

    with Emulator() as emu:
        populate(emu)
        shards = {i: ShardProcess(emu, tmp_path, i, f"restik-{i}") for i in range(3)}
        try:
            wait_for(
                lambda: all(
                    injected(emu, ns, f"w{i}", k) for ns in NAMESPACES for i, k in enumerate(KINDS)
                ),
                timeout=30,
            )
            shards.pop(1).stop()  # shard 1 goes away; its namespaces wait for it
            label_late(emu, NAMESPACES)
            others = [ns for ns in NAMESPACES if ns not in by_shard[1]]
            wait_for(
                lambda: all(
                    injected(emu, ns, f"late{i}", k) for ns in others for i, k in enumerate(KINDS)
                ),
                timeout=30,
            )
            time.sleep(1.5)  # full cycles of shards 0 and 2 ran meanwhile
            assert not any(injected(emu, ns, "late0", "Deployment") for ns in by_shard[1])
            shards[1] = ShardProcess(emu, tmp_path, 1, "restik-1-new")  # a new pod
            wait_for(
                lambda: all(
                    injected(emu, ns, f"late{i}", k)
                    for ns in NAMESPACES
                    for i, k in enumerate(KINDS)
                ),
                timeout=30,
            )
            time.sleep(1.5)  # and nothing more happens
        finally:
            logs = [s.stop() for s in shards.values()]
        assert sorted(patched_paths(emu)) == expected  # none twice, none missed
        for r in emu.requests:
            if r.namespace in NAMESPACES and r.user.startswith("shard-"):
                assert shard_of(r.namespace, 3) == int(r.user[6:]), (r.user, r.method, r.path)
        assert all("shard " in err for err in logs)  # each says its shard in its log
        listed = {(r.user, r.path) for r in emu.requests if r.verb == "list"}
        assert ("shard-2", "/api/v1/namespaces") in listed
        assert ("shard-0", "/api/v1/namespaces") in listed
        assert ("shard-1", "/api/v1/namespaces") not in listed
        narrowed = {
            r.query.get("fieldSelector", "")
            for r in emu.requests
            if r.user == "shard-0" and r.verb == "list" and r.path == "/apis/apps/v1/deployments"
        }
        assert narrowed and all(
            f"metadata.namespace!={ns}" in selector
            for selector in narrowed
            for ns in by_shard[1] + by_shard[2]
        )
        leases = {
            lease["metadata"]["name"]: lease["spec"]["holderIdentity"]
            for lease in emu.list("coordination.k8s.io/v1", "leases", "restik-system")
        }
        assert set(leases) == {f"restik-controller-{i}" for i in range(3)}


def test_per_namespace_lists_read_only_the_shards_namespaces(emulator, tmp_path):
    populate(emulator)
    kube = Kube.connect(str(emulator.write_kubeconfig(tmp_path / "kc")))
    now = [0.0]
    wide = ShardKube(kube, Shard(3, 2))
    narrow = ShardKube(kube, Shard(3, 2), lists="namespace", clock=lambda: now[0])
    own = sorted(ns for ns in NAMESPACES if shard_of(ns, 3) == 2)
    path = "/apis/apps/v1/deployments"

    def names(client):
        pages = list(client.list_pages(path, CONFIG_LABEL))
        return pages[0][0], sorted(
            (o["metadata"]["namespace"], o["metadata"]["name"]) for _, items in pages for o in items
        )

    _, want = names(wide)
    assert want and {ns for ns, _ in want} == set(own)
    emulator.clear_requests()
    rv_narrow, got = names(narrow)
    assert got == want
    assert int(rv_narrow) <= int(emulator.resource_version)
    assert [r.path for r in emulator.requests] == [
        "/api/v1/namespaces",
        *(f"/apis/apps/v1/namespaces/{ns}/deployments" for ns in own),
    ]
    emulator.clear_requests()
    now[0] += 1.0
    names(narrow)  # within the TTL: the namespaces are not listed again
    assert "/api/v1/namespaces" not in [r.path for r in emulator.requests]
    now[0] += 10.0
    emulator.clear_requests()
    names(narrow)
    assert next(r.path for r in emulator.requests) == "/api/v1/namespaces"
    assert names(ShardKube(kube, Shard(3, 2), lists="namespace"))[1] == want
    # paths that are not the cycle's cluster-wide collections pass through, filtered
    emulator.clear_requests()
    pods = list(narrow.list_pages("/api/v1/pods"))
    assert [r.path for r in emulator.requests] == ["/api/v1/pods"] and pods[0][1] == []


def test_per_namespace_lists_ask_for_the_next_namespace_while_one_is_planned():
    """The round trip of each namespace's LIST overlaps the planning of the one before; the
    pages still come in order, continued pages included, and nothing is asked twice."""
    import threading

    names = sorted(ns for ns in NAMESPACES if shard_of(ns, 3) == 2)[:3]
    asked: list[tuple[str, str | None]] = []
    seen = threading.Condition()

    class Fake:
        def list_pages(self, path, label_selector=None, limit=500):
            yield "1", [{"metadata": {"name": ns}} for ns in NAMESPACES]

        def list(self, path, label_selector=None, limit=None, continue_token=None):
            with seen:
                asked.append((path, continue_token))
                seen.notify_all()
            ns = path.split("/")[-2]
            if continue_token is None:  # two pages per namespace
                return {"metadata": {"resourceVersion": "7", "continue": ns}, "items": [ns]}
            return {"metadata": {"resourceVersion": "7"}, "items": [f"{ns}+"]}

    path = "/apis/apps/v1/deployments"
    pages = ShardKube(Fake(), Shard(3, 2), lists="namespace").list_pages(path, CONFIG_LABEL)
    assert next(pages) == ("7", [names[0]])
    with seen:  # the next namespace is asked for before this one is consumed
        assert seen.wait_for(lambda: len(asked) == 2, timeout=10)
    assert asked == [
        (f"/apis/apps/v1/namespaces/{names[0]}/deployments", None),
        (f"/apis/apps/v1/namespaces/{names[1]}/deployments", None),
    ]
    rest = [items for _, items in pages]
    own = sorted(ns for ns in NAMESPACES if shard_of(ns, 3) == 2)
    assert [names[0], *(i for items in rest for i in items)] == [
        x for ns in own for x in (ns, f"{ns}+")
    ]
    assert len(asked) == 2 * len(own) and len(set(asked)) == len(asked)


def excluded(shard: int, namespaces) -> str:
    """The fieldSelector a shard sends: every namespace of the other shards left out."""
    return ",".join(
        f"metadata.namespace!={ns}" for ns in sorted(namespaces) if shard_of(ns, 3) != shard
    )


def test_excluding_lists_ask_the_server_for_the_shards_share_only(emulator, tmp_path):
    """lists="exclude": one cluster-wide LIST per kind (every page of it) with a fieldSelector
    leaving out the other shards' namespaces; the server sends the shard's objects only, the
    same the cluster-wide LIST keeps."""
    from reconciler.resources import crd_manifests

    populate(emulator)
    for crd in crd_manifests():
        if crd["metadata"]["name"] != crd_manifest()["metadata"]["name"]:
            emulator.create(crd)  # the Restores'
    kube = Kube.connect(str(emulator.write_kubeconfig(tmp_path / "kc")))
    wide = ShardKube(kube, Shard(3, 2))
    narrow = ShardKube(kube, Shard(3, 2), lists="exclude")
    path = "/apis/apps/v1/deployments"
    all_namespaces = [n["metadata"]["name"] for n in emulator.list("v1", "namespaces")]
    assert set(NAMESPACES) < set(all_namespaces)
    selector = excluded(2, all_namespaces)

    def names(client, limit=500):
        pages = list(client.list_pages(path, CONFIG_LABEL, limit))
        return sorted(
            (o["metadata"]["namespace"], o["metadata"]["name"]) for _, items in pages for o in items
        )

    want = names(wide)
    assert wide.dropped > 0
    emulator.clear_requests()
    assert names(narrow, limit=1) == want  # one object a page: the selector on every page
    assert narrow.dropped == 0  # the server sent nothing of another shard
    lists = [(r.path, r.query) for r in emulator.requests]
    assert lists[0][0] == "/api/v1/namespaces"
    assert len(lists) == 1 + len(want)
    assert {p for p, _ in lists[1:]} == {path}
    assert all(q["fieldSelector"] == selector and q["labelSelector"] == CONFIG_LABEL
               for _, q in lists[1:])  # fmt: skip
    assert sum("continue" in q for _, q in lists[1:]) == len(want) - 1
    # the other cluster-wide LISTs of the cycle, paged or not, are narrowed the same way
    emulator.clear_requests()
    list(narrow.list_pages(BACKUPS.path()))
    list(narrow.list_pages(ROLES.path(), "a=b"))
    narrow.list(RESTORES.path())
    narrow.list("/api/v1/pods")  # not a LIST of the cycle: as asked
    narrow.list("/apis/apps/v1/deployments", field_selector="metadata.name=w0")  # the caller's
    assert [(r.path, r.query.get("fieldSelector")) for r in emulator.requests] == [
        (BACKUPS.path(), selector),
        (ROLES.path(), selector),
        (RESTORES.path(), selector),
        ("/api/v1/pods", None),
        ("/apis/apps/v1/deployments", "metadata.name=w0"),
    ]


def test_a_namespace_created_after_the_namespace_list_is_still_sharded(emulator, tmp_path):
    """A namespace the exclusion does not know yet (created within NAMESPACES_TTL) is sent to
    every shard: each keeps it only if it is its own, so correctness never rests on the
    selector."""
    populate(emulator)
    kube = Kube.connect(str(emulator.write_kubeconfig(tmp_path / "kc")))
    now = [0.0]
    shards = [ShardKube(kube, Shard(3, i), lists="exclude", clock=lambda: now[0]) for i in range(3)]
    path = "/apis/apps/v1/deployments"
    for s in shards:
        list(s.list_pages(path, CONFIG_LABEL))  # lists the namespaces
    late = {}
    for i in range(100):  # one new namespace of each shard
        ns = f"late-{i}"
        late.setdefault(shard_of(ns, 3), ns)
        if len(late) == 3:
            break
    for ns in late.values():
        emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        obj = workload("Deployment", "new", "www")
        obj["metadata"]["namespace"] = ns
        emulator.create(obj)
    now[0] += 1.0  # within the TTL: the exclusions do not name the new namespaces
    seen = []
    for i, s in enumerate(shards):
        got = {
            o["metadata"]["namespace"]
            for _, items in s.list_pages(path, CONFIG_LABEL)
            for o in items
            if o["metadata"]["name"] == "new"
        }
        assert got == {late[i]}
        assert s.dropped == 2  # the two other new ones came, and were dropped
        seen.append(got)
    now[0] += 10.0  # after the TTL: excluded by the server too
    for s in shards:
        s.dropped = 0
        list(s.list_pages(path, CONFIG_LABEL))
        assert s.dropped == 0


def test_an_exclusion_too_long_reads_per_namespace(emulator, tmp_path, monkeypatch):
    """Past EXCLUDE_MAX_QUERY bytes of query (32 KiB) the shard reads per namespace instead;
    at the limit it still excludes; and when the server refuses a selector for its length
    (414 or 431: here the emulator's HTTP server, which takes 64 KiB of request line) the
    shard reads that LIST per namespace and never sends a selector that long again."""
    from reconciler.controller import shard as shard_module

    assert shard_module.EXCLUDE_MAX_QUERY == 32 * 1024
    populate(emulator)
    for i in range(1200):  # ~800 namespaces of the other shards, ~90 bytes each
        name = f"a-namespace-with-a-name-as-long-as-a-dns-label-may-be-{i:04d}"
        emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    kube = Kube.connect(str(emulator.write_kubeconfig(tmp_path / "kc")))
    path = "/apis/apps/v1/deployments"
    narrow = ShardKube(kube, Shard(3, 2), lists="exclude")
    mine = {ns for ns in NAMESPACES if shard_of(ns, 3) == 2}

    def read(client):
        emulator.clear_requests()
        got = list(client.list_pages(path, CONFIG_LABEL))
        assert {o["metadata"]["namespace"] for _, items in got for o in items} == mine
        return [(r.path, r.query.get("fieldSelector"), r.status) for r in emulator.requests]

    per_namespace = [
        (f"/apis/apps/v1/namespaces/{ns}/deployments", None, 200) for ns in narrow.own_namespaces()
    ]
    assert read(narrow) == per_namespace
    selector = shard_module.exclusion(narrow.namespaces(own=False))
    size = shard_module.query_bytes(selector)
    assert 32 * 1024 < 65536 < size  # the emulator's HTTP server refuses it (414)
    monkeypatch.setattr(shard_module, "EXCLUDE_MAX_QUERY", size)  # exactly at the limit
    assert narrow.excluding(path) == selector
    monkeypatch.setattr(shard_module, "EXCLUDE_MAX_QUERY", size - 1)
    assert narrow.excluding(path) is None
    # allowed, but refused by the server: per namespace, now and from then on
    monkeypatch.setattr(shard_module, "EXCLUDE_MAX_QUERY", 2**20)
    assert narrow.excluding(path) == selector
    assert read(narrow) == per_namespace  # the refused request never reached the emulator
    assert narrow.max_query == size - 1 and narrow.excluding(path) is None
    assert read(narrow) == per_namespace
    # the same for a LIST in one piece and a watch
    for client_call in (
        lambda c: c.list(ROLES.path()),
        lambda c: list(c.watch(path, "1", CONFIG_LABEL, timeout_s=0)),
    ):
        fresh = ShardKube(kube, Shard(3, 2), lists="exclude")
        fresh.namespaces(own=False)
        emulator.clear_requests()
        client_call(fresh)
        assert fresh.max_query == size - 1
        assert [(r.query.get("fieldSelector"), r.status) for r in emulator.requests] == [
            (None, 200)
        ]


def test_an_unknown_shard_lists_mode_is_refused():
    with pytest.raises(ValueError, match="--shard-lists: 'nodes' is not one of"):
        ShardKube(object(), Shard(3, 0), lists="nodes")


def test_excluding_watches_carry_the_selector_of_the_lists(emulator, tmp_path):
    """lists="exclude": a watch of a cycle's collection asks for the shard's namespaces only
    (the other shards' events are not sent at all); others pass through as asked."""
    populate(emulator)
    kube = Kube.connect(str(emulator.write_kubeconfig(tmp_path / "kc")))
    rv = emulator.resource_version
    for ns in NAMESPACES:  # one change per namespace after rv
        obj = emulator.get("apps/v1", "Deployment", "w0", ns)
        obj["metadata"]["labels"]["touched"] = "yes"
        emulator.update(obj)
    path = "/apis/apps/v1/deployments"
    own = {ns for ns in NAMESPACES if shard_of(ns, 3) == 2}

    def events(client):
        got = collections.Counter()
        for event in client.watch(path, str(rv), CONFIG_LABEL, timeout_s=1):
            meta = event["object"]["metadata"]
            got[(event["type"], meta.get("namespace"))] += 1
        return got

    emulator.clear_requests()
    wide = events(ShardKube(kube, Shard(3, 2)))
    assert {ns for (t, ns) in wide if t == "MODIFIED"} == own
    assert wide[("BOOKMARK", None)] >= len(NAMESPACES) - len(own)  # the others', emptied
    narrow_client = ShardKube(kube, Shard(3, 2), lists="exclude")
    narrow = events(narrow_client)
    assert {ns for (t, ns) in narrow if t == "MODIFIED"} == own
    assert narrow[("BOOKMARK", None)] < len(NAMESPACES) - len(own)  # not sent at all
    watches = [r.query for r in emulator.requests if r.query.get("watch") == "true"]
    assert [q.get("fieldSelector") for q in watches] == [
        None,
        excluded(2, [n["metadata"]["name"] for n in emulator.list("v1", "namespaces")]),
    ]
    assert all(q["labelSelector"] == CONFIG_LABEL for q in watches)
    emulator.clear_requests()
    list(narrow_client.watch("/api/v1/pods", str(rv), None, timeout_s=1))
    assert [r.query.get("fieldSelector") for r in emulator.requests] == [None]
