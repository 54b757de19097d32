"""restic failures (issue 8): each ends in a failed run with a useful message (never the
password), the next run succeeds once the cause is gone, the repository passes `restic check`
and a restore is byte-identical to the source.

Scenarios: wrong password; the repository disappearing mid-run, between runs, or leaving
leftovers; a full disk (tmpfs); SIGTERM and SIGKILL of `restik watch` mid-backup; a REST
backend killed mid-run and down at the start of a run. A stale lock of a dead process is
covered by test_sidecar_restic.py::test_stale_lock_of_dead_process_is_removed_and_run_retried
(and again here, after SIGKILL and after the backend outage).

"Mid-run" is never a sleep: the tests wait until restic has written a pack file, and freeze
restic with SIGSTOP where the next step must happen before it finishes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.factories import (
    PASSWORD,
    RESTIC,
    backup_object,
    base_env,
    copy_template,
    free_port,
    make_backup,
    needs_restic,
    restic,
    server,
    tree_bytes,
    wait_for,
    write_tree,
)

pytestmark = [needs_restic, pytest.mark.slow]

MiB = 1024 * 1024


# --- helpers -------------------------------------------------------------------------------


def big_tree(root: Path, files: int = 3, size: int = 32 * MiB) -> Path:
    """A source that takes restic a second or more: random (incompressible) files."""
    write_tree(root, {"index.html": b"<h1>hello</h1>\n", "empty": b""})
    for i in range(files):
        write_tree(root, {f"big/f{i}": os.urandom(size)})
    return root


def packs(repo: Path) -> list[Path]:
    data = repo / "data"
    return [p for p in data.rglob("*") if p.is_file()] if data.is_dir() else []


def locks(repo: Path) -> list[Path]:
    return list((repo / "locks").iterdir()) if (repo / "locks").is_dir() else []


def wait_until(cond, timeout: float, what: str, poll: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(poll)


def check_and_restore(repo: str, src: Path, target: Path, env: dict | None = None) -> None:
    """`restic check` passes and the latest snapshot restores byte-identical to ``src``."""
    restic(repo, "check", env=env)
    restic(repo, "restore", "latest", "--target", str(target), env=env)
    assert tree_bytes(target / str(src).lstrip("/")) == tree_bytes(src)


def snapshot_ids(repo: str, env: dict | None = None) -> list[str]:
    return [s["short_id"] for s in json.loads(restic(repo, "snapshots", "--json", env=env).stdout)]


def in_thread(fn) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def target():
        try:
            result["out"] = fn()
        except BaseException as exc:  # pragma: no cover - shown by the assertion below
            result["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, result


def joined(t: threading.Thread, result: dict, timeout: float):
    t.join(timeout)
    assert not t.is_alive(), f"the run did not end within {timeout}s"
    if "error" in result:
        raise result["error"]
    return result["out"]


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (restic runs in its own session, so a process group
    kill of the sidecar would miss it: a pod kill takes the whole tree)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def restic_backup_of(sidecar_pid: int) -> int | None:
    for pid in descendants(sidecar_pid):
        args = cmdline(pid)
        if args and os.path.basename(args[0]).startswith("restic") and "backup" in args:
            return pid
    return None


def kill_tree(pid: int) -> None:
    """Model a pod kill: freeze the sidecar and all its descendants, then SIGKILL them all."""
    pids = [pid, *descendants(pid)]
    for p in pids:
        with _gone_ok():
            os.kill(p, signal.SIGSTOP)
    for p in [pid, *descendants(pid), *pids]:
        with _gone_ok():
            os.kill(p, signal.SIGKILL)


def _gone_ok():
    return contextlib.suppress(ProcessLookupError)


def freeze_restic_mid_backup(sc, repo: Path) -> int:
    """Wait until the sidecar's restic has written a pack to ``repo``; SIGSTOP it; its pid."""
    state: dict = {}

    def mid_backup():
        pid = state.get("pid") or restic_backup_of(sc.proc.pid)
        state["pid"] = pid
        return pid is not None and bool(packs(repo))

    wait_until(mid_backup, 60, "restic to write its first pack")
    os.kill(state["pid"], signal.SIGSTOP)
    assert not list((repo / "snapshots").iterdir()), "restic finished before it was frozen"
    return state["pid"]


def secrets_absent(*texts: str, secrets=(PASSWORD,)) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text


# --- wrong password ------------------------------------------------------------------------
# test_sidecar_watch.py::test_wrong_password_gives_failed_event_without_reinit shows the
# Failed Events and that nothing is written; here the password is then fixed.


