"""A command's output streamed into `restic backup --stdin`, and `restic dump` streamed into a
command's input: database dumps and restores through pods/exec, never on disk.

A dump is only a backup if the command that wrote it succeeded. restic cannot know: the
command runs in another container (so `--stdin-from-command`, restic 0.17+, does not
apply) and restic sees only a stream that ends. So restic's stdin is closed only after the
command's exit status arrived and said 0; on any failure (exit code, timeout, a broken
stream) restic is interrupted while its input is still open, so it never completes a
snapshot of the truncated stream, and a snapshot it reports all the same is forgotten.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from reconciler.kube.client import ApiError
from sidecar import restic
from sidecar.podexec import CHUNK, ExecResult, PodExec
from sidecar.runner import redact, secret_values

RESTIC_OUTPUT_LIMIT = 256 * 1024  # restic --json prints a status line now and then
STOP_TIMEOUT = 20.0  # seconds restic gets to stop on SIGINT before SIGKILL
FORGET_TIMEOUT = 300.0


@dataclass(frozen=True)
class StreamResult:
    """How one streamed backup or restore went."""

    ok: bool
    reason: str  # "" when ok, else why, for the run's Event
    command: ExecResult | None  # None when the command could not be started
    restic_code: int | None
    restic_stderr: str = ""
    summary: restic.Summary | None = None  # of the snapshot made (backup only)
    forgotten: str | None = None  # a partial snapshot that was made and then forgotten
    duration: float = 0.0


def render_stdin_backup(restic_args: Sequence[str], filename: str,
                        options: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """`restic backup` of stdin as ``filename``; ``restic_args`` is restic and its global
    options (--repo, --cache-dir), ``options`` are backup options (--host, --tag)."""
    check_filename(filename)
    return [*restic_args, "backup", "--json", "--stdin", f"--stdin-filename={filename}",
            *options]  # fmt: skip


def render_dump(restic_args: Sequence[str], snapshot: str, filename: str) -> list[str]:
    """`restic dump` of the file a stdin backup stored (at the root of its snapshot)."""
    check_filename(filename)
    return [*restic_args, "dump", "--", snapshot, "/" + filename]


def render_forget_snapshot(restic_args: Sequence[str], snapshot_id: str) -> list[str]:
    return [*restic_args, "forget", "--", snapshot_id]


def check_filename(filename: str) -> None:
    if not filename or "/" in filename or filename in (".", ".."):
        raise ValueError(f"stdin filename must be a plain file name, not {filename!r}")


class _Collector:
    """Reads one pipe of a child to its end in a thread, keeping the last ``limit`` bytes."""

    def __init__(self, pipe, limit: int = RESTIC_OUTPUT_LIMIT):
        self.pipe = pipe
        self.limit = limit
        self.data = bytearray()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        fd = self.pipe.fileno()
        try:
            while chunk := os.read(fd, CHUNK):
                self.data += chunk
                if len(self.data) > 2 * self.limit:
                    del self.data[: len(self.data) - self.limit]
        except OSError:
            pass
        finally:
            self.pipe.close()

    def text(self, timeout: float = 10.0) -> str:
        self.thread.join(timeout)
        return bytes(self.data[-self.limit :]).decode(errors="replace")


def _stop(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> int:
    """Interrupt restic (SIGINT lets it remove its lock), SIGKILL if it does not stop."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def _finish(proc: subprocess.Popen, started: float, timeout: float | None,
            cancel: threading.Event | None) -> str:  # fmt: skip
    """Wait for restic to save the snapshot, within the run's timeout; "" or why not."""
    deadline = None if timeout is None else started + timeout
    while proc.poll() is None:
        if cancel is not None and cancel.is_set():
            _stop(proc)
            return "interrupted: the sidecar is stopping"
        if deadline is not None and time.monotonic() >= deadline:
            _stop(proc)
            return f"did not finish within the run's timeout of {timeout:g}s"
        try:
            proc.wait(0.1)
        except subprocess.TimeoutExpired:
            pass
    return ""


def _start(args: list[str], env: Mapping[str, str] | None, stdin) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
        start_new_session=True,  # a terminal's SIGINT is not ours to forward
    )


def forget_snapshot(restic_args: Sequence[str], snapshot_id: str,
                    env: Mapping[str, str] | None = None) -> str:  # fmt: skip
    """`restic forget` one snapshot (its data goes with the next prune); "" or the error."""
    proc = _start(render_forget_snapshot(restic_args, snapshot_id), env, subprocess.DEVNULL)
    try:
        _, err = proc.communicate(timeout=FORGET_TIMEOUT)
    except subprocess.TimeoutExpired:
        _stop(proc)
        _, err = proc.communicate()
        err += f"\nrestic forget did not finish within {FORGET_TIMEOUT:.0f}s".encode()
    text = redact(err.decode(errors="replace"), secret_values(env or {}))
    # restic (0.14 at least) exits 0 after "Ignoring "ID": no matching ID found"
    ignored = next((line.strip() for line in text.splitlines() if "no matching ID" in line), "")
    if proc.returncode == 0 and not ignored:
        return ""
    return ignored or restic.first_error_line(text, proc.returncode)


