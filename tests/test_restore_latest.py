"""The default restore as one restic (sidecar/restore_latest.py, sidecar/restore_start.py):
restic's text output parsed (its formats, and its real output), the snapshot named by
restic itself even when a backup lands meanwhile, every failure Failed with its reason, and
`restik restore-run` spawning restic before any API write or heavy import (and writing
the status and Events with the stdlib client, never loading pykube/requests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.api.backup import parse_backup
from reconciler.api.restore import parse_restore
from sidecar.restic import Context
from sidecar.restore_latest import (
    TextProgress,
    latest_source,
    parse_size,
    parse_started,
    progress_fps,
    render_latest,
)
from tests.factories import (
    PASSWORD,
    RESTIC,
    backup_object,
    base_env,
    needs_restic,
    restic,
    tree_bytes,
)
from tests.factories.restores import NS, restore_raw, restore_site

ROOT = Path(__file__).resolve().parent.parent
STS = {"workload": {"kind": "StatefulSet", "name": "db"}}
LINE = (
    "restoring snapshot 8b5f2f84 of [/tmp/rt/data] at 2026-11-30 03:10:36.855031456 +0000 UTC "
    "by root@h1 to /tmp/rt/t4"
)


# ---------------------------------------------------------------- pure


def test_the_first_line_names_the_snapshot_restic_restores():
    snap = parse_started(LINE + "\n", "/tmp/rt/t4")
    assert (snap.short_id, snap.host, snap.time.isoformat()) == (
        "8b5f2f84",
        "h1",
        "2026-11-30T03:10:36.855031+00:00",
    )
    # another zone, no fraction, a user name with "@", paths with a space, a target " to "
    other = parse_started(
        "restoring snapshot 0123abcd of [/a b /c] at 2026-01-02 12:00:00 +0130 +0130 by "
        "me@corp@db-0 to /x to y",
        "/x to y",
    )
    assert (other.host, other.time.isoformat()) == ("db-0", "2026-01-02T10:30:00+00:00")
    assert parse_started(LINE, "/elsewhere") is None  # not our target
    assert parse_started("restoring snapshot 8b5f2f84 of something else", "/t") is None
    assert parse_started("[0:00] 10.00%  1 files/dirs 1 B, total 2 files/dirs 2 B", "/t") is None


def test_text_progress_folds_status_and_summary_lines_as_the_json_ones():
    started = []
    text = TextProgress("/tmp/rt/t4", "h1", started.append)
    assert not text.feed(LINE + "\n")
    assert [s.short_id for s in started] == ["8b5f2f84"]
    assert text.feed("[0:01] 30.34%  2 files/dirs 95.484 MiB, total 5 files/dirs 314.713 MiB\n")
    assert (text.files_restored, text.total_files, text.percent) == (2, 5, 0.3034)
    assert text.bytes_restored == round(95.484 * 2**20) and text.total_bytes == round(
        314.713 * 2**20
    )
    assert not text.done
    # restic 0.18: skipped and deleted; a total of 0 bytes prints no percentage
    assert text.feed(
        "[0:02]   1 files/dirs 0 B, total 3 files/dirs 0 B, skipped 2 files/dirs 12 B, "
        "deleted 4 files/dirs"
    )
    assert (text.files, text.files_skipped, text.bytes_skipped, text.files_deleted) == (3, 2, 12, 4)
    assert text.feed("Summary: Restored 5 files/dirs (314.713 MiB) in 0:03")
    assert text.done and text.percent == 1.0 and text.files == 5
    assert text.bytes_restored == text.total_bytes == round(314.713 * 2**20)
    # not everything restored: both figures
    part = TextProgress("/t", "h1")
    part.feed(LINE.replace("/tmp/rt/t4", "/t"))
    assert part.feed(
        "Summary: Restored 4 / 5 files/dirs (1.000 KiB / 2.000 GiB) in 1:02:03, "
        "skipped 1 files/dirs 3 B"
    )
    assert (part.files_restored, part.total_files, part.bytes_restored) == (4, 5, 1024)
    assert (part.total_bytes, part.files, part.bytes_skipped) == (2 * 2**30, 5, 3)
    # what is not restic's progress is no progress
    for line in ("verifying files in /t", "Info: something", "[0:00] 100.00%  1 / 1 index"):
        assert not part.feed(line)


def test_text_progress_reads_errors_and_a_missing_snapshot_from_stderr():
    text = TextProgress("/t", "h1")
    text.feed_stderr(
        "ignoring error for /a/b: open /t/a/b: permission denied\nFatal: There were 1 errors\n"
    )
    assert text.errors == ["/a/b: open /t/a/b: permission denied"]
    assert not text.no_snapshot
    text.feed_stderr(
        "Fatal: failed to find snapshot: snapshot filter (Paths:[/d] Tags:[] Hosts:[h2]): "
        "no snapshot found\n"
    )
    assert text.no_snapshot


def test_no_first_line_or_another_hosts_snapshot_fails_the_check():
    text = TextProgress("/t", "h1")
    text.feed("Summary: Restored 1 files/dirs (1 B) in 0:00")
    assert not text.done  # no progress before restic named its snapshot
    with pytest.raises(Exception, match="did not say which snapshot it restored"):
        text.check()
    garbled = TextProgress("/t", "h1")
    garbled.feed("[0:00] 100.00%  1 / 1 index files loaded")
    garbled.feed("restoring snapshot xyz of [/d] at yesterday by me to /t")
    with pytest.raises(Exception, match="restoring snapshot xyz"):
        garbled.check()
    late = TextProgress("/tmp/rt/t4", "h1")
    late.feed("Warning: something restic says first")
    late.feed(LINE)
    assert late.snapshot is not None and late.snapshot.short_id == "8b5f2f84"
    odd = TextProgress("/tmp/rt/t4", "db-0")
    odd.feed(LINE)
    odd.feed("Summary: Restored 1 files/dirs (1 B) in 0:00")
    with pytest.raises(Exception, match="of host 'h1', not of 'db-0'"):
        odd.check()


def test_sizes_and_progress_rate():
    assert parse_size("0 B") == 0 and parse_size("1023 B") == 1023
    assert parse_size("1.500 KiB") == 1536 and parse_size("2.000 TiB") == 2 * 2**40
    assert progress_fps(10) == "1" and progress_fps(0.5) == "2" and progress_fps(0) == "60"


def _backup() -> object:
    return parse_backup(backup_object("/data", "/repo", name="www", namespace=NS))


def test_restic_picks_the_snapshot_only_by_default_with_a_known_host():
    backup = _backup()
    ctx = Context(host="db-0", cache_dir="/c", restic="restic")
    default = parse_restore(restore_raw(target=STS, include=["a"], delete=True))
    assert latest_source(default, backup, "db-0") == "db-0"
    assert render_latest(backup, ctx, default, "db-0", "/mnt") == [
        "restic", "--repo=/repo", "--cache-dir=/c", "restore", "--host=db-0", "--path=/data",
        "--target=/mnt", "--include=/a", "--delete", "--", "latest:/data",
    ]  # fmt: skip
    mapped = parse_restore(restore_raw(target=STS, hosts={"db-0": "old-0"}))
    assert latest_source(mapped, backup, "db-0") == "old-0"
    assert latest_source(parse_restore(restore_raw(hosts={"copy": "db-1"})), backup, "copy") == (
        "db-1"
    )
    # a listing is needed: asOf, an id, a claim's unknown source host
    as_of = parse_restore(restore_raw(target=STS, asOf="2026-01-01T00:00:00Z"))
    assert latest_source(as_of, backup, "db-0") is None
    by_id = parse_restore(restore_raw(snapshot="abcd1234", hosts={"copy": "db-1"}))
    assert latest_source(by_id, backup, "copy") is None
    assert latest_source(parse_restore(restore_raw()), backup, "copy") is None


# ---------------------------------------------------------------- restic's real output
@pytest.fixture
def site(emulator, tmp_path):
    """The emulator with a claim, a Backup into a real repository, and the executor."""
    return restore_site(emulator, tmp_path)


@needs_restic
@pytest.mark.slow
def test_the_parser_reads_restics_real_text_output_as_its_json(site, tmp_path):
    files = {f"d/f{i}.bin": os.urandom(1000 * i + 7) for i in range(12)}
    sid = site.snapshot("db-0", files, "2026-01-01 10:00:00")
    base = [RESTIC, f"--repo={site.repo}", "--no-cache", "restore", "--host=db-0"]
    base += [f"--path={site.src}"]
    latest = f"latest:{site.src}"

    def run(target: Path, *extra: str, json_mode: bool = False) -> list[str]:
        env = base_env(PASSWORD, RESTIC_PROGRESS_FPS="60")
        args = [*base, *(["--json"] if json_mode else []), f"--target={target}", *extra]
        proc = subprocess.run(
            [*args, "--", latest], env=env, capture_output=True, text=True, check=True
        )
        return proc.stdout.splitlines()

    def summary(lines: list[str]) -> dict:
        return next(json.loads(x) for x in lines if '"summary"' in x)

    text = TextProgress(str(tmp_path / "t"), "db-0")
    for line in run(tmp_path / "t"):
        text.feed(line)
    text.check()
    listed = json.loads(restic(str(site.repo), "snapshots", "--json").stdout)[0]
    assert text.snapshot.short_id == sid[:8] == listed["short_id"]
    assert text.snapshot.time.isoformat(timespec="seconds") == "2026-01-01T10:00:00+00:00"
    exact = summary(run(tmp_path / "j", json_mode=True))
    assert text.files == text.total_files == exact["total_files"] == 13  # 12 files and d/
    assert abs(text.total_bytes - exact["total_bytes"]) <= 2**10 * 0.0005 * 2
    assert text.bytes_restored == text.total_bytes
    # again over itself with --delete and a stray file: skipped and deleted
    (tmp_path / "t" / "stray").write_bytes(b"x")
    (tmp_path / "j" / "stray").write_bytes(b"x")
    again = TextProgress(str(tmp_path / "t"), "db-0")
    for line in run(tmp_path / "t", "--delete"):
        again.feed(line)
    again.check()
    exact = summary(run(tmp_path / "j", "--delete", json_mode=True))
    assert again.files_skipped == exact["files_skipped"] > 0
    assert again.files_deleted == exact["files_deleted"] == 1
    assert again.files == exact["files_restored"] + exact["files_skipped"]
    assert tree_bytes(tmp_path / "t") == files


# ---------------------------------------------------------------- runs with real restic


def _wrapper(tmp_path: Path, name: str, restore_pipe: str) -> str:
    """A restic that runs the real one, piping `restic restore`'s output through
    ``restore_pipe`` (a shell command reading it on stdin)."""
    script = tmp_path / name
    script.write_text(
        "#!/bin/sh\n"
        'case " $* " in\n'
        f'  *" restore "*) "{RESTIC}" "$@" | {{ {restore_pipe}; }} ;;\n'
        f'  *) exec "{RESTIC}" "$@" ;;\n'
        "esac\n"
    )
    script.chmod(0o755)
    return str(script)


@needs_restic
@pytest.mark.slow
def test_a_backup_landing_meanwhile_cannot_change_the_snapshot_named(site, tmp_path):
    old = site.snapshot("db-0", {"a.txt": b"old"}, "2026-01-01 10:00:00")
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "a.txt").write_bytes(b"new")
    # right after restic named its snapshot, a backup of the same host lands
    land = (
        f'"{RESTIC}" --repo="{site.repo}" --no-cache backup --host db-0 "{site.src}" '
        ">/dev/null 2>&1"
    )
    (site.src / "a.txt").write_bytes(b"new")
    wrapper = _wrapper(tmp_path, "racing-restic", f'IFS= read -r first; echo "$first"; {land}; cat')
    site.backup_object()
    site.restore(target=STS)
    ex = site.executor(
        target=tmp_path / "t", workload=("StatefulSet", "db"), pod="db-0", restic_bin=wrapper
    )
    assert ex.run() == 0
    hosts = json.loads(restic(str(site.repo), "snapshots", "--json", "--host", "db-0").stdout)
    assert len(hosts) == 2  # the newer one exists now
    assert tree_bytes(tmp_path / "t") == {"a.txt": b"old"}
    status = site.get()["status"]
    [host] = status["hosts"]
    assert host["snapshotID"] == old[:8]
    assert host["snapshotTime"] == "2026-01-01T10:00:00Z"
    started = [e for e in site.events() if e[0] == "RestoreStarted"]
    assert [e[2] for e in started] == [
        f"host db-0: restoring snapshot {old[:8]} of db-0 (2026-01-01T10:00:00Z) "
        f"into {tmp_path / 't'}"
    ]


@needs_restic
@pytest.mark.slow
def test_a_restic_that_names_no_snapshot_fails(site, tmp_path):
    site.snapshot("db-0", {"a.txt": b"a"}, "2026-01-01 10:00:00")
    wrapper = _wrapper(tmp_path, "mute-restic", "tail -n +2")
    site.backup_object()
    site.restore(target=STS)
    ex = site.executor(
        target=tmp_path / "t", workload=("StatefulSet", "db"), pod="db-0", restic_bin=wrapper
    )
    assert ex.run() == 1
    status = site.get()["status"]
    assert status["phase"] == "Failed"
    assert "restic restore did not say which snapshot it restored" in status["message"]
    assert [e[:2] for e in site.events()] == [("RestoreFailed", "Warning")]


@needs_restic
@pytest.mark.slow
def test_include_matching_nothing_fails_when_restic_picks_too(site, tmp_path):
    site.snapshot("db-0", {"a.txt": b"a"}, "2026-01-01 10:00:00")
    site.backup_object()
    site.restore(target=STS, include=["no-such-dir"])
    ex = site.executor(target=tmp_path / "t", workload=("StatefulSet", "db"), pod="db-0")
    assert ex.run() == 1
    status = site.get()["status"]
    assert status["phase"] == "Failed" and "restic restored no file" in status["message"]
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "NothingRestored"


PREPARE = """
import json, sys
from reconciler.cli import build_parser
from sidecar.restore_start import prepare
args = build_parser().parse_args(sys.argv[1:])
heavy = lambda: sorted(m for m in ("pykube", "requests", "yaml") if m in sys.modules)
start = prepare(args)
print(json.dumps({"heavy": heavy(), "spawned": start.early is not None,
                  "listing": start.listing}), flush=True)
