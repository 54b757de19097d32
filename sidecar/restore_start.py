"""`restik restore-run`'s entry: it starts the snapshot listing (`restic snapshots --json
--no-lock --path P`, the restic that opens the repository and derives its key) before the
executor's own imports and API reads, so that both run at the same time. The repository and
path come from the arguments the controller rendered (--repository, --source-path); the
executor uses the listing only if it is exactly the one it would run for the Backup it read
(else it is stopped and the right one runs). Stdlib only: it runs before anything heavy is
imported."""

from __future__ import annotations

import argparse
import os
import subprocess

LISTING_TIMEOUT = 600.0


class EarlyListing:
    """One `restic snapshots` started ahead; ``take(argv)`` is its result when ``argv`` is
    what it ran, else None (and it is stopped)."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.argv = argv
        self.proc: subprocess.Popen | None = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )

    def take(self, argv: list[str]) -> subprocess.CompletedProcess | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if argv != self.argv:
            _stop(proc)
            return None
        try:
            out, err = proc.communicate(timeout=LISTING_TIMEOUT)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def close(self) -> None:
        """Stop it if nobody took it (the Restore finished already, failed early, ...)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def listing_argv(restic: str, repository: str, cache_dir: str, path: str) -> list[str]:
    """The executor's listing, as sidecar.restic.render_source_snapshots renders it."""
    return [
        restic,
        f"--repo={repository}",
        f"--cache-dir={cache_dir}",
        "--no-lock",
        "snapshots",
        "--json",
        f"--path={path}",
    ]


def start_listing(args: argparse.Namespace, environ=None) -> EarlyListing | None:
    """The early listing, when the arguments name the repository and path and the cache
    directory is known; None otherwise (or when restic cannot start: the executor then
    reports that itself)."""
    environ = os.environ if environ is None else environ
    repository = getattr(args, "repository", None)
    path = getattr(args, "source_path", None)
    cache_dir = getattr(args, "cache_dir", None) or environ.get("RESTIC_CACHE_DIR")
    if not repository or not path or not cache_dir:
        return None
    env = dict(environ)
    env.pop("RESTIC_REPOSITORY_FILE", None)  # as sidecar.runner.restic_env
    try:
        return EarlyListing(listing_argv(args.restic, repository, cache_dir, path), env)
    except OSError:
        return None


def run(args: argparse.Namespace) -> int:
    listing = start_listing(args)
    try:
        from sidecar import restore  # after the listing started

        if getattr(args, "into_pods", None):  # a dump Restore's Job
            from sidecar.restore_dump import DumpExecutor

            return restore.run(args, listing=listing, executor_class=DumpExecutor)
        return restore.run(args, listing=listing)
    finally:
        if listing is not None:
            listing.close()
