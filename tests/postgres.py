"""A throwaway PostgreSQL cluster for tests (Debian's ``postgresql`` package): ``initdb`` in
a temporary directory, ``postgres`` on 127.0.0.1 with a free port (no Unix socket), run as
the ``postgres`` system user when the tests run as root (postgres refuses root); stopped
and removed by ``stop()``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def bindir() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian keeps it off PATH)."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if found:
        found.sort(key=lambda p: int(Path(p).parent.parent.name))
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        self.user = "postgres" if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="restik-pg-"))  # not under pytest's 0700 root
        self.data = self.dir / "data"
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a client in "the database's container" sees."""
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "PGHOST": "127.0.0.1",
               "PGUSER": "postgres", "HOME": str(self.dir)}  # fmt: skip
        if self.port:
            env["PGPORT"] = str(self.port)
        return env

    @property
    def process_user(self) -> dict[str, object]:
        """Popen's arguments to run as the cluster's owner (and only its groups)."""
        if not self.user:
            return {}
        return {"user": self.user, "group": self.user, "extra_groups": []}

    def _run(self, *args: str, check: bool = True, timeout: float = 60, **kw):
        return subprocess.run(args, env=self.env, capture_output=True, text=True, check=check,
                              timeout=timeout, **self.process_user, **kw)  # fmt: skip

    def start(self) -> Postgres:
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-sync", cwd=self.dir)  # fmt: skip
        for _ in range(5):  # a free port can be taken between the probe and the bind
            self.port = free_port()
            with open(self.dir / "server.log", "ab") as log:
                self.proc = subprocess.Popen(
                    [str(self.bin / "postgres"), "-D", str(self.data), "-h", "127.0.0.1",
                     "-p", str(self.port), "-c", "unix_socket_directories=", "-c", "fsync=off",
                     "-c", "logging_collector=off"],
                    cwd=self.dir, stdout=subprocess.DEVNULL, stderr=log,
                    start_new_session=True, **self.process_user,
                )  # fmt: skip
            if self._wait_ready():
                return self
            self._kill()
        raise RuntimeError(f"postgres did not start: {(self.dir / 'server.log').read_text()}")

    def _wait_ready(self, timeout: float = 30.0) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            ready = self._run(str(self.bin / "pg_isready"), "-q", check=False)
            if ready.returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL; its unaligned, tuples-only output."""
        done = self._run(str(self.bin / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-At",
                         "-d", database, "-c", sql)  # fmt: skip
        return done.stdout.strip()

    def _kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)  # "fast" shutdown
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        self._kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Writer:
    """Commits one order with its three lines per transaction, until stopped."""

    def __init__(self, cluster: Postgres):
        self.cluster = cluster
        self.committed: list[int] = []
        self.stop = threading.Event()
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        order = 1_000_000
        try:
            while not self.stop.is_set():
                order += 1
                self.cluster.psql(
                    f"BEGIN; INSERT INTO orders VALUES ({order}, 'live'); "
                    f"INSERT INTO lines SELECT {order}, n FROM generate_series(1, 3) n; COMMIT;",
                    "shop",
                )
                self.committed.append(order)  # psql returned: the transaction is committed
        except Exception as exc:
            self.error = exc

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def started() -> Iterator[Postgres]:
    """A started cluster, stopped and removed after (a fixture's body: `yield from`); a
    machine without PostgreSQL fails the test (CI installs it)."""
    found = bindir()
    if found is None:
        pytest.fail("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    cluster = Postgres(found)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
