"""The sidecar as a process: logging with secrets redacted, the signals that stop it, and the
one thread a run happens in (restic and pods/exec commands are its children)."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
from collections.abc import Callable

from reconciler.logs import setup_logging
from sidecar import restic
from sidecar.options import Settings
from sidecar.runner import Runner, redact, restic_env, secret_values

log = logging.getLogger("restik.watch")


def configure_logging(level: str, fmt: str) -> None:
    """Log at ``level`` in ``fmt``; every value of the environment that looks like a secret
    (RESTIC_PASSWORD, AWS_SECRET_ACCESS_KEY, ...) is redacted from every line."""
    secrets = secret_values(os.environ)
    setup_logging(level, fmt, lambda text: redact(text, secrets))


def on_stop_signals(handler: Callable) -> None:
    """SIGTERM (the kubelet stopping the pod) and SIGINT (a terminal) stop the sidecar."""
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


class RunThread:
    """At most one run at a time, in its own thread (the main loop keeps time and health)."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, target: Callable, *args, **kwargs) -> None:
        self._thread = threading.Thread(target=target, args=args, kwargs=kwargs, name="run")
        self._thread.start()

    def join(self, timeout: float) -> None:
        """Wait for the running run (the Runner was told to stop: restic gets SIGINT)."""
        if self.busy:
            log.info("waiting for the running backup to stop")
            self._thread.join(timeout)


def restic_runner(s: Settings, host: str) -> tuple[restic.Context, Runner]:
    """How restic runs here: its cache and scratch directory, its version's abilities."""
    cache_dir = s.cache_dir or os.environ.get("RESTIC_CACHE_DIR")
    if not cache_dir:
        cache_dir = tempfile.mkdtemp(prefix="restik-cache-")
    os.makedirs(cache_dir, exist_ok=True)
    version = restic.detect_version(s.restic)
    native = restic.has_retry_lock(version)
    log.info(
        "restic %s: %s",
        ".".join(map(str, version)) if version else "(version unknown)",
        "waits for locks itself (--retry-lock)"
        if native
        else "lock waits retried by restik with jitter",
    )
    ctx = restic.Context(
        host=host,
        cache_dir=cache_dir,
        restic=s.restic,
        retry_lock=s.lock_wait,
        native_retry_lock=native,
    )
    runner = Runner(
        restic_env(os.environ, cache_dir),
        stop_timeout=s.stop_timeout,
        command_timeout=s.run_timeout,
        backend_timeout=s.backend_timeout,
    )
    return ctx, runner
