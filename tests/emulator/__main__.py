"""Run the emulator on its own: python -m tests.emulator --port 0 --kubeconfig FILE [--cluster]."""

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
    parser.add_argument(
        "--admission-policies", action="store_true",
        help="enforce the ValidatingAdmissionPolicies created in the emulator (real CEL)",
    )  # fmt: skip
    parser.add_argument(
        "--user", default=None, metavar="NAME",
        help="the kubeconfig's bearer token stands for this user (default: the admin), "
        "e.g. system:serviceaccount:restik-system:restik",
    )  # fmt: skip
    cluster = parser.add_argument_group("a cluster, not only an API server")
    cluster.add_argument(
        "--cluster",
        action="store_true",
        help="workload controllers, kubelets and admission (each also on its own below)",
    )
    for flag, what in (
        ("controllers", "Deployment/ReplicaSet/RC/StatefulSet/DaemonSet controllers"),
        ("kubelet", "bind pods to nodes and make them Ready"),
        ("admission", "Pod Security enforce labels and ResourceQuota on pod creation"),
    ):
        cluster.add_argument(
            f"--{flag}", action=argparse.BooleanOptionalAction, default=None, help=what
        )
    cluster.add_argument("--nodes", default="node-1,node-2", help="comma-separated node names")
    cluster.add_argument("--ready-delay", type=float, default=0.05, help="seconds until Ready")
    cluster.add_argument(
        "--broken-image", action="append", default=[], metavar="IMAGE",
        help="an image whose containers never become Ready (repeatable)",
    )  # fmt: skip
    cluster.add_argument(
        "--watch-window", type=int, default=None,
        help="watch events kept; a watch from an older resourceVersion gets 410 Gone",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    log = logging.getLogger("tests.emulator")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    emu = Emulator(
        fail_rate=args.fail_rate,
        seed=args.seed,
        port=args.port,
        cluster=args.cluster,
        controllers=args.controllers,
        kubelet=args.kubelet,
        admission=args.admission,
        nodes=[n for n in args.nodes.split(",") if n],
        ready_delay=args.ready_delay,
        broken_images=args.broken_image,
        watch_window=args.watch_window,
        admission_policies=args.admission_policies,
    ).start()
    try:
        for path in args.load:
            for obj in emu.load(path, create_namespaces=True):
                meta = obj["metadata"]
                log.info("loaded %s %s/%s", obj["kind"], meta.get("namespace", ""), meta["name"])
        emu.write_kubeconfig(args.kubeconfig, user=args.user)
        log.info("serving on %s, kubeconfig %s", emu.url, args.kubeconfig)
        while not stop.wait(0.2):
            pass
    finally:
        emu.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