def dump_into_restic(
    exec_client: PodExec,
    namespace: str,
    pod: str,
    container: str,
    command: Sequence[str],
    restic_args: Sequence[str],
    stdin_filename: str,
    *,
    backup_options: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
) -> StreamResult:
    """Run ``command`` in the container and back its stdout up as ``stdin_filename``.

    ok only when both the command exited 0 and restic saved the snapshot; otherwise no
    snapshot of the stream is left (restic interrupted before it completes one, or the
    snapshot it made forgotten) and ``reason`` says what failed.
    """
    started = time.monotonic()
    secrets = secret_values(env or {})
    args = render_stdin_backup(restic_args, stdin_filename, backup_options)
    proc = _start(args, env, subprocess.PIPE)
    out, err = _Collector(proc.stdout), _Collector(proc.stderr)
    assert proc.stdin is not None

    restic_died = threading.Event()

    def into_restic(chunk: bytes) -> None:
        try:
            proc.stdin.write(chunk)
        except BrokenPipeError:
            restic_died.set()  # restic stopped reading: the exec stream is closed
            raise

    dumped: ExecResult | None = None
    exec_error = late = ""
    try:
        dumped = exec_client.run(namespace, pod, container, command, stdout=into_restic,
                                 timeout=timeout, cancel=cancel)  # fmt: skip
    except ApiError as exc:
        exec_error = f"could not run the dump command in {pod}/{container}: {exc}"
    except BaseException:
        _stop(proc)
        raise
    if dumped is not None and dumped.ok:
        try:
            proc.stdin.close()  # the whole dump is in: now restic may complete the snapshot
        except OSError:  # restic is gone: its exit code says why
            pass
        late = _finish(proc, started, timeout, cancel)
        code = proc.returncode
    else:
        code = _stop(proc)  # input still open: restic cannot take the truncation for the end
        try:
            proc.stdin.close()
        except OSError:  # restic is gone: its exit code says why
            pass
    stdout, stderr = out.text(), redact(err.text(), secrets)
    summary = restic.parse_summary(stdout)
    if exec_error:
        reason = exec_error
    elif late:
        reason = f"restic backup {late}"
    elif code != 0 and (dumped is None or dumped.ok or restic_died.is_set()):
        reason = f"restic backup failed: {restic.first_error_line(stderr, code)}"
    elif dumped is not None and not dumped.ok:
        reason = f"the dump command failed: {redact(dumped.describe(), secrets)}"
    elif summary is None:
        reason = "restic backup reported no snapshot"
    else:
        reason = ""
    forgotten = None
    if reason and summary is not None:
        # restic made a snapshot of a stream that was not a whole dump: take it back
        why = forget_snapshot(restic_args, summary.snapshot_id, env)
        if why:
            reason += f"; its partial snapshot {summary.snapshot_id} could not be forgotten: {why}"
        else:
            forgotten, summary = summary.snapshot_id, None
    return StreamResult(
        ok=not reason,
        reason=reason,
        command=dumped,
        restic_code=code,
        restic_stderr=stderr,
        summary=summary if not reason else None,
        forgotten=forgotten,
        duration=time.monotonic() - started,
    )


def restore_from_restic(
    exec_client: PodExec,
    namespace: str,
    pod: str,
    container: str,
    command: Sequence[str],
    restic_args: Sequence[str],
    snapshot: str,
    stdin_filename: str,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    cancel: threading.Event | None = None,
) -> StreamResult:
    """Stream ``stdin_filename`` of ``snapshot`` into ``command``'s stdin in the container.

    The command's input is ended cleanly only when restic dumped the whole file; when
    restic fails the stream is cut instead, and the result is a failure either way.
    """
    started = time.monotonic()
    secrets = secret_values(env or {})
    proc = _start(render_dump(restic_args, snapshot, stdin_filename), env, subprocess.DEVNULL)
    err = _Collector(proc.stderr)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()

    restic_failed = threading.Event()
    stopped = threading.Event()  # restic stopped by us (the command ended first): no failure

    def source() -> Iterator[bytes]:
        while chunk := os.read(fd, CHUNK):
            yield chunk
        code = proc.wait()
        if code != 0:  # raising cuts the stream: the command never sees a clean end
            if not stopped.is_set():
                restic_failed.set()
            raise RuntimeError(f"restic dump exited with code {code}")

    restored: ExecResult | None = None
    exec_error = ""
    try:
        restored = exec_client.run(namespace, pod, container, command, stdin=source(),
                                   timeout=timeout, cancel=cancel)  # fmt: skip
    except ApiError as exc:
        exec_error = f"could not run the restore command in {pod}/{container}: {exc}"
    finally:
        if proc.poll() is None:
            # the exec stream may still be reading the source in its own thread: restic
            # ending now is our doing, not a restic failure
            stopped.set()
            code = _stop(proc)
        else:
            code = proc.returncode
        proc.stdout.close()
    stderr = redact(err.text(), secrets)
    if exec_error:
        reason = exec_error
    elif restic_failed.is_set():
        reason = f"restic dump failed: {restic.first_error_line(stderr, code)}"
    elif restored is not None and not restored.ok:
        reason = f"the restore command failed: {redact(restored.describe(), secrets)}"
    elif stopped.is_set():
        reason = "the restore command ended (exit code 0) before it read the whole dump"
    elif code != 0:
        reason = f"restic dump failed: {restic.first_error_line(stderr, code)}"
    else:
        reason = ""
    return StreamResult(
        ok=not reason,
        reason=reason,
        command=restored,
        restic_code=code,
        restic_stderr=stderr,
        duration=time.monotonic() - started,
    )