def test_wrong_password_fails_then_the_fixed_secret_succeeds(world):
    world.backup(schedule="@every 1s")
    keys = sorted(p.name for p in (world.repo / "keys").iterdir())
    wrong = "Wrong-Pa55word-xyz"
    sc = world.sidecar(password=wrong, pod="www-wrong")
    failed = world.wait_events(1)[0]
    assert (failed["reason"], failed["type"]) == ("Failed", "Warning")
    assert failed["message"] == "wrong password or no key found"
    assert sc.terminate() == 0
    assert sorted(p.name for p in (world.repo / "keys").iterdir()) == keys  # no re-init

    # The Secret is fixed and the pod restarted with it: its first run succeeds.
    count = len(world.events())
    fixed = world.sidecar(pod="www-fixed")
    events = world.wait_events(count + 1)
    assert events[count]["reason"] == "Success", events[count]["message"]
    assert events[count]["message"].startswith("snapshot ")
    assert fixed.terminate() == 0
    dump = json.dumps([world.events(), world.status()])
    secrets_absent(dump, sc.log, fixed.log, secrets=(wrong, PASSWORD))
    check_and_restore(str(world.repo), world.src, world.tmp / "restored")


# --- the repository disappears -------------------------------------------------------------


def test_repository_gone_between_runs_is_initialised_afresh_at_its_path(
    tmp_path,
    job_for,
):
    """What restik does: a path without a repository config is a first run, so `restic init`
    there and back up (the Event is a plain Success). The moved original is never touched."""
    src = write_tree(tmp_path / "src", {"a.txt": b"one\n", "b/c.bin": os.urandom(50_000)})
    repo = copy_template(tmp_path / "repo")
    backup = make_backup(str(src), str(repo))
    first = job_for(backup).run()
    assert first.success, first.message
    moved = tmp_path / "repo.moved"
    repo.rename(moved)

    out = job_for(backup).run()
    assert out.success and out.initialised, out.message
    assert (repo / "config").is_file()
    restic(str(moved), "check")  # the original is untouched...
    assert snapshot_ids(str(moved)) == [first.summary.snapshot_id]
    assert snapshot_ids(str(repo)) == [out.summary.snapshot_id]  # ...and a new chain began

    # The operator puts the original back: the next run continues its chain.
    repo.rename(tmp_path / "repo.fresh")
    moved.rename(repo)
    (src / "a.txt").write_bytes(b"two\n")
    again = job_for(backup).run()
    assert again.success and not again.initialised, again.message
    assert snapshot_ids(str(repo)) == [first.summary.snapshot_id, again.summary.snapshot_id]
    check_and_restore(str(repo), src, tmp_path / "restored")


def test_repository_vanishing_mid_run_is_not_reported_as_success(
    tmp_path,
    job_for,
):
    """The repository directory is renamed away while restic writes packs (an unmounted
    volume looks the same). restic 0.14 re-creates data/, index/ and snapshots/ at the old
    path, "saves" the snapshot there (no config, no keys: unreadable by anyone), retries
    removing its lock and exits 0: restik must not report that as a saved snapshot.
    restic 0.17+ no longer re-creates them: its next pack's rename fails ("no such file or
    directory") and it exits 1 at once, leaving its lock in the moved repository; the
    run fails with restic's message either way."""
    src = big_tree(tmp_path / "src")
    repo = copy_template(tmp_path / "repo")
    moved = tmp_path / "repo.moved"
    job = job_for(make_backup(str(src), str(repo)))
    t, result = in_thread(job.run)
    wait_until(lambda: bool(packs(repo)) or not t.is_alive(), 60, "restic's first pack")
    assert t.is_alive(), "the backup ended before the repository could disappear"
    repo.rename(moved)
    # restic 0.14 now writes into re-created directories at the old path. Once its snapshot
    # is there, all it has left is removing its lock, which it retries for 45-100 s; put the
    # lock where it looks so that it exits now (exit 0 and a summary, as it would anyway).
    wait_until(lambda: any((repo / "snapshots").glob("*")) or not t.is_alive(), 120, "snapshot")
    if t.is_alive():
        (repo / "locks").mkdir(exist_ok=True)
        for lock in locks(moved):
            shutil.copy2(lock, repo / "locks" / lock.name)
    out = joined(t, result, 300)
    left = sorted(p.name for p in repo.iterdir()) if repo.exists() else "nothing"
    assert not out.success, (
        f"restik reported success ({out.message!r}) for a snapshot that is in no repository: "
        f"{str(repo)!r} now holds {left} without a config"
    )
    assert out.message and PASSWORD not in out.message
    assert not (repo / "config").exists(), "nothing may `restic init` a vanished repository"

    # The cause is gone: the leftovers are cleared and the repository is back.
    shutil.rmtree(repo, ignore_errors=True)
    moved.rename(repo)
    again = job_for(make_backup(str(src), str(repo))).run()
    assert again.success and not again.initialised, again.message
    check_and_restore(str(repo), src, tmp_path / "restored")


