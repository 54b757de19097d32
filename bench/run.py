"""restik's benchmarks: reconcile cost at 1,000 and 10,000 workloads, reaction time, sidecar.

    python bench/run.py            # the full set (~15 min on 2 cores)
    python bench/run.py --quick    # a smaller set (< 5 min on 2 cores)

Every figure is a ratio measured side by side in this run, or a count: the machines are
shared and noisy. Progress and a table go to stdout; the last line is one JSON object.
See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cluster  # noqa: E402 - bench/ is sys.path[0] when run as a script
from replay import ReplayProcess, record  # noqa: E402

from reconciler.api.constants import API_VERSION, CONFIG_LABEL, WORKLOAD_KINDS  # noqa: E402
from reconciler.controller.cycle import Controller  # noqa: E402
from reconciler.controller.options import Settings  # noqa: E402
from reconciler.kube.client import Kube  # noqa: E402
from tests.emulator import Emulator  # noqa: E402

RESTIC = shutil.which("restic") or "restic"
PASSWORD = "bench-Pa55word"
GOALS = {
    "cycle_ratio_1k": ("<=", 1.3),
    "scale_ratio_10k_over_1k": ("<=", 11),
    "writes_steady": ("==", 0),
    "requests_per_cycle": ("==", len(WORKLOAD_KINDS) + 1 + 1),  # kinds (5 + Backup) + 1
    "reaction_s_median": ("<=", 1.0),
    "sidecar_overhead_ratio": ("<=", 1.05),
    "sidecar_idle_rss_mib": ("<=", 40),
    "controller_rss_mib_10k": ("<=", 200),
}


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, int] = (1000, 10000)
    cycle_reps: tuple[int, int] = (21, 9)
    reaction_reps: int = 7
    reaction_reps_10k: int = 3  # extra figure (not a goal): reaction at 10,000 workloads
    sidecar_files: int = 2000
    sidecar_mib: int = 200
    sidecar_reps: int = 7


QUICK = Plan(
    cycle_reps=(9, 3),
    reaction_reps=4,
    reaction_reps_10k=0,
    sidecar_files=1000,
    sidecar_mib=100,
    sidecar_reps=5,
)


def say(text: str) -> None:
    print(text, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values)


def child_env(**extra: str) -> dict[str, str]:
    """A clean environment for restik children: no RESTIK_*/POD_* settings leak in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RESTIK_", "POD_", "KUBECONFIG", "RESTIC_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the benchmark dies (Linux), so a run that is
    interrupted leaves no controller or sidecar behind."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def restik(*args: str) -> list[str]:
    """The `restik` command as the image runs it (console script → reconciler.cli:main)."""
    return [sys.executable, "-m", "reconciler.cli", *args]


def proc_status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}


def kib(status: dict[str, str], field: str) -> int:
    return int(status.get(field, "0 kB").split()[0])


