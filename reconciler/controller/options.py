"""Options of `restik run` and the Settings they make: stdlib only, so that building the
CLI's parsers imports nothing of the controller (the sidecar's memory stays small)."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass

from reconciler import __version__
from reconciler.api.duration import ScheduleError, parse_duration
from reconciler.logs import add_logging_arguments, env_default

# How a shard reads the cycle's cluster-wide LISTs (reconciler/controller/shard.py).
SHARD_LISTS = ("cluster", "namespace", "exclude")


def _seconds(text: str) -> float:
    try:
        value = parse_duration(text).total_seconds()
    except ScheduleError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _bool_env(name: str, default: bool) -> bool:
    value = env_default(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `restik run`; each also reads a RESTIK_* environment variable."""
    add_logging_arguments(parser)
    parser.add_argument("--once", action="store_true", help="run one cycle and exit")
    parser.add_argument(
        "--interval",
        type=_seconds,
        default=_seconds(env_default("INTERVAL", "30s")),
        help="time between cycles, e.g. 30s, 2m (RESTIK_INTERVAL, default 30s)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=_bool_env("DRY_RUN", False),
        help="print the planned patches as a diff and write nothing "
        "(exit 0 none, 1 planned, 2 error)",
    )
    parser.add_argument(
        "--namespace",
        default=env_default("NAMESPACE") or None,
        help="only this namespace (RESTIK_NAMESPACE, default all namespaces)",
    )
    parser.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster "
        "service account)",
    )
    parser.add_argument(
        "--sidecar-image",
        default=env_default("SIDECAR_IMAGE"),
        help=f"image of the injected sidecar (RESTIK_SIDECAR_IMAGE, default restik:{__version__})",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(env_default("METRICS_PORT", "0")),
        help="serve /metrics and /healthz on this port, 0 = off (RESTIK_METRICS_PORT, default 0)",
    )
    parser.add_argument(
        "--metrics-address",
        default=env_default("METRICS_ADDRESS", "0.0.0.0"),  # noqa: S104 - probes reach the pod IP
        help="address for /metrics and /healthz (RESTIK_METRICS_ADDRESS, default 0.0.0.0)",
    )
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=int(env_default("MAX_RESTARTS", "5")),
        help="pods with a stale template evicted per cycle, of the workloads that do not roll "
        "their pods themselves (RESTIK_MAX_RESTARTS, default 5)",
    )
    parser.add_argument(
        "--max-rollouts",
        type=int,
        default=int(env_default("MAX_ROLLOUTS", "10")),
        help="workloads whose sidecar is updated per cycle (an image upgrade rolls them in "
        "batches; new injections and removals are not limited; 0 = no limit) "
        "(RESTIK_MAX_ROLLOUTS, default 10)",
    )
    parser.add_argument(
        "--page-size",
        type=int,
        default=int(env_default("PAGE_SIZE", "500")),
        help="objects per LIST page, as client-go's pager (RESTIK_PAGE_SIZE, default 500)",
    )
    parser.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=_bool_env("LEADER_ELECT", bool(os.environ.get("POD_NAMESPACE"))),
        help="hold a Lease so that only one replica acts (default on inside a cluster)",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=int(env_default("SHARDS", "1")),
        help="split the namespaces among this many controllers by a stable hash of their "
        "names (RESTIK_SHARDS, default 1: one controller for all)",
    )
    parser.add_argument(
        "--shard-index",
        type=int,
        default=int(env_default("SHARD_INDEX", "-1")),
        help="this controller's shard, 0 to --shards - 1 (RESTIK_SHARD_INDEX; default: the "
        "ordinal of a StatefulSet pod's name, e.g. restik-2 is shard 2)",
    )
    parser.add_argument(
        "--shard-lists",
        choices=SHARD_LISTS,
        default=env_default("SHARD_LISTS", "cluster"),
        help="with --shards: read the cycle's LISTs cluster-wide and keep the shard's objects "
        "(cluster, default), or one LIST per namespace of the shard (namespace: fewer bytes, "
        "more requests), or cluster-wide with a field selector leaving out the other shards' "
        "namespaces (exclude: fewer bytes, as many requests as one controller; per namespace "
        "when the selector would exceed 8 KiB); namespace and exclude need `list` on "
        "namespaces (RESTIK_SHARD_LISTS)",
    )
    parser.add_argument(
        "--lease-namespace",
        default=env_default("LEASE_NAMESPACE")
        or os.environ.get("POD_NAMESPACE")
        or "restik-system",
        help="namespace of the leader-election Lease (RESTIK_LEASE_NAMESPACE, default "
        "$POD_NAMESPACE, else restik-system)",
    )


def _ordinal(name: str) -> int | None:
    """A StatefulSet pod's ordinal from its name (``restik-2`` → 2), None if it has none."""
    head, _, tail = name.rpartition("-")
    return int(tail) if head and tail.isdigit() else None


@dataclass(frozen=True)
class Settings:
    once: bool = False
    interval: float = 30.0
    dry_run: bool = False
    namespace: str | None = None
    kubeconfig: str | None = None
    sidecar_image: str | None = None
    metrics_port: int = 0
    metrics_address: str = "0.0.0.0"  # noqa: S104
    max_restarts: int = 5
    max_rollouts: int = 10
    page_size: int = 500
    leader_elect: bool = False
    lease_namespace: str = "restik-system"
    identity: str = ""
    shards: int = 1
    shard_index: int = 0
    shard_lists: str = "cluster"

    @property
    def lease_name(self) -> str:
        """The leader-election Lease: one per shard."""
        return "restik-controller" if self.shards == 1 else f"restik-controller-{self.shard_index}"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        """ValueError (naming the option) for a shard index that is not given and cannot be
        read from a StatefulSet pod's name, or that is out of range."""
        identity = os.environ.get("POD_NAME") or socket.gethostname()
        shards = getattr(args, "shards", 1)
        index = getattr(args, "shard_index", -1)
        if shards < 1:
            raise ValueError(f"--shards: must be at least 1, not {shards}")
        if index < 0:
            index = 0 if shards == 1 else _ordinal(identity)
            if index is None:
                raise ValueError(
                    f"--shard-index: not given, and this pod's name {identity!r} has no "
                    "StatefulSet ordinal (NAME-<number>); set --shard-index or "
                    "RESTIK_SHARD_INDEX, or run the shards as a StatefulSet"
                )
        if index >= shards:
            raise ValueError(
                f"--shard-index: {index} is not a shard of --shards {shards} (0 to {shards - 1})"
            )
        shard_lists = getattr(args, "shard_lists", "cluster")
        if shard_lists not in SHARD_LISTS:  # RESTIK_SHARD_LISTS, which argparse does not check
            raise ValueError(
                f"--shard-lists: {shard_lists!r} is not one of {', '.join(SHARD_LISTS)}"
            )
        return cls(
            once=args.once,
            interval=args.interval,
            dry_run=args.dry_run,
            namespace=args.namespace,
            kubeconfig=args.kubeconfig,
            sidecar_image=args.sidecar_image,
            metrics_port=args.metrics_port,
            metrics_address=args.metrics_address,
            max_restarts=args.max_restarts,
            max_rollouts=args.max_rollouts,
            page_size=args.page_size,
            leader_elect=args.leader_elect and not args.once and not args.dry_run,
            lease_namespace=args.lease_namespace,
            identity=identity,
            shards=shards,
            shard_index=index,
            shard_lists=shard_lists,
        )