def test_leftovers_without_a_config_are_not_initialised_over(
    tmp_path,
    job_for,
):
    """What a vanished repository leaves at its path (see the test above): data/, index/ and
    snapshots/ under another repository's key, but no config. `restic init` there succeeds and
    every later backup fails on the foreign files ("ciphertext verification failed"), forever.
    A location that is not empty is not a missing repository: fail, and do not init."""
    src = write_tree(tmp_path / "src", {"a.txt": b"one\n", "b/c.bin": os.urandom(50_000)})
    repo = copy_template(tmp_path / "repo")
    backup = make_backup(str(src), str(repo))
    assert job_for(backup).run().success
    moved = tmp_path / "repo.moved"
    repo.rename(moved)
    for part in ("data", "index", "snapshots"):  # restic's leftovers, under the old key
        shutil.copytree(moved / part, repo / part)

    out = job_for(backup).run()
    assert not out.success
    assert not out.initialised and not (repo / "config").exists(), (
        f"restik ran `restic init` over another repository's leftovers at {repo}; "
        f"the run then failed with {out.message!r}"
    )
    assert str(repo) in out.message and PASSWORD not in out.message

    shutil.rmtree(repo)
    moved.rename(repo)
    again = job_for(backup).run()
    assert again.success and not again.initialised, again.message
    check_and_restore(str(repo), src, tmp_path / "restored")


