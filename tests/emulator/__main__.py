"""Run the emulator on its own: python -m tests.emulator --port 0 --kubeconfig FILE."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from . import Emulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig file to write")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="faults for restik* clients")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--load",
        nargs="*",
        default=[],
        metavar="FILE",
        help="manifests to create at start (their namespaces are created when missing)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    log = logging.getLogger("tests.emulator")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    emu = Emulator(fail_rate=args.fail_rate, seed=args.seed, port=args.port).start()
    try:
        for path in args.load:
            for obj in emu.load(path, create_namespaces=True):
                meta = obj["metadata"]
                log.info("loaded %s %s/%s", obj["kind"], meta.get("namespace", ""), meta["name"])
        emu.write_kubeconfig(args.kubeconfig)
        log.info("serving on %s, kubeconfig %s", emu.url, args.kubeconfig)
        while not stop.wait(0.2):
            pass
    finally:
        emu.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
