"""`restik restore-run`, the Restore executor: snapshot choice (per host and path), restic's
restore arguments and progress (pure), and whole runs with real restic against the API
emulator: owners and modes kept, status figures, Events, run-once, and every failure with
its reason (never a silent empty restore, never a secret)."""

from __future__ import annotations

import argparse
import json
import os
import threading
from datetime import datetime

import pytest

from reconciler.api.constants import RESTORED_ANNOTATION
from reconciler.api.restore import parse_restore
from sidecar.restic import Context
from sidecar.restore import (
    NoSnapshot,
    Progress,
    Snapshot,
    describe_snapshots,
    earlier_restore,
    parse_snapshots,
    render_restore,
    select_snapshot,
    with_host,
)
from sidecar.restore_start import EarlyListing, listing_argv, start_listing
from tests.factories import (
    PASSWORD,
    RESTIC,
    base_env,
    make_backup,
    needs_restic,
    restic,
    tree_bytes,
    wait_for,
)
from tests.factories.restores import API, NS, restore_raw, restore_site


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def snap(sid: str, when: str, host: str = "db-0") -> Snapshot:
    return Snapshot(id=sid, time=at(when), host=host, paths=("/data",))


# ---------------------------------------------------------------- pure

SNAPS = [
    snap("aaaa1111" * 8, "2026-01-01T10:00:00Z"),
    snap("bbbb2222" * 8, "2026-01-02T10:00:00Z"),
    snap("cccc3333" * 8, "2026-01-03T10:00:00Z", host="db-1"),
]


def test_the_newest_snapshot_of_the_host_by_default():
    r = parse_restore(restore_raw())
    assert select_snapshot(SNAPS, r, "db-0").short_id == "bbbb2222"
    assert select_snapshot(SNAPS, r, "db-1").short_id == "cccc3333"


@pytest.mark.parametrize(
    ("as_of", "expected"),
    [
        ("2026-01-01T10:00:00Z", "aaaa1111"),  # at: included
        ("2026-01-02T09:59:59Z", "aaaa1111"),
        ("2026-01-02T12:00:00+02:00", "bbbb2222"),  # 10:00 UTC
        ("2030-01-01T00:00:00Z", "bbbb2222"),
    ],
)
def test_as_of_is_the_newest_at_or_before(as_of, expected):
    r = parse_restore(restore_raw(asOf=as_of))
    assert select_snapshot(SNAPS, r, "db-0").short_id == expected


def test_nothing_before_as_of_is_no_snapshot():
    r = parse_restore(restore_raw(asOf="2025-12-31T00:00:00Z"))
    with pytest.raises(
        NoSnapshot, match="host db-0 has no snapshot at or before 2025-12-31T00:00:00Z"
    ):
        select_snapshot(SNAPS, r, "db-0")


def test_a_snapshot_id_must_belong_to_the_host():
    r = parse_restore(restore_raw(snapshot="cccc3333"))
    with pytest.raises(NoSnapshot, match="host db-0 has no snapshot cccc3333"):
        select_snapshot(SNAPS, r, "db-0")
    assert select_snapshot(SNAPS, r, "db-1").id == "cccc3333" * 8


def test_an_ambiguous_prefix_is_refused():
    twins = [
        snap("abcdef01" + "0" * 56, "2026-01-01T00:00:00Z"),
        snap("abcdef01" + "1" * 56, "2026-01-02T00:00:00Z"),
    ]
    with pytest.raises(NoSnapshot, match="ambiguous"):
        select_snapshot(twins, parse_restore(restore_raw(snapshot="abcdef01")), "db-0")


def test_what_exists_is_listed_per_host_newest_first():
    text = describe_snapshots(SNAPS, "/data")
    assert text == (
        "snapshots of /data: db-0: 2026-01-02T10:00:00Z (bbbb2222), 2026-01-01T10:00:00Z "
        "(aaaa1111); db-1: 2026-01-03T10:00:00Z (cccc3333)"
    )
    assert describe_snapshots([], "/data") == "the repository has no snapshot of /data"
    many = [snap(f"{i:08x}", f"2026-01-{i + 1:02d}T00:00:00Z") for i in range(7)]
    assert describe_snapshots(many, "/data").endswith("(00000002) and 2 older")