sys.stdin.readline()
from sidecar import restore
code = restore.run(args, early=start.early)
start.early.close()
print(json.dumps({"heavy": heavy()}), flush=True)
sys.exit(code)
"""


@needs_restic
@pytest.mark.slow
def test_restore_run_spawns_restic_before_any_write_and_runs_once(site, tmp_path):
    site.snapshot("db-0", {"a.txt": b"v1"}, "2026-01-01 10:00:00")
    site.backup_object()
    site.restore(target=STS)
    target = tmp_path / "t"
    argv = [
        "restore-run", "--restore", "r1", "--namespace", NS, "--workload", "StatefulSet/db",
        "--target", str(target), "--kubeconfig", str(tmp_path / "kubeconfig"),
        "--restic", RESTIC, "--cache-dir", str(tmp_path / "cache"),
        f"--repository={site.repo}", f"--source-path={site.src}",
    ]  # fmt: skip
    env = base_env(PASSWORD, POD_NAME="db-0", PYTHONPATH=str(ROOT))
    site.emu.clear_requests()
    proc = subprocess.Popen(
        [sys.executable, "-c", PREPARE, *argv], env=env, cwd=ROOT, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        before = json.loads(proc.stdout.readline())
        # restic runs: nothing written yet, and neither pykube, requests nor yaml loaded
        assert before == {"heavy": [], "spawned": True, "listing": False}
        assert [(r.method, r.path.rsplit("/", 2)[-2]) for r in site.emu.requests] == [
            ("GET", "restores"),
            ("GET", "backups"),
        ]
        out, err = proc.communicate("\n", timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out) == {"heavy": []}  # the status and Events written without them
    assert tree_bytes(target) == {"a.txt": b"v1"}
    status = site.get()["status"]
    assert status["hosts"][0]["phase"] == "Succeeded"
    assert status["hosts"][0]["filesRestored"] == 1
    # a pod restart: the guard stops it before restic, with one GET
    (target / "a.txt").write_bytes(b"newer")
    site.emu.clear_requests()
    again = subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *argv], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "restored already (Succeeded): not again" in again.stderr
    assert (target / "a.txt").read_bytes() == b"newer"
    assert {r.method for r in site.emu.requests} == {"GET"}


@needs_restic
@pytest.mark.slow
def test_no_snapshot_of_the_host_fails_with_what_the_listing_shows(site, tmp_path):
    site.snapshot("db-0", {"a.txt": b"0"}, "2026-01-01 10:00:00")
    calls = tmp_path / "calls"
    wrapper = tmp_path / "logging-restic"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{calls}"\nexec "{RESTIC}" "$@"\n')
    wrapper.chmod(0o755)
    site.backup_object()
    site.restore(target=STS)
    ex = site.executor(
        target=tmp_path / "t", workload=("StatefulSet", "db"), pod="db-1", restic_bin=str(wrapper)
    )
    assert ex.run() == 1
    # restic looked for the host's newest itself; only its failure ran the listing
    commands = [line.split(" -- ")[-1] for line in calls.read_text().splitlines()]
    assert commands[0] == "version"
    assert commands[1] == f"latest:{site.src}" and "--host=db-1" in calls.read_text()
    assert " snapshots --json" in calls.read_text().splitlines()[2]
    status = site.get()["status"]
    assert status["phase"] == "Failed"
    assert status["message"].startswith(
        f"host db-1: host db-1 has no snapshot; snapshots of {site.src}: db-0: "
        "2026-01-01T10:00:00Z ("
    )
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "NoSnapshot"
