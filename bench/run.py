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
import dataclasses
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
from reconciler.controller.shard import Shard, ShardKube  # noqa: E402
from reconciler.kube.client import Kube  # noqa: E402
from tests.emulator import Emulator  # noqa: E402

RESTIC = shutil.which("restic") or "restic"
PASSWORD = "bench-Pa55word"
GOALS = {
    "cycle_ratio_1k": ("<=", 1.2),
    "cycle_ratio_10k": ("<=", 1.3),
    "scale_ratio_10k_over_1k": ("<=", 11),
    "writes_steady": ("==", 0),
    # LIST Backups + the 5 workload kinds + restik's RoleBindings, its per-Backup sidecar
    # Roles (issue 13) and the Restores (issue 12): one LIST per kind, never per object
    "requests_per_cycle": ("==", len(WORKLOAD_KINDS) + 4),
    "reaction_s_median": ("<=", 1.0),
    "reaction_s_median_10k": ("<=", 0.5),
    "reaction_ratio_10k_over_1k": ("<=", 1.5),
    "lists_per_irrelevant_event": ("<=", 0.01),
    "restart_ratio_10k": ("<=", 1.5),
    "shard_cycle_ratio_10k": ("<=", 0.43),  # close to 1/SHARDS
    "sidecar_overhead_ratio": ("<=", 1.05),
    "sidecar_idle_rss_mib": ("<=", 40),
    "controller_rss_mib_10k": ("<=", 200),
    # the full run only
    "cycle_ratio_50k": ("<=", 1.3),
    "restart_ratio_50k": ("<=", 1.5),
    "controller_rss_mib_50k": ("<=", 150),
}
SHARDS = 3  # the per-shard cycle is measured with --shards 3 (kustomize/overlays/sharded)
SHARD_MODES = ("cluster", "namespace", "exclude")  # each --shard-lists, side by side
OVERLAY_LISTS = "exclude"  # the sharded overlay's --shard-lists: shard_cycle_ratio_10k
IRRELEVANT_EVENTS = 1000


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, int] = (1000, 10000)
    cycle_reps: tuple[int, int] = (21, 9)
    reaction_reps: int = 7  # at 1k and at 10k, interleaved
    restart_reps: int = 3  # first cycle after a start vs a steady cycle, interleaved
    huge: int = 50000  # 0: no 50k run
    huge_reps: int = 5
    sidecar_files: int = 2000
    sidecar_mib: int = 200
    sidecar_reps: int = 7