def test_parse_snapshots_reads_restic_json_and_sorts_by_time():
    text = json.dumps(
        [
            {"id": "b" * 64, "time": "2026-01-02T10:00:00.123456789+01:00", "hostname": "h",
             "paths": ["/data"], "tags": ["prod"],
             "summary": {"total_bytes_processed": 42, "total_files_processed": 3}},
            {"id": "a" * 64, "time": "2026-01-01T10:00:00Z", "hostname": "h"},
            {"id": 5, "time": "x"},
            "junk",
        ]
    )  # fmt: skip
    snaps = parse_snapshots(text)
    assert [s.short_id for s in snaps] == ["aaaaaaaa", "bbbbbbbb"]
    assert snaps[1].size == 42 and snaps[1].files == 3 and snaps[1].tags == ("prod",)
    assert snaps[0].size is None
    assert parse_snapshots("not json") == []


def test_restore_arguments_anchor_patterns_at_the_source_path():
    backup = make_backup("/var/www", "/repo")
    ctx = Context(host="db-0", cache_dir="/c", restic="restic")
    r = parse_restore(
        restore_raw(include=["uploads", "a/b.txt"], exclude=["*.tmp"], delete=True, verify=True)
    )
    assert render_restore(backup, ctx, r, "f" * 64, "/mnt/x") == [
        "restic", "--repo=/repo", "--cache-dir=/c", "restore", "--json", "--target=/mnt/x",
        "--include=/uploads", "--include=/a/b.txt", "--exclude=/*.tmp", "--delete", "--verify",
        "--", "f" * 64 + ":/var/www",
    ]  # fmt: skip
    plain = parse_restore(restore_raw())
    assert "--delete" not in render_restore(backup, ctx, plain, "f" * 64, "/var/www")


def test_progress_folds_status_and_summary_lines():
    p = Progress()
    assert not p.feed("restoring <Snapshot ...>")
    assert p.feed('{"message_type":"status","percent_done":0.5,"total_files":4,'
                  '"files_restored":2,"total_bytes":100,"bytes_restored":50}')  # fmt: skip
    assert (p.percent, p.files, p.bytes_restored, p.done) == (0.5, 2, 50, False)
    assert not p.feed('{"message_type":"error","error":{"message":"no space"},"item":"/a"}')
    assert p.errors == ["/a: no space"]
    summary = {
        "message_type": "summary",
        "total_files": 4,
        "files_restored": 3,
        "files_skipped": 1,
        "total_bytes": 100,
        "bytes_restored": 90,
        "bytes_skipped": 10,
    }
    assert p.feed(json.dumps(summary))
    assert (p.percent, p.files, p.done) == (1.0, 4, True)


def test_progress_ignores_lines_restic_cut_short_or_printed_as_text():
    p = Progress()
    assert p.feed('{"message_type":"status","percent_done":0.25,"total_files":4}')
    for line in (
        '{"message_type":"status","percent_done":0.9,"total_fi',  # restic killed mid-line
        '{"message_type":"summary"',
        "Fatal: wrong password or no key found",
        "[]",
        '{"message_type":"verbose_status","action":"restored","item":"/a"}',
    ):
        assert not p.feed(line)
    assert (p.percent, p.total_files, p.done, p.errors) == (0.25, 4, False, [])


def test_host_entries_of_an_earlier_run_are_dropped():
    status = {"hosts": [{"host": "db-1", "phase": "Succeeded"}, {"host": "db-2", "runID": "b"}]}
    assert with_host(status, {"host": "db-0", "runID": "b"}) == [
        {"host": "db-0", "runID": "b"},
        {"host": "db-2", "runID": "b"},
    ]


