"""LIST answers decoded item by item (kube.client.ListItems): the same objects json.loads
gives, for every kind, over pages and continue tokens, and the same plan as before."""

from __future__ import annotations

import json

import pytest

from reconciler.controller.observe import Observer
from reconciler.controller.options import Settings
from reconciler.controller.render import Renderer
from reconciler.kube.client import ApiError, JsonObjects, Kube, ListItems, decode_listing
from reconciler.kube.resource import BACKUPS, WORKLOADS
from tests.factories.cluster import backup, workload

HOSTILE = [
    {"metadata": {"name": "caf\u00e9", "namespace": "web"}, "data": "\u00e9\u4e2d\U0001f600"},
    {"metadata": {"name": "x"}, "s": 'a "quoted" ], {comma}, \\ back\\slash', "n": None},
    {"metadata": {"name": "y"}, "list": [1, 2.5, -3e2, True, False, [], {}], "e": ""},
]


def _lazy(body: bytes) -> dict:
    listing = decode_listing(body, "/x")
    assert isinstance(listing["items"], ListItems)
    return {**listing, "items": list(listing["items"])}


@pytest.mark.parametrize(
    "dump",
    [
        lambda d: json.dumps(d).encode(),  # \\u escapes for every non-ASCII character
        lambda d: json.dumps(d, ensure_ascii=False).encode(),  # raw UTF-8
        lambda d: json.dumps(d, indent=2).encode(),  # whitespace and newlines everywhere
        lambda d: json.dumps(d, separators=(",", ":")).encode(),  # none at all
        lambda d: b"\xef\xbb\xbf" + json.dumps(d).encode(),  # a UTF-8 byte order mark
    ],
)
def test_lazy_items_are_what_json_loads_gives(dump):
    doc = {
        "kind": "List",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "42", "continue": "tok\u00e9n"},
        "items": HOSTILE,
        "after": {"k": [1]},
    }
    body = dump(doc)
    expected = json.loads(body.decode("utf-8-sig"))
    del expected["after"]  # checked to be JSON, not kept: nobody reads past the items
    assert _lazy(body) == expected
    assert decode_listing(body, "/x")["items"].decoded() == HOSTILE


def test_a_surrogate_pair_escape_decodes_as_json_loads_does():
    body = b'{"metadata": {}, "items": [{"s": "\\ud83d\\ude00 \\u00e9 \\n\\t\\"\\/"}]}'
    assert _lazy(body) == json.loads(body)


def test_empty_and_null_items():
    assert _lazy(b'{"metadata": {"resourceVersion": "1"}, "items": [ ]}')["items"] == []
    assert decode_listing(b'{"metadata": {}, "items": null}') == {"metadata": {}, "items": None}
    assert decode_listing(b"{ }") == {}


def test_items_before_metadata_are_decoded_at_once():
    """Go's API server writes metadata first; any other order is still read whole."""
    body = json.dumps({"items": HOSTILE, "metadata": {"continue": "c"}}).encode()
    assert decode_listing(body) == json.loads(body)


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[1, 2]", b'{"metadata": {}', b'{"metadata": {}} x', b'{"a" 1}', b"\xff"],
)
def test_a_broken_answer_is_empty_as_before(body):
    assert decode_listing(body) == {}


@pytest.mark.parametrize(
    "tail",
    [b'{"a": 1}', b'{"a": 1} {"b": 2}]}', b'{"a": 1},]}', b'{"a": 1}]', b'{"a": 1}]} x', b"{"],
)
def test_broken_items_fail_the_list_with_its_path(tail):
    listing = decode_listing(b'{"metadata": {}, "items": [' + tail, "/apis/apps/v1/deployments")
    with pytest.raises(ApiError, match="/apis/apps/v1/deployments") as info:
        list(listing["items"])
    assert info.value.status == 200 and not info.value.retryable
    listing = decode_listing(b'{"metadata": {}, "items": [' + tail, "/p")
    with pytest.raises(ApiError, match="/p"):
        listing["items"].decoded()


def test_items_are_iterated_once():
    items = decode_listing(b'{"metadata": {}, "items": [{"a": 1}]}')["items"]
    assert list(items) == [{"a": 1}]
    with pytest.raises(RuntimeError, match="iterated already"):
        list(items)