# --- a full disk ---------------------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
    """A 20 MiB tmpfs, always unmounted."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_full_disk_fails_then_succeeds_once_space_is_freed(tmpfs, world):
    # tmpfs first in the arguments: the sidecars (world) stop before it is unmounted.
    for i in range(3):
        write_tree(world.src, {f"big/f{i}": os.urandom(16 * MiB)})  # 48 MiB > 20 MiB
    repo = copy_template(tmpfs / "repo")
    world.emu.create(backup_object(str(world.src), str(repo), schedule="@every 1s"))
    sc = world.sidecar()
    failed = world.wait_events(1)[0]
    assert failed["reason"] == "Failed", failed["message"]
    assert "no space left on device" in failed["message"]
    secrets_absent(failed["message"])

    subprocess.run(["mount", "-o", "remount,size=200m", str(tmpfs)], check=True)
    # A run may be under way while space is freed; the one after it started with space.
    count = len(world.events())
    events = world.wait_events(count + 2)
    assert events[count + 1]["reason"] == "Success", events[count + 1]["message"]
    assert sc.terminate() == 0
    assert world.status()["lastSuccessfulBackupTime"]
    secrets_absent(sc.log, json.dumps(world.events()))
    check_and_restore(str(repo), world.src, world.tmp / "restored")


# --- SIGTERM and SIGKILL of `restik watch` mid-backup --------------------------------------


@pytest.mark.parametrize(
    ("sig", "prune"),
    [("SIGTERM", False), ("SIGKILL", False), ("SIGKILL", True)],
    ids=["SIGTERM", "SIGKILL", "SIGKILL-prune"],
)
def test_killed_sidecar_mid_backup_then_a_new_one_succeeds(world, sig, prune):
    """SIGTERM: restik interrupts restic (SIGINT), which removes its lock; a Failed Event
    "interrupted by shutdown". SIGKILL of the pod (sidecar and restic): no Event (nobody is
    left to report) and restic's (non-exclusive) lock stays behind. It does not stop the next
    backup; it must not outlive the next run either, or `restic check` and every prune fail
    until someone runs `restic unlock`. With prune, the next run's exclusive lock meets it
    and restik removes it (same host, dead pid)."""
    big_tree(world.src / "big")
    spec = {"retentionPolicy": {"keepLastSnapshots": 1, "prune": True}} if prune else {}
    world.backup(schedule="@every 1s", **spec)
    sc = world.sidecar(pod="www-old")
    restic_pid = freeze_restic_mid_backup(sc, world.repo)
    if sig == "SIGTERM":
        sc.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: f"interrupting restic (pid {restic_pid})" in sc.log, 60, [sc])
        os.kill(restic_pid, signal.SIGCONT)  # it now sees restik's SIGINT
        assert sc.proc.wait(60) == 0
        assert sc.terminate() == 0
        events = world.events()
        assert [e["reason"] for e in events] == ["Failed"]
        assert events[0]["message"].startswith("interrupted by shutdown")
        assert not locks(world.repo)
    else:
        kill_tree(sc.proc.pid)
        assert sc.terminate() == -signal.SIGKILL
        wait_until(lambda: not os.path.exists(f"/proc/{restic_pid}"), 30, "restic to die")
        assert world.events() == []
        assert locks(world.repo), "a SIGKILLed restic leaves its lock behind"
    assert snapshot_ids(str(world.repo)) == []  # the run really was cut short

    count = len(world.events())
    new = world.sidecar(pod="www-new")
    events = world.wait_events(count + 1)
    assert events[count]["reason"] == "Success", (events[count]["message"], new.log[-3000:])
    assert new.terminate() == 0
    if prune:
        assert "removing 1 stale lock(s)" in new.log
    assert not locks(world.repo), (
        "the killed run's lock outlived the next successful run: `restic check` and prune "
        "fail until someone runs `restic unlock`"
    )
    secrets_absent(sc.log, new.log, json.dumps(world.events()))
    check_and_restore(str(world.repo), world.src, world.tmp / "restored")


# --- a network backend that drops connections ------------------------------------------------


class ConnectionDropper:
    """Listens where a stopped server did and resets every connection, counting them: a
    backend that drops connections, and proof that restic kept trying."""

    def __init__(self, port: int):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # RST
            self.dropped += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sock.close()


def test_rest_backend_killed_mid_run_and_down_at_the_next_run(tmp_path, job_for):
    """What restik does: a backend that drops connections mid-run is ridden out by restic's
    own retries (up to ~3 minutes in restic 0.14, 15 minutes per request in 0.17+) while it
    is shorter than --backend-timeout — the run succeeds once the server is back. A backend
    that is down when a run starts fails that run ("connection refused": at once with restic
    0.14, after --backend-timeout with 0.17+, which would retry for 15 minutes), never
    `restic init`; the next run succeeds once it is back."""
    if shutil.which("rclone") is None:
        pytest.skip("rclone is not installed")
    port = free_port()
    root = tmp_path / "rest"
    copy_template(root / "www")
    url = f"rest:http://127.0.0.1:{port}/www"
    cmd = ["rclone", "serve", "restic", "--addr", f"127.0.0.1:{port}", str(root)]
    src = big_tree(tmp_path / "src")
    backup = make_backup(str(src), url)

    with server(cmd, port, tmp_path / "rclone-1.log") as proc:
        t, result = in_thread(job_for(backup, backend_timeout=120).run)
        wait_until(lambda: bool(packs(root / "www")) or not t.is_alive(), 60, "a pack")
        assert t.is_alive(), "the backup ended before the server could be killed"
        proc.kill()  # a crash: open connections are cut
        proc.wait()
    dropper = ConnectionDropper(port)
    try:
        wait_until(lambda: dropper.dropped >= 3 or not t.is_alive(), 60, "restic to retry")
    finally:
        dropper.close()
    with server(cmd, port, tmp_path / "rclone-2.log"):  # back on the same port
        out = joined(t, result, 240)
        assert out.success and not out.initialised, out.message
        assert dropper.dropped >= 3
        assert snapshot_ids(url) == [out.summary.snapshot_id]
    config = (root / "www" / "config").read_bytes()

    (src / "index.html").write_bytes(b"<h1>changed while the server was down</h1>\n")
    started = time.monotonic()
    down = job_for(backup, backend_timeout=3).run()  # nothing listens on the port now
    assert time.monotonic() - started < 60
    assert not down.success and not down.initialised
    assert down.message.startswith("unable to open config file")  # restic's, no init tried
    assert "connection refused" in down.message and f"127.0.0.1:{port}" in down.message
    secrets_absent(down.message)
    assert (root / "www" / "config").read_bytes() == config  # never re-initialised

    with server(cmd, port, tmp_path / "rclone-3.log"):
        again = job_for(backup).run()
        assert again.success and not again.initialised, again.message
        check_and_restore(url, src, tmp_path / "restored")


def test_a_backend_that_never_answers_times_out_instead_of_hanging(tmp_path):
    """A server that accepts connections and never answers: without a limit the run (and
    every later one, skipped as overlapping) would wait forever."""
    from sidecar.job import Job
    from sidecar.restic import Context
    from sidecar.runner import Runner

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts (in the kernel's backlog) and never answers
    try:
        port = silent.getsockname()[1]
        src = write_tree(tmp_path / "src", {"a.txt": b"x\n"})
        backup = make_backup(str(src), f"rest:http://127.0.0.1:{port}/repo")
        runner = Runner(base_env(TMPDIR=str(tmp_path)), stop_timeout=5, command_timeout=3)
        ctx = Context(host="www", cache_dir=str(tmp_path / "cache"), restic=RESTIC)
        started = time.monotonic()
        out = Job(backup, ctx, runner).run()
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert not out.success and not out.initialised
    assert elapsed < 30, elapsed
    assert "did not finish within 3s" in out.message or "interrupted" in out.message, out.message