def test_a_claims_annotation_stops_a_recreated_restore():
    r = parse_restore({**restore_raw(), "metadata": {"name": "r1", "namespace": NS, "uid": "u2"}})
    note = {"restore": "r1", "uid": "u1", "snapshot": "abcd1234", "time": "2026-01-01T00:00:00Z"}
    why = earlier_restore({RESTORED_ANNOTATION: json.dumps(note)}, r)
    assert why.startswith(
        "the claim was restored by an earlier Restore r1 (uid u1) from snapshot abcd1234"
    )
    assert earlier_restore({RESTORED_ANNOTATION: json.dumps({**note, "restore": "r0"})}, r) is None
    assert earlier_restore({RESTORED_ANNOTATION: json.dumps({**note, "uid": "u2"})}, r).startswith(
        "the claim was restored by this Restore"
    )
    assert (
        earlier_restore({RESTORED_ANNOTATION: json.dumps({**note, "uid": "u2", "runID": "x"})}, r)
        is None
    )
    assert earlier_restore({RESTORED_ANNOTATION: "{"}, r) is None


# ---------------------------------------------------------------- real runs
@pytest.fixture
def site(emulator, tmp_path):
    """The emulator with a claim, a Backup into a real repository, and the executor."""
    return restore_site(emulator, tmp_path)


@needs_restic
@pytest.mark.slow
def test_a_pvc_restore_as_of_with_include_keeps_owners_and_modes(site, tmp_path):
    site.snapshot("db-0", {"old.txt": b"old"}, "2026-01-01 10:00:00")
    files = {"uploads/a.bin": os.urandom(200_000), "uploads/deep/b.txt": b"b\n", "skip.txt": b"s"}
    wanted = site.snapshot("db-0", files, "2026-01-02 10:00:00")
    site.snapshot("db-0", {"new.txt": b"new"}, "2026-01-03 10:00:00")
    site.backup_object()
    site.restore(asOf="2026-01-02T12:00:00Z", include=["uploads"])
    target = tmp_path / "claim"
    target.mkdir()
    assert site.executor(target=target).run() == 0

    assert tree_bytes(target) == {k: v for k, v in files.items() if k.startswith("uploads/")}
    status = site.get()["status"]
    assert status["phase"] == "Succeeded" and status["target"] == "pvc/copy"
    assert status["snapshot"] == wanted[:8]
    [host] = status["hosts"]
    assert host["host"] == "copy" and host["sourceHost"] == "db-0"
    assert host["snapshotID"] == wanted[:8] and host["snapshotTime"] == "2026-01-02T10:00:00Z"
    # restic counts directories as files too: uploads/, uploads/deep/ and the two files
    assert host["filesRestored"] == 4 and host["bytesRestored"] == 200_002
    assert host["phase"] == "Succeeded" and host["duration"].endswith("s")
    claim = site.emu.get("v1", "persistentvolumeclaims", "copy", NS)
    note = json.loads(claim["metadata"]["annotations"][RESTORED_ANNOTATION])
    assert note["restore"] == "r1" and note["snapshot"] == wanted[:8]
    events = sorted(site.events())
    assert [(e[0], e[1]) for e in events] == [
        ("RestoreStarted", "Normal"),
        ("RestoreSucceeded", "Normal"),
    ]
    assert f"snapshot {wanted[:8]} of db-0 (2026-01-02T10:00:00Z): 4 files" in events[1][2]


