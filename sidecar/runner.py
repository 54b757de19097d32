"""Run restic as a child process: argument lists (never a shell), output captured, stoppable."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sidecar import restic
from sidecar.backend import BackendWatch
from sidecar.environment import FROM_SECRET, restic_environment

log = logging.getLogger(__name__)

# Environment variables whose values are secrets: redacted from anything logged or reported.
SECRET_HINTS = ("PASSWORD", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "_PASS")
MIN_SECRET_LEN = 4
# How often a running restic's time limits and backend failures are looked at (its exit
# is noticed at once, whatever this is).
WATCH_INTERVAL = 0.2


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str
    duration: float
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.code == 0


def secret_values(env: Mapping[str, str]) -> tuple[str, ...]:
    """Values to redact, longest first: every value that came from the repository Secret
    (whatever its name: AZURE_ACCOUNT_SAS, an access key id), and any other that looks like
    a secret by its name (a sidecar run by hand)."""
    values = {
        value
        for name, value in env.items()
        if value
        and len(value) >= MIN_SECRET_LEN
        and (name in FROM_SECRET or any(h in name.upper() for h in SECRET_HINTS))
    }
    return tuple(sorted(values, key=len, reverse=True))


# The password runs to the last "@" of the word: it may hold "/" or "@" itself.
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)\S*@")


def redact_url(text: str) -> str:
    """Hide the password of any ``scheme://user:password@host`` (e.g. a rest: repository),
    also one with "/" or "@" in it (more than the password may go: never less)."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def redact(text: str, secrets: Iterable[str]) -> str:
    text = redact_url(text)
    for value in secrets:
        if value in text:
            text = text.replace(value, "[REDACTED]")
    return text


def restic_env(base: Mapping[str, str], cache_dir: str) -> dict[str, str]:
    """The child's environment: only what restic may see of ours (RESTIC_PASSWORD, AWS_*,
    ... from the Secret: environment.FOR_RESTIC) plus a writable TMPDIR, because restic
    stages pack files there and the root is read-only. Never RESTIC_REPOSITORY_FILE: that is
    for people exec'ing into the container, and restic refuses it together with the --repo
    restik passes."""
    env = restic_environment(dict(base))
    env.pop("RESTIC_REPOSITORY_FILE", None)
    if not env.get("TMPDIR"):
        tmp = os.path.join(cache_dir, "tmp")
        os.makedirs(tmp, exist_ok=True)
        env["TMPDIR"] = tmp
    env.setdefault("RESTIC_CACHE_DIR", cache_dir)
    return env