def stop(proc: subprocess.Popen, timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


class Recorder:
    """Timestamps the emulator's requests as they are answered (emu.requests has no times)."""

    def __init__(self, emu: Emulator):
        self.emu = emu
        self.cond = threading.Condition()
        self.seen: list[tuple[float, float, object]] = []  # (monotonic, wall, request)
        original = emu._record

        def hook(request) -> None:
            original(request)
            with self.cond:
                self.seen.append((time.monotonic(), time.time(), request))
                self.cond.notify_all()

        emu._record = hook

    def mark(self) -> int:
        with self.cond:
            return len(self.seen)

    def wait(self, since: int, match, timeout: float) -> tuple[float, float, object]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for entry in self.seen[since:]:
                    if match(entry[2]):
                        return entry
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the expected request did not come")
                self.cond.wait(left)

    def quiet(self, seconds: float, timeout: float = 60) -> None:
        """Wait until no request has come for ``seconds``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.cond:
                last = self.seen[-1][0] if self.seen else 0.0
            if time.monotonic() - last >= seconds:
                return
            time.sleep(0.05)


# ------------------------------------------------------------------ controller cycles


def list_requests(requests) -> list[tuple[str, dict]]:
    return [(r.path, dict(r.query)) for r in requests if r.verb == "list"]


class BarePasses:
    """bench/bare_lists.py as a child process: one bare LIST pass per call, its seconds."""

    def __init__(self, kubeconfig: str, lists: list[tuple[str, dict]]):
        script = Path(__file__).with_name("bare_lists.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), kubeconfig, json.dumps(lists)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self) -> tuple[float, int]:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("bench/bare_lists.py died")
        seconds, items = line.split()
        return float(seconds), int(items)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


def bench_cycles(size: int, reps: int, tmp: Path, rss: bool, reaction_reps: int = 0) -> dict:
    out: dict = {"size": size}
    emu = Emulator()
    emu.start()
    try:
        t = time.perf_counter()
        info = cluster.populate(emu, size, unlabeled=(reaction_reps + 4) // 5)
        out["setup_s"] = time.perf_counter() - t
        say(
            f"  {size}: {info['backups']} Backups, {info['workloads']} workloads "
            f"created in {out['setup_s']:.1f}s"
        )
        kubeconfig = str(emu.write_kubeconfig(tmp / f"emulator-{size}.kubeconfig"))
        controller = Controller(Kube.connect(kubeconfig), Settings())
        t = time.perf_counter()
        first = controller.cycle()
        out["first_cycle_s"] = time.perf_counter() - t
        out["first_cycle"] = first
        say(f"  {size}: first cycle (renders, RoleBindings, status) {first.summary()}")
        emu.clear_requests()
        steady = controller.cycle()
        requests = emu.requests
        out["requests_per_cycle"] = len(requests)
        out["writes_steady"] = len(emu.writes())
        out["request_list"] = [f"{r.method} {r.path}" for r in requests]
        out["steady_planned"] = steady.planned
        say(
            f"  {size}: steady cycle on the emulator: {len(requests)} requests, "
            f"{out['writes_steady']} writes, planned={steady.planned} ({steady.seconds:.2f}s)"
        )
        lists = list_requests(requests)
        recording = str(tmp / f"replay-{size}.pickle")
        crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/backups.backup.appscode.com"
        out["recorded_bytes"] = record(emu.url, [(crd, None), *lists], recording)
        if rss:
            out.update(bench_controller_rss(kubeconfig, tmp))
        if reaction_reps:
            out["reaction"] = reaction(emu, info, reaction_reps, tmp)
    finally:
        emu.stop()
    # The emulator's store lives in this process: drop it, or every full garbage collection
    # during the measured cycles would also walk its objects.
    del emu
    gc.collect()

    with ReplayProcess(recording) as replay:
        replay_config = replay.write_kubeconfig(str(tmp / f"replay-{size}.kubeconfig"))
        controller.kube = Kube.connect(replay_config)  # warm renderer cache, same state
        base = BarePasses(replay_config, lists)
        try:
            controller.cycle(), base.run()  # warm connections
            replay.log()
            check = controller.cycle()
            served = replay.log()
            bad = [r for r in served if r[0] != "GET"]
            assert check.planned == 0 and not bad, f"replayed cycle is not steady: {check} {bad}"
            _, items = base.run()
            assert items == check.backups + check.workloads + info["backups"], items
            cycle_s, base_s = [], []
            for i in range(reps):
                order = ("cycle", "base") if i % 2 == 0 else ("base", "cycle")
                for what in order:
                    if what == "cycle":
                        t = time.perf_counter()
                        controller.cycle()
                        cycle_s.append(time.perf_counter() - t)
                    else:
                        base_s.append(base.run()[0])
        finally:
            base.close()
        out["cycle_s"] = median(cycle_s)
        out["base_s"] = median(base_s)
        out["ratio"] = out["cycle_s"] / out["base_s"]
        out["replayed_requests"] = len(served)
    say(
        f"  {size}: cycle {out['cycle_s'] * 1000:.0f} ms vs bare LISTs "
        f"{out['base_s'] * 1000:.0f} ms (medians of {reps}, replayed "
        f"{out['recorded_bytes'] / 2**20:.1f} MiB) → x{out['ratio']:.2f}"
    )
    return out


def bench_controller_rss(kubeconfig: str, tmp: Path) -> dict:
    """Peak RSS of a fresh `restik run --once`: VmHWM, polled until it exits.

    Not ru_maxrss: it would count the benchmark's own pages, shared with the child between
    fork and exec.
    """
    log = open(tmp / "run-once.log", "wb")
    t = time.perf_counter()
    proc = subprocess.Popen(
        restik("run", "--once", "--kubeconfig", kubeconfig),
        env=child_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp,
        preexec_fn=die_with_parent,
    )
    hwm = 0
    while proc.poll() is None:
        hwm = max(hwm, kib(proc_status(proc.pid), "VmHWM"))
        time.sleep(0.02)
    log.close()
    seconds = time.perf_counter() - t
    say(f"  restik run --once: exit {proc.returncode} in {seconds:.1f}s, peak {hwm / 1024:.0f} MiB")
    if proc.returncode != 0:
        say((tmp / "run-once.log").read_text()[-2000:])
    return {"rss_mib": hwm / 1024, "once_s": seconds, "once_rc": proc.returncode}


# ------------------------------------------------------------------ reaction time


def bench_reaction(reps: int, tmp: Path) -> dict:
    emu = Emulator()
    emu.start()
    try:
        info = cluster.populate(emu, 1000, unlabeled=(reps + 4) // 5)
        return reaction(emu, info, reps, tmp)
    finally:
        emu.stop()


def reaction(emu: Emulator, info: dict, reps: int, tmp: Path) -> dict:
    """Start `restik run` (default interval), label spare workloads one by one, time the PATCH."""
    proc = None
    try:
        kubeconfig = str(emu.write_kubeconfig(tmp / "reaction.kubeconfig"))
        rec = Recorder(emu)
        log = open(tmp / f"reaction-{info['workloads']}.log", "wb")
        proc = subprocess.Popen(
            restik("run", "--kubeconfig", kubeconfig),  # default interval (30s)
            env=child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            preexec_fn=die_with_parent,
        )
        watches = len(WORKLOAD_KINDS) + 1
        rec.wait(0, lambda r: r.verb == "watch" and r.resource == "backups", 300)
        deadline = time.monotonic() + 60
        while sum(1 for _, _, r in rec.seen if r.verb == "watch") < watches:
            if time.monotonic() > deadline:
                raise TimeoutError("the controller did not start its watches")
            time.sleep(0.05)
        rec.quiet(1.0)
        say(f"  restik run is up ({info['workloads']} workloads, {watches} watches)")
        times = []
        ns = info["namespace"]
        for i, (kind, name, label) in enumerate(info["spare"][:reps]):
            api_version, plural = WORKLOAD_KINDS[kind]
            mark = rec.mark()
            t0 = time.monotonic()
            labels = {"metadata": {"labels": {CONFIG_LABEL: label}}}
            emu.patch(api_version, plural, name, labels, ns)
            t1, _, _ = rec.wait(
                mark,
                lambda r, p=plural, n=name: r.method == "PATCH" and r.resource == p and r.name == n,
                60,
            )
            times.append(t1 - t0)
            say(f"  reaction {i + 1}/{reps}: {kind} {name} patched after {t1 - t0:.3f}s")
            rec.quiet(1.0)
            time.sleep(0.5)
    finally:
        if proc is not None:
            stop(proc)
            log.close()
    return {"median": median(times), "times": times}


# ------------------------------------------------------------------ sidecar


def write_tree(root: Path, files: int, total_mib: int) -> int:
    """Mixed sizes: most files small, some medium, a few large; random (incompressible)."""
    import random

    rng = random.Random(7)
    weights = [rng.lognormvariate(0, 2.0) for _ in range(files)]
    scale = total_mib * 2**20 / sum(weights)
    total = 0
    for i, w in enumerate(weights):
        size = max(16, int(w * scale))
        path = root / f"d{i % 20:02d}" / f"s{i // 200}" / f"f{i:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        total += size
    return total


def init_repos(paths: list[Path], env: dict) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def init(path: Path) -> None:
        subprocess.run(
            [RESTIC, f"--repo={path}", "init"],
            env=env,
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(init, paths))


def raw_backup(repo: Path, cache: Path, src: Path, env: dict) -> float:
    (cache / "tmp").mkdir(parents=True, exist_ok=True)
    args = [RESTIC, f"--repo={repo}", f"--cache-dir={cache}", "backup", "--json"]
    args += ["--host=www-bench", "--", str(src)]
    t = time.perf_counter()
    proc = subprocess.run(
        args,
        env={**env, "TMPDIR": str(cache / "tmp"), "RESTIC_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"restic backup failed: {proc.stderr[-500:]}")
    return seconds


def cron_at(t: datetime) -> str:
    """A 6-field (seconds first) schedule that fires once, at ``t`` (UTC)."""
    return f"{t.second} {t.minute} {t.hour} {t.day} {t.month} *"


def bench_sidecar(files: int, mib: int, reps: int, tmp: Path) -> dict:
    out: dict = {}
    src = tmp / "src"
    size = write_tree(src, files, mib)
    say(f"  sidecar data: {files} files, {size / 2**20:.0f} MiB")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "RESTIC_PASSWORD": PASSWORD,
    }
    repos = [tmp / f"repo-{who}-{i}" for i in range(-1, reps) for who in ("sidecar", "raw")]
    t = time.perf_counter()
    init_repos(repos, env)
    say(f"  {len(repos)} repositories initialised in {time.perf_counter() - t:.1f}s")

    emu = Emulator()
    emu.start()
    proc = None
    try:
        from reconciler.resources import crd_manifest

        emu.create(crd_manifest())
        emu.create(
            {
                "apiVersion": API_VERSION,
                "kind": "Backup",
                "metadata": {"name": "www", "namespace": "default"},
                "spec": {
                    "schedule": "@every 24h",
                    "backupSource": {"volumeName": "data", "path": str(src)},
                    "destination": {
                        "repositorySecretName": "www-restic",
                        "repository": str(repos[0]),
                    },
                },
            }
        )
        rec = Recorder(emu)
        kubeconfig = str(emu.write_kubeconfig(tmp / "sidecar.kubeconfig"))
        log_path = tmp / "sidecar.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen(
            restik(
                "watch",
                "--backup",
                "www",
                "--kubeconfig",
                kubeconfig,
                "--restic",
                RESTIC,
                "--cache-dir",
                str(tmp / "cache-sidecar"),
            ),
            env=child_env(**env, POD_NAME="www-bench", POD_NAMESPACE="default"),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + 60
        while "next run" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("restik watch did not start:\n" + log_path.read_text()[-2000:])
            time.sleep(0.1)
        time.sleep(2.0)
        out["idle_rss_start_mib"] = kib(proc_status(proc.pid), "VmRSS") / 1024
        say(f"  restik watch idle before its first run: {out['idle_rss_start_mib']:.1f} MiB RSS")

        def scheduled(repo: Path) -> float:
            fire = (datetime.now(UTC) + timedelta(seconds=2.5)).replace(microsecond=0)
            mark = rec.mark()
            patch = {"spec": {"schedule": cron_at(fire), "destination": {"repository": str(repo)}}}
            emu.patch(API_VERSION, "backups", "www", patch, "default")
            _, wall, request = rec.wait(
                mark,
                lambda r: r.method == "POST" and r.resource == "events",
                600,
            )
            if request.status >= 300 or (request.body or {}).get("reason") != "Success":
                raise RuntimeError(f"the run failed: {request.body}")
            return wall - fire.timestamp()

        def settle() -> None:
            os.sync()  # the last run's writes out of the page cache before the next one
            time.sleep(0.5)

        # warm-up (untimed): the source in the page cache, the sidecar's run modules imported
        raw_backup(repos[1], tmp / "cache-raw--1", src, env)
        settle()
        scheduled(repos[0])
        settle()
        side_s, raw_s = [], []
        for i in range(reps):
            repo_side, repo_raw = repos[2 + 2 * i], repos[3 + 2 * i]
            order = ("sidecar", "raw") if i % 2 == 0 else ("raw", "sidecar")
            for what in order:
                if what == "sidecar":
                    side_s.append(scheduled(repo_side))
                else:
                    raw_s.append(raw_backup(repo_raw, tmp / f"cache-raw-{i}", src, env))
                settle()
            say(
                f"  sidecar run {i + 1}/{reps}: schedule→Event {side_s[-1]:.2f}s, "
                f"raw restic backup {raw_s[-1]:.2f}s"
            )
            if i < reps - 1:
                shutil.rmtree(repo_side, ignore_errors=True)
                shutil.rmtree(repo_raw, ignore_errors=True)
        # Extra figure: the same again into the last repositories, where restic finds a
        # parent snapshot and reads almost nothing, so restik's fixed cost weighs more.
        inc_side, inc_raw = [], []
        last_side, last_raw = repos[2 + 2 * (reps - 1)], repos[3 + 2 * (reps - 1)]
        last_cache = tmp / f"cache-raw-{reps - 1}"
        for i in range(reps):
            order = ("sidecar", "raw") if i % 2 == 0 else ("raw", "sidecar")
            for what in order:
                if what == "sidecar":
                    inc_side.append(scheduled(last_side))
                else:
                    inc_raw.append(raw_backup(last_raw, last_cache, src, env))
                settle()
        say(
            "  incremental runs (unchanged data): schedule→Event "
            + " ".join(f"{t:.2f}" for t in inc_side)
            + "s; raw "
            + " ".join(f"{t:.2f}" for t in inc_raw)
            + "s"
        )
        time.sleep(3.0)
        out["idle_rss_after_mib"] = kib(proc_status(proc.pid), "VmRSS") / 1024
        runs = 2 * reps + 1
        say(f"  restik watch idle after {runs} runs: {out['idle_rss_after_mib']:.1f} MiB RSS")
        out["sidecar_s"], out["raw_s"] = median(side_s), median(raw_s)
        out["ratio"] = out["sidecar_s"] / out["raw_s"]
        out["inc_sidecar_s"], out["inc_raw_s"] = median(inc_side), median(inc_raw)
        out["inc_ratio"] = out["inc_sidecar_s"] / out["inc_raw_s"]
        out["bytes"], out["files"] = size, files
    finally:
        if proc is not None:
            stop(proc)
            log.close()
        emu.stop()
    return out


# ------------------------------------------------------------------ report


def revision() -> str:
    """The commit measured, marked when the working tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "reconciler", "sidecar"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown revision"
    return head + (" (modified)" if dirty else "")


def verdict(key: str, value: float) -> str:
    op, goal = GOALS[key]
    ok = {"<=": value <= goal, "==": value == goal}[op]
    return "pass" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the smaller set (< 5 min)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="restik-bench-"))
    cores = os.cpu_count()
    say(
        f"restik benchmarks ({'quick' if args.quick else 'full'}) of {revision()}, "
        f"{cores} cores, in {tmp}"
    )
    try:
        say("[1/4] controller cycle at 1,000 workloads")
        small = bench_cycles(plan.sizes[0], plan.cycle_reps[0], tmp, rss=False)
        say("[2/4] controller cycle at 10,000 workloads, and peak RSS of restik run --once")
        large = bench_cycles(
            plan.sizes[1], plan.cycle_reps[1], tmp, rss=True, reaction_reps=plan.reaction_reps_10k
        )
        say("[3/4] reaction time: label added → PATCH, restik run with its default interval")
        react = bench_reaction(plan.reaction_reps, tmp)
        say("[4/4] sidecar: schedule fire → Event vs raw restic backup, idle RSS")
        side = bench_sidecar(plan.sidecar_files, plan.sidecar_mib, plan.sidecar_reps, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "cycle_ratio_1k": round(small["ratio"], 3),
        "scale_ratio_10k_over_1k": round(large["cycle_s"] / small["cycle_s"], 2),
        "writes_steady": max(small["writes_steady"], large["writes_steady"]),
        # At 1k every LIST fits one page; at 10k the same 7 LISTs come in pages of 500.
        "requests_per_cycle": small["requests_per_cycle"],
        "reaction_s_median": round(react["median"], 3),
        "sidecar_overhead_ratio": round(side["ratio"], 3),
        "sidecar_idle_rss_mib": round(
            max(side["idle_rss_start_mib"], side["idle_rss_after_mib"]), 1
        ),
        "controller_rss_mib_10k": round(large["rss_mib"], 1),
    }
    details = {
        "cycle_ratio_1k": f"cycle {small['cycle_s'] * 1e3:.0f} ms / bare LISTs "
        f"{small['base_s'] * 1e3:.0f} ms",
        "scale_ratio_10k_over_1k": f"cycle {large['cycle_s'] * 1e3:.0f} ms at 10k, "
        f"x{large['ratio']:.2f} its bare LISTs ({large['base_s'] * 1e3:.0f} ms; "
        f"bare 10k/1k: {large['base_s'] / small['base_s']:.1f})",
        "writes_steady": "in a steady cycle at 1k and at 10k",
        "requests_per_cycle": "LIST Backups + 5 workload kinds + RoleBindings; at 10k "
        f"{large['requests_per_cycle']} requests: the same LISTs in pages of 500",
        "reaction_s_median": "runs: " + " ".join(f"{t:.2f}" for t in react["times"]),
        "sidecar_overhead_ratio": f"{side['sidecar_s']:.2f}s / {side['raw_s']:.2f}s, "
        f"{side['files']} files, {side['bytes'] / 2**20:.0f} MiB",
        "sidecar_idle_rss_mib": f"{side['idle_rss_start_mib']:.1f} before runs, "
        f"{side['idle_rss_after_mib']:.1f} after",
        "controller_rss_mib_10k": f"fresh run --once, {large['once_s']:.0f}s "
        f"(first cycle in-process {large['first_cycle_s']:.0f}s)",
    }
    say("")
    say(f"{'figure':<26} {'value':>9}  {'goal':<8} {'':<5} detail")
    for key, value in result.items():
        op, goal = GOALS[key]
        say(f"{key:<26} {value:>9}  {op} {goal:<5} {verdict(key, value):<5} {details[key]}")
    say(
        f"{'(sidecar, incremental run)':<26} {side['inc_ratio']:>9.3f}  "
        f"{side['inc_sidecar_s']:.2f}s / {side['inc_raw_s']:.2f}s: unchanged data, parent snapshot"
    )
    if "reaction" in large:
        times = " ".join(f"{t:.2f}" for t in large["reaction"]["times"])
        say(f"{'(reaction at 10k, median)':<26} {large['reaction']['median']:>9.3f}  runs: {times}")
    say(f"({cores} cores, {time.perf_counter() - started:.0f}s in all)")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