@needs_restic
@pytest.mark.slow
def test_owners_and_modes_of_another_uid_are_restored(site, tmp_path):
    site.src.mkdir()
    (site.src / "private").mkdir(mode=0o700)
    (site.src / "private" / "key").write_bytes(b"k")
    os.chown(site.src / "private", 1234, 2345)
    os.chown(site.src / "private" / "key", 1234, 2345)
    os.chmod(site.src / "private" / "key", 0o600)
    (site.src / "script.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(site.src / "script.sh", 0o4755)
    restic(str(site.repo), "backup", "--host", "db-0", str(site.src))
    site.backup_object()
    site.restore()
    target = tmp_path / "claim"
    assert site.executor(target=target).run() == 0
    for rel in ("private", "private/key", "script.sh"):
        before, after = (site.src / rel).stat(), (target / rel).stat()
        assert (after.st_uid, after.st_gid, after.st_mode) == (
            before.st_uid,
            before.st_gid,
            before.st_mode,
        ), rel
    assert (target / "private" / "key").stat().st_uid == 1234


@needs_restic
@pytest.mark.slow
def test_a_finished_restore_never_runs_again(site, tmp_path):
    site.snapshot("db-0", {"a.txt": b"v1"}, "2026-01-01 10:00:00")
    site.backup_object()
    site.restore()
    target = tmp_path / "claim"
    assert site.executor(target=target).run() == 0
    (target / "a.txt").write_bytes(b"newer data")
    site.emu.clear_requests()
    assert site.executor(target=target).run() == 0  # pod restart, controller restart, ...
    assert (target / "a.txt").read_bytes() == b"newer data"
    assert [r.method for r in site.emu.requests] == ["GET"]  # read the Restore, nothing else
    # deleted and re-created under the same name: the claim's annotation stops it
    site.emu.delete(API, "restores", "r1", NS)
    site.restore()
    assert site.executor(target=target).run() == 1
    assert (target / "a.txt").read_bytes() == b"newer data"
    status = site.get()["status"]
    assert status["phase"] == "Failed"
    assert "earlier Restore r1" in status["message"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "AlreadyRestored"


@needs_restic
@pytest.mark.slow
def test_a_new_run_id_runs_once_more(site, tmp_path):
    site.snapshot("db-0", {"a.txt": b"v1"}, "2026-01-01 10:00:00")
    site.backup_object()
    site.restore(runID="one")
    target = tmp_path / "claim"
    assert site.executor(target=target).run() == 0
    (target / "a.txt").write_bytes(b"changed")
    obj = site.get()
    obj["spec"]["runID"] = "two"
    site.emu.update(obj)
    assert site.executor(target=target).run() == 0
    assert (target / "a.txt").read_bytes() == b"v1"
    assert site.get()["status"]["runID"] == "two"


@needs_restic
@pytest.mark.slow
def test_no_snapshot_for_the_host_fails_listing_what_exists(site, tmp_path):
    site.snapshot("db-0", {"a.txt": b"0"}, "2026-01-01 10:00:00")
    site.snapshot("db-1", {"a.txt": b"1"}, "2026-01-02 10:00:00")
    site.backup_object()
    site.restore(target={"workload": {"kind": "StatefulSet", "name": "db"}})
    ex = site.executor(target=tmp_path / "t", workload=("StatefulSet", "db"), pod="db-2")
    assert ex.run() == 1
    status = site.get()["status"]
    assert status["phase"] == "Failed"
    message = status["message"]
    assert message.startswith("host db-2: host db-2 has no snapshot; snapshots of ")
    assert "db-0: 2026-01-01T10:00:00Z (" in message and "db-1: 2026-01-02T10:00:00Z (" in message
    assert not (tmp_path / "t" / "a.txt").exists()
    assert [e[:2] for e in site.events()] == [("RestoreFailed", "Warning")]


@needs_restic
@pytest.mark.slow
def test_each_statefulset_pod_restores_its_own_host_and_hosts_map(site, tmp_path):
    site.snapshot("db-0", {"who": b"zero"}, "2026-01-01 10:00:00")
    site.snapshot("db-1", {"who": b"one"}, "2026-01-01 10:00:00")
    site.backup_object()
    site.restore(
        target={"workload": {"kind": "StatefulSet", "name": "db"}},
        hosts={"db-2": "db-0"},  # a third pod is a clone of the first
    )
    for pod, expected in (("db-0", b"zero"), ("db-1", b"one"), ("db-2", b"zero")):
        target = tmp_path / pod
        assert site.executor(target=target, workload=("StatefulSet", "db"), pod=pod).run() == 0
        assert (target / "who").read_bytes() == expected
    on_sts = [
        (e["reason"], e["message"])
        for e in site.emu.list("v1", "events", NS)
        if e["involvedObject"]["kind"] == "StatefulSet"
    ]
    assert sorted(r for r, _ in on_sts) == ["RestoreStarted"] * 3 + ["RestoreSucceeded"] * 3
    assert all(m.startswith("Restore r1: host db-") for _, m in on_sts)
    status = site.get()["status"]
    assert [(h["host"], h["sourceHost"], h["phase"]) for h in status["hosts"]] == [
        ("db-0", "db-0", "Succeeded"),
        ("db-1", "db-1", "Succeeded"),
        ("db-2", "db-0", "Succeeded"),
    ]
    # every host is done, but only the controller knows how many pods there are
    assert status["phase"] == "Running"
    # a pod restart does not restore again
    (tmp_path / "db-1" / "who").write_bytes(b"later")
    assert (
        site.executor(target=tmp_path / "db-1", workload=("StatefulSet", "db"), pod="db-1").run()
        == 0
    )
    assert (tmp_path / "db-1" / "who").read_bytes() == b"later"


@needs_restic
@pytest.mark.slow
def test_of_a_deployments_replicas_one_restores_and_the_others_wait(site, tmp_path):
    site.snapshot("www", {"index.html": b"<h1>back</h1>"}, "2026-01-01 10:00:00")
    site.backup_object()
    site.restore(target={"workload": {"kind": "Deployment", "name": "www"}})
    shared = tmp_path / "shared"  # a ReadWriteMany volume both replicas mount
    codes: dict[str, int] = {}
    executors = {
        pod: site.executor(target=shared, workload=("Deployment", "www"), pod=pod)
        for pod in ("www-a", "www-b", "www-c")
    }
    threads = [
        threading.Thread(target=lambda p=p, e=e: codes.__setitem__(p, e.run()))
        for p, e in executors.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert codes == {"www-a": 0, "www-b": 0, "www-c": 0}
    assert (shared / "index.html").read_bytes() == b"<h1>back</h1>"
    assert sorted(e[0] for e in site.events()) == ["RestoreStarted", "RestoreSucceeded"]
    status = site.get()["status"]
    assert status["phase"] == "Succeeded"
    [entry] = status["hosts"]
    assert entry["host"] == "www" and entry["pod"] in executors
    lease = site.emu.get("coordination.k8s.io/v1", "leases", "restik-restore-r1-www", NS)
    assert lease["spec"]["holderIdentity"] is None  # released


@needs_restic
@pytest.mark.slow
def test_a_snapshot_of_another_host_is_refused(site, tmp_path):
    site.snapshot("www", {"a": b"a"}, "2026-01-01 10:00:00")
    other = site.snapshot("intruder", {"a": b"b"}, "2026-01-02 10:00:00")
    site.backup_object()
    site.restore(target={"workload": {"kind": "Deployment", "name": "www"}}, snapshot=other[:8])
    assert (
        site.executor(target=tmp_path / "t", workload=("Deployment", "www"), pod="www-abc").run()
        == 1
    )
    message = site.get()["status"]["message"]
    assert (
        f"host www has no snapshot {other[:8]} (snapshot {other[:8]} belongs to host intruder)"
        in message
    )


@needs_restic
@pytest.mark.slow
def test_a_pvc_with_several_source_hosts_needs_hosts(site, tmp_path):
    site.snapshot("db-0", {"a": b"a"}, "2026-01-01 10:00:00")
    site.snapshot("db-1", {"a": b"b"}, "2026-01-01 10:00:00")
    site.backup_object()
    site.restore()
    assert site.executor(target=tmp_path / "t").run() == 1
    message = site.get()["status"]["message"]
    assert (
        "snapshots of 2 hosts (db-0, db-1): say which one with spec.hosts: {copy: <host>}"
        in message
    )
    obj = site.get()
    obj["spec"]["hosts"] = {"copy": "db-1"}
    obj["spec"]["runID"] = "again"
    site.emu.update(obj)
    assert site.executor(target=tmp_path / "t").run() == 0
    assert (tmp_path / "t" / "a").read_bytes() == b"b"


@needs_restic
@pytest.mark.slow
def test_a_wrong_password_fails_without_the_password(site, tmp_path):
    site.snapshot("db-0", {"a": b"a"}, "2026-01-01 10:00:00")
    site.backup_object()
    site.restore()
    assert site.executor(target=tmp_path / "t", password="not-the-" + PASSWORD).run() == 1
    raw = json.dumps([site.get(), site.events()])
    assert "not-the-" + PASSWORD not in raw and PASSWORD not in raw
    status = site.get()["status"]
    assert status["phase"] == "Failed"
    assert "wrong password" in status["message"]
    assert (
        next(c for c in status["conditions"] if c["type"] == "Failed")["reason"] == "WrongPassword"
    )


@needs_restic
@pytest.mark.slow
def test_a_missing_password_fails_naming_the_secret(site, tmp_path):
    site.backup_object()
    site.restore()
    assert site.executor(target=tmp_path / "t", password=None).run() == 1
    status = site.get()["status"]
    assert "Secret web/www-restic" in status["message"]
    assert (
        next(c for c in status["conditions"] if c["type"] == "Failed")["reason"] == "SecretMissing"
    )


@needs_restic
@pytest.mark.slow
def test_include_matching_nothing_is_failed_not_an_empty_success(site, tmp_path):
    site.snapshot("db-0", {"a.txt": b"a"}, "2026-01-01 10:00:00")
    site.backup_object()
    site.restore(include=["no-such-dir"])
    assert site.executor(target=tmp_path / "t").run() == 1
    status = site.get()["status"]
    assert status["phase"] == "Failed"
    assert "restic restored no file" in status["message"]


@needs_restic
@pytest.mark.slow
def test_a_missing_backup_is_pending_until_it_appears(site, tmp_path):
    site.snapshot("db-0", {"a.txt": b"a"}, "2026-01-01 10:00:00")
    site.restore()
    ex = site.executor(target=tmp_path / "t")
    result = []
    worker = threading.Thread(target=lambda: result.append(ex.run()))
    worker.start()
    try:
        wait_for(lambda: (site.get().get("status") or {}).get("phase") == "Pending", 20)
        assert site.get()["status"]["message"] == "Backup web/www not found: waiting"
        site.backup_object()
        worker.join(60)
    finally:
        ex.stop()
        worker.join(10)
    assert result == [0]
    assert site.get()["status"]["phase"] == "Succeeded"


@needs_restic
@pytest.mark.slow
def test_delete_removes_files_not_in_the_snapshot(site, tmp_path):
    site.snapshot("db-0", {"keep.txt": b"k"}, "2026-01-01 10:00:00")
    site.backup_object()
    site.restore(delete=True, verify=True)
    target = tmp_path / "t"
    target.mkdir()
    (target / "stray.txt").write_bytes(b"x")
    assert site.executor(target=target).run() == 0
    assert tree_bytes(target) == {"keep.txt": b"k"}


@needs_restic
@pytest.mark.slow
def test_progress_is_written_while_restic_restores(site, tmp_path):
    site.snapshot(
        "db-0", {f"f{i}.bin": os.urandom(2_000_000) for i in range(10)}, "2026-01-01 10:00:00"
    )
    site.backup_object()
    site.restore()
    site.emu.clear_requests()
    assert site.executor(target=tmp_path / "t", RESTIC_PROGRESS_FPS="50").run() == 0

    def progress_hosts(r) -> list:
        if r.method != "PATCH" or not r.path.endswith("/status"):
            return []
        hosts = ((r.body or {}).get("status") or {}).get("hosts") or []
        return [h for h in hosts if "percent" in h and h["phase"] == "Running"]

    running = [h for r in site.emu.requests for h in progress_hosts(r)]
    assert running, "no progress was written while restic ran"


@pytest.mark.slow
def test_a_restic_without_restore_json_is_refused(site, tmp_path):
    fake = tmp_path / "old-restic"
    fake.write_text("#!/bin/sh\necho 'restic 0.16.4 compiled with go1.21 on linux/amd64'\n")
    fake.chmod(0o755)
    site.backup_object()
    site.restore()
    assert site.executor(target=tmp_path / "t", restic_bin=str(fake)).run() == 1
    status = site.get()["status"]
    assert status["message"] == (
        "host copy: restic 0.16.4 cannot restore for restik: restore needs restic 0.17.0 or "
        "later (restore --json progress, --delete); use the restik image's restic"
    )
    assert (
        next(c for c in status["conditions"] if c["type"] == "Failed")["reason"] == "ResticTooOld"
    )


def test_an_invalid_restore_is_invalid_not_run(site, tmp_path):
    # the schema forbids most of what the model does; a hosts key only the model checks
    site.emu.create(restore_raw(hosts={"bad/key": "db-0"}))
    assert site.executor(target=tmp_path / "t").run() == 1
    status = site.get()["status"]
    assert status["phase"] == "Invalid"
    assert status["message"] == (
        "Restore web/r1: spec.hosts.bad/key: 'bad/key' is not a host name "
        "(letters, digits, '-', '.', '_')"
    )
    assert not (tmp_path / "t").exists()


def test_a_deleted_restore_lets_the_pod_start(site, tmp_path):
    assert site.executor(target=tmp_path / "t").run() == 0


# --- the snapshot listing started ahead (sidecar/restore_start.py) ---------------------------


def _listing_for(site, repo: str) -> EarlyListing:
    argv = listing_argv(RESTIC, repo, str(site.tmp / "cache"), str(site.src))
    return EarlyListing(argv, base_env(PASSWORD))


@needs_restic
@pytest.mark.slow
def test_the_listing_started_ahead_is_used_when_it_is_the_backups(site, tmp_path):
    site.snapshot("copy", {"a.txt": b"a"}, "2026-01-01 10:00:00")
    site.backup_object()
    site.restore()
    executor = site.executor(target=tmp_path / "claim")
    executor.listing = listing = _listing_for(site, str(site.repo))

    def no_second_listing(args, env):
        raise AssertionError(f"a second restic snapshots ran: {args}")

    executor._restic = no_second_listing
    assert executor.run() == 0
    assert listing.proc is None  # taken
    assert tree_bytes(tmp_path / "claim") == {"a.txt": b"a"}


@needs_restic
@pytest.mark.slow
def test_a_listing_of_another_repository_is_stopped_and_the_backups_runs(site, tmp_path):
    """The Backup changed after the controller rendered the arguments: the listing started
    with the old repository is not the Backup's, so it is stopped and never used."""
    site.snapshot("copy", {"a.txt": b"a"}, "2026-01-01 10:00:00")
    site.backup_object()
    site.restore()
    executor = site.executor(target=tmp_path / "claim")
    old = EarlyListing(["sleep", "30"], base_env(PASSWORD))
    old.argv = listing_argv(RESTIC, str(tmp_path / "old-repo"), str(tmp_path / "cache"), "/x")
    executor.listing = old
    proc = old.proc
    assert executor.run() == 0
    assert proc.returncode is not None  # stopped
    assert site.get()["status"]["phase"] == "Succeeded"
    assert tree_bytes(tmp_path / "claim") == {"a.txt": b"a"}


def test_a_listing_nobody_takes_is_stopped_and_none_starts_without_its_arguments(tmp_path):
    listing = EarlyListing(["sleep", "30"], {"PATH": os.environ["PATH"]})
    proc = listing.proc
    listing.close()
    assert proc.returncode is not None and listing.proc is None
    assert listing.take(["sleep", "30"]) is None
    args = argparse.Namespace(restic="restic", repository=None, source_path="/d", cache_dir="/c")
    assert start_listing(args, {}) is None  # no --repository (an older controller's pod)
    args = argparse.Namespace(restic="restic", repository="/r", source_path="/d", cache_dir=None)
    assert start_listing(args, {}) is None  # no cache directory known yet
    args.restic = str(tmp_path / "no-such-restic")
    assert start_listing(args, {"RESTIC_CACHE_DIR": "/c"}) is None  # the executor reports it