QUICK = Plan(
    cycle_reps=(9, 3),
    reaction_reps=5,
    restart_reps=2,
    huge=0,
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


def bench_cycles(
    size: int, reps: int, tmp: Path, rss: bool, restart_reps: int = 0, shards: int = 0
) -> dict:
    """The steady cycle at ``size`` workloads vs its bare LISTs (replayed), and optionally the
    first cycle after a start vs a steady one (``restart_reps``, on the emulator) and the
    steady cycle of each of ``shards`` shards (replayed, interleaved with the others)."""
    out: dict = {"size": size}
    emu = Emulator()
    emu.start()
    try:
        t = time.perf_counter()
        info = cluster.populate(emu, size)
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
        ns_lists = [
            x
            for mode in SHARD_MODES
            if mode != "cluster"  # the same LISTs as the single controller
            for x in shard_lists(emu, kubeconfig, shards, mode)
        ]
        recording = str(tmp / f"replay-{size}.pickle")
        crds = [
            (f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", None)
            for name in ("backups.backup.appscode.com", "restores.backup.appscode.com")
        ]  # a new controller (a shard's) checks both CRDs first
        out["recorded_bytes"] = record(emu.url, [*crds, *lists], recording)
        if ns_lists:
            record(emu.url, [*crds, *lists, *ns_lists], recording)
        if restart_reps:
            out.update(bench_restart(kubeconfig, controller, restart_reps, size))
        if rss:
            out.update(bench_controller_rss(kubeconfig, tmp))
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
            # a RoleBinding and a sidecar Role per Backup, no Restore
            assert items == check.backups + check.workloads + 2 * info["backups"], items
            sharded = [
                c
                for mode in SHARD_MODES
                for c in shard_controllers(replay_config, shards, replay, check, mode)
            ]
            runs: dict[str, list[float]] = {"cycle": [], "base": []}
            runs.update((f"shard{i}", []) for i in range(len(sharded)))
            whats = list(runs)
            for i in range(reps):
                for what in whats[i % len(whats) :] + whats[: i % len(whats)]:
                    if what == "base":
                        runs["base"].append(base.run()[0])
                        continue
                    c = controller if what == "cycle" else sharded[int(what[5:])]
                    if c is not controller:
                        c.kube.expire_namespaces()  # cycles 30 s apart list them each time
                    t = time.perf_counter()
                    c.cycle()
                    runs[what].append(time.perf_counter() - t)
        finally:
            base.close()
        cycle_s, base_s = runs["cycle"], runs["base"]
        out["cycle_s"] = median(cycle_s)
        out["base_s"] = median(base_s)
        out["ratio"] = out["cycle_s"] / out["base_s"]
        out["cycle_spread"] = (min(cycle_s), max(cycle_s))
        out["base_spread"] = (min(base_s), max(base_s))
        out["replayed_requests"] = len(served)
        if shards:
            out["shard_workloads"] = [c.last_workloads for c in sharded[:shards]]
            for m, mode in enumerate(SHARD_MODES):
                mine = range(m * shards, (m + 1) * shards)
                out[f"{mode}_shard_s"] = [median(runs[f"shard{i}"]) for i in mine]
                out[f"{mode}_shard_spread"] = [
                    (min(runs[f"shard{i}"]), max(runs[f"shard{i}"])) for i in mine
                ]
                out[f"{mode}_shard_requests"] = [sharded[i].last_requests for i in mine]
                out[f"{mode}_shard_ratio"] = max(out[f"{mode}_shard_s"]) / out["cycle_s"]
    say(
        f"  {size}: cycle {out['cycle_s'] * 1000:.0f} ms vs bare LISTs "
        f"{out['base_s'] * 1000:.0f} ms (medians of {reps}, replayed "
        f"{out['recorded_bytes'] / 2**20:.1f} MiB) → x{out['ratio']:.2f}; "
        f"spread {ms_range(out['cycle_spread'])} vs {ms_range(out['base_spread'])}"
    )
    if shards:
        for mode in SHARD_MODES:
            times, requests = out[f"{mode}_shard_s"], out[f"{mode}_shard_requests"]
            say(
                f"  {size}: per shard (--shards {shards} --shard-lists {mode}): "
                + ", ".join(
                    f"{t * 1000:.0f} ms ({ms_range(r)}; {n} workloads, {q} requests)"
                    for t, r, n, q in zip(
                        times, out[f"{mode}_shard_spread"], out["shard_workloads"], requests,
                        strict=True)
                )
                + f" → slowest x{out[f'{mode}_shard_ratio']:.2f} the single controller's cycle"
            )  # fmt: skip
    return out


def ms_range(spread: tuple[float, float]) -> str:
    return f"{spread[0] * 1000:.0f}-{spread[1] * 1000:.0f} ms"


def shard_controller(kubeconfig: str, shards: int, i: int, lists: str) -> Controller:
    """A Controller as `restik run --shards N --shard-index I` builds it. Its unselected first
    LIST is skipped (the replay answers only the steady LISTs; the stale-pod search after a
    start is measured by bench_restart)."""
    settings = Settings(shards=shards, shard_index=i, shard_lists=lists)
    kube = ShardKube(Kube.connect(kubeconfig), Shard(shards, i), lists=lists)
    c = Controller(kube, settings)
    c.first_cycle = False
    return c


def shard_lists(emu: Emulator, kubeconfig: str, shards: int, lists: str) -> list[tuple[str, dict]]:
    """The LISTs of a steady cycle of each shard reading in mode ``lists`` (to record them)."""
    out: list[tuple[str, dict]] = []
    for i in range(shards):
        c = shard_controller(kubeconfig, shards, i, lists)
        c.cycle()
        emu.clear_requests()
        c.kube.expire_namespaces()
        stats = c.cycle()
        assert stats.planned == 0 and not emu.writes(), stats.summary()
        out += [x for x in list_requests(emu.requests) if x not in out]
    return out


def shard_controllers(replay_config: str, shards: int, replay, whole, lists: str):
    """One warm Controller per shard on the replayed LISTs, checked steady: together they see
    every workload once."""
    out = []
    for i in range(shards):
        c = shard_controller(replay_config, shards, i, lists)
        c.cycle()  # renders its Backups
        replay.log()
        c.kube.expire_namespaces()
        stats = c.cycle()
        served = replay.log()
        bad = [r for r in served if r[0] != "GET"]
        assert stats.planned == 0 and not bad, f"shard {i} is not steady: {stats} {bad[:3]}"
        c.last_workloads = stats.workloads
        c.last_requests = len(served)
        out.append(c)
    if out:
        assert sum(c.last_workloads for c in out) == whole.workloads
    return out


def bench_restart(kubeconfig: str, warm: Controller, reps: int, size: int) -> dict:
    """The first cycle of a new controller (what every start and every `restik run --once`
    costs) vs a steady cycle of a warm one, both on the converged emulator, interleaved."""
    first_s, steady_s = [], []
    for i in range(reps):
        for what in ("first", "steady") if i % 2 == 0 else ("steady", "first"):
            if what == "first":
                fresh = Controller(Kube.connect(kubeconfig), Settings())
                t = time.perf_counter()
                stats = fresh.cycle()
                first_s.append(time.perf_counter() - t)
                assert stats.patched == 0 and not stats.errors, stats.summary()
                del fresh
                gc.collect()
            else:
                t = time.perf_counter()
                warm.cycle()
                steady_s.append(time.perf_counter() - t)
    out = {
        "restart_first_s": median(first_s),
        "restart_steady_s": median(steady_s),
        "restart_runs": (first_s, steady_s),
    }
    out["restart_ratio"] = out["restart_first_s"] / out["restart_steady_s"]
    say(
        f"  {size}: first cycle after a start {out['restart_first_s']:.2f}s vs steady "
        f"{out['restart_steady_s']:.2f}s on the emulator (medians of {reps}; first "
        + " ".join(f"{t:.2f}" for t in first_s)
        + ", steady "
        + " ".join(f"{t:.2f}" for t in steady_s)
        + f") → x{out['restart_ratio']:.2f}"
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


class Watched:
    """`restik run --interval 1h` as a subprocess against an emulator of ``size`` workloads
    (plus spare unlabeled ones), once its watches are up: so every request it makes while
    measured comes from a watch event, never from its interval."""

    def __init__(self, size: int, spares: int, tmp: Path):
        self.size = size
        self.emu = Emulator()
        self.emu.start()
        self.proc = None
        self.info = cluster.populate(self.emu, size, unlabeled=(spares + 4) // 5)
        kubeconfig = str(self.emu.write_kubeconfig(tmp / f"events-{size}.kubeconfig"))
        self.rec = Recorder(self.emu)
        self.log = open(tmp / f"events-{size}.log", "wb")
        t = time.perf_counter()
        self.proc = subprocess.Popen(
            restik("run", "--interval", "1h", "--kubeconfig", kubeconfig),
            env=child_env(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
            preexec_fn=die_with_parent,
        )
        watches = len(WORKLOAD_KINDS) + 1
        self.rec.wait(0, lambda r: r.verb == "watch" and r.resource == "backups", 600)
        deadline = time.monotonic() + 60
        while sum(1 for _, _, r in self.rec.seen if r.verb == "watch") < watches:
            if time.monotonic() > deadline:
                raise TimeoutError("the controller did not start its watches")
            time.sleep(0.05)
        self.rec.quiet(1.0)
        say(f"  restik run is up ({size} workloads, {watches} watches) after "
            f"{time.perf_counter() - t:.1f}s")  # fmt: skip
        self.spare = list(self.info["spare"])

    def react(self) -> float:
        """Label the next spare workload; seconds until the emulator answers its PATCH."""
        kind, name, label = self.spare.pop(0)
        api_version, plural = WORKLOAD_KINDS[kind]
        mark = self.rec.mark()
        t0 = time.monotonic()
        self.emu.patch(api_version, plural, name, {"metadata": {"labels": {CONFIG_LABEL: label}}},
                       self.info["namespace"])  # fmt: skip
        t1, _, _ = self.rec.wait(
            mark,
            lambda r: r.method == "PATCH" and r.resource == plural and r.name == name,
            120,
        )
        self.rec.quiet(0.5)
        return t1 - t0

    def irrelevant(self, count: int) -> dict:
        """``count`` updates that cannot change any plan: each of count/2 labeled workloads
        gets a status update, then a replica-count change (DaemonSets: a second status
        update). Requests the controller makes meanwhile, until 2 s pass without any."""
        mark = self.rec.mark()
        t = time.perf_counter()
        for j in range(count):
            kind, name, ns = cluster.labeled(j // 2)
            api_version, plural = WORKLOAD_KINDS[kind]
            if j % 2 == 0 or kind == "DaemonSet":
                status = {"status": {"observedGeneration": 1, "replicas": 1, "readyReplicas": j}}
                self.emu.patch(api_version, plural, name, status, ns, subresource="status")
            else:
                self.emu.patch(api_version, plural, name, {"spec": {"replicas": 2}}, ns)
        sent = time.perf_counter() - t
        self.rec.quiet(2.0)
        seen = [r for _, _, r in self.rec.seen[mark:] if r.verb != "watch"]
        lists = sum(1 for r in seen if r.verb == "list")
        say(
            f"  {count} status/replica updates at {self.size} (sent in {sent:.1f}s): "
            f"{lists} LISTs, {len(seen)} requests in all"
        )
        return {"events": count, "lists": lists, "requests": len(seen)}

    def close(self) -> None:
        if self.proc is not None:
            stop(self.proc)
        self.log.close()
        self.emu.stop()


def bench_events(reps: int, tmp: Path) -> dict:
    """Reaction to a label at 1k and at 10k workloads, interleaved (both controllers run at
    once), then the cost of irrelevant events at 10k."""
    small = large = None
    try:
        small = Watched(1000, reps, tmp)
        large = Watched(10000, reps, tmp)
        times: dict[int, list[float]] = {1000: [], 10000: []}
        for i in range(reps):
            for w in (small, large) if i % 2 == 0 else (large, small):
                times[w.size].append(w.react())
            say(
                f"  reaction {i + 1}/{reps}: {times[1000][-1]:.3f}s at 1k, "
                f"{times[10000][-1]:.3f}s at 10k"
            )
        events = large.irrelevant(IRRELEVANT_EVENTS)
    finally:
        for w in (small, large):
            if w is not None:
                w.close()
    return {
        "times_1k": times[1000],
        "times_10k": times[10000],
        "median_1k": median(times[1000]),
        "median_10k": median(times[10000]),
        **events,
    }


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
        out["sidecar_runs"], out["raw_runs"] = side_s, raw_s
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


def growth_table(runs: list[dict]) -> str:
    """How the cost grows with the cluster: one line per size measured."""
    lines = [
        "",
        "| workloads | requests a cycle | steady cycle | bare LISTs | first cycle | peak RSS |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        first = r.get("restart_first_s", r.get("first_cycle_s", 0.0))
        rss = f"{r['rss_mib']:.0f} MiB" if "rss_mib" in r else "-"
        lines.append(
            f"| {r['size']:,} | {r['requests_per_cycle']} | {r['cycle_s'] * 1e3:.0f} ms "
            f"| {r['base_s'] * 1e3:.0f} ms | {first:.1f} s | {rss} |"
        )
    return "\n".join(lines)


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
    parser.add_argument(
        "--no-sidecar", action="store_true", help="the controller figures only (no restic)"
    )
    parser.add_argument(
        "--sidecar-only",
        action="store_true",
        help="the sidecar figures only (no controller benchmarks)",
    )
    parser.add_argument(
        "--huge", type=int, default=None, help="workloads of the large run (full: 50,000; 0: none)"
    )
    args = parser.parse_args(argv)
    if args.sidecar_only and args.no_sidecar:
        parser.error("--sidecar-only and --no-sidecar exclude each other")
    plan = QUICK if args.quick else Plan()
    if args.huge is not None:
        plan = dataclasses.replace(plan, huge=args.huge)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="restik-bench-"))
    cores = os.cpu_count()
    say(
        f"restik benchmarks ({'quick' if args.quick else 'full'}) of {revision()}, "
        f"{cores} cores, in {tmp}"
    )
    if args.sidecar_only:
        try:
            return sidecar_only(plan, tmp, started)
        finally:
            if not args.keep:
                shutil.rmtree(tmp, ignore_errors=True)
    steps = 5 if plan.huge else 4
    huge = side = None
    try:
        say(f"[1/{steps}] controller cycle at 1,000 workloads")
        small = bench_cycles(plan.sizes[0], plan.cycle_reps[0], tmp, rss=False)
        say(
            f"[2/{steps}] controller cycle at 10,000 workloads, per shard (--shards {SHARDS}), "
            "first cycle after a start, peak RSS of restik run --once"
        )
        large = bench_cycles(
            plan.sizes[1],
            plan.cycle_reps[1],
            tmp,
            rss=True,
            restart_reps=plan.restart_reps,
            shards=SHARDS,
        )
        say(
            f"[3/{steps}] events: label added → PATCH at 1k and 10k side by side, "
            f"{IRRELEVANT_EVENTS} status/replica updates at 10k"
        )
        react = bench_events(plan.reaction_reps, tmp)
        if plan.huge:
            say(f"[4/{steps}] controller cycle at {plan.huge:,} workloads, restart, peak RSS")
            huge = bench_cycles(
                plan.huge, plan.huge_reps, tmp, rss=True, restart_reps=plan.restart_reps
            )
        if not args.no_sidecar:
            say(f"[{steps}/{steps}] sidecar: schedule fire → Event vs raw restic backup, idle RSS")
            side = bench_sidecar(plan.sidecar_files, plan.sidecar_mib, plan.sidecar_reps, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "cycle_ratio_1k": round(small["ratio"], 3),
        "cycle_ratio_10k": round(large["ratio"], 3),
        "scale_ratio_10k_over_1k": round(large["cycle_s"] / small["cycle_s"], 2),
        "writes_steady": max(small["writes_steady"], large["writes_steady"]),
        # At 1k every LIST fits one page; at 10k the same 7 LISTs come in pages of 500.
        "requests_per_cycle": small["requests_per_cycle"],
        "reaction_s_median": round(react["median_1k"], 3),
        "reaction_s_median_10k": round(react["median_10k"], 3),
        "reaction_ratio_10k_over_1k": round(react["median_10k"] / react["median_1k"], 2),
        "lists_per_irrelevant_event": round(react["lists"] / react["events"], 4),
        "restart_ratio_10k": round(large["restart_ratio"], 2),
        "shard_cycle_ratio_10k": round(large[f"{OVERLAY_LISTS}_shard_ratio"], 3),
        "controller_rss_mib_10k": round(large["rss_mib"], 1),
    }
    spread = " ".join
    details = {
        "cycle_ratio_1k": f"cycle {small['cycle_s'] * 1e3:.0f} ms / bare LISTs "
        f"{small['base_s'] * 1e3:.0f} ms (runs {ms_range(small['cycle_spread'])} / "
        f"{ms_range(small['base_spread'])})",
        "cycle_ratio_10k": f"cycle {large['cycle_s'] * 1e3:.0f} ms / bare LISTs "
        f"{large['base_s'] * 1e3:.0f} ms (runs {ms_range(large['cycle_spread'])} / "
        f"{ms_range(large['base_spread'])})",
        "scale_ratio_10k_over_1k": f"bare LISTs 10k/1k: {large['base_s'] / small['base_s']:.1f}",
        "writes_steady": "in a steady cycle at 1k and at 10k",
        "requests_per_cycle": "LIST Backups + 5 workload kinds + RoleBindings + Roles + "
        "Restores; at 10k "
        f"{large['requests_per_cycle']} requests: the same LISTs in pages of 500",
        "reaction_s_median": "runs: " + spread(f"{t:.2f}" for t in react["times_1k"]),
        "reaction_s_median_10k": "runs: " + spread(f"{t:.2f}" for t in react["times_10k"]),
        "reaction_ratio_10k_over_1k": "interleaved, both controllers running",
        "lists_per_irrelevant_event": f"{react['lists']} LISTs, {react['requests']} requests "
        f"for {react['events']} updates at 10k",
        "restart_ratio_10k": f"first {large['restart_first_s']:.2f}s / steady "
        f"{large['restart_steady_s']:.2f}s (first: "
        + spread(f"{t:.1f}" for t in large["restart_runs"][0])
        + ")",
        "shard_cycle_ratio_10k": "; ".join(
            f"--shard-lists {mode}: "
            + ", ".join(f"{t * 1e3:.0f}" for t in large[f"{mode}_shard_s"])
            + f" ms / {large['cycle_s'] * 1e3:.0f} ms, x{large[f'{mode}_shard_ratio']:.2f} ("
            + "/".join(str(n) for n in large[f"{mode}_shard_requests"])
            + " requests)"
            for mode in SHARD_MODES
        ),
        "controller_rss_mib_10k": f"fresh run --once, {large['once_s']:.0f}s "
        f"(first cycle in-process {large['first_cycle_s']:.0f}s)",
    }
    if huge is not None:
        result["cycle_ratio_50k"] = round(huge["ratio"], 3)
        result["restart_ratio_50k"] = round(huge["restart_ratio"], 2)
        result["controller_rss_mib_50k"] = round(huge["rss_mib"], 1)
        details["cycle_ratio_50k"] = (
            f"cycle {huge['cycle_s']:.2f}s / bare LISTs {huge['base_s']:.2f}s, "
            f"x{huge['cycle_s'] / large['cycle_s']:.1f} the 10k cycle"
        )
        details["restart_ratio_50k"] = (
            f"first {huge['restart_first_s']:.1f}s / steady {huge['restart_steady_s']:.2f}s"
        )
        details["controller_rss_mib_50k"] = f"fresh run --once, {huge['once_s']:.0f}s"
    if side is not None:
        sidecar_figures(side, result, details)
    report_table(result, details, side)
    say(growth_table([small, large, *([huge] if huge else [])]))
    say(f"({cores} cores, {time.perf_counter() - started:.0f}s in all)")
    print(json.dumps(result), flush=True)
    return 0


def sidecar_figures(side: dict, result: dict, details: dict) -> None:
    """The sidecar's goal figures (and their detail) from ``bench_sidecar``'s answer."""
    result["sidecar_overhead_ratio"] = round(side["ratio"], 3)
    result["sidecar_idle_rss_mib"] = round(
        max(side["idle_rss_start_mib"], side["idle_rss_after_mib"]), 1
    )
    details["sidecar_overhead_ratio"] = (
        f"{side['sidecar_s']:.2f}s / {side['raw_s']:.2f}s, "
        f"{side['files']} files, {side['bytes'] / 2**20:.0f} MiB (runs "
        + " ".join(f"{t:.2f}" for t in side["sidecar_runs"])
        + " / "
        + " ".join(f"{t:.2f}" for t in side["raw_runs"])
        + ")"
    )
    details["sidecar_idle_rss_mib"] = (
        f"{side['idle_rss_start_mib']:.1f} before runs, {side['idle_rss_after_mib']:.1f} after"
    )


def report_table(result: dict, details: dict, side: dict | None) -> None:
    say("")
    say(f"{'figure':<28} {'value':>9}  {'goal':<8} {'':<5} detail")
    for key, value in result.items():
        op, goal = GOALS[key]
        say(f"{key:<28} {value:>9}  {op} {goal:<5} {verdict(key, value):<5} {details[key]}")
    if side is not None:
        say(
            f"{'(sidecar, incremental run)':<28} {side['inc_ratio']:>9.3f}  "
            f"{side['inc_sidecar_s']:.2f}s / {side['inc_raw_s']:.2f}s: unchanged data, "
            "parent snapshot"
        )


def sidecar_only(plan: Plan, tmp: Path, started: float) -> int:
    """``--sidecar-only``: the sidecar step alone, its figures as the JSON line."""
    say("[1/1] sidecar: schedule fire → Event vs raw restic backup, idle RSS")
    side = bench_sidecar(plan.sidecar_files, plan.sidecar_mib, plan.sidecar_reps, tmp)
    result: dict = {}
    details: dict = {}
    sidecar_figures(side, result, details)
    report_table(result, details, side)
    say(f"({os.cpu_count()} cores, {time.perf_counter() - started:.0f}s in all)")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