class Runner:
    """Runs one restic at a time; ``stop()`` interrupts it (SIGINT, then SIGKILL)."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        stop_timeout: float = 20.0,
        command_timeout: float | None = None,
        backend_timeout: float | None = None,
    ):
        """``command_timeout``: a restic that runs longer is interrupted (a backend that
        accepts connections and never answers would otherwise block every later run).
        ``backend_timeout``: a restic whose backend requests have all failed for this long
        (it retries them, restic 0.17+ for 15 minutes each) is interrupted; None: never."""
        self.command_timeout = command_timeout or None
        self.backend_timeout = backend_timeout or None
        self.env = dict(env)
        self.secrets = secret_values(self.env)
        self.stop_timeout = stop_timeout
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._stopping = threading.Event()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def stopping_event(self) -> threading.Event:
        """Set once ``stop()`` was called: for work that is not a restic run of this Runner
        (commands through pods/exec, streamed backups) to stop with it."""
        return self._stopping

    def run(self, args: list[str], *, timeout: float | None = None) -> Result:
        """Run restic to completion and capture its output (redacted)."""
        safe_args = tuple(redact(a, self.secrets) for a in args)
        timeout = timeout if timeout is not None else self.command_timeout
        if self._stopping.is_set():
            return Result(safe_args, 130, "", "interrupted: the sidecar is stopping", 0.0, True)
        log.debug("running %s", " ".join(safe_args))
        started = time.monotonic()
        with self._lock:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,  # restic would otherwise ask for a password on a tty
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self.env,
                text=True,
                errors="replace",
                # Its own process group: a terminal's SIGINT (the foreground group) is not
                # forwarded to it; stop() interrupts it. Not its own session: a new session
                # is a new CFS autogroup on hosts without a CPU cgroup, which on a busy
                # machine seemed to give restic a smaller share than the same restic run
                # from a shell (bench/README.md, sidecar_overhead_ratio of 2026-11-30).
                process_group=0,
            )
            self._proc = proc
        try:
            stdout, stderr = self._wait(proc, started, timeout)
        finally:
            with self._lock:
                self._proc = None
        return Result(
            args=safe_args,
            code=proc.returncode,
            stdout=redact(stdout, self.secrets),
            stderr=redact(stderr, self.secrets),
            duration=time.monotonic() - started,
            interrupted=self._stopping.is_set(),
        )

    def _wait(self, proc: subprocess.Popen, started: float, timeout: float | None):
        """Collect restic's output until it exits; interrupt it when it runs past
        ``timeout`` or its backend has failed for ``backend_timeout``. stderr is read line
        by line as it comes: restic reports each backend retry there."""
        watch = BackendWatch()
        out: list[str] = []
        err: list[str] = []

        def read_stdout() -> None:
            out.append(proc.stdout.read())

        def read_stderr() -> None:
            for line in proc.stderr:
                err.append(line)
                watch.feed(line, time.monotonic())

        exited = threading.Event()

        def reap() -> None:
            # Blocks in waitpid: the run ends the moment restic does. (Popen.wait with a
            # timeout polls, up to 50 ms apart: late by 25 ms on average, on every run.)
            proc.wait()
            exited.set()

        readers = [
            threading.Thread(target=read_stdout, daemon=True),
            threading.Thread(target=read_stderr, daemon=True),
        ]
        for reader in readers:
            reader.start()
        threading.Thread(target=reap, daemon=True).start()
        note = None
        while not exited.is_set():
            now = time.monotonic()
            if timeout is not None and now - started >= timeout:
                note = f"restic did not finish within {timeout:.0f}s and was interrupted"
            elif watch.bucket_missing:
                note = "the repository's bucket does not exist: restic was interrupted"
            elif self.backend_timeout and watch.failing_for(now) >= self.backend_timeout:
                note = (
                    f"the repository did not answer for {self.backend_timeout:.0f}s "
                    "(--backend-timeout): restic was interrupted"
                )
            if note:
                self._interrupt(proc)
                break
            exited.wait(WATCH_INTERVAL)
        proc.wait()
        for reader in readers:
            # A child of restic (rclone, ssh) may hold the pipes open after restic is gone.
            reader.join(self.stop_timeout)
        stderr = "".join(err)
        if note:
            stderr += f"\n{restic.RESTIK_NOTE}{note}"
        return "".join(out), stderr

    def stop(self) -> None:
        """Stop the running restic (if any) and refuse to start new ones."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            threading.Thread(target=self._interrupt, args=(proc,), daemon=True).start()

    def _interrupt(self, proc: subprocess.Popen) -> None:
        # SIGINT lets restic remove its lock and stop cleanly; SIGKILL only if it hangs.
        if proc.poll() is not None:
            return
        log.info("interrupting restic (pid %d)", proc.pid)
        try:
            proc.send_signal(signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + self.stop_timeout
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            log.warning("restic did not stop within %.0fs; killing it", self.stop_timeout)
            try:
                proc.kill()
            except ProcessLookupError:
                pass

    def sleep(self, seconds: float) -> bool:
        """Pause between attempts; True (at once) when the sidecar is stopping."""
        return self._stopping.wait(seconds)

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._proc is None:
                    return True
            time.sleep(0.05)
        return False
