"""Peak RSS of `restik run --once` at one cluster size, without the rest of the benchmark.

    python bench/rss.py 50000                 # build, converge, 3 x run --once, exit
    python bench/rss.py 50000 --reps 5
    python bench/rss.py 50000 --serve /tmp/k  # then keep the emulator up, kubeconfig at /tmp/k

The same measurement as `controller_rss_mib_*` in bench/run.py (VmHWM of a fresh
`restik run --once`, polled every 20 ms) on the same converged cluster (bench/cluster.py,
then one controller cycle). Setting up 50,000 workloads takes minutes: with ``--serve`` the
emulator stays up until interrupted, so that `restik run --once --kubeconfig FILE` (the
code of this checkout: each run is a new process) can be measured again and again, e.g.
with ``--attach FILE``, which only runs and measures against a served cluster.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cluster  # noqa: E402 - bench/ is sys.path[0] when run as a script
from run import bench_controller_rss, say  # noqa: E402

from reconciler.controller.cycle import Controller  # noqa: E402
from reconciler.controller.options import Settings  # noqa: E402
from reconciler.kube.client import Kube  # noqa: E402


def measure(kubeconfig: str, reps: int, tmp: Path) -> list[float]:
    peaks = []
    for _ in range(reps):
        out = bench_controller_rss(kubeconfig, tmp)
        if out["once_rc"] != 0:
            raise SystemExit(f"restik run --once failed (exit {out['once_rc']})")
        peaks.append(out["rss_mib"])
    say(
        f"controller_rss_mib: median {statistics.median(peaks):.1f} "
        f"(runs: {', '.join(f'{p:.1f}' for p in peaks)})"
    )
    return peaks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", type=int, nargs="?", default=10000, help="labeled workloads")
    parser.add_argument("--reps", type=int, default=3, help="runs of `restik run --once`")
    parser.add_argument("--serve", metavar="KUBECONFIG", help="then keep the emulator up")
    parser.add_argument("--attach", metavar="KUBECONFIG", help="measure a served cluster")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="restik-rss-") as tmpdir:
        tmp = Path(tmpdir)
        if args.attach:
            measure(args.attach, args.reps, tmp)
            return 0
        from tests.emulator import Emulator

        emu = Emulator()
        emu.start()
        try:
            t = time.perf_counter()
            info = cluster.populate(emu, args.size)
            seconds = time.perf_counter() - t
            say(f"{info['backups']} Backups, {info['workloads']} workloads in {seconds:.0f}s")
            kubeconfig = str(emu.write_kubeconfig(Path(args.serve or tmp / "emulator.kubeconfig")))
            controller = Controller(Kube.connect(kubeconfig), Settings())
            say(f"first cycle: {controller.cycle().summary()}")
            del controller
            if args.reps:
                measure(kubeconfig, args.reps, tmp)
            if args.serve:
                say(f"serving at {kubeconfig}; interrupt to stop")
                while True:
                    time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            emu.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