def test_pages_of_every_kind_through_continue_tokens(cluster, kubeconfig):
    """Over real HTTP: pages of 2 (each but the last with a continue token) give exactly
    the objects of one unpaged LIST, for the Backups and every workload kind."""
    cluster.create(backup())
    for kind in WORKLOADS:
        for i in range(5):
            cluster.create(workload(kind, f"w{i}"))
    kube = Kube.connect(str(kubeconfig))
    paths = [BACKUPS.path(None)] + [res.path(None) for res in WORKLOADS.values()]
    cluster.clear_requests()
    for path in paths:
        whole = kube.list(path)["items"]
        pages = list(kube.list_pages(path, None, 2))
        assert all(isinstance(items, ListItems) for _, items in pages)
        assert [o for _, items in pages for o in items] == whole
        assert len(pages) == (len(whole) + 1) // 2
    continued = [r for r in cluster.requests if "continue" in r.query]
    assert len(continued) == 5 * 2  # 1 Backup: one page; 5 of each kind: 3 pages


def _plan_of(kube, first_cycle: bool):
    observer = Observer(kube, Settings(page_size=2), Renderer())
    snap = observer.observe(
        with_backups=True, first_cycle=first_cycle, known_injected=set(), pending_restarts=set()
    )
    plan = snap.plan
    return {
        "changes": [(c.ref, c.action, c.backup, c.before, c.after) for c in plan.changes],
        "problems": [str(p) for p in plan.problems],
        "selected": plan.selected,
        "injected": plan.injected,
        "service_accounts": plan.service_accounts,
        "rollouts": snap.rollouts,
        "labeled": snap.labeled,
        "pending": snap.pending_restarts,
        "restart_owners": snap.restart_owners,
        "workloads": snap.workloads,
        "raw_backups": snap.raw_backups,
        "rvs": snap.resource_versions,
    }


class EagerPages:
    """The old way: every page decoded whole before it is planned."""

    def __init__(self, kube):
        self.kube = kube

    def __getattr__(self, name):
        return getattr(self.kube, name)

    def list_pages(self, path, label_selector=None, limit=500):
        for rv, items in self.kube.list_pages(path, label_selector, limit):
            yield rv, list(items)


@pytest.mark.parametrize("first_cycle", [True, False])
def test_the_plan_is_the_one_of_whole_pages(cluster, kubeconfig, first_cycle):
    cluster.create(backup())
    cluster.create(backup(name="other", volume="nope"))
    for i, kind in enumerate([*WORKLOADS, *WORKLOADS]):
        label = ("www", "other", "missing")[i % 3]
        cluster.create(workload(kind, f"w{i}", label=label, sa=f"sa{i % 2}"))
    cluster.create(workload("Deployment", "plain", label=None))
    kube = Kube.connect(str(kubeconfig))
    lazy, eager = _plan_of(kube, first_cycle), _plan_of(EagerPages(kube), first_cycle)
    assert lazy == eager
    assert lazy["changes"] and lazy["problems"] and lazy["workloads"] == 10


def test_with_texts_gives_each_item_and_its_exact_text():
    body = json.dumps({"metadata": {}, "items": HOSTILE}, indent=1).encode()
    pairs = list(decode_listing(body)["items"].with_texts())
    assert [item for item, _ in pairs] == HOSTILE
    assert [json.loads(text) for _, text in pairs] == HOSTILE


def test_json_objects_decode_a_new_copy_at_each_read():
    kept = JsonObjects({("web", "a"): HOSTILE[0]})
    kept.keep(("web", "b"), json.dumps(HOSTILE[1]))
    assert kept == {("web", "a"): HOSTILE[0], ("web", "b"): HOSTILE[1]}
    assert kept.get(("web", "c")) is None and ("web", "b") in kept and len(kept) == 2
    kept[("web", "a")]["metadata"]["name"] = "changed"
    assert kept[("web", "a")] == HOSTILE[0]


def test_the_cycle_keeps_roles_and_rolebindings_as_text(cluster, kubeconfig):
    """A converged cycle compares them as listed (no write), kept as JSON text."""
    from reconciler.controller.cycle import Controller

    cluster.create(backup())
    cluster.create(workload("Deployment", "w0"))
    controller = Controller(Kube.connect(str(kubeconfig)), Settings(page_size=1))
    controller.cycle()
    snap = controller.observer.observe(
        with_backups=True, first_cycle=False, known_injected=set(), pending_restarts=set()
    )
    assert isinstance(snap.roles, JsonObjects) and isinstance(snap.rolebindings, JsonObjects)
    assert list(snap.roles) == list(snap.rolebindings) == [("web", "restik-sidecar-www")]
    cluster.clear_requests()
    controller.cycle()
    assert [r for r in cluster.requests if r.method != "GET"] == []


def test_an_item_is_decoded_only_when_it_is_reached():
    """Lazy: the first item comes out before the second, broken one, is looked at (an
    eager decoding would fail the whole page at once)."""
    items = iter(decode_listing(b'{"metadata": {}, "items": [{"a": 1}, {"b": ]}', "/p")["items"])
    assert next(items) == {"a": 1}
    with pytest.raises(ApiError, match="/p"):
        next(items)
