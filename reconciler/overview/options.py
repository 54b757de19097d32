"""Options of `restik status`: stdlib only (the CLI builds every command's parser)."""

from __future__ import annotations

import argparse

from reconciler.logs import env_default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        default=env_default("NAMESPACE"),
        help="namespace of the Backups (default: the kubeconfig context's, else 'default')",
    )
    scope.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="the Backups of every namespace",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json"),
        default="table",
        help="table (default) or json",
    )
    parser.add_argument(
        "--kubeconfig",
        default=env_default("KUBECONFIG"),
        help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)",
    )
